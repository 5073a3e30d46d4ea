"""Helpers to run a real gateway on 127.0.0.1 for the tests: in this event loop, or as a
separate ``hftgw serve`` process."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from gateway.clients.tcp import OrderClient
from gateway.config.load import load_config
from gateway.config.schema import Config
from gateway.security.auth import mint_token
from gateway.server import Gateway
from matching.records import OrdType, TimeInForce
from protocol import codec
from protocol.messages import Message, NewOrder

ROOT = Path(__file__).resolve().parents[2]
LOBSTER = ROOT.parent / "shared" / "data" / "lobster"
MESSAGES = LOBSTER / "AMZN_2012-06-21_34200000_57600000_message_1.csv"
BOOKS = LOBSTER / "AMZN_2012-06-21_34200000_57600000_orderbook_1.csv"


def hftgw(*args: str, env: dict[str, str] | None = None, timeout: float = 120
          ) -> subprocess.CompletedProcess[str]:
    """``python -m gateway.cli ARGS`` from the checkout, as a user runs it: no HFTGW_ variable of
    this process leaks in, only ``env``'s."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HFTGW_")}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**base, **(env or {})}, cwd=ROOT)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports on 127.0.0.1 that were free a moment ago (held open together, so
    the OS cannot hand out one of them twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def make_config(journal_dir: Path, **overrides: object) -> Config:
    order_port, metrics_port, ws_port = free_ports(3)
    env = {
        "HFTGW_LISTEN": f"127.0.0.1:{order_port}",
        "HFTGW_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "HFTGW_WS_LISTEN": f"127.0.0.1:{ws_port}",
        "HFTGW_JOURNAL_DIR": str(journal_dir),
    }
    env.update({"HFTGW_" + k.upper(): str(v) for k, v in overrides.items()})
    return load_config(None, env)


@contextlib.asynccontextmanager
async def running_gateway(cfg: Config) -> AsyncIterator[Gateway]:
    gw = Gateway(cfg)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.close()


async def login(cfg: Config, account: str, **kw: object) -> OrderClient:
    host, port = cfg.listen.rsplit(":", 1)
    return await OrderClient.connect(host, int(port), mint_token(cfg.jwt_secret, account), **kw)


@contextlib.asynccontextmanager
async def trading(journal_dir: Path, *accounts: str) -> AsyncIterator[tuple[Config, list[OrderClient]]]:
    """A gateway in this event loop and one logged-in client per account, in that order.  When
    the block ends without an error the clients log out, each answered, before the gateway
    stops."""
    cfg = make_config(journal_dir)
    async with running_gateway(cfg):
        clients = [await login(cfg, a) for a in accounts]
        yield cfg, clients
        for c in clients:
            await c.logout()


def scrape(cfg: Config, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{cfg.metrics_listen}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric_value(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in a Prometheus text exposition (0 if absent)."""
    key = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0


@contextlib.contextmanager
def serve_process(journal_dir: Path, extra_env: dict[str, str] | None = None
                  ) -> Iterator[tuple[Config, subprocess.Popen[bytes]]]:
    """``python -m gateway.cli serve`` as a child process; yields once /ready answers 200."""
    cfg = make_config(journal_dir)
    env = dict(os.environ)
    env.update({"HFTGW_LISTEN": cfg.listen, "HFTGW_METRICS_LISTEN": cfg.metrics_listen,
                "HFTGW_WS_LISTEN": cfg.ws_listen, "HFTGW_JOURNAL_DIR": cfg.journal_dir})
    env.update(extra_env or {})
    cfg = load_config(None, env)
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise RuntimeError(f"gateway exited with {proc.returncode}:\n{out}")
            try:
                if scrape(cfg, "/ready")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("gateway did not become ready in 30 s")
            time.sleep(0.05)
        yield cfg, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def limit(cl: int, side: int, price: int, qty: int, symbol: str = "AAPL",
          tif: int = TimeInForce.TIF_GTC, flags: int = 0) -> NewOrder:
    """A limit order of ``qty`` lots at ``price`` (1e-4 units), GTC unless ``tif`` says
    otherwise, the session's default self-trade prevention."""
    return NewOrder(cl_ord_id=cl, price=price, order_qty=qty, symbol=symbol, side=side,
                    ord_type=OrdType.ORD_LIMIT, time_in_force=tif, flags=flags)


async def raw_bytes(cfg: Config, data: bytes, timeout: float = 3.0, *,
                    until_close: bool = True) -> tuple[bytes, float]:
    """Send ``data`` (may be empty) on a new order-entry connection and return the bytes that
    come back: everything until the server closes (``until_close``), or up to the first read
    that holds a whole message; and the seconds until then.  Raises TimeoutError when nothing
    more arrives within ``timeout`` s."""
    host, port = cfg.listen.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    t0 = time.monotonic()
    writer.write(data)
    buf = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                break
            buf += chunk
            if not until_close and codec.decode_frames(buf)[0]:
                break
    finally:
        writer.close()
    return buf, time.monotonic() - t0


async def raw_exchange(cfg: Config, data: bytes, timeout: float = 3.0, *,
                       until_close: bool = True) -> tuple[list[Message], float]:
    """``raw_bytes``, decoded: (messages, seconds)."""
    buf, took = await raw_bytes(cfg, data, timeout, until_close=until_close)
    return codec.decode_frames(buf)[0], took
