"""Real processes for the fault tests (issue 4): a gateway server process that can be killed and
restarted on the same journal, a private PostgreSQL cluster that can be stopped and started, and
order-streaming clients that record every message they received.

Prices are int ticks of 1e-4 (the default symbols have tick 100), quantities lots, times ns.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.clients.tcp import LoginError, OrderClient
from gateway.config.load import load_config
from gateway.config.schema import Config
from gateway.security.auth import mint_token
from matching.records import OrdType, Side, TimeInForce
from protocol.messages import (
    BookQuery,
    BookSnapshot,
    CancelOrder,
    Execution,
    Logout,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderReplaced,
)
from support.gateway_harness import free_ports, scrape

WORKTREE = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("HFTGW_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
SYMBOLS = ("AAPL", "MSFT")
MID = 1_000_000          # 100.0000 in 1e-4 ticks
TICK = 100               # the default symbols' tick
SEGMENT_RE = re.compile(r"^journal-\d{8,}\.log$")


# -- the gateway as a real process -----------------------------------------------------------------
class ServerProcess:
    """``python -m gateway.cli serve`` (cwd: this worktree) on fixed ports chosen once, with its
    journal in ``workdir/journal``, so ``start`` after ``kill`` restarts on the same journal and
    the same address.  Each start's output goes to ``workdir/server-<n>.log``."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.journal_dir = workdir / "journal"
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        order, metrics, ws = free_ports(3)
        self.env = dict(os.environ)
        self.env.update({"HFTGW_LISTEN": f"127.0.0.1:{order}",
                         "HFTGW_METRICS_LISTEN": f"127.0.0.1:{metrics}",
                         "HFTGW_WS_LISTEN": f"127.0.0.1:{ws}",
                         "HFTGW_JOURNAL_DIR": str(self.journal_dir),
                         "HFTGW_LOG_FORMAT": "text"})
        self.env.update(env or {})
        self.cfg: Config = load_config(None, self.env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_paths: list[Path] = []

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.cfg.listen.rsplit(":", 1)
        return host, int(port)

    def start(self, timeout: float = 30.0) -> float:
        """Start and wait for /ready; returns the seconds it took.  Raises RuntimeError (with
        the log) when the process exits first, TimeoutError when not ready in ``timeout``."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        path = self.workdir / f"server-{self.starts}.log"
        self.log_paths.append(path)
        t0 = time.monotonic()
        with open(path, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"],
                                         env=self.env, cwd=WORKTREE, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                if scrape(self.cfg, "/ready")[0] == 200:
                    return time.monotonic() - t0
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"gateway not ready in {timeout} s:\n{self.log()}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until exit).  Kills it and raises TimeoutError
        when it does not exit in ``timeout``."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout), time.monotonic() - t0

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"gateway did not exit in {timeout} s:\n{self.log()}") from None

    def log(self, start: int = -1) -> str:
        """The output of one start (default: the latest)."""
        return self.log_paths[start].read_text(errors="replace") if self.log_paths else ""

    def run(self, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """``asyncio.run(main())``, then ``close`` whether it passed or not (no gateway outlives
        its test)."""
        try:
            asyncio.run(main())
        finally:
            self.close()

    def close(self) -> None:
        """Stop whatever still runs (SIGTERM, then SIGKILL after 15 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def journal_files(self) -> list[Path]:
        """The journal's files in order (one file, or segments journal-NNNNNNNN.log)."""
        return sorted(p for p in self.journal_dir.iterdir() if SEGMENT_RE.match(p.name))


# -- a private PostgreSQL cluster --------------------------------------------------------------------
class PrivatePostgres:
    """A PostgreSQL 15 cluster of its own (a temporary directory) on a free port, trust auth, run as
    the ``postgres`` OS user (initdb refuses root).  ``stop`` and ``start`` it at will.  Raises
    RuntimeError naming the missing binary when initdb is not installed."""

    def __init__(self) -> None:
        for tool in ("initdb", "pg_ctl"):
            if not (PG_BIN / tool).exists():
                raise RuntimeError(f"{PG_BIN / tool} not found: the fault tests need the PostgreSQL "
                                   "15 server binaries (apt-get install postgresql-15, or set "
                                   "HFTGW_TEST_PG_BIN to their directory)")
        # not under workdir: pytest's tmp root is private to root, and postgres must reach it
        self.dir = Path(tempfile.mkdtemp(prefix="hftgw-pg-"))
        self.data = self.dir / "data"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_ports(1)[0]
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._run(PG_BIN / "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")

    def _run(self, *args: object) -> None:
        cmd = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
               *(str(a) for a in args)] if os.geteuid() == 0 else [str(a) for a in args]
        r = subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off "
                "-c shared_buffers=16MB")
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.dir / "server.log", "-o", opts,
                  "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop (``fast``: disconnect clients, roll back; ``immediate``: like a crash)."""
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "30", "stop")

    def close(self) -> None:
        """Stop it (like a crash: nothing to keep) and remove its files."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


# -- clients -------------------------------------------------------------------------------------
@dataclass
class ClientView:
    """Everything one account's session was sent, over all its connections: business messages
    by seq_num (exactly one per seq expected), and the resting orders they imply."""

    account: str
    session_id: int = 0
    by_seq: dict[int, Any] = field(default_factory=dict)
    duplicates: list[tuple[Any, Any]] = field(default_factory=list)  # same seq, other content
    logouts: list[int] = field(default_factory=list)
    logins: list[tuple[int, int]] = field(default_factory=list)  # (asked, LoginAccepted.next_seq_num)
    acked: dict[int, OrderAccepted] = field(default_factory=dict)   # cl_ord_id -> ack
    fills: dict[int, Execution] = field(default_factory=dict)       # trade_id -> its Execution
    next_cl_ord_id: int = 1

    @property
    def last_seq(self) -> int:
        return max(self.by_seq, default=0)

    def gaps(self) -> list[int]:
        """Seq numbers missing below the highest one received."""
        return [s for s in range(1, self.last_seq + 1) if s not in self.by_seq]

    def record(self, m: Any) -> None:
        if isinstance(m, Logout):
            self.logouts.append(int(m.reason))
            return
        seq = getattr(m, "seq_num", 0)
        if not seq:
            return
        old = self.by_seq.get(seq)
        if old is not None:
            if old != m:
                self.duplicates.append((old, m))
            return
        self.by_seq[seq] = m
        if isinstance(m, OrderAccepted):
            self.acked[m.cl_ord_id] = m
        elif isinstance(m, Execution):
            self.fills[m.trade_id] = m

    def resting(self) -> dict[int, tuple[str, int, int, int]]:
        """order_id -> (symbol, side, price, leaves_qty) of the orders this session's messages
        (in seq order) leave resting."""
        out: dict[int, tuple[str, int, int, int]] = {}
        for seq in sorted(self.by_seq):
            m = self.by_seq[seq]
            if isinstance(m, OrderAccepted):
                out[m.order_id] = (m.symbol, m.side, m.price, m.leaves_qty)
            elif isinstance(m, Execution | OrderCanceled) and m.order_id in out:
                sym, side, px, _ = out[m.order_id]
                out[m.order_id] = (sym, side, px, m.leaves_qty)
            elif isinstance(m, OrderReplaced):
                out[m.order_id] = (m.symbol, m.side, m.price, m.leaves_qty)
        return {k: v for k, v in out.items() if v[3] > 0}


def expected_books(views: Iterable[ClientView]) -> dict[str, tuple[list[tuple[int, int, int]],
                                                                   list[tuple[int, int, int]]]]:
    """symbol -> (bids, asks) as (price, size, order_count) levels, best first: the books the
    clients' messages imply (all orders come from these clients)."""
    levels: dict[tuple[str, int, int], list[int]] = {}
    for v in views:
        for sym, side, px, leaves in v.resting().values():
            lv = levels.setdefault((sym, side, px), [0, 0])
            lv[0] += leaves
            lv[1] += 1
    out = {}
    for sym in SYMBOLS:
        bids = sorted(((p, s, c) for (y, sd, p), (s, c) in levels.items()
                       if y == sym and sd == Side.SIDE_BUY), reverse=True)
        asks = sorted((p, s, c) for (y, sd, p), (s, c) in levels.items()
                      if y == sym and sd == Side.SIDE_SELL)
        out[sym] = (bids, asks)
    return out


