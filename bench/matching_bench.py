#!/usr/bin/env python3
"""Matching-core throughput and latency on the shared 2 M-op order stream (DESIGN §3).

The stream is the one ``/work/shared/bench/peer_books_bench.py --dump`` writes (header of 10
little-endian int64: magic, n_ops, n_ids, ref_fills, ref_fill_qty, n_cancels, final_live,
min_price, max_price, seed; then n_ops records of 5 int32: op (0 add / 1 cancel / 2 marketable),
side (0 buy / 1 sell), price_ticks, qty_lots, order_id).  It is converted up front (not timed)
to 64-byte Command records: adds and marketable orders -> CMD_NEW GTC limit, cancels ->
CMD_CANCEL of that order; one session, one symbol, tick 1.  Only ``MatchingCore.process`` is
timed, batch by batch; events are consumed between batches by ``matching.core.EventTally`` (a
C-level counter).  The result is checked against the stream header: maker fills, filled
quantity, every cancel succeeded.

Also printed: per-op latency estimates (each batch's time / its commands, HDR histogram), the
PyPI peers on the same stream through the shared driver (ratio measured in the same run), and
bytes per resting order with 1 M resting orders.

Usage:
  python bench/matching_bench.py                       # 2 M ops, seed 1, cached under /tmp
  python bench/matching_bench.py --ops 200000 --repeat 3 --peers none
  python bench/matching_bench.py --stream /tmp/hftgw_stream_2m.bin --batch 4096
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import statistics
import struct
import sys
import time
from array import array
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdrh.histogram import HdrHistogram  # noqa: E402

from matching.core import EventTally, MatchingCore  # noqa: E402
from matching.records import CancelReason, CommandType, EventType  # noqa: E402
from matching.ring import SpscRing  # noqa: E402

PEER_DRIVER = Path("/work/shared/bench/peer_books_bench.py")
HEADER = struct.Struct("<10q")
MAGIC = 0x3153424F
SESSION = 1


def load_driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("peer_books_bench", PEER_DRIVER)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {PEER_DRIVER}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["peer_books_bench"] = mod        # dataclass-free, but keep pickling sane
    spec.loader.exec_module(mod)
    return mod


class StreamFile:
    """The dumped stream: header fields and the five int32 columns."""

    def __init__(self, path: str) -> None:
        raw = Path(path).read_bytes()
        h = HEADER.unpack_from(raw)
        if h[0] != MAGIC:
            raise ValueError(f"{path}: not an OBS1 stream")
        (_, self.n_ops, self.n_ids, self.ref_fills, self.ref_fill_qty, self.n_cancels,
         self.final_live, self.min_price, self.max_price, self.seed) = h
        body = array("i")
        body.frombytes(raw[HEADER.size:HEADER.size + self.n_ops * 20])
        if sys.byteorder != "little":
            body.byteswap()
        self.ops, self.sides, self.prices = body[0::5], body[1::5], body[2::5]
        self.qtys, self.ids = body[3::5], body[4::5]


def ensure_stream(args: argparse.Namespace) -> str:
    if args.stream:
        path = args.stream
    else:
        path = f"/tmp/hftgw_stream_{args.ops}_{args.seed}.bin"
    if not os.path.exists(path):
        drv = load_driver()
        t0 = time.perf_counter()
        st = drv.Stream(args.ops, args.seed)
        tmp = f"{path}.{os.getpid()}.tmp"
        st.dump(tmp)
        os.replace(tmp, path)
        print(f"# generated {path} in {time.perf_counter() - t0:.1f}s")
    return path


def to_commands(s: StreamFile) -> bytes:
    """64-byte Command records for the stream (column-wise, no Python object per record)."""
    n = s.n_ops
    words = array("Q", bytes(8 * 8 * n))
    seq = array("Q", range(1, n + 1))
    words[0::8] = seq                                            # seq
    words[1::8] = array("Q", (1_700_000_000_000_000_000 + i for i in seq))   # ts
    words[2::8] = array("Q", [SESSION] * n)                      # session_id, symbol_id 0
    new_w = CommandType.CMD_NEW | (1 << 16) | (1 << 24)           # type, ord_type limit, tif GTC
    cancel_w = int(CommandType.CMD_CANCEL)
    words[3::8] = array("Q", [cancel_w if op == 1 else new_w | ((side + 1) << 8)
                              for op, side in zip(s.ops, s.sides, strict=True)])
    cancel_id = s.n_ids + 1
    cl, orig = array("Q", bytes(8 * n)), array("Q", bytes(8 * n))
    for i, (op, oid) in enumerate(zip(s.ops, s.ids, strict=True)):
        if op == 1:
            cl[i] = cancel_id
            orig[i] = oid + 1
            cancel_id += 1
        else:
            cl[i] = oid + 1
    words[4::8] = cl
    words[5::8] = orig
    words[6::8] = array("Q", (p if op != 1 else 0 for op, p in zip(s.ops, s.prices, strict=True)))
    words[7::8] = array("Q", (q if op != 1 else 0 for op, q in zip(s.ops, s.qtys, strict=True)))
    return words.tobytes()


def run_core(cmds: bytes, n: int, batch: int, hist: HdrHistogram | None,
             ring_slots: int = 1 << 15) -> tuple[float, float, EventTally, dict]:
    """Feed the commands through a fresh core; returns (wall seconds, thread-CPU seconds) spent
    inside process(), the event tally and the core's memory_stats()."""
    core = MatchingCore([(1, 1 << 40)])
    cq = SpscRing(ring_slots, 64)
    eq = SpscRing(ring_slots, 128)
    tally = EventTally()
    core.on_events_full = lambda: tally.drain(eq)
    mv = memoryview(cmds)
    batch = min(batch, cq.capacity)
    pos = done = 0
    wall = cpu = 0
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    gc.collect()
    gc.disable()
    try:
        while done < n:
            if pos < n and cq.free >= batch:
                k = min(batch, n - pos)
                cq.push(mv[pos * 64:(pos + k) * 64])
                pos += k
            c0 = cpu_clock()
            t0 = clock()
            k = core.process(cq, eq, batch)
            dt = clock() - t0
            cpu += cpu_clock() - c0
            wall += dt
            if hist is not None and k:
                hist.record_value(max(1, dt * 1000 // k))       # ps per op
            done += k
            tally.drain(eq)
    finally:
        gc.enable()
    return wall / 1e9, cpu / 1e9, tally, core.memory_stats()


def memory_phase(n: int) -> tuple[dict, float]:
    """n non-crossing GTC orders (bids below 1,000,000, asks above, 1,000 levels a side)."""
    core = MatchingCore([(1, 1 << 40)])
    words = array("Q", bytes(64 * n))
    words[0::8] = array("Q", range(1, n + 1))
    words[2::8] = array("Q", [SESSION] * n)
    new_w = CommandType.CMD_NEW | (1 << 16) | (1 << 24)
    words[3::8] = array("Q", (new_w | ((1 + (i & 1)) << 8) for i in range(n)))
    words[4::8] = array("Q", range(1, n + 1))
    words[6::8] = array("Q", (1_000_000 - 1 - (i >> 1) % 1000 if i & 1 == 0 else
                              1_000_000 + 1 + (i >> 1) % 1000 for i in range(n)))
    words[7::8] = array("Q", (1 + i % 10 for i in range(n)))
    blob = memoryview(words.tobytes())
    cq, eq = SpscRing(1 << 16, 64), SpscRing(1 << 17, 128)
    tally = EventTally()
    pos = done = 0
    t = 0.0
    while done < n:
        if pos < n and cq.free:
            k = min(cq.free, n - pos)
            cq.push(blob[pos * 64:(pos + k) * 64])
            pos += k
        t0 = time.perf_counter()
        done += core.process(cq, eq)
        t += time.perf_counter() - t0
        tally.drain(eq)
    st = core.memory_stats()
    assert st["resting_orders"] == n == tally.count(EventType.EVT_ACCEPTED), st
    return st, n / t


def run_peers(names: list[str], ops: int, seed: int) -> dict[str, float]:
    if not names:
        return {}
    drv = load_driver()
    t0 = time.perf_counter()
    st = drv.Stream(ops, seed)
    print(f"# peers: regenerated the stream in Python ({time.perf_counter() - t0:.1f}s, not timed)")
    rates = {}
    for name in names:
        dist, runner = drv.PEERS[name]
        ver = drv._version(dist)
        try:
            gc.collect()
            secs, fills, fqty, cok, cfail, _ = runner(st)
        except Exception as exc:          # an absent or broken peer is reported, not fatal
            print(f"  {name:<20} {ver:<10} SKIPPED: {type(exc).__name__}: {exc}")
            continue
        ok = fills == st.ref_fills and fqty == st.ref_fill_qty and cfail == 0
        rates[name] = ops / secs
        print(f"  {name:<20} {ver:<10} ops/s={ops / secs:>12,.0f}  matches_ref={'yes' if ok else 'NO'}")
    return rates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=2_000_000, help="stream length when generating")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stream", help="dumped stream to use (generated there if missing)")
    ap.add_argument("--batch", type=int, default=4096, help="commands per process() call")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs, fresh core each (median)")
    ap.add_argument("--peers", default="lightmatchingengine,pyorderbook",
                    help="comma list of peers from the shared driver, or 'none'")
    ap.add_argument("--memory-orders", type=int, default=1_000_000,
                    help="resting orders for the bytes-per-order phase (0 = skip)")
    args = ap.parse_args(argv)

    path = ensure_stream(args)
    s = StreamFile(path)
    t0 = time.perf_counter()
    cmds = to_commands(s)
    print(f"# stream {path}: ops={s.n_ops} seed={s.seed} cancels={s.n_cancels} "
          f"ref_fills={s.ref_fills} ref_fill_qty={s.ref_fill_qty} final_live={s.final_live} "
          f"(converted to Command records in {time.perf_counter() - t0:.1f}s)")

    rates, cpu_rates = [], []
    hist = HdrHistogram(1, 10**12, 3)
    rc = 0
    for r in range(max(1, args.repeat)):
        secs, cpu_secs, tally, mem = run_core(cmds, s.n_ops, args.batch, hist)
        rates.append(s.n_ops / secs)
        cpu_rates.append(s.n_ops / cpu_secs)
        fills = tally.count(EventType.EVT_FILL)
        ok = (fills == s.ref_fills and tally.fill_qty == s.ref_fill_qty
              and tally.canceled(CancelReason.CXL_USER) == s.n_cancels
              and tally.count(EventType.EVT_CANCEL_REJECTED) == 0
              and tally.count(EventType.EVT_REJECTED) == 0
              and mem["resting_orders"] == s.final_live)
        if r == 0:
            print(f"# events={tally.events} fills={fills} fill_qty={tally.fill_qty} "
                  f"cancels_ok={tally.canceled(CancelReason.CXL_USER)}/{s.n_cancels} "
                  f"resting={mem['resting_orders']}")
            print(f"matches_ref {'yes' if ok else 'NO'}")
        if not ok:
            rc = 1
    med = statistics.median(rates)
    print(f"hftgw.core ops/s={med:,.0f} (wall, median of {len(rates)}; min {min(rates):,.0f} "
          f"max {max(rates):,.0f}) batch={args.batch}")
    print(f"hftgw.core ops/s={statistics.median(cpu_rates):,.0f} (thread CPU time, median; "
          "insensitive to other processes taking the CPU)")
    pct = "  ".join(f"p{p}={hist.get_value_at_percentile(p) / 1000:.1f}ns"
                    for p in (50, 90, 99, 99.9))
    print(f"per-op latency estimate (batch wall time / batch size, {hist.get_total_count()} batches): "
          f"{pct}  max={hist.get_max_value() / 1000:.1f}ns")
    print(f"per-batch latency at {args.batch} ops: "
          f"p50={hist.get_value_at_percentile(50) * args.batch / 1e6:.1f}us "
          f"p99={hist.get_value_at_percentile(99) * args.batch / 1e6:.1f}us")

    names = [] if args.peers == "none" else [p.strip() for p in args.peers.split(",") if p.strip()]
    peer_rates = run_peers(names, s.n_ops, s.seed)
    for name, rate in peer_rates.items():
        print(f"ratio hftgw.core / {name} = {med / rate:,.1f}x")

    if args.memory_orders:
        st, add_rate = memory_phase(args.memory_orders)
        n = st["resting_orders"]
        print(f"memory with {n:,} resting orders: {st['bytes_per_order']:.1f} bytes/order total "
              f"(pool {st['pool_bytes'] / n:.1f} = {st['order_struct_bytes']} B struct x capacity "
              f"{st['pool_capacity']:,}; hash {st['hash_bytes'] / n:.1f}; "
              f"levels {st['level_bytes'] / n:.2f} for {st['levels']} levels); adds {add_rate:,.0f}/s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
