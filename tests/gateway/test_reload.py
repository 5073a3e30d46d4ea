"""SIGHUP reload: live keys change in the running gateway, a bad file is refused with a log
line and the old config stays, keys that need a restart say so.  In process, and once as a
real ``hftgw serve`` process receiving a real SIGHUP."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.gateway_harness import free_port, limit, login, metric_value, running_gateway, scrape

from gateway import logs
from gateway.cli.main import serve_pids
from gateway.config.load import load_config
from gateway.config.reload import Applier, Reloader
from gateway.config.schema import Config
from matching.records import RejectReason, Side
from protocol.messages import OrderAccepted, OrderRejected

ROOT = Path(__file__).resolve().parents[2]


def write_config(path: Path, journal: Path, listen: str, metrics: str, symbols: list[str],
                 extra: str = "") -> None:
    # WebSocket off: these tests do not use it, and its default port would clash with any other
    # gateway on the machine
    text = (f'listen = "{listen}"\nmetrics_listen = "{metrics}"\njournal_dir = "{journal}"\n'
            f'ws_listen = ""\n{extra}\n' + "".join(f'[[symbols]]\nname = "{s}"\n' for s in symbols))
    path.write_text(text)


@pytest.fixture
def config_file(tmp_path: Path) -> tuple[Path, Config]:
    path = tmp_path / "hftgw.toml"
    write_config(path, tmp_path / "journal", f"127.0.0.1:{free_port()}",
                 f"127.0.0.1:{free_port()}", ["AAPL"])
    return path, load_config(str(path), {})


def _write(path: Path, cfg: Config, symbols: list[str], extra: str = "") -> None:
    write_config(path, Path(cfg.journal_dir), cfg.listen, cfg.metrics_listen, symbols, extra)


async def test_reload_applies_live_keys(config_file: tuple[Path, Config]) -> None:
    path, cfg = config_file
    from gateway.server import Gateway

    gw = Gateway(cfg, str(path))
    await gw.start()
    try:
        client = await login(cfg, "alice")
        client.send(limit(1, Side.SIDE_BUY, 1_000_000, 5, symbol="MSFT"))
        rej = await client.recv()
        assert isinstance(rej, OrderRejected) and rej.reason == RejectReason.REJ_UNKNOWN_SYMBOL
        # a new symbol and a log level, live; listen changed too, which needs a restart
        new_listen = f"127.0.0.1:{free_port()}"
        write_config(path, Path(cfg.journal_dir), new_listen, cfg.metrics_listen, ["AAPL", "MSFT"],
                     'log_level = "WARNING"')
        result = gw.reloader.reload()
        assert result.ok and result.applied == ["log_level", "symbols"]
        assert result.needs_restart == ["listen"]
        assert gw.cfg.listen == cfg.listen != new_listen  # kept until the restart
        assert gw.cfg.log_level == "WARNING" and logging.getLogger().level == logging.WARNING
        assert gw.engine.symbol_names == ["AAPL", "MSFT"]
        client.send(limit(2, Side.SIDE_BUY, 1_000_000, 5, symbol="MSFT"))
        ack = await client.recv()
        assert isinstance(ack, OrderAccepted) and ack.symbol == "MSFT"
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_config_reloads_total", 'result="ok"') == 1
        assert metric_value(text, "hftgw_symbols") == 2
        _, directory = scrape(cfg, "/directory")
        assert json.loads(directory)["partitions"][0]["symbols"] == ["AAPL", "MSFT"]
        await client.logout()
    finally:
        await gw.close()
        # the reload installed the gateway's log handler on the root logger: take it away again
        if logs._handler is not None:
            logging.getLogger().removeHandler(logs._handler)
            logs._handler = None
        logging.getLogger().setLevel(logging.WARNING)


@pytest.mark.parametrize(("text", "why"), [
    ('listen = "127.0.0.1:1"\n[[symbols]\nname = "X"\n', "not valid TOML"),
    ('symbols = []\n', "symbols: at least one symbol is required"),
    ('log_level = "LOUD"\n', "log_level: invalid enum value 'LOUD'"),
    ('max_sessions = 3\nmystery = 1\n', "mystery: unknown key"),
    ('directory_file = "/nonexistent/directory.json"\n', "cannot read the directory"),
    # a new symbol that the directory gives to another partition
    ('directory_file = "{dir}"\n[[symbols]]\nname = "AAPL"\n[[symbols]]\nname = "TSLA"\n',
     "partition 'p0' serves 'TSLA', which the directory gives to partition 'p1'"),
])
async def test_bad_file_is_refused_and_the_old_config_stays(
        config_file: tuple[Path, Config], caplog: pytest.LogCaptureFixture, text: str, why: str) -> None:
    path, cfg = config_file
    async with running_gateway(cfg) as gw:
        reloader = Reloader(gw.cfg, str(path), gw._appliers())
        before = Config(**{k: getattr(gw.cfg, k) for k in Config.__struct_fields__})
        directory = path.parent / "directory.json"
        directory.write_text('{"partitions": [{"name": "p1", "order_entry": "h:1", "symbols": ["TSLA"]}]}')
        path.write_text(f'listen = "{cfg.listen}"\nmetrics_listen = "{cfg.metrics_listen}"\n'
                        f'journal_dir = "{cfg.journal_dir}"\nws_listen = ""\n' + text.format(dir=directory))
        with caplog.at_level(logging.ERROR, logger="hftgw.reload"):
            result = reloader.reload()
        assert not result.ok
        assert any(why in e for e in result.errors), result.errors
        assert any("config reload refused, the running config stays" in r.getMessage()
                   and why in r.getMessage() for r in caplog.records)
        assert gw.cfg == before and gw.engine.symbol_names == ["AAPL"]
        assert (reloader.reloads_refused, reloader.last_ok) == (1, False)
        client = await login(cfg, "bob")  # still serving as before
        client.send(limit(1, Side.SIDE_SELL, 1_000_000, 5))
        assert isinstance(await client.recv(), OrderAccepted)
        await client.logout()


def test_every_live_key_needs_an_applier(config_file: tuple[Path, Config]) -> None:
    path, cfg = config_file
    with pytest.raises(ValueError, match="live keys without an applier: \\['symbols'\\]"):
        Reloader(cfg, str(path), {k: Applier(lambda c: "") for k in
                                  ("log_level", "log_format", "log_event_burst",
                                   "log_summary_interval_s", "directory_file", "throttle",
                                   "risk")})


def test_sighup_on_a_real_process(tmp_path: Path) -> None:
    """kill -HUP: a new symbol trades, a broken file is refused (JSON log line) and the gateway
    keeps serving with the previous config; a restart keeps the symbol ids."""
    path = tmp_path / "hftgw.toml"
    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    write_config(path, tmp_path / "journal", listen, metrics, ["AAPL"])
    cfg = load_config(str(path), {})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HFTGW_")}
    log_path = tmp_path / "gateway.log"

    def client(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "gateway.cli", "client", "--connect", listen,
                              "--account", "alice", *args], capture_output=True, text=True,
                             timeout=30, env=env, cwd=ROOT)
        return out.stdout

    def wait_for(pred: object, what: str) -> None:
        deadline = time.monotonic() + 20
        while not pred():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{log_path.read_text()}")
            time.sleep(0.05)

    def ready() -> bool:
        try:
            return scrape(cfg, "/ready")[0] == 200
        except OSError:
            return False

    def events() -> list[dict[str, object]]:
        return [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]

    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
                                stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            wait_for(ready, "ready")
            assert "UNKNOWN_SYMBOL" in client("new", "MSFT", "sell", "10", "300.00")
            write_config(path, tmp_path / "journal", listen, metrics, ["MSFT", "AAPL"])
            assert proc.pid in serve_pids()  # what `hftgw reload` finds without --pid
            sent = subprocess.run([sys.executable, "-m", "gateway.cli", "reload", "--pid", str(proc.pid)],
                                  capture_output=True, text=True, timeout=30, env=env, cwd=ROOT)
            assert sent.returncode == 0 and f"SIGHUP sent to {proc.pid}" in sent.stdout
            wait_for(lambda: any(e.get("event") == "config.reloaded" for e in events()), "reload")
            assert "OrderAccepted" in client("new", "MSFT", "sell", "10", "300.00")
            path.write_text(path.read_text() + "\nnot toml at all\n")
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: any(e.get("event") == "config.reload_refused" for e in events()), "refusal")
            refused = [e for e in events() if e.get("event") == "config.reload_refused"]
            assert refused[0]["level"] == "ERROR" and "not valid TOML" in str(refused[0]["msg"])
            assert "OrderAccepted" in client("new", "AAPL", "sell", "10", "150.00")
            _, text = scrape(cfg)
            assert metric_value(text, "hftgw_config_last_reload_successful") == 0
            assert metric_value(text, "hftgw_config_reloads_total", 'result="refused"') == 1
            # every line is one JSON object with the common fields; session events are there
            evs = events()
            assert all({"ts", "level", "logger", "msg"} <= set(e) for e in evs)
            assert {"session.login", "session.closed", "session.disconnect"} <= {e.get("event") for e in evs}
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
    # the restart replays MSFT's definition: same id, its order still on the MSFT book
    write_config(path, tmp_path / "journal", listen, metrics, ["AAPL"])
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
                                stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            wait_for(ready, "ready after restart")
            assert "asks=[300 x 10 (1)]" in client("book", "MSFT")
            assert "asks=[150 x 10 (1)]" in client("book", "AAPL")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0


async def test_reload_applies_throttles_and_risk_limits(config_file: tuple[Path, Config]) -> None:
    """throttle: the logged-in session's buckets change at once; risk: accounts seen afterwards
    get the new limits; a symbol added by the same reload is checked like the others."""
    path, cfg = config_file
    from gateway.server import Gateway

    gw = Gateway(cfg, str(path))
    await gw.start()
    try:
        alice = await login(cfg, "alice")
        for i in range(4):
            alice.send(limit(i + 1, Side.SIDE_BUY, 1_000_000, 5))
        first = [await alice.recv() for _ in range(4)]
        assert all(isinstance(m, OrderAccepted) for m in first)
        _write(path, cfg, ["AAPL", "MSFT"],
               "[throttle.trader]\nsession_rate = 0.001\nsession_burst = 2\n[risk]\nmax_order_qty = 3\n")
        result = gw.reloader.reload()
        assert result.ok and sorted(result.applied) == ["risk", "symbols", "throttle"], result
        for i in range(4):
            alice.send(limit(10 + i, Side.SIDE_BUY, 1_000_000, 5))
        got = [await alice.recv() for _ in range(4)]
        assert [type(m).__name__ for m in got] == ["OrderAccepted"] * 2 + ["OrderRejected"] * 2
        assert all(m.reason == RejectReason.REJ_THROTTLED for m in got[2:])
        bob = await login(cfg, "bob")
        bob.send(limit(1, Side.SIDE_SELL, 1_000_000, 4, symbol="MSFT"),
                 limit(2, Side.SIDE_SELL, 1_000_000, 3, symbol="MSFT"))
        rej, ack = await bob.recv(), await bob.recv()
        assert isinstance(rej, OrderRejected) and rej.reason == RejectReason.REJ_MAX_ORDER_QTY
        assert isinstance(ack, OrderAccepted) and ack.symbol == "MSFT"
        assert gw.engine.risk.account_state("alice")["max_order_qty"] == 0   # known before: kept
        await alice.logout()
        await bob.logout()
    finally:
        await gw.close()