class StreamingClient:
    """One account's order stream: connects (re-login with the next seq it expects), sends
    limit orders around MID that cross each other (so fills happen) and a few cancels, records
    everything into ``view``."""

    def __init__(self, server: ServerProcess, account: str, seed: int) -> None:
        self.server = server
        self.view = ClientView(account)
        self.rng = random.Random(seed)
        self.client: OrderClient | None = None
        self.sent = 0

    async def connect(self, timeout: float = 5.0) -> int:
        """Log in asking for the next seq not yet received; returns LoginAccepted.next_seq_num.
        Raises LoginError, OSError."""
        host, port = self.server.host_port
        token = mint_token(self.server.cfg.jwt_secret, self.view.account)
        asked = self.view.last_seq + 1
        c = await OrderClient.connect(host, port, token, timeout=timeout,
                                      next_expected_seq_num=asked)
        # messages that arrived with LoginAccepted, before on_message was set
        while not c.messages.empty():
            self.view.record(c.messages.get_nowait())
        c.on_message = self.view.record
        self.client = c
        self.view.session_id = c.session_id
        self.view.logins.append((asked, c.next_seq_num))
        return c.next_seq_num

    def _order(self) -> NewOrder:
        r = self.rng
        cl = self.view.next_cl_ord_id
        self.view.next_cl_ord_id += 1
        side = r.choice((Side.SIDE_BUY, Side.SIDE_SELL))
        # buys a little above the mid, sells a little below it at times: they cross
        off = r.randint(-4, 4) * TICK
        return NewOrder(cl_ord_id=cl, price=MID + off, order_qty=r.randint(1, 20),
                        symbol=r.choice(SYMBOLS), side=int(side), ord_type=int(OrdType.ORD_LIMIT),
                        time_in_force=int(TimeInForce.TIF_GTC))

    async def stream(self, stop: asyncio.Event, batch: int = 20, pause_s: float = 0.002) -> None:
        """Send batches until ``stop`` is set or the connection ends (a killed server)."""
        c = self.client
        assert c is not None
        while not stop.is_set() and not c.closed.is_set():
            msgs: list[Any] = []
            for _ in range(batch):
                resting = [a for a in list(self.view.acked.values())[-50:]]
                if resting and self.rng.random() < 0.15:
                    a = self.rng.choice(resting)
                    cl = self.view.next_cl_ord_id
                    self.view.next_cl_ord_id += 1
                    msgs.append(CancelOrder(cl_ord_id=cl, orig_cl_ord_id=a.cl_ord_id, symbol=a.symbol))
                else:
                    msgs.append(self._order())
            try:
                c.send(*msgs)
                await c.drain()
            except (ConnectionError, RuntimeError):
                break
            self.sent += len(msgs)
            await asyncio.sleep(pause_s)

    async def settle(self, quiet_s: float = 0.3, timeout: float = 10.0) -> None:
        """Wait until no message arrived for ``quiet_s`` (the answers and replays are in)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        n = -1
        while loop.time() < end:
            cur = len(self.view.by_seq)
            if cur == n:
                return
            n = cur
            await asyncio.sleep(quiet_s)

    async def book(self, symbol: str, request_id: int) -> BookSnapshot:
        """BookQuery (depth 100) answered by its BookSnapshot."""
        c = self.client
        assert c is not None
        got: asyncio.Future[BookSnapshot] = asyncio.get_running_loop().create_future()
        record = self.view.record

        def on_message(m: Any) -> None:
            record(m)
            if isinstance(m, BookSnapshot) and m.request_id == request_id and not got.done():
                got.set_result(m)

        c.on_message = on_message
        c.send(BookQuery(request_id=request_id, symbol=symbol, depth=100))
        try:
            return await asyncio.wait_for(got, 5.0)
        finally:
            c.on_message = record

    async def levels(self, symbol: str, request_id: int
                     ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """The server's book of ``symbol`` as ``snapshot_levels`` gives it (by ``book``)."""
        return snapshot_levels(await self.book(symbol, request_id))

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None


