#!/usr/bin/env python3
"""Recovery time for a long journal: full replay vs newest snapshot + journal tail (issue 4).

Writes ``--commands`` (10 M) journaled commands through a real ``gateway.engine.Engine`` (the
pump: sequencer, journal, matching core, outbound encoder, risk state), then starts two fresh
engines on that directory and times ``Engine.recover()``:

* full replay: no snapshot, every journaled command goes through the core again;
* snapshot + tail: the snapshot written ``--tail`` (1 M) commands before the end, as the default
  ``snapshot_interval_commands`` would leave it, plus the replay of the journal after it.

Both must end in the same state (the core's snapshot bytes, the sequence, the sessions' next
seqNums), which is checked.  The stream: ``--resting`` (1 M) passive orders far from the
touch first (a big book at snapshot time, on session 9), then a realistic mix of 8 sessions
(tests/support/command_stream.py ``seeded_stream``: every order type, cancels and replaces of recent
orders, self-trade prevention, mass cancels, book queries, invalid commands) in blocks of
``--block`` commands generated once (cached under /tmp) and repeated with fresh ClOrdIDs.
Also printed: the time ``write_snapshot`` held the event loop (capture of every part;
``MatchingCore.snapshot()`` alone) and the file's size.  The journal is read from the page cache
in both runs (it was just written), so the ratio compares CPU work, not disk reads.

Usage:
  python bench/recovery_bench.py                       # 10 M commands, 1 M resting, tail 1 M
  python bench/recovery_bench.py --commands 2000000 --resting 200000 --tail 200000
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.command_stream import (  # noqa: E402
    ADD,
    ADDED_SYMBOL,
    EOS,
    MASS,
    SESSIONS,
    SYMBOLS,
    account_of,
    iter_seeded_stream,
)

from gateway.config.load import load_config  # noqa: E402
from gateway.config.schema import Config  # noqa: E402
from gateway.engine import Engine, RecoveryStats  # noqa: E402
from matching.records import (  # noqa: E402
    COMMAND_RECORD_SIZE,
    UNKNOWN_SYMBOL,
    CommandType,
    OrdType,
    Side,
    TimeInForce,
    pack_command,
)

WORDS = COMMAND_RECORD_SIZE // 8
DEEP_SESSION = SESSIONS + 1
# the mix's symbols, the one it adds half-way, then the deep book's own symbol
BENCH_SYMBOLS = [*SYMBOLS, ADDED_SYMBOL, (100, 1000)]
DEEP_SYMBOL = len(BENCH_SYMBOLS) - 1
T0 = 1_700_000_000_000_000_000


def config(directory: str, snapshot_dir: str) -> Config:
    symbols = ",".join(f'{{"name": "S{i}", "tick": {t}, "max_qty": {q}}}'
                       for i, (t, q) in enumerate(BENCH_SYMBOLS))
    return load_config(None, {
        "HFTGW_JOURNAL_DIR": directory, "HFTGW_SNAPSHOT_DIR": snapshot_dir,
        "HFTGW_SNAPSHOT_INTERVAL_COMMANDS": "0", "HFTGW_SYMBOLS": f"[{symbols}]",
        "HFTGW_AUDIT_LOG": os.path.join(directory, "audit.log"),
    })


def block(n: int, seed: int) -> np.ndarray:
    """n commands of the realistic mix as uint64 words (n x 12), cached under /tmp."""
    path = f"/tmp/hftgw_recovery_block2_{n}_{seed}.bin"
    if not os.path.exists(path):
        t0 = time.perf_counter()
        # symbols come from the config; mass cancels and ends of session over all symbols scan
        # every book (O(resting orders): ~70 ms each with the 1 M deep orders), so the mix keeps
        # only those of one symbol
        recs = [pack_command(**c) for c in iter_seeded_stream(n, seed)
                if c["type"] != ADD and not (c["type"] in (MASS, EOS) and c["symbol_id"] == UNKNOWN_SYMBOL)]
        Path(path).write_bytes(b"".join(recs))
        print(f"# generated {path} ({len(recs):,} commands) in {time.perf_counter() - t0:.1f} s")
    return np.frombuffer(Path(path).read_bytes(), dtype=np.uint64).reshape(-1, WORDS)


def deep_orders(n: int) -> np.ndarray:
    """n passive GTC limit orders of DEEP_SESSION in their own symbol (sells 1,000 to 6,000 ticks
    above the mid, buys 50 to 449 ticks above zero): they rest throughout."""
    tick, _ = BENCH_SYMBOLS[DEEP_SYMBOL]
    mid = tick * 1000
    i = np.arange(n, dtype=np.uint64)
    w = np.zeros((n, WORDS), dtype=np.uint64)
    w[:, 1] = T0 + i
    w[:, 2] = DEEP_SESSION | DEEP_SYMBOL << 32               # session id, symbol id
    side = np.where(i % 2 == 0, Side.SIDE_SELL, Side.SIDE_BUY).astype(np.uint64)
    w[:, 3] = (np.uint64(int(CommandType.CMD_NEW) | int(OrdType.ORD_LIMIT) << 16
                         | int(TimeInForce.TIF_GTC) << 24) | (side << np.uint64(8)))
    w[:, 4] = 10**12 + i                                     # ClOrdID
    sells = mid + tick * (1000 + (i // 2) % 5000)
    buys = tick * (50 + (i // 2) % 400)
    w[:, 6] = np.where(i % 2 == 0, sells, buys)
    w[:, 7] = 1 + i % 10
    w[:, 10] = account_of(DEEP_SESSION)
    return w


def open_sessions(engine: Engine) -> None:
    for sid in range(1, DEEP_SESSION + 1):
        account, account_id = f"acct{account_of(sid)}", account_of(sid)
        engine._register_session(sid, account, account_id)
        engine.inbound_push(pack_command(type=CommandType.CMD_SESSION_OPEN, session_id=sid, ts=T0,
                                         symbol_id=UNKNOWN_SYMBOL, account=account,
                                         account_id=account_id))
    engine.pump()


def feed(engine: Engine, words: np.ndarray) -> None:
    data = words.tobytes()
    step = engine.inbound.capacity * COMMAND_RECORD_SIZE
    view = memoryview(data)
    for off in range(0, len(data), step):
        engine.inbound.push(view[off:off + step])
        engine.pump()


Digest = tuple[int, int, list[int]]


def digest(engine: Engine) -> Digest:
    return (zlib.crc32(engine.core.snapshot()), engine.sequencer.next_seq,
            [engine.outbound.next_seq(s) for s in range(1, DEEP_SESSION + 1)])


def snapshot_now(eng: Engine, seq: int) -> str:
    """Write the snapshot in the foreground, printing what it cost; returns its path."""
    live = eng.core.order_count()
    tc = time.perf_counter()
    core_bytes = eng.core.snapshot()
    core_s = time.perf_counter() - tc
    path = eng.write_snapshot(background=False)
    assert path is not None
    st = eng.snap_stats
    print(f"snapshot at seq {seq:,}: {live:,} live orders; MatchingCore.snapshot() "
          f"{core_s * 1e3:.0f} ms ({len(core_bytes) / 1e6:.0f} MB); capture of every "
          f"part + journal sync (event loop held) {st.capture_s * 1e3:.0f} ms; whole "
          f"write {st.duration_s * 1e3:.0f} ms; file {os.path.getsize(path) / 1e6:.0f} MB")
    print("  capture by part (ms): " + ", ".join(f"{k} {v * 1e3:.0f}" for k, v in st.capture_parts.items()))
    return path


def write_journal(args: argparse.Namespace, jdir: str, sdir: str) -> tuple[Digest, str]:
    """The deep book, then the mix repeated up to --commands, through one engine; the snapshot
    --tail commands before the end.  Returns the final state and the snapshot's path."""
    mix = block(args.block, args.seed)
    eng = Engine(config(jdir, sdir))
    eng.recover()
    eng.journal_retention.append(lambda: 0)   # keep the whole journal for the full replay
    open_sessions(eng)
    t0 = time.perf_counter()
    feed(eng, deep_orders(args.resting))
    total = eng.sequencer.next_seq - 1
    rep = pos = 0
    snap_at = args.commands - args.tail
    snap_path = ""
    while total < args.commands:
        end = min(len(mix), pos + args.commands - total)
        if total < snap_at < total + end - pos:
            end = pos + snap_at - total
        w = mix[pos:end].copy()
        for col in (4, 5):                    # fresh ClOrdIDs (and request ids) per repetition
            nz = w[:, col] != 0
            w[nz, col] += np.uint64((rep + 1) * 10**8)
        w[:, 1] += np.uint64(rep * 10**12)
        feed(eng, w)
        total = eng.sequencer.next_seq - 1
        pos = end
        if pos == len(mix):
            pos, rep = 0, rep + 1
        if total == snap_at:
            snap_path = snapshot_now(eng, total)
    write_s = time.perf_counter() - t0
    want = digest(eng)
    journal_bytes = eng.journal.size
    eng.close()
    del eng
    gc.collect()
    print(f"wrote {total:,} commands ({journal_bytes / 1e9:.2f} GB of journal) in {write_s:.1f} s "
          f"({total / write_s / 1e6:.2f} M/s through the engine)")
    return want, snap_path


