"""protocol.outbound: Event records in a real SpscRing -> per-session SBE frames, decoded back with
the codec; sequence numbers, fills to both sides, snapshots, counters, latency, fill capture."""
from __future__ import annotations

from typing import Any

import pytest

from matching.records import (
    EVENT_RECORD_SIZE,
    CancelReason,
    EventType,
    Liquidity,
    OrdType,
    RejectReason,
    Side,
    TimeInForce,
    pack_event,
)
from matching.ring import SpscRing
from protocol import codec
from protocol.messages import (
    BookLevel,
    BookSnapshot,
    CancelRejected,
    Execution,
    MassCancelDone,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    OrderReplaced,
    OrderTriggered,
)
from protocol.outbound import Outbound

SYMBOLS = ["AAPL", "MSFT", "BRK.B"]
E = EventType


def ring_of(*events: bytes, capacity: int = 256) -> SpscRing:
    ring = SpscRing(capacity, EVENT_RECORD_SIZE)
    for ev in events:
        assert ring.push(ev) == 1
    return ring


def ev(**fields: Any) -> bytes:
    return pack_event(**fields)


def messages(ob: Outbound, sid: int, sofh: bool = True) -> list[Message]:
    data = ob.take(sid)
    msgs, end = codec.decode_frames(data, sofh=sofh)
    assert end == len(data)
    return msgs


@pytest.fixture
def ob() -> Outbound:
    o = Outbound(SYMBOLS, max_sessions=64)
    for sid in (1, 2, 3):
        o.set_session(sid, True)
    return o


def test_every_event_type_maps_to_its_message(ob: Outbound) -> None:
    ring = ring_of(
        ev(type=E.EVT_ACCEPTED, session_id=1, symbol_id=1, ts=1000, cl_ord_id=11, order_id=501,
           price=1_000_000, qty=10, leaves=10, side=Side.SIDE_BUY, ord_type=OrdType.ORD_LIMIT,
           tif=TimeInForce.TIF_GTC),
        ev(type=E.EVT_REJECTED, session_id=1, symbol_id=0xFFFFFFFF, ts=1001, cl_ord_id=12,
           reason=RejectReason.REJ_UNKNOWN_SYMBOL),
        ev(type=E.EVT_CANCELED, session_id=1, symbol_id=2, ts=1002, cl_ord_id=13, ref=11,
           order_id=501, price=1_000_000, qty=4, side=Side.SIDE_SELL, reason=CancelReason.CXL_USER),
        ev(type=E.EVT_REPLACED, session_id=1, symbol_id=1, ts=1003, cl_ord_id=14, ref=11,
           order_id=501, price=990_000, qty=8, leaves=6, side=Side.SIDE_BUY),
        ev(type=E.EVT_CANCEL_REJECTED, session_id=1, symbol_id=1, ts=1004, cl_ord_id=15, ref=99,
           reason=RejectReason.REJ_UNKNOWN_ORDER),
        ev(type=E.EVT_MASS_CANCEL_DONE, session_id=1, symbol_id=0xFFFFFFFF, ts=1005, cl_ord_id=16,
           count=3),
    )
    assert ob.drain(ring, 0) == 6
    assert len(ring) == 0
    assert ob.dirty() == [1]
    assert messages(ob, 1) == [
        OrderAccepted(1, 1000, 11, 501, 1_000_000, 10, 10, "MSFT", 1, 1, 1),
        OrderRejected(2, 1001, 12, "", RejectReason.REJ_UNKNOWN_SYMBOL),
        OrderCanceled(3, 1002, 13, 11, 501, 1_000_000, 4, "BRK.B", 2, CancelReason.CXL_USER),
        OrderReplaced(4, 1003, 14, 11, 501, 990_000, 8, 6, "MSFT", 1),
        CancelRejected(5, 1004, 15, 99, RejectReason.REJ_UNKNOWN_ORDER),
        MassCancelDone(6, 1005, 16, 3),
    ]
    assert ob.next_seq(1) == 7
    assert ob.dirty() == [] and ob.take(1) == b""


