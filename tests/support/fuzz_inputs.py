"""Inputs shared by the hypothesis fuzz tests (tests/protocol/test_fuzz.py) and the on-demand atheris
fuzzer (tools/fuzz_decoder.py): valid frames of every client template, and mutations of them
that keep close enough to the format to reach deep into the decoder."""
from __future__ import annotations

import struct

from protocol import codec
from protocol.messages import (
    BookQuery,
    CancelOrder,
    Heartbeat,
    Login,
    Logout,
    MassCancel,
    Message,
    NewOrder,
    PositionQuery,
    ReplaceOrder,
)

GOOD_TOKEN = "good-token"
DROPCOPY_TOKEN = "dropcopy-token"
DROPCOPY_TEMPLATES = frozenset({PositionQuery.TEMPLATE_ID})   # what a drop copy may send
BOOK_ONLY_TOKEN = "book-only-token"     # a role allowed BookQuery only: orders decoded one by one


def client_messages() -> list[Message]:
    """One or more of every message a client may send, valid and borderline values."""
    return [
        Login(heartbeat_interval_ms=1000, next_expected_seq_num=0, cancel_on_disconnect=1, token=GOOD_TOKEN),
        Login(heartbeat_interval_ms=0, next_expected_seq_num=7, cancel_on_disconnect=0, token=DROPCOPY_TOKEN),
        Login(heartbeat_interval_ms=5, next_expected_seq_num=0, cancel_on_disconnect=0, token="bad"),
        Login(heartbeat_interval_ms=0, next_expected_seq_num=0, cancel_on_disconnect=0,
              token=BOOK_ONLY_TOKEN),
        Heartbeat(),
        Logout(reason=0),
        NewOrder(cl_ord_id=1, price=1_000_000, order_qty=10, symbol="AAPL", side=1, ord_type=1,
                 time_in_force=1),
        NewOrder(cl_ord_id=2, price=1_000_100, order_qty=5, symbol="AAPL", side=2, ord_type=1,
                 time_in_force=3, flags=1),
        NewOrder(cl_ord_id=3, price=0, order_qty=2**64 - 1, symbol="NOPE", side=9, ord_type=2,
                 time_in_force=4, stp_mode=4),
        CancelOrder(cl_ord_id=4, orig_cl_ord_id=1, symbol="AAPL"),
        ReplaceOrder(cl_ord_id=5, orig_cl_ord_id=1, price=-(2**63), order_qty=20, symbol="AAPL"),
        MassCancel(cl_ord_id=6, symbol="", side=0),
        BookQuery(request_id=7, symbol="AAPL", depth=100),
        PositionQuery(request_id=8, symbol=""),
    ]


def seed_frames(sofh: bool = True) -> list[bytes]:
    return [codec.encode(m, sofh=sofh) for m in client_messages()]


def mutate(frame: bytes, how: int, pos: int, value: int) -> bytes:
    """One structured mutation of a frame: how 0 flips a byte, 1 truncates, 2 rewrites the SOFH
    length, 3 rewrites blockLength, 4 rewrites templateId, 5 rewrites schemaId, 6 appends
    bytes, 7 rewrites a var-data / group length (the last 2 bytes before the payload)."""
    b = bytearray(frame)
    pos %= max(1, len(b))
    if how == 0:
        b[pos] ^= (value % 255) + 1
    elif how == 1:
        del b[pos:]
    elif how == 2 and len(b) >= 4:
        b[0:4] = struct.pack(">I", value & 0xFFFFFFFF)
    elif how == 3 and len(b) >= 8:
        b[6:8] = struct.pack("<H", value & 0xFFFF)
    elif how == 4 and len(b) >= 10:
        b[8:10] = struct.pack("<H", value & 0xFFFF)
    elif how == 5 and len(b) >= 12:
        b[10:12] = struct.pack("<H", value & 0xFFFF)
    elif how == 6:
        b += bytes([value & 0xFF]) * (pos % 64)
    elif how == 7 and len(b) >= 2:
        p = max(0, len(b) - 2 - (pos % 16))
        b[p:p + 2] = struct.pack("<H", value & 0xFFFF)
    return bytes(b)


