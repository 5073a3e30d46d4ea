"""Throughput of the protocol hot paths (protocol/codec.pyx, protocol/outbound.pyx).

    python bench/protocol_bench.py [--orders 1000000] [--events 1000000] [--chunk 65536] [--repeat 5]

Prints, each as the median of --repeat runs:
- decode_orders: SOFH-framed NewOrder/CancelOrder/ReplaceOrder frames in --chunk-byte reads (as a
  TCP read would deliver them) -> Command records in an SpscRing; only the decode calls are timed
  (the ring is emptied between calls, outside the timing).  The baseline in the same run is a plain
  Python loop doing the same work with ``struct`` (unpack each block, pack the Command record), and
  the ratio between the two.
- Outbound.drain: Event records (3 acks : 1 fill, i.e. 5 messages per 4 events) -> per-session
  SBE frames over 100 connected sessions; the take() of every dirty session is timed separately.
- scan_responses: server frames -> (templateId, seqNum, clOrdId) triples (load-generator side).
- encode / decode_frames: the Python-level codec, for reference.
"""
from __future__ import annotations

import argparse
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matching.records import (  # noqa: E402
    COMMAND_RECORD_SIZE,
    COMMAND_STRUCT,
    EVENT_RECORD_SIZE,
    CommandType,
    EventType,
    pack_event,
)
from matching.ring import SpscRing  # noqa: E402
from protocol import codec  # noqa: E402
from protocol.messages import CancelOrder, Message, NewOrder, OrderAccepted, ReplaceOrder  # noqa: E402
from protocol.outbound import Outbound  # noqa: E402

SYMBOLS = [f"SYM{i}" for i in range(64)]


def median_rate(n: int, runs: list[float]) -> float:
    return n / statistics.median(runs)


def order_stream(n: int) -> bytes:
    """n order frames: 70% NewOrder, 20% CancelOrder, 10% ReplaceOrder, 64 symbols."""
    frames = []
    for i in range(1000):
        sym = SYMBOLS[i % len(SYMBOLS)]
        if i % 10 < 7:
            m: Message = NewOrder(i, 1_000_000 + (i % 50) * 100, 1 + i % 9, sym, 1 + i % 2, 1, 1)
        elif i % 10 < 9:
            m = CancelOrder(i, i - 3, sym)
        else:
            m = ReplaceOrder(i, i - 5, 1_000_100, 4, sym)
        frames.append(codec.encode(m))
    reps, rest = divmod(n, len(frames))
    return b"".join(frames) * reps + b"".join(frames[:rest])


def bench_decode_orders(data: bytes, n: int, chunk: int, repeat: int) -> list[float]:
    table = codec.SymbolTable(SYMBOLS)
    ring = SpscRing(1 << 16, COMMAND_RECORD_SIZE)
    runs = []
    view = memoryview(data)
    for _ in range(repeat):
        buf = bytearray()
        pos = total = 0
        elapsed = 0.0
        while pos < len(data):
            buf += view[pos:pos + chunk]      # a "read": the unconsumed tail + the next chunk
            pos += chunk
            off = 0
            while True:
                t0 = time.perf_counter()
                off, k, status = codec.decode_orders(buf, off, len(buf), ring, 1, table, 123, True)
                elapsed += time.perf_counter() - t0
                total += k
                ring.pop()                    # the consumer, outside the timing
                if status != codec.RING_FULL:
                    break
            assert status == codec.NEED_MORE
            del buf[:off]
        assert total == n and not buf, (total, n)
        runs.append(elapsed)
    return runs


def bench_struct_baseline(data: bytes, n: int, repeat: int) -> list[float]:
    """The same decode in plain Python: one struct unpack per block, one Command pack per order."""
    sofh = struct.Struct(">IH")
    header = struct.Struct("<HHHH")
    new_order = struct.Struct("<QqQ8sBBBBB")
    cancel = struct.Struct("<QQ8s")
    replace = struct.Struct("<QQqQ8s")
    ids = {s.encode().ljust(8, b"\0"): i for i, s in enumerate(SYMBOLS)}
    out = bytearray(COMMAND_RECORD_SIZE * 4096)
    pack = COMMAND_STRUCT.pack_into
    tail = (0, 0, 0, 0, 0, 0, 0)   # stop_price, display_qty, account_id, scope, pad0, pad1, reserved
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        pos = k = total = 0
        end = len(data)
        while pos < end:
            length, _ = sofh.unpack_from(data, pos)
            _, tid, _, _ = header.unpack_from(data, pos + 6)
            b = pos + 14
            if tid == 10:
                cl, px, qty, sym, side, ot, tif, fl, stp = new_order.unpack_from(data, b)
                pack(out, k * COMMAND_RECORD_SIZE, 0, 123, 1, ids.get(sym, 0xFFFFFFFF), CommandType.CMD_NEW,
                     side, ot,
                     tif, fl, stp, 0, cl, 0, px, qty, *tail)
            elif tid == 11:
                cl, orig, sym = cancel.unpack_from(data, b)
                pack(out, k * COMMAND_RECORD_SIZE, 0, 123, 1, ids.get(sym, 0xFFFFFFFF),
                     CommandType.CMD_CANCEL,
                     0, 0, 0, 0, 0, 0, cl, orig, 0, 0, *tail)
            else:
                cl, orig, px, qty, sym = replace.unpack_from(data, b)
                pack(out, k * COMMAND_RECORD_SIZE, 0, 123, 1, ids.get(sym, 0xFFFFFFFF),
                     CommandType.CMD_REPLACE,
                     0, 0, 0, 0, 0, 0, cl, orig, px, qty, *tail)
            k = (k + 1) & 4095
            total += 1
            pos += length
        runs.append(time.perf_counter() - t0)
        assert total == n
    return runs


