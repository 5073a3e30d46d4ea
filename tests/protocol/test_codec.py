"""protocol.codec: round trips, framing under arbitrary TCP segmentation, the batch decode of orders
into the inbound ring, and every malformed-input path."""
from __future__ import annotations

import re
import struct
from array import array
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matching.records import (
    COMMAND_FIELDS,
    COMMAND_RECORD_SIZE,
    UNKNOWN_SYMBOL,
    CommandType,
    RejectReason,
    unpack_command,
)
from matching.ring import SpscRing
from protocol import codec
from protocol.messages import (
    MESSAGE_TYPES,
    BookLevel,
    BookQuery,
    BookSnapshot,
    CancelOrder,
    CancelRejected,
    EndOfSession,
    Execution,
    Heartbeat,
    Login,
    LoginAccepted,
    Logout,
    MassCancel,
    MassCancelDone,
    Message,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    OrderReplaced,
    OrderTriggered,
    ProtocolError,
    ReplaceOrder,
    SessionReject,
)
from protocol.symbols import symbol_wire

SYMBOLS = ["AAPL", "MSFT", "BRK.B", "ZZZZZZZZ"]
TABLE = codec.SymbolTable(SYMBOLS)
RANGES = {"uint8": (0, 2**8 - 1), "uint16": (0, 2**16 - 1), "uint32": (0, 2**32 - 1),
          "uint64": (0, 2**64 - 1), "int64": (-(2**63), 2**63 - 1)}


# -- strategies (from the codec's own LAYOUT: this file tests the codec against itself;
#    tests/protocol/test_schema.py checks it against the XML) ------------------------------------------------
def field_strategy(prim: str, size: int) -> st.SearchStrategy[Any]:
    if prim == "char":
        return st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.", max_size=size)
    lo, hi = RANGES[prim]
    return st.integers(lo, hi)


LEVELS = st.lists(st.builds(BookLevel, st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**64 - 1),
                            st.integers(0, 2**32 - 1)), max_size=6)


def message_strategy(tid: int) -> st.SearchStrategy[Message]:
    fields = [field_strategy(prim, size) for _, _, size, prim in codec.LAYOUT[tid][2]]
    extra: list[st.SearchStrategy[Any]] = [LEVELS for _ in codec.GROUPS.get(tid, [])]
    extra += [st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=300)
              for _ in codec.VAR_DATA.get(tid, [])]
    return st.builds(MESSAGE_TYPES[tid], *fields, *extra)


ANY_MESSAGE = st.one_of([message_strategy(tid) for tid in sorted(codec.LAYOUT)])


def frame(msg: Message, sofh: bool = True) -> bytes:
    return codec.encode(msg, sofh=sofh)


# -- round trips ------------------------------------------------------------------------------------
@pytest.mark.parametrize("tid", sorted(codec.LAYOUT))
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_round_trip_every_template(tid: int, data: st.DataObject) -> None:
    msg = data.draw(message_strategy(tid))
    raw = codec.encode(msg, sofh=False)
    assert codec.decode_message(raw) == msg
    assert codec.message_length(raw) == len(raw)
    framed = codec.encode(msg)
    assert framed[6:] == raw
    assert struct.unpack(">IH", framed[:6]) == (len(framed), 0xEB50)
    assert codec.decode_frames(framed) == ([msg], len(framed))
    assert codec.decode_frames(raw, sofh=False) == ([msg], len(raw))
    assert codec.decode_next(framed) == (msg, len(framed))


@settings(max_examples=100, deadline=None)
@given(msgs=st.lists(ANY_MESSAGE, min_size=1, max_size=12), sofh=st.booleans())
def test_decode_frames_many(msgs: list[Message], sofh: bool) -> None:
    buf = b"".join(frame(m, sofh) for m in msgs)
    assert codec.decode_frames(buf, sofh=sofh) == (msgs, len(buf))
    # with a partial tail: everything before it, and the offset where the tail starts
    tail = frame(msgs[0], sofh)[:-1]
    assert codec.decode_frames(buf + tail, sofh=sofh) == (msgs, len(buf))