class SessionHarness:
    """A ServerSession wired to a real ring, risk gate and matching core, fed by a fuzzer.

    ``feed(chunks)`` runs the chunks through the session, pumping the ring whenever it fills
    (as the TCP transport does) and after each chunk; returns (every byte the session wrote,
    every command record the core consumed).  Time stands still (``now_ns`` fixed), so the
    result is a function of the bytes alone.  Tokens: GOOD_TOKEN logs in as a trader,
    DROPCOPY_TOKEN as a read-only drop copy, anything else is refused.
    """

    def __init__(self, ring_capacity: int = 64, sofh: bool = True, max_violations: int = 3) -> None:
        from gateway.risk.pretrade import RiskEngine
        from matching.core import MatchingCore
        from matching.records import COMMAND_RECORD_SIZE, LoginRejectReason
        from matching.ring import SpscRing
        from protocol.messages import PositionReport
        from protocol.session import LoginDecision, ServerSession

        names = ["AAPL", "MSFT"]
        self.core = MatchingCore([(100, 1_000_000), (100, 1_000_000)])
        self.risk = RiskEngine([{"tick": 100, "reference_price": 1_000_000, "band_ticks": 100},
                                {"tick": 100}], self.core, 16,
                               lambda name: {"max_open_orders": 50, "max_position_net": 10_000})
        self.risk.bind_session(1, "fuzz")
        self.ring = SpscRing(ring_capacity, COMMAND_RECORD_SIZE)
        self.events = SpscRing(1024, 128)
        self.core.on_events_full = lambda: self.events.pop()
        self.consumed = bytearray()
        self.logins = 0

        def positions(q: PositionQuery) -> list[Message]:
            return [PositionReport(request_id=q.request_id, symbol="AAPL", net_position=0, avg_price=0,
                                   realized_pnl=0, open_buy_qty=0, open_sell_qty=0, bought_qty=0,
                                   sold_qty=0, report_index=1, report_count=1)]

        def login(msg: Login) -> LoginDecision:
            self.logins += 1
            if msg.token == GOOD_TOKEN:
                return LoginDecision(True, session_id=1, next_seq_num=1, positions=positions)
            if msg.token == DROPCOPY_TOKEN:
                return LoginDecision(True, session_id=1, next_seq_num=1, allowed=DROPCOPY_TEMPLATES,
                                     positions=positions)
            if msg.token == BOOK_ONLY_TOKEN:
                return LoginDecision(True, session_id=1, next_seq_num=1, allowed=frozenset({14}))
            return LoginDecision(False, reason=LoginRejectReason.LOGIN_BAD_TOKEN)

        self.session = ServerSession(codec.SymbolTable(names), self.ring, login, now_ns=1_000,
                                     sofh=sofh, gate=self.risk, login_timeout_ms=0,
                                     max_violations=max_violations)

    def pump(self) -> None:
        """What the engine's pump does to the ring: the core consumes it, the risk state follows
        the events, in-flight quantities are cleared."""
        ring = self.ring
        self.consumed += b"".join(ring.peek(k) for k in range(len(ring)))
        while len(ring):
            self.core.process(ring, self.events)
            self.risk.observe_events(self.events)
            self.events.pop()
        self.risk.clear_pending()

    def feed(self, chunks: list[bytes]) -> tuple[bytes, bytes]:
        out = bytearray()
        s = self.session
        for chunk in chunks:
            s.receive_data(chunk, 1_000)
            while s.ring_full:
                self.pump()
                s.receive_data(b"", 1_000)
            out += s.data_to_send()
            self.pump()
        return bytes(out), bytes(self.consumed)