def test_version_2_events(ob: Outbound) -> None:
    ring = ring_of(
        # a stop-limit triggered at 1_010_000, limit 1_020_000
        ev(type=E.EVT_TRIGGERED, session_id=2, symbol_id=0, ts=3000, cl_ord_id=51, order_id=801,
           ref=1_010_000, price=1_020_000, qty=30, leaves=30, side=Side.SIDE_BUY,
           ord_type=OrdType.ORD_STOP_LIMIT, tif=TimeInForce.TIF_DAY),
        # self-trade prevention DECREMENT: 12 lots gone, 18 left
        ev(type=E.EVT_CANCELED, session_id=2, symbol_id=0, ts=3001, cl_ord_id=51, ref=51, order_id=801,
           price=1_020_000, qty=12, leaves=18, side=Side.SIDE_BUY, reason=CancelReason.CXL_SELF_TRADE),
        ev(type=E.EVT_CANCELED, session_id=2, symbol_id=0, ts=3002, cl_ord_id=52, ref=52, order_id=802,
           price=1_000_000, qty=5, side=Side.SIDE_SELL, reason=CancelReason.CXL_EXPIRED),
    )
    assert ob.drain(ring, 0) == 3
    assert messages(ob, 2) == [
        OrderTriggered(1, 3000, 51, 801, 1_010_000, 1_020_000, 30, 30, "AAPL", Side.SIDE_BUY,
                       OrdType.ORD_STOP_LIMIT),
        OrderCanceled(2, 3001, 51, 51, 801, 1_020_000, 12, "AAPL", 1, CancelReason.CXL_SELF_TRADE, 18),
        OrderCanceled(3, 3002, 52, 52, 802, 1_000_000, 5, "AAPL", 2, CancelReason.CXL_EXPIRED, 0),
    ]
    assert ob.counters()["cancels"] == {CancelReason.CXL_SELF_TRADE: 1, CancelReason.CXL_EXPIRED: 1}


def test_fill_goes_to_taker_and_maker(ob: Outbound) -> None:
    ring = ring_of(
        ev(type=E.EVT_FILL, session_id=1, contra_session=2, symbol_id=0, ts=2000, side=Side.SIDE_SELL,
           cl_ord_id=21, order_id=601, leaves=5, contra_cl_ord_id=31, contra_order_id=701,
           contra_leaves=0, price=1_500_000, qty=7, ref=9001),
        ev(type=E.EVT_FILL, session_id=1, contra_session=3, symbol_id=0, ts=2000, side=Side.SIDE_SELL,
           cl_ord_id=21, order_id=601, leaves=0, contra_cl_ord_id=41, contra_order_id=702,
           contra_leaves=95, price=1_499_900, qty=5, ref=9002),
        # a self-trade: both executions go to session 2, taker first
        ev(type=E.EVT_FILL, session_id=2, contra_session=2, symbol_id=1, ts=2001, side=Side.SIDE_BUY,
           cl_ord_id=32, order_id=703, leaves=0, contra_cl_ord_id=33, contra_order_id=704,
           contra_leaves=1, price=100, qty=1, ref=9003),
    )
    ob.drain(ring, 0)
    assert ob.dirty() == [1, 2, 3]
    taker = Liquidity.LIQ_TAKER
    maker = Liquidity.LIQ_MAKER
    assert messages(ob, 1) == [
        Execution(1, 2000, 21, 601, 9001, 1_500_000, 7, 5, "AAPL", Side.SIDE_SELL, taker),
        Execution(2, 2000, 21, 601, 9002, 1_499_900, 5, 0, "AAPL", Side.SIDE_SELL, taker)]
    assert messages(ob, 2) == [
        Execution(1, 2000, 31, 701, 9001, 1_500_000, 7, 0, "AAPL", Side.SIDE_BUY, maker),
        Execution(2, 2001, 32, 703, 9003, 100, 1, 0, "MSFT", Side.SIDE_BUY, taker),
        Execution(3, 2001, 33, 704, 9003, 100, 1, 1, "MSFT", Side.SIDE_SELL, maker)]
    assert messages(ob, 3) == [
        Execution(1, 2000, 41, 702, 9002, 1_499_900, 5, 95, "AAPL", Side.SIDE_BUY, maker)]
    c = ob.counters()
    assert (c["fills"], c["traded_qty"], c["messages_out"]) == (3, 13, 6)


