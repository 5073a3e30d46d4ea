"""Fills reported to clients land in PostgreSQL exactly once, also across a restart that replays
the journal (the real PostgreSQL at 127.0.0.1:5432, a private database per test)."""
from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import asyncpg
from support import gateway_harness as gh
from support.tcp_proxy import TcpProxy

from gateway.clients.tcp import OrderClient
from gateway.config.schema import Config
from matching.records import Side
from protocol.messages import CancelOrder, Execution, NewOrder, OrderAccepted, OrderCanceled, OrderRejected


def order(cl: int, side: int, price: int, qty: int) -> NewOrder:
    return gh.limit(cl, side, price, qty, symbol="GOOG")


async def _table(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def _rows(dsn: str) -> list[asyncpg.Record]:
    return await _table(dsn, "SELECT * FROM fills ORDER BY trade_id")


async def _wait_rows(dsn: str, n: int, timeout: float = 10.0) -> list[asyncpg.Record]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            rows = await _rows(dsn)
        except asyncpg.UndefinedTableError:
            rows = []
        if len(rows) >= n or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def test_fills_land_in_postgres_exactly_once(tmp_path: Path, pg_dsn: str) -> None:
    cfg = gh.make_config(tmp_path, pg_dsn=pg_dsn)
    reported: dict[int, Execution] = {}
    async with gh.running_gateway(cfg):
        mk = await gh.login(cfg, "mm1")
        tk = await gh.login(cfg, "tk1")
        for i in range(50):
            mk.send(order(i + 1, Side.SIDE_SELL, 1_000_000 + 100 * (i % 7), 10))
        await mk.recv_until(lambda m: getattr(m, "cl_ord_id", 0) == 50)
        for i in range(30):
            tk.send(order(i + 1, Side.SIDE_BUY, 1_000_600, 13))
        bought = 0
        while bought < 390:  # 30 x 13 lots against 10-lot makers
            m = await tk.recv()
            if isinstance(m, Execution):
                reported[m.trade_id] = m
                bought += m.last_qty
        # one fill per (buy, maker) pair whose lot ranges overlap
        assert len(reported) == sum(1 for k in range(30) for j in range(50)
                                    if max(13 * k, 10 * j) < min(13 * k + 13, 10 * j + 10))
        rows = await _wait_rows(pg_dsn, len(reported))
        assert [r["trade_id"] for r in rows] == sorted(reported)
        for r in rows:
            ex = reported[r["trade_id"]]
            assert (r["price"], r["qty"], r["taker_order_id"], r["taker_account"],
                    r["maker_account"], r["symbol"], r["aggressor_side"]) == (
                ex.last_px, ex.last_qty, ex.order_id, "tk1", "mm1", "GOOG", "B")
        _, text = gh.scrape(cfg)
        assert gh.metric_value(text, "hftgw_sink_rows_total") == len(reported)
        assert gh.metric_value(text, "hftgw_sink_lag_events") == 0
        await mk.logout()
        await tk.logout()
    # the restart replays every command and so regenerates every fill: none may land twice
    async with gh.running_gateway(cfg):
        await asyncio.sleep(0.5)
        rows = await _rows(pg_dsn)
        assert [r["trade_id"] for r in rows] == sorted(reported)


async def _trade_while_postgres_away(cfg: Config, seen: dict[str, list[object]]) -> float:
    """Orders, a cancel, a reject and fills while the sink cannot connect, every message each
    account gets kept in ``seen``; checks the health and the lag the run ends with, returned."""

    async def collect(client: OrderClient, account: str, until: Callable[[object], bool]) -> None:
        while True:
            m = await client.recv()
            seen[account].append(m)
            if until(m):
                return

    async with gh.running_gateway(cfg) as gw:
        mk = await gh.login(cfg, "mm1")
        tk = await gh.login(cfg, "tk1")
        for i in range(20):
            mk.send(order(i + 1, Side.SIDE_SELL, 1_000_000 + 100 * (i % 5), 10))
        await collect(mk, "mm1", lambda m: getattr(m, "cl_ord_id", 0) == 20)
        mk.send(CancelOrder(cl_ord_id=100, orig_cl_ord_id=20, symbol="GOOG"))
        await collect(mk, "mm1", lambda m: isinstance(m, OrderCanceled))
        mk.send(order(21, Side.SIDE_SELL, 1_000_001, 10))          # off tick: rejected
        await collect(mk, "mm1", lambda m: isinstance(m, OrderRejected))
        status, body = gh.scrape(cfg, "/health")
        assert status == 200 and json.loads(body)["sink"] == "degraded"
        assert gh.scrape(cfg, "/ready")[0] == 200
        await mk.logout()
        for i in range(10):
            tk.send(order(i + 1, Side.SIDE_BUY, 1_000_400, 13))
        await collect(tk, "tk1", lambda m: isinstance(m, Execution) and m.cl_ord_id == 10
                      and m.leaves_qty == 0)
        await asyncio.sleep(0.1)
        _, text = gh.scrape(cfg, "/metrics")
        lag = gh.metric_value(text, "hftgw_sink_lag_events")
        assert lag >= 30 and gh.metric_value(text, "hftgw_sink_last_event_no") == 0
        assert gw.engine.event_log is not None and gw.engine.event_log.end_no == lag
        await tk.logout()
    return lag


def _expected_order_events(seen: dict[str, list[object]]) -> list[tuple[object, ...]]:
    """The order_events rows the sink must write for what the clients were told."""
    expect: list[tuple[object, ...]] = []
    for account in ("mm1", "tk1"):
        for m in seen[account]:
            if isinstance(m, OrderAccepted):
                expect.append(("accepted", account, m.cl_ord_id, m.order_id, m.price, m.order_qty))
            elif isinstance(m, OrderCanceled):
                expect.append(("canceled", account, m.cl_ord_id, m.order_id, m.price, m.canceled_qty))
            elif isinstance(m, OrderRejected):
                expect.append(("rejected", account, m.cl_ord_id, None, 1_000_001, 10))
    return expect


async def test_order_events_exactly_once_across_outage_and_restart(tmp_path: Path, pg_dsn: str) -> None:
    # PostgreSQL unreachable at start (nothing listens on the proxy's port yet): order entry
    # goes on, the lag shows, /health says degraded, /ready stays 200; the gateway restarts
    # before the sink caught up; PostgreSQL comes back: everything lands once, then a restart
    # that replays the journal adds nothing
    u = urllib.parse.urlsplit(pg_dsn)
    port = gh.free_port()
    proxy = TcpProxy(port, (u.hostname or "127.0.0.1", u.port or 5432))
    dsn = urllib.parse.urlunsplit(u._replace(netloc=f"{u.username}@127.0.0.1:{port}"))
    cfg = gh.make_config(tmp_path, pg_dsn=dsn, event_log_segment_bytes=8192)
    seen: dict[str, list[object]] = {"mm1": [], "tk1": []}
    lag = await _trade_while_postgres_away(cfg, seen)
    # restart while PostgreSQL is still away, then it comes back
    async with gh.running_gateway(cfg) as gw:
        assert gw.engine.sink is not None and gw.engine.sink.lag_events == lag
        await proxy.start()
        sink = gw.engine.sink
        deadline = asyncio.get_running_loop().time() + 20
        while sink.lag_events or sink.last_event_no < lag:
            assert asyncio.get_running_loop().time() < deadline, sink.stats()
            await asyncio.sleep(0.05)
        status, body = gh.scrape(cfg, "/health")
        assert status == 200 and json.loads(body)["sink"] == "ok"
    await proxy.stop()

    fills = await _table(pg_dsn, "SELECT * FROM fills ORDER BY trade_id")
    execs = {m.trade_id: m for m in seen["tk1"] if isinstance(m, Execution)}
    assert [r["trade_id"] for r in fills] == sorted(execs)
    for r in fills:
        ex = execs[r["trade_id"]]
        assert (r["price"], r["qty"], r["taker_order_id"], r["taker_account"], r["maker_account"]) == (
            ex.last_px, ex.last_qty, ex.order_id, "tk1", "mm1")
    rows = await _table(pg_dsn, "SELECT * FROM order_events ORDER BY event_no")
    # every event number once, fills and order events together: no gap, no duplicate
    assert len(rows) + len(fills) == lag
    got = [(r["type"], r["account"], r["cl_ord_id"], r["order_id"], r["price"], r["qty"]) for r in rows]
    assert sorted(got, key=repr) == sorted(_expected_order_events(seen), key=repr)
    cancel = next(r for r in rows if r["type"] == "canceled")
    assert (cancel["orig_cl_ord_id"], cancel["symbol"], cancel["side"]) == (20, "GOOG", "S")

    # a restart replays the journal and regenerates every event: nothing lands twice
    async with gh.running_gateway(gh.make_config(tmp_path, pg_dsn=pg_dsn)):
        await asyncio.sleep(0.5)
    assert len(await _table(pg_dsn, "SELECT event_no FROM order_events")) == len(rows)
    assert len(await _table(pg_dsn, "SELECT trade_id FROM fills")) == len(fills)