def event_batch(n: int, sessions: int) -> bytes:
    recs = []
    for i in range(n):
        sid = 1 + i % sessions
        if i % 4 == 3:
            recs.append(pack_event(type=EventType.EVT_FILL, session_id=sid,
                                   contra_session=1 + (i + 7) % sessions, symbol_id=i % 64, side=1,
                                   cl_ord_id=i, order_id=i, price=1_000_000, qty=1, leaves=0, ref=i,
                                   contra_cl_ord_id=i - 1, contra_order_id=i - 1, ts=i, recv_ts=i))
        else:
            recs.append(pack_event(type=EventType.EVT_ACCEPTED, session_id=sid, symbol_id=i % 64, side=1,
                                   ord_type=1, tif=1, cl_ord_id=i, order_id=i, price=1_000_000, qty=5,
                                   leaves=5, ts=i, recv_ts=i))
    return b"".join(recs)


def bench_outbound(n: int, repeat: int, sessions: int = 100) -> tuple[list[float], list[float], int]:
    """Timed drain and take of n events (rounded to 4096-event batches)."""
    batch_events = 4096
    batch = event_batch(batch_events, sessions)
    rounds = max(1, n // batch_events)
    drain_runs, take_runs = [], []
    for _ in range(repeat):
        ob = Outbound(SYMBOLS, 1024)
        for sid in range(1, sessions + 1):
            ob.set_session(sid, True)
        ring = SpscRing(1 << 13, EVENT_RECORD_SIZE)
        t_drain = t_take = 0.0
        for _ in range(rounds):
            ring.push(batch)
            t0 = time.perf_counter()
            ob.drain(ring, 10**18)
            t1 = time.perf_counter()
            for sid in ob.dirty():
                ob.take(sid)
            t_take += time.perf_counter() - t1
            t_drain += t1 - t0
        drain_runs.append(t_drain)
        take_runs.append(t_take)
    return drain_runs, take_runs, rounds * batch_events


def time_it(fn: Callable[[], object], repeat: int) -> list[float]:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=65536, help="bytes per simulated TCP read")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    data = order_stream(args.orders)
    ours = bench_decode_orders(data, args.orders, args.chunk, args.repeat)
    base = bench_struct_baseline(data, args.orders, max(1, min(args.repeat, 3)))
    r_ours, r_base = median_rate(args.orders, ours), median_rate(args.orders, base)
    mb_s = len(data) / statistics.median(ours) / 1e6
    print(f"decode_orders     {r_ours / 1e6:8.2f} M orders/s  ({mb_s:7.0f} MB/s, "
          f"{1e9 / r_ours:6.1f} ns/order, {args.chunk}-byte reads)")
    print(f"  python struct   {r_base / 1e6:8.2f} M orders/s  (same work, same run)  "
          f"-> ratio {r_ours / r_base:.1f}x")

    drain, take, n_events = bench_outbound(args.events, args.repeat)
    r_drain = median_rate(n_events, drain)
    print(f"Outbound.drain    {r_drain / 1e6:8.2f} M events/s  ({r_drain * 1.25 / 1e6:.2f} M messages/s, "
          f"{1e9 / r_drain:6.1f} ns/event; 3 acks : 1 fill, 100 sessions)")
    with_take = median_rate(n_events, [d + t for d, t in zip(drain, take, strict=True)])
    print(f"  + take()        {with_take / 1e6:8.2f} M events/s including the per-session bytes objects")

    acks = b"".join(codec.encode(OrderAccepted(i, i, i, i, 100, 5, 5, "SYM1", 1, 1, 1)) for i in range(1000))
    frames = acks * max(1, args.orders // 1000)
    n_frames = len(frames) // (len(acks) // 1000)
    scan = time_it(lambda: codec.scan_responses(frames), args.repeat)
    print(f"scan_responses    {median_rate(n_frames, scan) / 1e6:8.2f} M frames/s")

    msgs = [NewOrder(i, 100 * i, i, "SYM1", 1, 1, 1) for i in range(20000)]
    enc = time_it(lambda: [codec.encode(m) for m in msgs], args.repeat)
    blob = b"".join(codec.encode(m) for m in msgs)
    dec = time_it(lambda: codec.decode_frames(blob), args.repeat)
    print(f"encode (Python)   {median_rate(len(msgs), enc) / 1e6:8.2f} M msgs/s")
    print(f"decode_frames     {median_rate(len(msgs), dec) / 1e6:8.2f} M msgs/s (msgspec structs)")


if __name__ == "__main__":
    main()
