"""What the sans-I/O session tests share (tests/protocol/test_session_state.py, test_session_table.py):
a fake clock in plain ns, a stand-in for the gateway's login decision, frames built with the
codec and written out as literal bytes from the schema (protocol/schema/hftgw-v1.xml), and a
recorder of every application of the session table."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from unittest import mock

from matching.records import COMMAND_RECORD_SIZE, LoginRejectReason
from matching.ring import SpscRing
from protocol import codec, session_table
from protocol import session as session_module
from protocol.messages import (
    CancelOrder,
    EndOfSession,
    Login,
    LoginAccepted,
    Message,
    NewOrder,
    PositionQuery,
    PositionReport,
    SessionReject,
)
from protocol.session import LoginDecision, ServerSession
from protocol.session_table import TRANSITIONS, Event, SessionState

MS = 1_000_000
T0 = 1_767_225_600 * 1_000_000_000      # the fake clock's start: 2026-01-01T00:00:00Z in ns
GOOD = "tok"                           # the token the stand-in gateway accepts as a trader
DROPCOPY = "dropcopy"                  # ... as a drop copy (PositionQuery only)
ADMIN = "admin"                        # ... as an admin (may send EndOfSession)
LIVE_NEXT_SEQ = 43                     # the stand-in gateway's next seqNum without a replay

AWAIT_LOGIN, ACTIVE, CLOSED = SessionState.AWAIT_LOGIN, SessionState.ACTIVE, SessionState.CLOSED

# Login, template 1, on TCP, byte by byte from the schema (SBE 1.0, little-endian fields):
LOGIN_LITERAL = bytes.fromhex(
    "00000021" "eb50"        # SOFH: frame length 33 (big-endian, includes the SOFH), type 0xEB50
    "0e00" "0100" "0100" "0200"  # header: blockLength 14, templateId 1, schemaId 1, version 2
    "e8030000"               # heartbeatIntervalMs: uint32 1000
    "0500000000000000"       # nextExpectedSeqNum: uint64 5 (a replay from seqNum 5)
    "01"                     # cancelOnDisconnect: true
    "00"                     # defaultStpMode: NONE
    "0300" "746f6b"          # token: varString, uint16 length 3, "tok"
)
# the answer: LoginAccepted, template 2: sessionId 7, nextSeqNum 5, heartbeatIntervalMs 1000
LOGIN_ACCEPTED_LITERAL = bytes.fromhex(
    "0000001e" "eb50" "1000" "0200" "0100" "0200"
    "07000000" "0500000000000000" "e8030000"
)
BAD_SOFH = bytes.fromhex("0000000e" "eb51" "0000" "0400" "0100" "0200")   # wrong encoding type
UNKNOWN_TEMPLATE = bytes.fromhex("0000000e" "eb50" "0000" "6300" "0100" "0200")  # template 99

NEW_ORDER = NewOrder(cl_ord_id=1, price=1_000_000, order_qty=10, symbol="AAPL", side=1,
                     ord_type=1, time_in_force=1)
CANCEL = CancelOrder(cl_ord_id=2, orig_cl_ord_id=1, symbol="AAPL")
EOS = EndOfSession(cl_ord_id=1, symbol="")
POSITION_QUERY = PositionQuery(request_id=9, symbol="")
SERVER_ONLY = LoginAccepted(session_id=1, next_seq_num=1, heartbeat_interval_ms=1000)


def login(token: str = GOOD, hb: int = 0, next_expected: int = 0) -> Login:
    return Login(heartbeat_interval_ms=hb, next_expected_seq_num=next_expected,
                 cancel_on_disconnect=0, token=token)


def report(request_id: int) -> PositionReport:
    return PositionReport(request_id=request_id, symbol="AAPL", net_position=0, avg_price=0,
                          realized_pnl=0, open_buy_qty=0, open_sell_qty=0, bought_qty=0,
                          sold_qty=0, report_index=1, report_count=1)


def reject(reason: int, template: int) -> SessionReject:
    return SessionReject(reason=int(reason), ref_template_id=template)


@dataclass
class Gateway:
    """Stands in for the gateway's login decision: remembers every Login it was asked about."""

    logins: list[Login] = field(default_factory=list)

    def decide(self, msg: Login) -> LoginDecision:
        self.logins.append(msg)

        def positions(q: PositionQuery) -> list[Message]:
            return [report(q.request_id)]

        if msg.token in (GOOD, ADMIN):
            # a replay request (nextExpectedSeqNum n > 0): the next message sent is n
            nxt = msg.next_expected_seq_num or LIVE_NEXT_SEQ
            return LoginDecision(True, session_id=7, next_seq_num=nxt,
                                 replay_from=msg.next_expected_seq_num, account_id=3,
                                 role="admin" if msg.token == ADMIN else "trader",
                                 positions=positions)
        if msg.token == DROPCOPY:
            return LoginDecision(True, session_id=8, next_seq_num=1, role="dropcopy",
                                 allowed=frozenset({PositionQuery.TEMPLATE_ID}), positions=positions)
        return LoginDecision(False, reason=LoginRejectReason.LOGIN_BAD_TOKEN)