def recovered(cfg: Config) -> tuple[RecoveryStats, Digest]:
    """A fresh engine recovered from cfg's journal (and snapshots): the recovery's figures and
    the state it ends in."""
    eng = Engine(cfg)
    stats = eng.recover()
    got = digest(eng)
    eng.close()
    del eng
    gc.collect()
    return stats, got


def book_arguments(doc: str, resting: str, block: tuple[int, str], work_dir: str
                   ) -> argparse.ArgumentParser:
    """The options this bench and bench/snapshot_stall_bench.py share: --resting (a book of 1 M
    passive orders), --block, --seed and --dir, with each bench's own help texts."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resting", type=int, default=1_000_000, help=resting)
    ap.add_argument("--block", type=int, default=block[0], help=block[1])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--dir", default="", help=work_dir)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = book_arguments(__doc__ or "", "deep passive orders sent first", (250_000, "mixed-stream block size"),
                        "work directory (default: a temporary one, removed)")
    ap.add_argument("--commands", type=int, default=10_000_000, help="journaled commands in all")
    ap.add_argument("--tail", type=int, default=1_000_000, help="commands after the snapshot")
    args = ap.parse_args(argv)
    if not 0 < args.tail < args.commands - args.resting:
        ap.error("need 0 < --tail < --commands - --resting")
    work = args.dir or tempfile.mkdtemp(prefix="hftgw-recovery-")
    jdir, sdir, empty = (os.path.join(work, d) for d in ("journal", "snapshots", "none"))
    for d in (jdir, sdir, empty):
        os.makedirs(d, exist_ok=True)
    try:
        want, snap_path = write_journal(args, jdir, sdir)
        stats, got = recovered(config(jdir, empty))
        assert stats.snapshot_seq == 0 and got == want, "full replay differs"
        full_s = stats.elapsed_s
        print(f"full replay:      {stats.commands:>12,} commands in {full_s:7.2f} s "
              f"({stats.commands / full_s / 1e6:.2f} M/s)")
        stats, got = recovered(config(jdir, sdir))
        assert stats.snapshot_path == snap_path and got == want, "snapshot + tail differs"
        print(f"snapshot + tail:  {stats.commands:>12,} commands in {stats.elapsed_s:7.2f} s "
              f"(snapshot at seq {stats.snapshot_seq:,} loaded and restored in "
              f"{stats.snapshot_load_s:.2f} s)")
        print(f"ratio full / snapshot+tail: {full_s / stats.elapsed_s:.1f}x; both end in the same state")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