async def connect_all(clients: list[StreamingClient], timeout: float = 10.0) -> None:
    """Log every client in, retrying while the server is starting; raises LoginError for a
    refused login (e.g. a sequence number beyond the end)."""
    for c in clients:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            try:
                await c.connect()
                break
            except LoginError:
                raise
            except (TimeoutError, OSError):
                if loop.time() > end:
                    raise
                await asyncio.sleep(0.05)


def snapshot_levels(s: BookSnapshot) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    return ([(lv.price, lv.size, lv.order_count) for lv in s.bids],
            [(lv.price, lv.size, lv.order_count) for lv in s.asks])


async def stream_for(server: ServerProcess, seconds: float, accounts: Iterable[str], seed: int,
                     batch: int = 10) -> list[StreamingClient]:
    """Log one StreamingClient per account in, stream orders from all of them for ``seconds``,
    wait until their answers are in and log them out; returns the clients (their views hold
    everything they were sent)."""
    clients = [StreamingClient(server, a, seed=seed + i) for i, a in enumerate(accounts)]
    await connect_all(clients)
    stop = asyncio.Event()
    streams = [asyncio.create_task(c.stream(stop, batch=batch)) for c in clients]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*streams)
    for c in clients:
        await c.settle(0.2)
        await c.close()
    return clients