def make_session(sofh: bool = True, *, now_ns: int = T0, login_timeout_ms: int = 5000,
                 max_violations: int = 3, heartbeat_ms: int = 1000) -> tuple[ServerSession, Gateway]:
    """A session at ``now_ns`` with the configuration defaults (gateway/config/schema.py):
    heartbeat 1 s, timeout factor 3, login timeout 5 s, 3 violations."""
    gw = Gateway()
    ring = SpscRing(64, COMMAND_RECORD_SIZE)
    s = ServerSession(codec.SymbolTable(["AAPL", "MSFT"]), ring, gw.decide, now_ns=now_ns,
                      sofh=sofh, heartbeat_ms=heartbeat_ms, timeout_factor=3.0,
                      max_heartbeat_ms=60_000, login_timeout_ms=login_timeout_ms,
                      max_violations=max_violations)
    return s, gw


def frame(msg: Message, sofh: bool = True) -> bytes:
    return codec.encode(msg, sofh=sofh)


def answers(s: ServerSession) -> list[Message]:
    """What the session wrote since the last call, decoded; it only ever writes whole frames."""
    out = s.data_to_send()
    msgs, end = codec.decode_frames(out, 0, s.sofh)
    assert end == len(out)
    return msgs


def logged_in(token: str = GOOD, *, login_timeout_ms: int = 5000) -> tuple[ServerSession, Gateway]:
    s, gw = make_session(login_timeout_ms=login_timeout_ms)
    s.receive_data(frame(login(token)), T0)
    assert isinstance(answers(s)[0], LoginAccepted) and s.state is ACTIVE
    return s, gw


Applied = list[tuple[SessionState, Event, SessionState | None]]


class _RecordingRow(Mapping[Event, SessionState]):
    """One row of the table that logs every application (a read of an event's next state:
    what ``transition`` and the session's bulk order path do); asking ``event in row`` is not
    an application."""

    def __init__(self, state: SessionState, row: Mapping[Event, SessionState], log: Applied) -> None:
        self._state, self._row, self._log = state, row, log

    def __getitem__(self, event: Event) -> SessionState:
        try:
            nxt = self._row[event]
        except KeyError:
            self._log.append((self._state, event, None))
            raise
        self._log.append((self._state, event, nxt))
        return nxt

    def __contains__(self, event: object) -> bool:
        return event in self._row

    def __iter__(self) -> Iterator[Event]:
        return iter(self._row)

    def __len__(self) -> int:
        return len(self._row)


@contextmanager
def recorded_transitions() -> Iterator[Applied]:
    """Every application of the table while inside: (state, event, next state), next None when
    the table refused it."""
    log: Applied = []
    table = {state: _RecordingRow(state, row, log) for state, row in TRANSITIONS.items()}
    with mock.patch.object(session_module, "TRANSITIONS", table), \
            mock.patch.object(session_table, "TRANSITIONS", table):
        yield log