def test_disconnected_sessions_are_numbered_not_buffered(ob: Outbound) -> None:
    def accepted(sid: int, cl: int) -> bytes:
        return ev(type=E.EVT_ACCEPTED, session_id=sid, symbol_id=0, cl_ord_id=cl, qty=1, leaves=1)

    ob.set_session(2, False)
    ob.drain(ring_of(accepted(1, 1), accepted(2, 2), accepted(2, 3), accepted(5, 4)), 0)
    assert ob.dirty() == [1]                      # 2 disconnected, 5 never connected
    assert ob.next_seq(2) == 3 and ob.next_seq(5) == 2
    assert ob.take(2) == b"" and ob.take(5) == b""
    ob.set_session(2, True)
    ob.drain(ring_of(accepted(2, 9)), 0)
    assert [(m.seq_num, m.cl_ord_id) for m in messages(ob, 2)] == [(3, 9)]   # type: ignore[union-attr]
    # disconnecting drops what was buffered and not taken
    ob.drain(ring_of(accepted(1, 5)), 0)
    ob.set_session(1, False)
    assert ob.take(1) == b"" and ob.dirty() == []
    assert ob.next_seq(1) == 3


def test_sequence_numbers_can_be_set(ob: Outbound) -> None:
    assert ob.next_seq(7) == 1
    ob.set_next_seq(7, 1000)
    ob.set_session(7, True)
    ob.drain(ring_of(*[ev(type=E.EVT_MASS_CANCEL_DONE, session_id=7, cl_ord_id=i) for i in range(3)]), 0)
    assert [m.seq_num for m in messages(ob, 7)] == [1000, 1001, 1002]   # type: ignore[union-attr]
    with pytest.raises(ValueError):
        ob.set_next_seq(7, 0)
    with pytest.raises(ValueError):
        ob.set_session(64, True)
    with pytest.raises(ValueError):
        ob.next_seq(-1)


def test_websocket_sessions_get_unframed_messages(ob: Outbound) -> None:
    ob.set_session(4, True, sofh=False)
    ob.drain(ring_of(ev(type=E.EVT_MASS_CANCEL_DONE, session_id=4, cl_ord_id=1, count=2),
                     ev(type=E.EVT_MASS_CANCEL_DONE, session_id=4, cl_ord_id=2, count=0)), 0)
    data = ob.take(4)
    assert len(data) == 2 * (8 + 28)
    assert codec.decode_frames(data, sofh=False)[0] == [MassCancelDone(1, 0, 1, 2),
                                                        MassCancelDone(2, 0, 2, 0)]


def snapshot_events(sid: int, ref: int, bids: list[tuple[int, int, int]],
                    asks: list[tuple[int, int, int]]) -> list[bytes]:
    out = [ev(type=E.EVT_BOOK_SNAPSHOT, session_id=sid, symbol_id=1, ts=5, ref=ref, count=len(bids),
              count2=len(asks))]
    for flag, levels in ((0, bids), (1, asks)):
        out += [ev(type=E.EVT_BOOK_LEVEL, session_id=sid, symbol_id=1, price=p, qty=q, count=n, flags=flag)
                for p, q, n in levels]
    return out


def test_book_snapshot_groups_its_levels(ob: Outbound) -> None:
    bids = [(1_000_000, 30, 2), (999_900, 10, 1), (999_000, 5, 5)]
    asks = [(1_000_100, 7, 1), (1_000_500, 70, 9)]
    recs = snapshot_events(1, 77, bids, asks) + snapshot_events(1, 78, [], [])
    assert ob.drain(ring_of(*recs), 0) == len(recs)
    assert messages(ob, 1) == [
        BookSnapshot(1, 5, 77, "MSFT", [BookLevel(*b) for b in bids], [BookLevel(*a) for a in asks]),
        BookSnapshot(2, 5, 78, "MSFT", [], [])]
    assert ob.counters()["events"] == {E.EVT_BOOK_SNAPSHOT: 2, E.EVT_BOOK_LEVEL: 5}


