"""A background snapshot is captured copy-on-write while the orders keep flowing (issue 12:
gateway/engine/snapshots.py, matching/core_capture.pxi): a real server process gets a
pipelined stream that crosses its snapshot points, is killed, and each snapshot file it wrote
must restore to exactly the state a full replay of the journal through that snapshot's seq
gives."""
from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

from support.gateway_harness import limit, login, make_config, metric_value, scrape, serve_process

from gateway.engine import Engine
from matching.records import Side
from persistence.journal import Journal
from persistence.snapshot import list_snapshots
from protocol.messages import CancelOrder, OrderAccepted

BUY, SELL = Side.SIDE_BUY, Side.SIDE_SELL
N = 90_000
INTERVAL = 15_000
WRITTEN = re.compile(r"snapshot at seq (\d+) written .* copied in (\d+) steps while commands "
                     r"through seq (\d+) ran")


def _state(engine: Engine) -> dict[str, Any]:
    core = engine.core
    return {
        "core": core.snapshot(),
        "books": [core.book_levels(s, side, 10_000) for s in range(core.n_symbols) for side in (1, 2)],
        "next_seq": engine.sequencer.next_seq,
        "session_seq": [engine.outbound.next_seq(sid) for sid in range(1, 4)],
        "sessions": (engine.account_of_session, engine.accounts),
    }


def _journal_through(src: Path, dest: Path, seq: int) -> None:
    # the journal records of ``src`` up to ``seq``, as a journal of their own in ``dest``
    dest.mkdir()
    with Journal(str(src)) as j, Journal(str(dest)) as out:
        for chunk in j.replay(0):
            view = memoryview(chunk)
            keep = bytearray()
            for off in range(0, len(view), 96):
                if int.from_bytes(view[off:off + 8], "little") <= seq:
                    keep += view[off:off + 96]
            if keep:
                out.append(bytes(keep))


async def test_snapshot_taken_while_orders_flow_restores_the_book_at_its_seq(tmp_path: Path) -> None:
    live = tmp_path / "live"
    env = {"HFTGW_SNAPSHOT_INTERVAL_COMMANDS": str(INTERVAL), "HFTGW_SNAPSHOT_KEEP": "10"}
    with serve_process(live, env) as (cfg, proc):
        a = await login(cfg, "alice")
        b = await login(cfg, "bob")
        # pipelined, never waiting for answers: the sequenced stream runs on through every
        # snapshot point while its capture is copied; bob's buys fill the best asks (pool pages
        # written near the front), alice's cancels hit orders anywhere behind
        for i in range(N):
            a.send(limit(1 + i, SELL, 2_000_000 + 100 * (i % 4000), 1 + i % 5))
            if i % 5 == 0:
                b.send(limit(1 + i, BUY, 2_000_000 + 100 * (i % 7), 3))
            if i % 9 == 0 and i > 3000:
                a.send(CancelOrder(cl_ord_id=10**7 + i, orig_cl_ord_id=1 + i - 2999, symbol="AAPL"))
            if i % 2000 == 0:
                await a.drain()
                await b.drain()
        await a.recv_until(lambda m: isinstance(m, OrderAccepted) and m.cl_ord_id == N, timeout=60)
        text = ""
        for _ in range(300):
            text = scrape(cfg)[1]
            if metric_value(text, "hftgw_snapshots_written_total") >= 5:
                break
            await asyncio.sleep(0.05)
        assert metric_value(text, "hftgw_snapshots_written_total") >= 5
        assert metric_value(text, "hftgw_snapshot_failures_total") == 0
        proc.kill()                          # no shutdown snapshot
        proc.wait()
        out = proc.stdout.read().decode() if proc.stdout else ""
    written = {int(m.group(1)): (int(m.group(2)), int(m.group(3))) for m in WRITTEN.finditer(out)}
    kept = list_snapshots(str(live))
    assert len(kept) >= 3 and all(seq in written for seq, _ in kept)
    # commands were sequenced (and so matched) while at least one capture was being copied
    assert any(steps > 1 and through > seq for seq, (steps, through) in written.items())
    for k, (seq, path) in enumerate(kept):
        ref, snap = tmp_path / f"ref{k}", tmp_path / f"snap{k}"
        _journal_through(live, ref, seq)
        full = Engine(make_config(ref, snapshot_interval_commands=0))
        stats = full.recover()
        # (a start after a crash then journals a detach per session: both runs do the same)
        assert (stats.snapshot_seq, stats.commands) == (0, seq)
        want = _state(full)
        full.close()
        shutil.copytree(ref, snap)
        shutil.copy(path, snap)
        restored = Engine(make_config(snap, snapshot_interval_commands=0))
        stats = restored.recover()
        # nothing of the journal replayed: the commands counted are the start's own detaches
        assert stats.snapshot_seq == seq and stats.commands <= 2
        assert _state(restored) == want
        assert sum(n for _, n, _ in want["books"][1]) > 1000     # a real book, not an empty one
        restored.close()
