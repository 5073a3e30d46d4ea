"""Fills reported to clients land in PostgreSQL exactly once, also across a restart that replays
the journal (the real PostgreSQL at 127.0.0.1:5432, a private database per test)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from gateway_harness import login, make_config, metric_value, running_gateway, scrape

from matching.records import OrdType, Side, TimeInForce
from protocol.messages import Execution, NewOrder


def order(cl: int, side: int, price: int, qty: int) -> NewOrder:
    return NewOrder(cl_ord_id=cl, price=price, order_qty=qty, symbol="GOOG", side=side,
                    ord_type=OrdType.ORD_LIMIT, time_in_force=TimeInForce.TIF_GTC)


async def _rows(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch("SELECT * FROM fills ORDER BY trade_id")
    finally:
        await conn.close()


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
    cfg = make_config(tmp_path, pg_dsn=pg_dsn)
    reported: dict[int, Execution] = {}
    async with running_gateway(cfg):
        mk = await login(cfg, "mm1")
        tk = await login(cfg, "tk1")
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
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_sink_rows_total") == len(reported)
        assert metric_value(text, "hftgw_sink_lag_rows") == 0
        await mk.logout()
        await tk.logout()
    # the restart replays every command and so regenerates every fill: none may land twice
    async with running_gateway(cfg):
        await asyncio.sleep(0.5)
        rows = await _rows(pg_dsn)
        assert [r["trade_id"] for r in rows] == sorted(reported)