def test_snapshot_waits_for_all_its_levels(ob: Outbound) -> None:
    recs = snapshot_events(1, 5, [(100, 1, 1), (99, 2, 2)], [(101, 3, 3)])
    done = ev(type=E.EVT_MASS_CANCEL_DONE, session_id=1, cl_ord_id=1)
    ring = ring_of(done, *recs[:2])
    assert ob.drain(ring, 0) == 1              # the snapshot stays until its levels are published
    assert len(ring) == 2
    for r in recs[2:]:
        ring.push(r)
    assert ob.drain(ring, 0) == 4
    snap = messages(ob, 1)[1]
    assert isinstance(snap, BookSnapshot)
    assert (snap.bids, snap.asks) == ([BookLevel(100, 1, 1), BookLevel(99, 2, 2)], [BookLevel(101, 3, 3)])


def test_snapshot_larger_than_a_frame_is_cut_to_fit(ob: Outbound) -> None:
    bids = [(10_000_000 - 100 * i, 1, 1) for i in range(3000)]
    asks = [(10_000_100 + 100 * i, 2, 1) for i in range(400)]
    ring = ring_of(*snapshot_events(1, 9, bids, asks), capacity=4096)
    assert ob.drain(ring, 0) == 3401                   # every level record is consumed
    data = ob.take(1)
    assert len(data) <= 65535
    (snap,), _ = codec.decode_frames(data)
    assert isinstance(snap, BookSnapshot)
    assert snap.bids == [BookLevel(*b) for b in bids]  # bids first, then as many asks as fit
    assert snap.asks == [BookLevel(*a) for a in asks[:len(snap.asks)]]
    assert len(snap.bids) + len(snap.asks) == (65535 - 6 - 8 - 32 - 8) // 20


def test_snapshot_claiming_more_levels_than_the_ring_holds_is_sent_empty(ob: Outbound) -> None:
    ring = ring_of(ev(type=E.EVT_BOOK_SNAPSHOT, session_id=1, ref=3, count=100, count2=0), capacity=8)
    assert ob.drain(ring, 0) == 1                      # never waits for levels that cannot come
    assert messages(ob, 1) == [BookSnapshot(1, 0, 3, "AAPL", [], [])]


def test_counters(ob: Outbound) -> None:
    recs = [
        ev(type=E.EVT_ACCEPTED, session_id=1),
        ev(type=E.EVT_ACCEPTED, session_id=2),
        ev(type=E.EVT_REJECTED, session_id=1, reason=RejectReason.REJ_INVALID_PRICE),
        ev(type=E.EVT_REJECTED, session_id=1, reason=RejectReason.REJ_INVALID_PRICE),
        ev(type=E.EVT_CANCEL_REJECTED, session_id=1, reason=RejectReason.REJ_UNKNOWN_ORDER),
        ev(type=E.EVT_CANCEL_REJECTED, session_id=2, reason=RejectReason.REJ_INVALID_PRICE),
        ev(type=E.EVT_CANCELED, session_id=1, reason=CancelReason.CXL_IOC_REMAINDER),
        ev(type=E.EVT_CANCELED, session_id=3, reason=CancelReason.CXL_MASS_CANCEL),
        ev(type=E.EVT_FILL, session_id=1, contra_session=2, qty=40, ref=1),
        ev(type=E.EVT_FILL, session_id=2, contra_session=9, qty=2, ref=2),      # maker not connected
        ev(type=E.EVT_ACCEPTED, session_id=1000),                               # beyond max_sessions
    ]
    assert ob.drain(ring_of(*recs), 0) == len(recs)
    total = sum(len(ob.take(sid)) for sid in ob.dirty())
    c = ob.counters()
    assert c == {
        "events": {E.EVT_ACCEPTED: 3, E.EVT_REJECTED: 2, E.EVT_CANCEL_REJECTED: 2, E.EVT_CANCELED: 2,
                   E.EVT_FILL: 2},
        "rejects": {RejectReason.REJ_INVALID_PRICE: 3, RejectReason.REJ_UNKNOWN_ORDER: 1},
        "cancels": {CancelReason.CXL_IOC_REMAINDER: 1, CancelReason.CXL_MASS_CANCEL: 1},
        "fills": 2,
        "traded_qty": 42,
        "messages_out": 11,          # 12 messages, one for the unconnected session 9
        "bytes_out": total,
        "unroutable": 1,
    }
    # SOFH + header + block: 2 OrderAccepted, 2 OrderRejected, 2 CancelRejected, 2 OrderCanceled, 3 Execution
    assert total == 2 * (14 + 67) + 2 * (14 + 34) + 2 * (14 + 34) + 2 * (14 + 75) + 3 * (14 + 74)