def test_symbol_padding_on_the_wire() -> None:
    raw = codec.encode(NewOrder(1, 100, 2, "AB", 1, 1, 1), sofh=False)
    sym = raw[8 + 24:8 + 32]
    assert sym == b"AB\0\0\0\0\0\0"
    spaced = raw[:8 + 24] + b"AB      " + raw[8 + 32:]
    msg = codec.decode_message(spaced)
    assert isinstance(msg, NewOrder) and msg.symbol == "AB"


def test_encode_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        codec.encode(NewOrder(-1, 100, 2, "AB", 1, 1, 1))          # negative ClOrdId
    with pytest.raises(ValueError):
        codec.encode(NewOrder(1, 2**63, 2, "AB", 1, 1, 1))         # price beyond int64
    with pytest.raises(ValueError):
        codec.encode(NewOrder(1, 100, 2, "ABCDEFGHI", 1, 1, 1))    # 9-byte symbol
    with pytest.raises(ValueError):
        codec.encode(NewOrder(1, 100, 2, "ÄB", 1, 1, 1))           # not ASCII
    with pytest.raises(ValueError):
        codec.encode(Login(1000, 1, 0, 0, "x" * 65536))                # token over uint16
    with pytest.raises(ValueError):
        codec.encode(BookSnapshot(1, 1, 1, "A", [BookLevel(1, 1, 1)] * 3300))  # frame > 65535
    with pytest.raises(TypeError):
        codec.encode(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        codec.encode(NewOrder(1, 100, 2, None, 1, 1, 1))  # type: ignore[arg-type]


# -- segmentation: split at every byte boundary, and one byte at a time ------------------------------
def sample_stream() -> list[Message]:
    msgs: list[Message] = [Login(1000, 1, 1, 0, "eyJhbGciOi.J9.sig")]
    for i in range(1, 9):
        msgs += [NewOrder(i, 1_000_000 + i * 100, i, SYMBOLS[i % 4], 1 + i % 2, 1, 1, i % 2, 0),
                 CancelOrder(100 + i, i, SYMBOLS[i % 4]),
                 ReplaceOrder(200 + i, i, 999_900, 3 * i, SYMBOLS[(i + 1) % 4])]
    msgs += [NewOrder(50, 1_000_000, 9, "AAPL", 1, 4, 0, 0, 3, stop_px=990_000),     # stop-limit DAY
             NewOrder(51, 1_000_000, 90, "MSFT", 2, 1, 1, 1, 0, display_qty=10),     # iceberg
             Heartbeat(), MassCancel(300, "", 0), MassCancel(301, "MSFT", 2, 1), BookQuery(7, "AAPL", 5),
             EndOfSession(302, "AAPL"),
             OrderAccepted(1, 2, 3, 4, 5, 6, 7, "AAPL", 1, 1, 1),
             OrderTriggered(2, 3, 50, 4, 990_000, 1_000_000, 9, 9, "AAPL", 1, 4),
             BookSnapshot(9, 9, 7, "AAPL", [BookLevel(1, 2, 3)], [BookLevel(4, 5, 6), BookLevel(7, 8, 9)]),
             Logout(0)]
    return msgs


@pytest.mark.parametrize("sofh", [True, False])
def test_decode_frames_split_at_every_byte(sofh: bool) -> None:
    msgs = sample_stream()
    buf = b"".join(frame(m, sofh) for m in msgs)
    for cut in range(len(buf) + 1):
        first, off = codec.decode_frames(buf[:cut], sofh=sofh)
        rest, end = codec.decode_frames(buf[off:], sofh=sofh)
        assert first + rest == msgs, cut
        assert off + end == len(buf)


@pytest.mark.parametrize("sofh", [True, False])
def test_decode_frames_one_byte_at_a_time(sofh: bool) -> None:
    msgs = sample_stream()
    buf = b"".join(frame(m, sofh) for m in msgs)
    rx = bytearray()
    pos = 0
    got: list[Message] = []
    for b in buf:
        rx.append(b)
        new, pos = codec.decode_frames(rx, pos, sofh=sofh)
        got += new
    assert got == msgs and pos == len(buf)


def expected_command(msg: Message, session_id: int, ts: int) -> dict[str, int]:
    """The Command record the brief specifies for an order-entry message."""
    c = dict.fromkeys(COMMAND_FIELDS, 0)
    c.update(ts=ts, session_id=session_id, symbol_id=TABLE.lookup(msg.symbol))  # type: ignore[union-attr]
    if c["symbol_id"] == UNKNOWN_SYMBOL:
        # the name as sent (NUL-padded, 0 when blank), for the UNKNOWN_SYMBOL reject to echo
        c["reserved"] = int.from_bytes(symbol_wire(msg.symbol), "little")  # type: ignore[union-attr]
    if isinstance(msg, NewOrder):
        c.update(type=CommandType.CMD_NEW, side=msg.side, ord_type=msg.ord_type, tif=msg.time_in_force,
                 flags=msg.flags, stp=msg.stp_mode, cl_ord_id=msg.cl_ord_id, price=msg.price,
                 qty=msg.order_qty, stop_price=msg.stop_px, display_qty=msg.display_qty)
    elif isinstance(msg, CancelOrder):
        c.update(type=CommandType.CMD_CANCEL, cl_ord_id=msg.cl_ord_id, orig_cl_ord_id=msg.orig_cl_ord_id)
    elif isinstance(msg, ReplaceOrder):
        c.update(type=CommandType.CMD_REPLACE, cl_ord_id=msg.cl_ord_id,
                 orig_cl_ord_id=msg.orig_cl_ord_id, price=msg.price, qty=msg.order_qty)
    elif isinstance(msg, MassCancel):
        c.update(type=CommandType.CMD_MASS_CANCEL, cl_ord_id=msg.cl_ord_id, side=msg.side,
                 depth=1 if msg.symbol == "" else 0, scope=msg.scope)
    elif isinstance(msg, BookQuery):
        c.update(type=CommandType.CMD_BOOK_QUERY, cl_ord_id=msg.request_id,
                 orig_cl_ord_id=msg.request_id, depth=msg.depth)
    return c


def order_stream() -> list[Message]:
    return [m for m in sample_stream() if type(m).TEMPLATE_ID in (10, 11, 12, 13, 14)]


def pop_commands(ring: SpscRing) -> list[dict[str, int]]:
    data = ring.pop()
    return [unpack_command(data, i) for i in range(0, len(data), COMMAND_RECORD_SIZE)]


def run_orders(ring: SpscRing, buf: bytes | bytearray, start: int, sofh: bool) -> tuple[int, int, int]:
    return codec.decode_orders(buf, start, len(buf), ring, 7, TABLE, 123456789, sofh)


@pytest.mark.parametrize("sofh", [True, False])
def test_decode_orders_split_at_every_byte(sofh: bool) -> None:
    msgs = order_stream()
    want = [expected_command(m, 7, 123456789) for m in msgs]
    buf = b"".join(frame(m, sofh) for m in msgs)
    ring = SpscRing(64, COMMAND_RECORD_SIZE)
    for cut in range(len(buf) + 1):
        off, n1, st1 = run_orders(ring, buf[:cut], 0, sofh)
        assert st1 == codec.NEED_MORE
        off2, n2, st2 = run_orders(ring, buf, off, sofh)
        assert (off2, st2, n1 + n2) == (len(buf), codec.NEED_MORE, len(msgs)), cut
        assert pop_commands(ring) == want, cut


@pytest.mark.parametrize("sofh", [True, False])
def test_decode_orders_one_byte_at_a_time(sofh: bool) -> None:
    msgs = order_stream()
    buf = b"".join(frame(m, sofh) for m in msgs)
    ring = SpscRing(64, COMMAND_RECORD_SIZE)
    rx = bytearray()
    pos = total = 0
    for b in buf:
        rx.append(b)
        pos, n, status = run_orders(ring, rx, pos, sofh)
        assert status == codec.NEED_MORE
        total += n
    assert (pos, total) == (len(buf), len(msgs))
    assert pop_commands(ring) == [expected_command(m, 7, 123456789) for m in msgs]


@pytest.mark.parametrize("sofh", [True, False])
def test_decode_orders_stops_at_session_messages(sofh: bool) -> None:
    """The caller handles each session message in Python and calls again after it."""
    msgs = sample_stream()
    buf = b"".join(frame(m, sofh) for m in msgs)
    ring = SpscRing(64, COMMAND_RECORD_SIZE)
    pos, seen = 0, []
    while True:
        pos, n, status = run_orders(ring, buf, pos, sofh)
        if status == codec.NEED_MORE:
            break
        assert status == codec.SESSION_MESSAGE
        msg, pos = codec.decode_next(buf, pos, sofh)
        assert msg is not None and type(msg).TEMPLATE_ID not in (10, 11, 12, 13, 14)
        seen.append(msg)
    assert pos == len(buf)
    assert seen == [m for m in msgs if type(m).TEMPLATE_ID not in (10, 11, 12, 13, 14)]
    assert pop_commands(ring) == [expected_command(m, 7, 123456789) for m in order_stream()]


def test_decode_orders_command_fields() -> None:
    ring = SpscRing(16, COMMAND_RECORD_SIZE)
    msgs: list[Message] = [
        NewOrder(2**64 - 1, -(2**63), 2**64 - 1, "BRK.B", 2, 2, 4, 1, 3),
        MassCancel(5, "", 1), MassCancel(6, "NOPE", 0), MassCancel(7, "ZZZZZZZZ", 2),
        BookQuery(2**63, "MSFT", 65535), CancelOrder(1, 2, "X")]
    buf = b"".join(frame(m) for m in msgs)
    assert run_orders(ring, buf, 0, True) == (len(buf), len(msgs), codec.NEED_MORE)
    got = pop_commands(ring)
    assert got == [expected_command(m, 7, 123456789) for m in msgs]
    assert got[0]["symbol_id"] == 2 and got[0]["price"] == -(2**63) and got[0]["stp"] == 3
    assert (got[1]["symbol_id"], got[1]["depth"]) == (UNKNOWN_SYMBOL, 1)   # blank: every symbol
    assert (got[2]["symbol_id"], got[2]["depth"]) == (UNKNOWN_SYMBOL, 0)   # unknown, not blank
    assert got[1]["reserved"] == 0 and got[2]["reserved"].to_bytes(8, "little") == b"NOPE\0\0\0\0"
    assert got[3]["symbol_id"] == 3 and got[4]["depth"] == 65535 and got[3]["reserved"] == 0
    assert got[5]["symbol_id"] == UNKNOWN_SYMBOL
    assert got[5]["reserved"].to_bytes(8, "little") == b"X" + bytes(7)


def test_decode_orders_overwrites_stale_slot_contents() -> None:
    ring = SpscRing(2, COMMAND_RECORD_SIZE)
    ring.push(b"\xff" * COMMAND_RECORD_SIZE * 2)
    ring.pop()
    buf = frame(CancelOrder(1, 2, "AAPL"))
    run_orders(ring, buf, 0, True)
    assert pop_commands(ring) == [expected_command(CancelOrder(1, 2, "AAPL"), 7, 123456789)]


def test_decode_orders_ring_full_stop_and_resume() -> None:
    msgs = [NewOrder(i, 100 * i, i, "AAPL", 1, 1, 1) for i in range(1, 21)]
    frames = [frame(m) for m in msgs]
    buf = b"".join(frames)
    ring = SpscRing(8, COMMAND_RECORD_SIZE)
    pos, got = 0, []
    statuses = []
    while True:
        pos, n, status = run_orders(ring, buf, pos, True)
        statuses.append((n, status))
        got += pop_commands(ring)
        if status == codec.NEED_MORE:
            break
        assert status == codec.RING_FULL
        assert pos == sum(len(f) for f in frames[:len(got)])   # offset at the first frame not taken
    assert statuses == [(8, codec.RING_FULL), (8, codec.RING_FULL), (4, codec.NEED_MORE)]
    assert got == [expected_command(m, 7, 123456789) for m in msgs]
    # a full ring with no complete frame left still says NEED_MORE (nothing is lost)
    ring.push(bytes(COMMAND_RECORD_SIZE * 8))
    assert run_orders(ring, buf[:10], 0, True) == (0, 0, codec.NEED_MORE)
    assert run_orders(ring, buf, 0, True) == (0, 0, codec.RING_FULL)


def test_decode_orders_argument_checks() -> None:
    with pytest.raises(ValueError):
        codec.decode_orders(b"", 0, 0, SpscRing(8, 128), 1, TABLE, 0)
    with pytest.raises(ValueError):
        codec.decode_orders(b"abc", 2, 4, SpscRing(8, COMMAND_RECORD_SIZE), 1, TABLE, 0)
    with pytest.raises(TypeError):
        codec.decode_orders("abc", 0, 1, SpscRing(8, COMMAND_RECORD_SIZE), 1, TABLE, 0)  # type: ignore[arg-type]


# -- malformed input ------------------------------------------------------------------------------
GOOD = frame(NewOrder(1, 100, 1, "AAPL", 1, 1, 1))


def patch(raw: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(raw)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


MALFORMED_FRAMES = {
    "encoding type": (patch(GOOD, 4, ">H", 0x5BE0), RejectReason.REJ_MALFORMED, codec.MALFORMED),
    "length below 14": (patch(GOOD, 0, ">I", 13), RejectReason.REJ_MALFORMED, codec.MALFORMED),
    "length above 65535": (patch(GOOD, 0, ">I", 65536), RejectReason.REJ_MALFORMED, codec.MALFORMED),
    "short blockLength": (patch(GOOD, 6, "<H", 36), RejectReason.REJ_MALFORMED, codec.MALFORMED),
    "unknown template": (patch(GOOD, 8, "<H", 99), RejectReason.REJ_UNKNOWN_TEMPLATE, codec.UNKNOWN_TEMPLATE),
    "unused template id": (patch(GOOD, 8, "<H", 7), RejectReason.REJ_UNKNOWN_TEMPLATE,
                           codec.UNKNOWN_TEMPLATE),
    "schema id": (patch(GOOD, 10, "<H", 2), RejectReason.REJ_MALFORMED, codec.MALFORMED),
    # SOFH says 14 bytes: the header fits but the 37-byte block does not
    "frame shorter than block": (patch(GOOD, 0, ">I", 14)[:14], RejectReason.REJ_MALFORMED, codec.MALFORMED),
    # varData length running past the end of its frame
    "token past frame": (patch(frame(Login(1, 1, 0, 0, "abc")), 6 + 8 + 14, "<H", 4),
                         RejectReason.REJ_MALFORMED, codec.MALFORMED),
    # group entry blockLength shorter than ours
    "short group entry": (patch(frame(BookSnapshot(1, 1, 1, "A", [BookLevel(1, 1, 1)], [])),
                                6 + 8 + 32, "<H", 19), RejectReason.REJ_MALFORMED, codec.MALFORMED),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_FRAMES))
def test_malformed_frames(case: str) -> None:
    bad, reason, status = MALFORMED_FRAMES[case]
    good = frame(Heartbeat())
    buf = good + GOOD + bad + GOOD
    bad_at = len(good) + len(GOOD)
    with pytest.raises(ProtocolError) as exc:
        codec.decode_frames(buf)
    assert (exc.value.reason, exc.value.offset) == (reason, bad_at)
    assert exc.value.messages == [Heartbeat(), codec.decode_message(GOOD[6:])]
    with pytest.raises(ProtocolError) as exc:
        codec.scan_responses(buf)
    assert (exc.value.reason, exc.value.offset) == (reason, bad_at)
    ring = SpscRing(8, COMMAND_RECORD_SIZE)
    assert run_orders(ring, buf, len(good), True) == (bad_at, 1, status)
    assert len(pop_commands(ring)) == 1


def test_malformed_unframed() -> None:
    raw = GOOD[6:]
    for bad, reason, status in [(patch(raw, 0, "<H", 36), RejectReason.REJ_MALFORMED, codec.MALFORMED),
                                (patch(raw, 2, "<H", 99), RejectReason.REJ_UNKNOWN_TEMPLATE,
                                 codec.UNKNOWN_TEMPLATE),
                                (patch(raw, 4, "<H", 7), RejectReason.REJ_MALFORMED, codec.MALFORMED)]:
        with pytest.raises(ProtocolError) as exc:
            codec.decode_frames(raw + bad, sofh=False)
        assert (exc.value.reason, exc.value.offset) == (reason, len(raw))
        with pytest.raises(ProtocolError) as exc:
            codec.decode_message(bad)
        assert exc.value.reason == reason
        ring = SpscRing(8, COMMAND_RECORD_SIZE)
        assert run_orders(ring, raw + bad, 0, False) == (len(raw), 1, status)
    # a truncated message is malformed for decode_message (it is the whole message)
    with pytest.raises(ProtocolError) as exc:
        codec.decode_message(raw[:-1])
    assert exc.value.reason == RejectReason.REJ_MALFORMED
    assert codec.message_length(raw[:-1]) == 0


def test_bad_header_detected_before_the_frame_is_complete() -> None:
    # a bad SOFH length or encoding needs no more than the SOFH itself
    with pytest.raises(ProtocolError):
        codec.decode_frames(patch(GOOD, 0, ">I", 70000)[:4])
    with pytest.raises(ProtocolError):
        codec.decode_frames(patch(GOOD, 4, ">H", 1)[:6])
    # unframed: the header is judged as soon as its 8 bytes are there
    with pytest.raises(ProtocolError):
        codec.decode_frames(patch(GOOD[6:], 2, "<H", 99)[:8], sofh=False)


# -- forward compatibility: longer blocks from a newer schema version ------------------------------
def longer_block(raw: bytes, extra: bytes) -> bytes:
    """An unframed NewOrder whose block carries `extra` trailing bytes, as a v2 sender would."""
    bl = struct.unpack_from("<H", raw, 0)[0]
    return patch(raw, 0, "<H", bl + len(extra))[:8 + bl] + extra + raw[8 + bl:]


@pytest.mark.parametrize("sofh", [True, False])
def test_longer_block_length_is_skipped(sofh: bool) -> None:
    msgs: list[Message] = [NewOrder(1, 100, 1, "AAPL", 1, 1, 1), CancelOrder(2, 1, "AAPL")]
    raws = [longer_block(codec.encode(m, sofh=False), b"\x99" * 11) for m in msgs]
    if sofh:
        raws = [struct.pack(">IH", len(r) + 6, 0xEB50) + r for r in raws]
    buf = b"".join(raws)
    assert codec.decode_frames(buf, sofh=sofh) == (msgs, len(buf))
    ring = SpscRing(8, COMMAND_RECORD_SIZE)
    assert run_orders(ring, buf, 0, sofh) == (len(buf), 2, codec.NEED_MORE)
    assert pop_commands(ring) == [expected_command(m, 7, 123456789) for m in msgs]


def test_longer_group_entries_and_trailing_frame_bytes() -> None:
    snap = BookSnapshot(1, 2, 3, "A", [BookLevel(1, 2, 3), BookLevel(4, 5, 6)], [BookLevel(7, 8, 9)])
    raw = bytearray(codec.encode(snap, sofh=False))
    # rebuild both groups with 24-byte entries (4 unknown bytes each)
    head, pos = raw[:8 + 32], 8 + 32
    out = bytearray(head)
    for _ in range(2):
        _, n = struct.unpack_from("<HH", raw, pos)
        pos += 4
        out += struct.pack("<HH", 24, n)
        for _ in range(n):
            out += raw[pos:pos + 20] + b"\x7f" * 4
            pos += 20
    framed = struct.pack(">IH", len(out) + 6 + 5, 0xEB50) + out + b"\0" * 5   # + 5 unknown bytes
    assert codec.decode_frames(bytes(out), sofh=False) == ([snap], len(out))
    assert codec.decode_frames(framed) == ([snap], len(framed))


# -- backward compatibility: a version-1 client's shorter blocks -----------------------------------
def shorter_block(raw: bytes, v1_length: int) -> bytes:
    """An unframed message cut back to its version-1 block, header version 1, as a v1 client
    sends it."""
    bl = struct.unpack_from("<H", raw, 0)[0]
    head = struct.pack("<HHHH", v1_length, struct.unpack_from("<H", raw, 2)[0], 1, 1)
    return head + raw[8:8 + v1_length] + raw[8 + bl:]


@pytest.mark.parametrize("sofh", [True, False])
def test_version_1_blocks_decode_with_the_new_fields_zero(sofh: bool) -> None:
    v1: list[tuple[Message, int]] = [
        (NewOrder(1, 100, 1, "AAPL", 1, 1, 1, 1, 2), 37),
        (MassCancel(2, "MSFT", 1), 17),
        (CancelOrder(3, 1, "AAPL"), 24),
    ]
    raws = [shorter_block(codec.encode(m, sofh=False), n) for m, n in v1]
    login = shorter_block(codec.encode(Login(1000, 1, 1, 0, "tok"), sofh=False), 13)
    assert codec.decode_message(login) == Login(1000, 1, 1, 0, "tok")
    if sofh:
        raws = [struct.pack(">IH", len(r) + 6, 0xEB50) + r for r in raws]
    buf = b"".join(raws)
    msgs = [m for m, _ in v1]
    assert codec.decode_frames(buf, sofh=sofh) == (msgs, len(buf))
    # the hot path reads no byte past a short block (the next message's bytes follow it)
    ring = SpscRing(8, COMMAND_RECORD_SIZE)
    assert run_orders(ring, buf, 0, sofh) == (len(buf), 3, codec.NEED_MORE)
    assert pop_commands(ring) == [expected_command(m, 7, 123456789) for m in msgs]
    # shorter than version 1 is still malformed
    with pytest.raises(ProtocolError):
        codec.decode_message(shorter_block(codec.encode(v1[0][0], sofh=False), 36))


# -- symbols --------------------------------------------------------------------------------------
def test_symbol_table() -> None:
    assert [TABLE.lookup(s) for s in SYMBOLS] == [0, 1, 2, 3]
    assert TABLE.lookup(b"MSFT    ") == 1 and TABLE.lookup(b"MSFT\0\0\0\0") == 1
    assert TABLE.lookup(b"MSFT") == 1
    assert TABLE.lookup(b"MSFT \0 \0") == 1
    assert TABLE.lookup("MSF") == UNKNOWN_SYMBOL and TABLE.lookup("") == UNKNOWN_SYMBOL
    assert TABLE.lookup(" MSFT") == UNKNOWN_SYMBOL
    assert TABLE.lookup("ABCDEFGHIJ") == UNKNOWN_SYMBOL
    assert [TABLE.name(i) for i in range(len(TABLE))] == SYMBOLS
    with pytest.raises(IndexError):
        TABLE.name(4)
    for bad in (["A", "A"], [""], ["ABCDEFGHI"], ["AB "], ["A\0"], ["É"]):
        with pytest.raises(ValueError):
            codec.SymbolTable(bad)


def test_symbol_table_many_names() -> None:
    names = [f"S{i}" for i in range(5000)]
    table = codec.SymbolTable(names)
    assert all(table.lookup(n) == i for i, n in enumerate(names))
    assert table.lookup("S5000") == UNKNOWN_SYMBOL


# -- client-side scan -------------------------------------------------------------------------------
def test_scan_responses() -> None:
    msgs: list[Message] = [
        LoginAccepted(3, 1, 1000),
        OrderAccepted(1, 10, 501, 1, 100, 5, 5, "AAPL", 1, 1, 1),
        OrderRejected(2, 10, 502, "AAPL", 4),
        Execution(3, 10, 501, 1, 77, 100, 5, 0, "AAPL", 1, 2),
        OrderCanceled(4, 10, 503, 501, 1, 100, 5, "AAPL", 1, 1),
        OrderReplaced(5, 10, 504, 501, 1, 100, 5, 5, "AAPL", 1),
        CancelRejected(6, 10, 505, 9, 8),
        MassCancelDone(7, 10, 506, 3),
        BookSnapshot(8, 10, 507, "AAPL", [BookLevel(1, 1, 1)], []),
        OrderTriggered(9, 10, 508, 1, 90, 100, 5, 5, "AAPL", 1, 3),
        Heartbeat(),
        SessionReject(1, 10),
    ]
    buf = b"".join(frame(m) for m in msgs)
    want = array("Q", [2, 0, 0, 20, 1, 501, 21, 2, 502, 22, 3, 501, 23, 4, 503, 24, 5, 504, 25, 6, 505,
                       26, 7, 506, 27, 8, 0, 28, 9, 508, 4, 0, 0, 6, 0, 0])
    assert codec.scan_responses(buf) == (want, len(buf))
    many = buf * 40
    triples, end = codec.scan_responses(many + buf[:20])
    assert end == len(many) and triples == want * 40
    assert codec.scan_responses(buf, len(buf)) == (array("Q"), len(buf))


def test_decode_status_constants() -> None:
    assert [codec.NEED_MORE, codec.SESSION_MESSAGE, codec.RING_FULL, codec.MALFORMED,
            codec.UNKNOWN_TEMPLATE] == [0, 1, 2, 3, 4]
    assert codec.DecodeStatus(2) is codec.RING_FULL


# -- the acting version (issue 14, finding 4) ---------------------------------------------------------
def versioned_frame(tid: int, version: int, block_length: int | None = None) -> bytes:
    """A SOFH frame of template ``tid``, built from the layout by hand: the header says
    ``version``; every field added after version 1 holds 0x07 bytes, every other field 0x01
    bytes (symbols 'A's), and ``block_length`` bytes of the block are sent (default: all)."""
    name, full, fields = codec.LAYOUT[tid]
    later = codec.SINCE_VERSION["fields"].get(tid, {})
    block = b"".join((b"A" if prim == "char" else b"\x07" if fname in later else b"\x01") * size
                     for fname, _, size, prim in fields)
    n = full if block_length is None else block_length
    tail = b"".join(struct.pack("<HH", 20, 0) for _ in codec.GROUPS.get(tid, []))
    tail += b"".join(struct.pack("<H", 0) for _ in codec.VAR_DATA.get(tid, []))
    body = struct.pack("<HHHH", n, tid, 1, version) + block[:n] + bytes(max(0, n - full)) + tail
    return struct.pack(">IH", 6 + len(body), 0xEB50) + body


LATER_FIELDS = sorted((tid, f) for tid, fs in codec.SINCE_VERSION["fields"].items() for f in fs)


@pytest.mark.parametrize(("tid", "field"), LATER_FIELDS, ids=lambda v: str(v))
def test_a_field_above_the_acting_version_is_absent_whatever_the_block_length(tid: int, field: str) -> None:
    """SBE 1.0: a field whose sinceVersion is above the header's version reads as its null value
    (for this schema, the documented default 0) even when the block holds its bytes; with the
    header's version at or above it (a later version too), it is read."""
    since = codec.SINCE_VERSION["fields"][tid][field]
    attr = re.sub(r"(?<!^)(?=[A-Z])", "_", field).lower()
    for version, block_length in [(since - 1, None), (since - 1, codec.LAYOUT[tid][1] + 9), (0, None)]:
        [msg], _ = codec.decode_frames(versioned_frame(tid, version, block_length))
        assert getattr(msg, attr) == 0, (version, block_length)
    for version in (since, since + 5):
        [msg], _ = codec.decode_frames(versioned_frame(tid, version))
        assert getattr(msg, attr) == int.from_bytes(b"\x07" * 8, "little") % (
            1 << (8 * [f[2] for f in codec.LAYOUT[tid][2] if f[0] == field][0])), version
    # the fields of the acting version are read as sent
    [msg], _ = codec.decode_frames(versioned_frame(tid, since - 1))
    first = codec.LAYOUT[tid][2][0]
    assert getattr(msg, re.sub(r"(?<!^)(?=[A-Z])", "_", first[0]).lower()) != 0


ORDER_TEMPLATES_WITH_LATER_FIELDS = sorted(
    t for t in codec.SINCE_VERSION["fields"] if codec.is_order_template(t))


@pytest.mark.parametrize("tid", ORDER_TEMPLATES_WITH_LATER_FIELDS)
def test_decode_orders_applies_the_acting_version(tid: int) -> None:
    ring = SpscRing(8, COMMAND_RECORD_SIZE)
    buf = versioned_frame(tid, 1) + versioned_frame(tid, 2)
    assert run_orders(ring, buf, 0, True) == (len(buf), 2, codec.NEED_MORE)
    v1, v2 = pop_commands(ring)
    later = {"stopPx": "stop_price", "displayQty": "display_qty", "scope": "scope"}
    for field in codec.SINCE_VERSION["fields"][tid]:
        assert v1[later[field]] == 0 and v2[later[field]] != 0, field
    assert v1["cl_ord_id"] == v2["cl_ord_id"] == int.from_bytes(b"\x01" * 8, "little")
