"""Logging: JSON lines or text by terminal, the per-event rate limit, and reject summaries that
keep a flood of bad orders or logins to a few lines."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gateway_harness import limit, login, make_config, metric_value, running_gateway, scrape

from gateway import logs
from gateway.clients.tcp import LoginError, OrderClient
from gateway.config.schema import Config
from gateway.logs import EventLimiter, Summaries
from gateway.security.auth import mint_token
from matching.records import Side


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    handler = logs.configure("INFO", "json", burst=5, window_s=60, stream=buf)
    logs.LIMITER.reset()
    try:
        yield buf
    finally:
        logging.getLogger().removeHandler(handler)
        logs._handler = None
        logging.getLogger().setLevel(logging.WARNING)


def test_limiter_bursts_then_counts_per_event_and_window() -> None:
    now = [0.0]
    lim = EventLimiter(burst=3, window_s=10, clock=lambda: now[0])

    def rec(event: str) -> logging.LogRecord:
        r = logging.LogRecord("hftgw.tcp", logging.INFO, __file__, 1, "m", None, None)
        r.event = event
        return r

    assert [lim.filter(rec("a")) for _ in range(5)] == [True, True, True, False, False]
    assert lim.filter(rec("b"))  # another kind of event has its own budget
    now[0] = 10.0
    assert lim.filter(rec("a"))  # a new window
    assert lim.take_suppressed() == {"a": 2} and lim.take_suppressed() == {}
    assert lim.suppressed_total == 2


def test_auto_format_is_text_on_a_terminal_and_json_otherwise() -> None:
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert type(logs.formatter("auto", tty)) is logging.Formatter
    finally:
        os.close(master)
        os.close(slave)
    fmt = logs.formatter("auto", io.StringIO())
    rec = logging.LogRecord("hftgw.engine", logging.INFO, __file__, 1, "session %d up", (3,), None)
    rec.event, rec.session_id = "session.login", 3
    line = json.loads(fmt.format(rec))
    assert list(line)[:4] == ["ts", "level", "logger", "msg"]
    assert line["msg"] == "session 3 up" and line["event"] == "session.login" and line["session_id"] == 3
    assert line["ts"].endswith("+00:00")
    assert "session 3 up" in logs.formatter("text", io.StringIO()).format(rec)


async def test_reject_and_login_floods_cost_a_few_lines(tmp_path: Path, captured: io.StringIO) -> None:
    # a login burst above the 30 forged logins: this is about log lines, not the per-address limit
    cfg = make_config(tmp_path, login_burst_per_address=100)
    async with running_gateway(cfg) as gw:
        # 2 000 orders for a symbol nobody trades, and 2 000 with a zero quantity
        c = await login(cfg, "flooder")
        for i in range(2000):
            c.send(limit(i + 1, Side.SIDE_BUY, 1_000_000, 5, symbol="NOPE"))
            c.send(limit(10_000 + i, Side.SIDE_BUY, 1_000_000, 0))
        for _ in range(4000):
            await c.recv()
        # 30 logins with a forged token
        for _ in range(30):
            with pytest.raises(LoginError):
                await _forged_login(cfg)
        await c.logout()
        await asyncio.sleep(0.05)
        gw.summaries.emit()
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_log_lines_suppressed_total") >= 25
    lines = [json.loads(x) for x in captured.getvalue().splitlines()]
    summary = [x for x in lines if x.get("event") == "rejects.summary"]
    assert len(summary) == 1
    assert summary[0]["by_reason"] == {"unknown_symbol": 2000, "invalid_quantity": 2000,
                                       "login_bad_token": 30}
    refused = [x for x in lines if x.get("event") == "session.login_refused"]
    assert len(refused) == 5 and refused[0]["reason"] == "bad_token" and refused[0]["peer"]
    dropped = [x for x in lines if x.get("event") == "log.suppressed"]
    assert dropped[0]["by_event"]["session.login_refused"] == 25
    # 4 030 rejects and 30 refused logins: a handful of lines, not thousands
    assert len(lines) < 40, len(lines)


async def _forged_login(cfg: Config) -> None:
    host, port = cfg.listen.rsplit(":", 1)
    token = mint_token("not-the-secret-at-all-0123456789abcdef", "mallory")
    client = await OrderClient.connect(host, int(port), token)
    await client.close()


def test_summaries_say_nothing_when_nothing_happened(captured: io.StringIO) -> None:
    counts = {"unknown_symbol": 5}
    s = Summaries(lambda: counts, 10.0)
    s.emit()
    assert captured.getvalue() == ""
    counts["unknown_symbol"] = 8
    s.emit()
    line = json.loads(captured.getvalue())
    assert line["by_reason"] == {"unknown_symbol": 3} and line["total"] == 3