def per_bucket(counts: list[int]) -> list[int]:
    return [counts[0]] + [b - a for a, b in zip(counts, counts[1:], strict=False)]


def test_latency_histogram(ob: Outbound) -> None:
    now = 1_700_000_000_000_000_000
    delays_ns = [1_000, 5_000, 7_000, 10_000, 60_000, 3_000_000, 3_000_000_000]
    recs = [ev(type=E.EVT_ACCEPTED if i % 2 else E.EVT_REJECTED, session_id=1, recv_ts=now - d)
            for i, d in enumerate(delays_ns)]
    recs.append(ev(type=E.EVT_ACCEPTED, session_id=1, recv_ts=0))             # unknown receive time
    recs.append(ev(type=E.EVT_ACCEPTED, session_id=1, recv_ts=now + 50))      # clock skew -> 0
    recs.append(ev(type=E.EVT_MASS_CANCEL_DONE, session_id=1, recv_ts=now - 1))  # not an ack
    ob.drain(ring_of(*recs), True)
    ob.drain(ring_of(ev(type=E.EVT_ACCEPTED, session_id=1, recv_ts=now - 1)), False)  # replay
    # encoded is not sent: nothing is observed before the session's bytes are written
    assert ob.latency()[1][-1] == 0
    ob.take(1)
    ob.acks_written(1, now)
    bounds, counts, total_s = ob.latency()
    assert bounds[:4] == [5e-6, 1e-5, 2.5e-5, 5e-5] and bounds[-2:] == [2.5, float("inf")]
    assert len(bounds) == len(counts) == 20
    expect = [0] * 20
    expect[0] += 3                            # 1 us, 5 us (bounds are inclusive), skew -> 0
    expect[1] += 2                            # 7 us, 10 us
    expect[4] += 1                            # 60 us -> le 100 us
    expect[10] += 1                           # 3 ms -> le 5 ms
    expect[19] += 1                           # 3 s -> +Inf
    assert per_bucket(counts) == expect
    assert counts[-1] == 8                    # cumulative: the last is the count
    assert total_s == pytest.approx(sum(delays_ns) / 1e9)
    ob.acks_written(1, now + 10**9)           # observed once: nothing is left to observe
    assert ob.latency()[1][-1] == 8


def test_latency_bounds_hold_the_alert_threshold(ob: Outbound) -> None:
    # HftgwOrderAckLatencyP99High compares p99 with 200 us: that must be a bucket bound
    assert 2e-4 in ob.latency()[0]


def test_latency_is_taken_at_each_sessions_write(ob: Outbound) -> None:
    read = 1_700_000_000_000_000_000
    # one read of 500 requests on session 1, two reads on session 2, acks interleaved
    recs = [ev(type=E.EVT_ACCEPTED, session_id=1 + (i % 2), recv_ts=read if i % 2 == 0 or i < 100
               else read + 30_000) for i in range(1000)]
    ring = SpscRing(1024, EVENT_RECORD_SIZE)
    for r in recs:
        assert ring.push(r) == 1
    ob.drain(ring, True)
    ob.take(1)
    ob.acks_written(1, read + 150_000)        # 500 acks written 150 us after their read
    bounds, counts, total_s = ob.latency()
    assert counts[-1] == 500 and per_bucket(counts)[bounds.index(2e-4)] == 500
    assert total_s == pytest.approx(500 * 150e-6)
    ob.take(2)
    ob.acks_written(2, read + 3_000_000)      # 50 read at `read`, 450 read 30 us later
    bounds, counts, total_s = ob.latency()
    assert counts[-1] == 1000 and per_bucket(counts)[bounds.index(5e-3)] == 500
    assert total_s == pytest.approx(500 * 150e-6 + 50 * 3e-3 + 450 * 2.97e-3)
    # acks that were not written (no connection) are forgotten, never observed
    ob.drain(ring_of(ev(type=E.EVT_ACCEPTED, session_id=3, recv_ts=read)), True)
    ob.take(3)
    ob.acks_written(3, 0)
    ob.acks_written(3, read + 1)
    assert ob.latency()[1][-1] == 1000
    # an unconnected session's messages are not buffered, so its acks are not noted either
    ob.set_session(2, False)
    ob.drain(ring_of(ev(type=E.EVT_ACCEPTED, session_id=2, recv_ts=read)), True)
    ob.acks_written(2, read + 1)
    assert ob.latency()[1][-1] == 1000


