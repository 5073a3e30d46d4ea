"""The command streams of bench/matching_bench.py, built (not timed) as 96-byte Command records.

(0) the shared stream of ``../shared/bench/peer_books_bench.py --dump`` (its OBS1 file is kept
    as ``Stream.dump``, so the array_book ceiling runs the very same stream); (a) exchange-core's
    benchmark mix; (b) the AMZN LOBSTER day; (c) a 1 M-order deep book.  Streams (a), (b), (c) are
    made by a recording core fed command by command (``Recorder``), so every cancel and move
    targets a live order; they are cached under /tmp.  Units: prices in ticks of 1 (the symbol's
    tick is 1 price unit), quantities in lots.  See matching_bench's docstring for each mix.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import random
import struct
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matching.core import EventTally, MatchingCore  # noqa: E402
from matching.records import (  # noqa: E402
    COMMAND_RECORD_SIZE,
    EVENT_RECORD_SIZE,
    CancelReason,
    CommandType,
    EventType,
    pack_command,
)
from matching.ring import SpscRing  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
PEER_DRIVER = SHARED / "bench" / "peer_books_bench.py"
LOBSTER = SHARED / "data" / "lobster"
LOBSTER_MESSAGES = LOBSTER / "AMZN_2012-06-21_34200000_57600000_message_1.csv"
LOBSTER_BOOKS = LOBSTER / "AMZN_2012-06-21_34200000_57600000_orderbook_1.csv"
HEADER = struct.Struct("<10q")
MAGIC = 0x3153424F
SESSION = 1
WORDS = COMMAND_RECORD_SIZE // 8          # 12 uint64 words per Command record
NEW, CANCEL, REPLACE = int(CommandType.CMD_NEW), int(CommandType.CMD_CANCEL), int(CommandType.CMD_REPLACE)
BUY, SELL, LIMIT, GTC, IOC = 1, 2, 1, 1, 3



@dataclass
class Stream:
    """Prebuilt commands, the symbol table, and an optional state to start from."""

    name: str
    cmds: bytes
    symbols: list[tuple[int, int]]
    preload: bytes = b""                  # commands run (untimed) before the timed ones
    check: Callable[[EventTally, MatchingCore], str] | None = None
    dump: str | None = None               # the OBS1 file it came from: the ceiling runs it too
    info: dict[str, object] = field(default_factory=dict)

    @property
    def n(self) -> int:
        n: int = len(self.cmds) // COMMAND_RECORD_SIZE  # matching.records has no stub: Any
        return n


# -- running ----------------------------------------------------------------------------------------
class Recorder:
    """A core fed one command at a time, to generate streams whose cancels and moves hit live
    orders (``live``) and to answer the LOBSTER replay's "is it still live" questions."""

    def __init__(self, symbols: list[tuple[int, int]], capacity: int = 1 << 16) -> None:
        self.core = MatchingCore(symbols, initial_orders=capacity)
        self.cq = SpscRing(1 << 16, COMMAND_RECORD_SIZE)
        self.eq = SpscRing(1 << 16, EVENT_RECORD_SIZE)
        self.tally = EventTally()
        self.core.on_events_full = lambda: self.tally.drain(self.eq)
        self.records: list[bytes] = []
        self.seq = 0

    def run(self, record: bytes) -> None:
        self.cq.push(record)
        self.core.process(self.cq, self.eq)
        self.tally.drain(self.eq)
        self.records.append(record)

    def bulk(self, blob: bytes) -> None:
        """Run many records fast (no per-command bookkeeping)."""
        mv = memoryview(blob)
        step = self.cq.capacity * COMMAND_RECORD_SIZE
        for off in range(0, len(blob), step):
            self.cq.push(mv[off:off + step])
            while len(self.cq):
                self.core.process(self.cq, self.eq)
                self.tally.drain(self.eq)

    def cmd(self, **fields: int) -> bytes:
        self.seq += 1
        rec: bytes = pack_command(seq=self.seq, ts=1_700_000_000_000_000_000 + self.seq,
                                  session_id=SESSION, account_id=1, **fields)
        return rec

    def live(self, cl: int) -> dict[str, int] | None:
        return self.core.lookup(SESSION, cl)

    def passive_add(self, rnd: random.Random, cl: int, mid: int, depth: int, max_qty: int) -> None:
        """A GTC limit order of a random side 1..depth ticks behind ``mid``, for 1..max_qty lots."""
        side = rnd.choice((BUY, SELL))
        d = rnd.randint(1, depth)
        self.run(self.cmd(type=NEW, side=side, ord_type=LIMIT, tif=GTC, cl_ord_id=cl,
                          price=mid - d if side == BUY else mid + d, qty=rnd.randint(1, max_qty)))

    def marketable_ioc(self, rnd: random.Random, cl: int, mid: int, reach: int, max_qty: int) -> None:
        """An IOC limit order of a random side ``reach`` ticks through ``mid``, for 1..max_qty lots."""
        side = rnd.choice((BUY, SELL))
        self.run(self.cmd(type=NEW, side=side, ord_type=LIMIT, tif=IOC, cl_ord_id=cl,
                          price=mid + reach if side == BUY else mid - reach, qty=rnd.randint(1, max_qty)))


