"""``hftgw md`` as a user runs it, against a real ``hftgw serve`` process: subscribe, see the
snapshot, then the BBO, trade and depth update an order over TCP causes."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from support.gateway_harness import login, metric_value, scrape, serve_process

from matching.records import OrdType, Side, TimeInForce
from protocol.messages import NewOrder


def _order(cl: int, side: int, price: int, qty: int) -> NewOrder:
    return NewOrder(cl_ord_id=cl, price=price, order_qty=qty, symbol="MSFT", side=side,
                    ord_type=OrdType.ORD_LIMIT, time_in_force=TimeInForce.TIF_GTC)


async def _trade(cfg: object, account: str, order: NewOrder) -> None:
    c = await login(cfg, account)  # type: ignore[arg-type]
    c.send(order)
    await c.recv()
    await c.logout()


def test_md_command_prints_snapshot_and_updates(tmp_path: Path) -> None:
    with serve_process(tmp_path) as (cfg, _):
        asyncio.run(_trade(cfg, "alice", _order(1, Side.SIDE_SELL, 3_000_000, 100)))
        cmds = {enc: subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "md", "MSFT", "--connect", cfg.ws_listen,
             "--levels", "5", "--count", "6", "--encoding", enc],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for enc in ("json", "binary")}
        deadline = time.monotonic() + 20
        while metric_value(scrape(cfg)[1], "hftgw_md_subscriptions", 'channel="depth"') < 2:
            assert time.monotonic() < deadline, "the md commands did not subscribe"
            time.sleep(0.05)
        asyncio.run(_trade(cfg, "bob", _order(1, Side.SIDE_BUY, 3_000_000, 30)))
        out = {enc: p.communicate(timeout=20)[0] for enc, p in cmds.items()}
        assert all(p.returncode == 0 for p in cmds.values()), out
        js = out["json"].splitlines()
        assert js[0].startswith('> {"op":"subscribe"') and '"result":"subscribed"' in js[1]
        assert js[2] == ('< {"type":"depthSnapshot","symbol":"MSFT","transactTime":'
                         + js[2].split('"transactTime":')[1].split(",")[0]
                         + ',"lastSeq":1,"levels":5,"bids":[],"asks":[[3000000,100,1]]}')
        rest = "\n".join(js[3:])
        assert '"askSize":100' in rest and '"askSize":70' in rest
        assert '"trades":[{"tradeId":1,"price":3000000,"qty":30,"aggressorSide":"BUY"' in rest
        assert '"type":"depthUpdate","symbol":"MSFT"' in rest and '"asks":[[3000000,70,1]]' in rest
        bn = out["binary"]
        assert "< DepthSnapshot symbol=MSFT last_seq=1 levels=5 bids=[] asks=[300 x 100 (1)]" in bn
        assert "< Trade symbol=MSFT" in bn and "price=300 qty=30 aggressor_side=BUY" in bn
        assert "< DepthUpdate symbol=MSFT first_seq=2 last_seq=2 levels=5 bids=[] asks=[300 x 70 (1)]" in bn
        bad = subprocess.run([sys.executable, "-m", "gateway.cli", "md", "MSFT", "--connect",
                              "127.0.0.1:1"], capture_output=True, text=True, timeout=20)
        assert bad.returncode == 2 and "cannot subscribe" in bad.stderr