def test_event_capture_numbers_order_events_and_fills(ob: Outbound) -> None:
    fills = [ev(type=E.EVT_FILL, session_id=1, contra_session=2, qty=1, ref=t, price=t) for t in range(1, 5)]
    acc = ev(type=E.EVT_ACCEPTED, session_id=1, cl_ord_id=1, order_id=5, qty=3, leaves=3)
    rej = ev(type=E.EVT_REJECTED, session_id=1, cl_ord_id=2, reason=RejectReason.REJ_INVALID_PRICE)
    can = ev(type=E.EVT_CANCELED, session_id=1, cl_ord_id=3, order_id=5, qty=3,
             reason=CancelReason.CXL_USER)
    rep = ev(type=E.EVT_REPLACED, session_id=1, cl_ord_id=4, ref=1, order_id=5, qty=4)
    trg = ev(type=E.EVT_TRIGGERED, session_id=1, cl_ord_id=5, order_id=6, ref=100)
    crj = ev(type=E.EVT_CANCEL_REJECTED, session_id=1, cl_ord_id=6, ref=9)
    mcd = ev(type=E.EVT_MASS_CANCEL_DONE, session_id=1, cl_ord_id=7, count=2)
    assert ob.event_state() == 0 and ob.take_events() == (1, b"")
    ob.drain(ring_of(acc, fills[0]), 0)               # capture off: numbered, not copied
    assert ob.event_state() == 2 and ob.take_events() == (3, b"")
    ob.capture_events(True)
    ob.drain(ring_of(rej, crj, can, mcd, rep, trg, fills[1]), 0)
    assert ob.take_events() == (3, rej + can + rep + trg + fills[1])   # no CANCEL_REJECTED, MASS_CANCEL_DONE
    assert ob.take_events() == (8, b"") and ob.event_state() == 7
    ob.drain(ring_of(fills[2]), 0)
    ob.capture_events(False)                          # drops the buffered record
    ob.drain(ring_of(fills[3]), 0)
    ob.capture_events(True)
    assert ob.take_events() == (10, b"") and ob.event_state() == 9
    ob.drain(ring_of(acc), 0)
    with pytest.raises(ValueError):
        ob.set_event_state(100)                       # records still buffered
    assert ob.take_events() == (10, acc)
    ob.set_event_state(100)                           # e.g. from a snapshot
    ob.drain(ring_of(acc, acc), 0)
    assert ob.take_events() == (101, acc + acc)
    with pytest.raises(ValueError):
        ob.set_event_state(-1)


def test_many_messages_through_a_wrapping_ring() -> None:
    ob = Outbound(SYMBOLS)
    ob.set_session(1, True)
    ob.set_session(65535, True)
    ring = SpscRing(8, EVENT_RECORD_SIZE)
    n = 5000
    for i in range(n):
        sid = 1 if i % 3 else 65535
        ring.push(ev(type=E.EVT_ACCEPTED, session_id=sid, cl_ord_id=i, symbol_id=i % 3, qty=i, leaves=i))
        if ring.free == 0:
            assert ob.drain(ring, 0) == 8
    ob.drain(ring, 0)
    got = {sid: messages(ob, sid) for sid in ob.dirty()}
    assert sorted(got) == [1, 65535]
    for sid, msgs in got.items():
        want = [i for i in range(n) if (i % 3 != 0) == (sid == 1)]
        assert [m.cl_ord_id for m in msgs] == want                       # type: ignore[union-attr]
        assert [m.seq_num for m in msgs] == list(range(1, len(want) + 1))  # type: ignore[union-attr]
        assert {m.symbol for m in msgs} == ({"MSFT", "BRK.B"} if sid == 1 else {"AAPL"})  # type: ignore[union-attr]


def test_argument_checks() -> None:
    ob = Outbound(SYMBOLS, 4)
    with pytest.raises(ValueError):
        ob.drain(SpscRing(8, 64), 0)
    with pytest.raises(ValueError):
        Outbound(["A", "A"])
    with pytest.raises(ValueError):
        Outbound(SYMBOLS, 0)