# -- stream (0): the shared stream --------------------------------------------------------------------
def load_driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("peer_books_bench", PEER_DRIVER)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {PEER_DRIVER}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["peer_books_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


def records(n: int) -> array[int]:
    """Zeroed Command records as uint64 words, seq 1..n, session SESSION, account 1."""
    w = array("Q", bytes(COMMAND_RECORD_SIZE * n))
    seq = array("Q", range(1, n + 1))
    w[0::WORDS] = seq
    w[1::WORDS] = array("Q", (1_700_000_000_000_000_000 + i for i in seq))
    w[2::WORDS] = array("Q", [SESSION] * n)                   # session_id, symbol_id 0
    w[10::WORDS] = array("Q", [1] * n)                        # account_id 1
    return w


def stream_shared(args: argparse.Namespace) -> Stream:
    path = args.stream or f"/tmp/hftgw_stream_{args.ops}_{args.seed}.bin"
    if not os.path.exists(path):
        drv = load_driver()
        t0 = time.perf_counter()
        st = drv.Stream(args.ops, args.seed)
        tmp = f"{path}.{os.getpid()}.tmp"
        st.dump(tmp)
        os.replace(tmp, path)
        print(f"# generated {path} in {time.perf_counter() - t0:.1f}s")
    raw = Path(path).read_bytes()
    h = HEADER.unpack_from(raw)
    if h[0] != MAGIC:
        raise ValueError(f"{path}: not an OBS1 stream")
    _, n, n_ids, ref_fills, ref_fill_qty, n_cancels, final_live = h[:7]
    body = array("i")
    body.frombytes(raw[HEADER.size:HEADER.size + n * 20])
    ops, sides, prices, qtys, ids = body[0::5], body[1::5], body[2::5], body[3::5], body[4::5]
    w = records(n)
    new_w = NEW | (LIMIT << 16) | (GTC << 24)
    w[3::WORDS] = array("Q", [CANCEL if op == 1 else new_w | ((side + 1) << 8)
                              for op, side in zip(ops, sides, strict=True)])
    cancel_id = n_ids + 1
    cl, orig = array("Q", bytes(8 * n)), array("Q", bytes(8 * n))
    for i, (op, oid) in enumerate(zip(ops, ids, strict=True)):
        if op == 1:
            cl[i] = cancel_id
            orig[i] = oid + 1
            cancel_id += 1
        else:
            cl[i] = oid + 1
    w[4::WORDS] = cl
    w[5::WORDS] = orig
    w[6::WORDS] = array("Q", (p if op != 1 else 0 for op, p in zip(ops, prices, strict=True)))
    w[7::WORDS] = array("Q", (q if op != 1 else 0 for op, q in zip(ops, qtys, strict=True)))

    def check(t: EventTally, core: MatchingCore) -> str:
        ok = (t.count(EventType.EVT_FILL) == ref_fills and t.fill_qty == ref_fill_qty
              and t.canceled(CancelReason.CXL_USER) == n_cancels
              and t.count(EventType.EVT_CANCEL_REJECTED) == 0 and t.count(EventType.EVT_REJECTED) == 0
              and core.order_count() == final_live)
        return (f"{'matches the reference' if ok else 'DIFFERS FROM THE REFERENCE'} "
                f"(fills {t.count(EventType.EVT_FILL)}/{ref_fills}, qty {t.fill_qty}/{ref_fill_qty}, "
                f"cancels {t.canceled(CancelReason.CXL_USER)}/{n_cancels}, "
                f"live {core.order_count()}/{final_live})")

    return Stream("0 shared", w.tobytes(), [(1, 1 << 40)], check=check, dump=path,
                  info={"seed": args.seed, "cancels": n_cancels})


# -- stream (a): exchange-core's mix ------------------------------------------------------------------
def stream_exchange_core(n: int, seed: int) -> Stream:
    path = f"/tmp/hftgw_xcore_{n}_{seed}.bin"
    rnd = random.Random(seed)
    mid, half = 100_000, 750              # prices mid +- 1..750: ~750 distinct levels hold ~1,000 orders
    target = 1000
    if not os.path.exists(path):
        rec = Recorder([(1, 1 << 40)])
        live: list[int] = []
        next_cl = 0
        t0 = time.perf_counter()
        for _ in range(n):
            u = rnd.random()
            # exchange-core's proportions; a GTC above ~1,000 resting orders becomes a cancel
            # and a cancel below ~900 a GTC, which holds the book near its size
            if 0.12 <= u < 0.18 and len(live) < 0.9 * target:
                u = 0.0
            elif u < 0.09 and len(live) > 1.05 * target:
                u = 0.15
            if u < 0.09 or not live:
                next_cl += 1
                rec.passive_add(rnd, next_cl, mid, half, 100)
                live.append(next_cl)
                continue
            i = rnd.randrange(len(live))
            o = rec.live(live[i])
            if o is None:                 # filled meanwhile: forget it, send something else
                live[i] = live[-1]
                live.pop()
                o = None
            if u < 0.12:
                next_cl += 1
                rec.marketable_ioc(rnd, next_cl, mid, 20, 150)
            elif o is None:
                continue
            elif u < 0.18:
                rec.run(rec.cmd(type=CANCEL, cl_ord_id=10**12 + rec.seq, orig_cl_ord_id=live[i]))
                live[i] = live[-1]
                live.pop()
            else:                         # move: a new price on the same side, same quantity
                d = rnd.randint(1, half)
                price = mid - d if o["side"] == BUY else mid + d
                if rnd.random() < 0.02:   # now and then one crosses and trades
                    price = mid + 2 if o["side"] == BUY else mid - 2
                rec.run(rec.cmd(type=REPLACE, cl_ord_id=live[i], orig_cl_ord_id=live[i], price=price,
                                qty=o["qty"]))
            if rnd.random() < 0.001:      # the mid wanders a little
                mid += rnd.choice((-1, 1))
        Path(path).write_bytes(b"".join(rec.records))
        print(f"# generated {path} ({len(rec.records):,} commands) in {time.perf_counter() - t0:.1f}s")
    blob = Path(path).read_bytes()
    kinds = array("Q")
    kinds.frombytes(blob)
    types = kinds[3::WORDS]
    mix = {"gtc": 0, "ioc": 0, "cancel": 0, "move": 0}
    for w in types:
        t, tif = w & 0xFF, (w >> 24) & 0xFF
        mix["cancel" if t == CANCEL else "move" if t == REPLACE else "ioc" if tif == IOC else "gtc"] += 1
    total = len(types)
    info: dict[str, object] = {k: f"{100 * v / total:.1f}%" for k, v in mix.items()}

    def check(t: EventTally, core: MatchingCore) -> str:
        levels = len(core.book_levels(0, 1, 10**6)) + len(core.book_levels(0, 2, 10**6))
        rej = t.count(EventType.EVT_REJECTED) + t.count(EventType.EVT_CANCEL_REJECTED)
        return (f"resting at the end {core.order_count()} orders on {levels} levels, "
                f"rejects {rej} (every cancel and move hit a live order: {'yes' if rej == 0 else 'NO'})")

    return Stream("a exchange-core mix", blob, [(1, 1 << 40)], check=check, info=info)


# -- stream (b): the LOBSTER AMZN day -----------------------------------------------------------------
def stream_lobster() -> Stream:
    from gateway.clients.lobster import CANCEL_ID_BASE, IOC_ID_BASE, SEED_ID_BASE, read_lobster

    msgs, books = read_lobster(str(LOBSTER_MESSAGES), str(LOBSTER_BOOKS))
    rec = Recorder([(1, 1 << 40)])
    bbo_agree = fills = qty = 0
    ask_p, ask_q, bid_p, bid_q = books[0]
    rec.run(rec.cmd(type=NEW, side=SELL, ord_type=LIMIT, tif=GTC, cl_ord_id=SEED_ID_BASE + 1, price=ask_p,
                    qty=ask_q))
    rec.run(rec.cmd(type=NEW, side=BUY, ord_type=LIMIT, tif=GTC, cl_ord_id=SEED_ID_BASE + 2, price=bid_p,
                    qty=bid_q))
    for i, (typ, oid, size, price, direction) in enumerate(msgs):
        side = BUY if direction == 1 else SELL
        if typ == 1:
            rec.run(rec.cmd(type=NEW, side=side, ord_type=LIMIT, tif=GTC, cl_ord_id=oid, price=price,
                            qty=size))
        elif typ in (2, 3):
            o = rec.live(oid)
            if o is not None and (typ == 3 or size >= o["leaves"]):
                rec.run(rec.cmd(type=CANCEL, cl_ord_id=CANCEL_ID_BASE + i, orig_cl_ord_id=oid))
            elif o is not None:
                rec.run(rec.cmd(type=REPLACE, cl_ord_id=oid, orig_cl_ord_id=oid, price=price,
                                qty=o["qty"] - size))
        elif typ == 4:
            rec.run(rec.cmd(type=NEW, side=SELL if side == BUY else BUY, ord_type=LIMIT, tif=IOC,
                            cl_ord_id=IOC_ID_BASE + i, price=price, qty=size))
        asks = rec.core.book_levels(0, SELL, 1)
        bids = rec.core.book_levels(0, BUY, 1)
        ask = (asks[0][0], asks[0][1]) if asks else (9999999999, 0)
        bid = (bids[0][0], bids[0][1]) if bids else (-9999999999, 0)
        bbo_agree += (ask[0], ask[1], bid[0], bid[1]) == books[i]
    fills, qty = rec.tally.count(EventType.EVT_FILL), rec.tally.fill_qty
    want = (19755, 904518, 1435, 1533)
    got = (fills, qty, bbo_agree, rec.core.order_count())

    def check(t: EventTally, core: MatchingCore) -> str:
        ok = got == want and (t.count(EventType.EVT_FILL), t.fill_qty, core.order_count()) == (
            fills, qty, got[3])
        return (f"{'same figures as replay-lobster through the gateway' if ok else 'DIFFERENT FIGURES'} "
                f"(fills {fills}, traded {qty}, bbo_agree {bbo_agree}, resting {got[3]}; expected {want})")

    return Stream("b LOBSTER AMZN", b"".join(rec.records), [(1, 1 << 40)], check=check,
                  info={"rows": len(msgs)})


# -- stream (c): a deep book --------------------------------------------------------------------------
DEEP_MID, DEEP_LEVELS = 10_000_000, 5_000


def deep_book(resting: int) -> bytes:
    """Stream (c)'s preload: ``resting`` GTC limits, buys and sells in turn, spread over
    DEEP_LEVELS levels each side of DEEP_MID, 1..10 lots."""
    mid, levels = DEEP_MID, DEEP_LEVELS
    w = records(resting)
    new_w = NEW | (LIMIT << 16) | (GTC << 24)
    w[3::WORDS] = array("Q", (new_w | ((1 + (i & 1)) << 8) for i in range(resting)))
    w[4::WORDS] = array("Q", range(1, resting + 1))
    w[6::WORDS] = array("Q", (mid - 1 - (i >> 1) % levels if i & 1 == 0 else mid + 1 + (i >> 1) % levels
                              for i in range(resting)))
    w[7::WORDS] = array("Q", (1 + i % 10 for i in range(resting)))
    return w.tobytes()


def stream_deep(resting: int, n: int, seed: int) -> Stream:
    mid, levels = DEEP_MID, DEEP_LEVELS
    preload = deep_book(resting)
    path = f"/tmp/hftgw_deep_{resting}_{n}_{seed}.bin"
    if not os.path.exists(path):
        t0 = time.perf_counter()
        rnd = random.Random(seed)
        rec = Recorder([(1, 1 << 40)], capacity=resting + (resting >> 2))
        rec.bulk(preload)
        rec.seq = resting
        rec.records = []
        live = list(range(1, resting + 1))
        next_cl = resting
        for _ in range(n):
            u = rnd.random()
            if u < 0.45:                  # a passive add at any depth
                next_cl += 1
                rec.passive_add(rnd, next_cl, mid, levels, 10)
                live.append(next_cl)
                continue
            if u < 0.55:                  # a marketable IOC at the touch
                next_cl += 1
                rec.marketable_ioc(rnd, next_cl, mid, levels, 30)
                continue
            while True:
                i = rnd.randrange(len(live))
                o = rec.live(live[i])
                if o is not None:
                    break
                live[i] = live[-1]
                live.pop()
            if u < 0.85:                  # cancel a random live order, usually deep in the book
                rec.run(rec.cmd(type=CANCEL, cl_ord_id=10**12 + rec.seq, orig_cl_ord_id=live[i]))
                live[i] = live[-1]
                live.pop()
            else:                         # move it somewhere else on its side
                d = rnd.randint(1, levels)
                rec.run(rec.cmd(type=REPLACE, cl_ord_id=live[i], orig_cl_ord_id=live[i],
                                price=mid - d if o["side"] == BUY else mid + d, qty=o["qty"]))
        Path(path).write_bytes(b"".join(rec.records))
        print(f"# generated {path} ({n:,} commands after {resting:,} resting) in "
              f"{time.perf_counter() - t0:.1f}s")

    def check(t: EventTally, core: MatchingCore) -> str:
        rej = t.count(EventType.EVT_REJECTED) + t.count(EventType.EVT_CANCEL_REJECTED)
        return f"live at the end {core.order_count():,}, rejects {rej}"

    return Stream("c deep book", Path(path).read_bytes(), [(1, 1 << 40)], preload=preload, check=check,
                  info={"resting_before": resting})
