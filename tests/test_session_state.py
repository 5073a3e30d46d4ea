"""The order-entry session driven directly, sans I/O: bytes in through ``receive_data``, time
through ``tick(now_ns)`` on a fake clock (plain integers of ns since the epoch), bytes out
through ``data_to_send``.  No sockets, no sleeps, no event loop.

Frames are built with the project's codec, and the Login and its LoginAccepted are also written
out as literal bytes from the schema (protocol/schema/hftgw-v1.xml), so the tests do not only
speak the codec they test.  ``test_every_state_and_event`` walks the whole table of
``protocol.session_table`` (every state times every event: the row's transition or the
refusal), and a hypothesis test drives random sequences of inputs and checks that the session
never raises and only moves along the table.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching.records import COMMAND_RECORD_SIZE, LoginRejectReason, RejectReason
from matching.ring import SpscRing
from protocol import codec, session_table
from protocol import session as session_module
from protocol.messages import (
    CancelOrder,
    EndOfSession,
    Heartbeat,
    Login,
    LoginAccepted,
    LoginRejected,
    Logout,
    Message,
    NewOrder,
    PositionQuery,
    PositionReport,
    SessionReject,
)
from protocol.session import LoginDecision, LogoutReason, ServerSession
from protocol.session_table import (
    TIMERS,
    TRANSITIONS,
    Event,
    SessionProtocolError,
    SessionState,
    allows,
    expects_login,
    reachable,
    timers_armed,
    transition,
)

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


# -- login --------------------------------------------------------------------------------------
@pytest.mark.parametrize("sofh", [True, False], ids=["tcp", "websocket"])
def test_a_login_in_literal_bytes_is_accepted(sofh: bool) -> None:
    s, gw = make_session(sofh)
    data = LOGIN_LITERAL if sofh else LOGIN_LITERAL[6:]     # WebSocket: no SOFH
    for i in range(len(data)):                               # a partial frame waits for the rest
        assert s.state is AWAIT_LOGIN and s.data_to_send() == b""
        s.receive_data(data[i:i + 1], T0 + i)
    assert s.data_to_send() == (LOGIN_ACCEPTED_LITERAL if sofh else LOGIN_ACCEPTED_LITERAL[6:])
    assert s.state is ACTIVE and s.session_id == 7 and s.account_id == 3 and s.role == "trader"
    assert s.cancel_on_disconnect and s.heartbeat_ms == 1000
    assert [(m.token, m.next_expected_seq_num) for m in gw.logins] == [(GOOD, 5)]


def test_a_rejected_login_closes_without_a_logout_and_ignores_the_rest() -> None:
    s, gw = make_session()
    s.receive_data(frame(login("wrong")) + frame(NEW_ORDER), T0)
    assert answers(s) == [LoginRejected(reason=LoginRejectReason.LOGIN_BAD_TOKEN)]
    assert s.state is CLOSED and s.closed and s.close_reason == LoginRejectReason.LOGIN_BAD_TOKEN
    assert s.counters.login_failures == {LoginRejectReason.LOGIN_BAD_TOKEN: 1}
    s.receive_data(frame(login()), T0 + MS)
    s.tick(T0 + 10_000 * MS)
    s.shutdown()
    assert s.data_to_send() == b"" and len(gw.logins) == 1 and len(s.ring) == 0


@pytest.mark.parametrize(("asked", "agreed"), [(0, 1000), (5, 100), (250, 250), (10**9, 60_000)])
def test_the_heartbeat_interval_is_clamped_and_echoed(asked: int, agreed: int) -> None:
    s, _ = make_session()
    s.receive_data(frame(login(hb=asked)), T0)
    (accepted,) = answers(s)
    assert isinstance(accepted, LoginAccepted) and accepted.heartbeat_interval_ms == agreed
    assert s.heartbeat_ms == agreed


def test_a_second_login_is_refused_and_the_session_goes_on() -> None:
    s, gw = logged_in()
    s.receive_data(frame(login()) + frame(POSITION_QUERY), T0 + MS)
    assert answers(s) == [LoginRejected(reason=LoginRejectReason.LOGIN_ALREADY_LOGGED_IN),
                          report(9)]
    assert s.state is ACTIVE and len(gw.logins) == 1     # the gateway was not asked again
    assert s.counters.login_failures == {LoginRejectReason.LOGIN_ALREADY_LOGGED_IN: 1}


@pytest.mark.parametrize(("next_expected", "next_seq"), [(0, LIVE_NEXT_SEQ), (5, 5), (43, 43)])
def test_a_replay_request_reaches_the_gateway_and_its_next_seq_num_is_sent(
        next_expected: int, next_seq: int) -> None:
    """nextExpectedSeqNum goes to the gateway's decision (which replays from it); LoginAccepted
    carries the decision's nextSeqNum: the first replayed message, or the next live one."""
    s, gw = make_session()
    s.receive_data(frame(login(next_expected=next_expected)), T0)
    assert answers(s) == [LoginAccepted(session_id=7, next_seq_num=next_seq, heartbeat_interval_ms=1000)]
    assert gw.logins[0].next_expected_seq_num == next_expected


# -- heartbeats and the heartbeat timeout --------------------------------------------------------
def test_the_server_heartbeats_after_an_interval_with_nothing_sent() -> None:
    s, _ = logged_in()                                    # LoginAccepted sent at T0
    timeline = []
    for t in (999, 1000, 1500, 1999, 2000):
        s.tick(T0 + t * MS)
        timeline.append((t, answers(s)))
    assert timeline == [(999, []), (1000, [Heartbeat()]), (1500, []), (1999, []),
                        (2000, [Heartbeat()])]
    s.note_sent(T0 + 2500 * MS)                          # business messages reset the interval
    s.tick(T0 + 3000 * MS)
    assert answers(s) == []


def test_client_heartbeats_keep_the_session_alive_and_silence_ends_it() -> None:
    s, _ = logged_in()
    t = T0
    for _ in range(20):                                   # 58 s of heartbeats 2.9 s apart
        t += 2900 * MS
        s.tick(t)
        s.receive_data(frame(Heartbeat()), t)
        assert s.state is ACTIVE
    assert all(isinstance(m, Heartbeat) for m in answers(s))
    s.tick(t + 3000 * MS)                                 # exactly 3 intervals: not yet
    assert s.state is ACTIVE
    answers(s)
    s.tick(t + 3000 * MS + 1)
    assert answers(s) == [Logout(reason=LogoutReason.HEARTBEAT_TIMEOUT)]
    assert s.state is CLOSED and s.close_reason == LogoutReason.HEARTBEAT_TIMEOUT
    assert s.counters.heartbeat_timeouts == 1


def test_the_heartbeat_timeout_follows_the_agreed_interval() -> None:
    s, _ = make_session()
    s.receive_data(frame(login(hb=200)), T0)
    answers(s)
    s.tick(T0 + 600 * MS)
    assert answers(s) == [Heartbeat()] and s.state is ACTIVE
    s.tick(T0 + 601 * MS)
    assert answers(s) == [Logout(reason=LogoutReason.HEARTBEAT_TIMEOUT)]


# -- the login timeout ---------------------------------------------------------------------------
def silent_connection_timeline(s: ServerSession, until_ms: int) -> list[tuple[int, Message]]:
    """Ticks every 100 ms from T0 with the peer silent: (ms, message) of everything sent."""
    out = []
    for t in range(100, until_ms + 1, 100):
        s.tick(T0 + t * MS)
        out += [(t, m) for m in answers(s)]
    return out


def test_a_silent_connection_before_login_today() -> None:
    """Today's behaviour with the defaults (login timeout 5 s, heartbeat 1 s x 3): heartbeats
    before login, then Logout HEARTBEAT_TIMEOUT at 3.1 s; the login timeout never fires.
    Issue 14 changes this to no heartbeats and Logout LOGIN_TIMEOUT at 5.1 s (see
    test_the_issue_14_fix_is_two_rows_of_the_table)."""
    s, _ = make_session()
    assert silent_connection_timeline(s, 6000) == [
        (1000, Heartbeat()), (2000, Heartbeat()), (3000, Heartbeat()),
        (3100, Logout(reason=LogoutReason.HEARTBEAT_TIMEOUT))]
    assert s.counters.login_timeouts == 0 and s.counters.heartbeat_timeouts == 1


def test_the_login_timeout_ends_a_peer_that_heartbeats_but_never_logs_in() -> None:
    s, _ = make_session()
    for t in range(1000, 5001, 1000):
        s.receive_data(frame(Heartbeat()), T0 + t * MS)
        s.tick(T0 + t * MS)
    assert s.state is AWAIT_LOGIN                         # at exactly 5 s: not yet
    answers(s)
    s.tick(T0 + 5000 * MS + 1)
    assert answers(s) == [Logout(reason=LogoutReason.LOGIN_TIMEOUT)]
    assert s.state is CLOSED and s.close_reason == LogoutReason.LOGIN_TIMEOUT
    assert s.counters.login_timeouts == 1 and s.counters.heartbeat_timeouts == 0


def test_a_login_timeout_shorter_than_the_heartbeat_timeout_fires_first() -> None:
    s, _ = make_session(login_timeout_ms=1500)
    assert silent_connection_timeline(s, 3000) == [
        (1000, Heartbeat()), (1600, Logout(reason=LogoutReason.LOGIN_TIMEOUT))]


def test_the_login_timeout_is_not_armed_after_login() -> None:
    s, _ = logged_in(login_timeout_ms=500)
    s.receive_data(frame(Heartbeat()), T0 + 900 * MS)
    s.tick(T0 + 901 * MS)
    assert s.state is ACTIVE and answers(s) == [] and s.counters.login_timeouts == 0


def test_the_issue_14_fix_is_two_rows_of_the_table() -> None:
    """Not today's behaviour: what deleting the (AWAIT_LOGIN, PEER_SILENT) and
    (AWAIT_LOGIN, HEARTBEAT_DUE) rows does, the fix issue 14 asks for (no heartbeats before
    login, Logout LOGIN_TIMEOUT after login_timeout_ms).  Remove this test when it lands."""
    fixed = {e: nxt for e, nxt in TRANSITIONS[AWAIT_LOGIN].items()
             if e not in (Event.PEER_SILENT, Event.HEARTBEAT_DUE)}
    with mock.patch.dict(TRANSITIONS, {AWAIT_LOGIN: fixed}):
        s, _ = make_session()
        assert silent_connection_timeline(s, 6000) == [
            (5100, Logout(reason=LogoutReason.LOGIN_TIMEOUT))]
    assert Event.PEER_SILENT in TRANSITIONS[AWAIT_LOGIN]    # the patch is gone


# -- logout ----------------------------------------------------------------------------------------
def test_a_client_logout_is_answered_and_ends_the_session() -> None:
    s, _ = logged_in()
    s.receive_data(frame(Logout()) + frame(NEW_ORDER), T0 + MS)
    assert answers(s) == [Logout(reason=LogoutReason.NORMAL)]
    assert s.state is CLOSED and s.close_reason == LogoutReason.NORMAL and len(s.ring) == 0
    s.receive_data(frame(Heartbeat()), T0 + 2 * MS)
    s.tick(T0 + 60_000 * MS)
    assert s.data_to_send() == b""


@pytest.mark.parametrize("reason", [LogoutReason.SERVER_SHUTDOWN, LogoutReason.SLOW_CONSUMER])
def test_a_server_logout_says_why(reason: LogoutReason) -> None:
    s, _ = logged_in()
    if reason is LogoutReason.SERVER_SHUTDOWN:
        s.shutdown()
    else:
        s.shutdown(reason)
    assert answers(s) == [Logout(reason=reason)] and s.state is CLOSED and s.close_reason == reason
    s.shutdown()
    assert s.data_to_send() == b""                        # once


# -- refused before login, role checks after it ------------------------------------------------------
def test_business_messages_before_login_are_violations() -> None:
    s, _ = make_session()
    s.receive_data(frame(NEW_ORDER) + frame(POSITION_QUERY), T0)
    assert answers(s) == [reject(RejectReason.REJ_NOT_LOGGED_IN, NewOrder.TEMPLATE_ID),
                          reject(RejectReason.REJ_NOT_LOGGED_IN, PositionQuery.TEMPLATE_ID)]
    assert s.state is AWAIT_LOGIN and len(s.ring) == 0 and s.commands_queued == 0
    assert s.counters.role_violations == 2 and s.violations == 2
    s.receive_data(frame(EOS), T0)                        # the third: logged out
    assert answers(s) == [reject(RejectReason.REJ_NOT_LOGGED_IN, EndOfSession.TEMPLATE_ID),
                          Logout(reason=LogoutReason.POLICY_VIOLATION)]
    assert s.state is CLOSED and s.counters.policy_disconnects == 1


def test_a_server_message_before_login_is_rejected_but_not_a_violation() -> None:
    s, _ = make_session(max_violations=1)
    s.receive_data(frame(SERVER_ONLY) + frame(login()), T0)
    assert answers(s) == [reject(RejectReason.REJ_NOT_LOGGED_IN, LoginAccepted.TEMPLATE_ID),
                          LoginAccepted(session_id=7, next_seq_num=LIVE_NEXT_SEQ,
                                        heartbeat_interval_ms=1000)]
    assert s.violations == 0 and s.state is ACTIVE
    assert s.counters.rejects == {RejectReason.REJ_NOT_LOGGED_IN: 1}


def test_orders_after_login_go_to_the_ring_in_one_batch() -> None:
    s, _ = logged_in()
    order, cancel = frame(NEW_ORDER), frame(CANCEL)
    s.receive_data(order + cancel[:7], T0 + MS)          # the cancel's tail comes later
    assert len(s.ring) == 1 and s.commands_queued == 1
    s.receive_data(cancel[7:], T0 + 2 * MS)
    assert len(s.ring) == 2 and s.commands_queued == 2 and answers(s) == []


def test_a_role_is_checked_after_the_table() -> None:
    """A drop copy may ask for positions but not trade; a trader may not end the session; an
    admin may (the table allows all three in ACTIVE, the role decides)."""
    s, _ = logged_in(DROPCOPY)
    s.receive_data(frame(POSITION_QUERY) + frame(NEW_ORDER) + frame(EOS), T0 + MS)
    assert answers(s) == [report(9), reject(RejectReason.REJ_NOT_AUTHORIZED, NewOrder.TEMPLATE_ID),
                          reject(RejectReason.REJ_NOT_AUTHORIZED, EndOfSession.TEMPLATE_ID)]
    assert len(s.ring) == 0 and s.violations == 2 and s.state is ACTIVE
    admin, _ = logged_in(ADMIN)
    admin.receive_data(frame(EOS), T0 + MS)
    assert answers(admin) == [] and len(admin.ring) == 1 and admin.commands_queued == 1


# -- malformed input -------------------------------------------------------------------------------
@pytest.mark.parametrize("logged", [False, True], ids=["before-login", "after-login"])
@pytest.mark.parametrize(("data", "reason", "template"), [
    (BAD_SOFH, RejectReason.REJ_MALFORMED, 0),
    (UNKNOWN_TEMPLATE, RejectReason.REJ_UNKNOWN_TEMPLATE, 99),
    (bytes.fromhex("00000005eb50"), RejectReason.REJ_MALFORMED, 0),   # frame length below 14
], ids=["bad-sofh", "unknown-template", "short-frame"])
def test_a_malformed_frame_is_rejected_and_logged_out(logged: bool, data: bytes, reason: int,
                                                       template: int) -> None:
    s, _ = logged_in() if logged else make_session()
    s.receive_data(data + frame(Heartbeat()), T0 + MS)
    assert answers(s) == [reject(reason, template), Logout(reason=LogoutReason.PROTOCOL_ERROR)]
    assert s.state is CLOSED and s.close_reason == LogoutReason.PROTOCOL_ERROR
    assert s.counters.rejects == {reason: 1}


def test_websocket_leftovers_and_text_messages_are_protocol_errors() -> None:
    s, _ = make_session(sofh=False)
    s.receive_data(frame(login(), sofh=False), T0)
    answers(s)
    s.receive_data(frame(NEW_ORDER, sofh=False)[:20], T0 + MS)
    s.end_of_message(T0 + MS)                             # the message ended mid-NewOrder
    assert answers(s) == [reject(RejectReason.REJ_MALFORMED, NewOrder.TEMPLATE_ID),
                          Logout(reason=LogoutReason.PROTOCOL_ERROR)]
    t, _ = make_session(sofh=False)
    t.receive_data(frame(Heartbeat(), sofh=False), T0)
    t.end_of_message(T0)                                  # nothing left over: fine
    t.protocol_error(T0 + MS)                             # a WebSocket text message
    assert answers(t) == [reject(RejectReason.REJ_MALFORMED, 0),
                          Logout(reason=LogoutReason.PROTOCOL_ERROR)]
    t.protocol_error(T0 + 2 * MS)
    assert t.data_to_send() == b""


# -- the table itself ------------------------------------------------------------------------------
def test_the_table_has_a_row_per_state_and_closed_is_final() -> None:
    assert set(TRANSITIONS) == set(SessionState)
    assert TRANSITIONS[CLOSED] == {}
    for row in TRANSITIONS.values():
        assert all(isinstance(e, Event) and isinstance(nxt, SessionState) for e, nxt in row.items())
    assert all(CLOSED in reachable(state) for state in SessionState)
    # only a login the gateway accepted leads to ACTIVE from elsewhere
    into_active = {(st, e) for st, row in TRANSITIONS.items() for e, nxt in row.items()
                   if nxt is ACTIVE and st is not ACTIVE}
    assert into_active == {(AWAIT_LOGIN, Event.LOGIN_ACCEPTED)}
    # the session applies these itself, without a refusal path: every live state has them
    for state in (AWAIT_LOGIN, ACTIVE):
        for event in (Event.MALFORMED, Event.SHUTDOWN, Event.VIOLATION_LIMIT):
            assert TRANSITIONS[state][event] is CLOSED
    assert Event.SERVER_MESSAGE not in {e for row in TRANSITIONS.values() for e in row}
    assert expects_login(AWAIT_LOGIN) and not expects_login(ACTIVE)
    assert timers_armed(ACTIVE) == (Event.PEER_SILENT, Event.HEARTBEAT_DUE)
    assert timers_armed(AWAIT_LOGIN) == TIMERS       # issue 14: will be (LOGIN_TIMEOUT,)


def test_transition_raises_for_what_the_table_does_not_allow() -> None:
    assert transition(AWAIT_LOGIN, Event.LOGIN_ACCEPTED) is ACTIVE
    with pytest.raises(SessionProtocolError) as err:
        transition(AWAIT_LOGIN, Event.ORDER)
    assert (err.value.state, err.value.event) == (AWAIT_LOGIN, Event.ORDER)
    assert "order is not allowed in AWAIT_LOGIN" in str(err.value)
    with pytest.raises(SessionProtocolError):
        transition(CLOSED, Event.HEARTBEAT)


@dataclass(frozen=True)
class Driver:
    """How to make an event happen with public inputs, on a session set up at T0."""

    act: Callable[[ServerSession], None]
    login_timeout_ms: int = 0
    max_violations: int = 0


def feeding(msg: Message) -> Callable[[ServerSession], None]:
    return lambda s: s.receive_data(frame(msg), T0)


DRIVERS: dict[Event, Driver] = {
    Event.LOGIN_ACCEPTED: Driver(feeding(login())),
    Event.LOGIN_REJECTED: Driver(feeding(login("wrong"))),
    Event.HEARTBEAT: Driver(feeding(Heartbeat())),
    Event.LOGOUT: Driver(feeding(Logout())),
    Event.ORDER: Driver(feeding(NEW_ORDER)),
    Event.POSITION_QUERY: Driver(feeding(POSITION_QUERY)),
    Event.END_OF_SESSION: Driver(feeding(EOS)),
    Event.SERVER_MESSAGE: Driver(feeding(SERVER_ONLY)),
    Event.MALFORMED: Driver(lambda s: s.receive_data(BAD_SOFH, T0)),
    Event.LOGIN_TIMEOUT: Driver(lambda s: s.tick(T0 + 501 * MS), login_timeout_ms=500),
    Event.PEER_SILENT: Driver(lambda s: s.tick(T0 + 3001 * MS)),
    Event.HEARTBEAT_DUE: Driver(lambda s: s.tick(T0 + 1000 * MS)),
    # a refused EndOfSession (not logged in, or not an admin) is the one violation allowed
    Event.VIOLATION_LIMIT: Driver(feeding(EOS), max_violations=1),
    Event.SHUTDOWN: Driver(lambda s: s.shutdown()),
}

_NOT_LOGGED_IN = RejectReason.REJ_NOT_LOGGED_IN
_NOT_AUTHORIZED = RejectReason.REJ_NOT_AUTHORIZED
_PROTOCOL_ERROR = [reject(RejectReason.REJ_MALFORMED, 0), Logout(reason=LogoutReason.PROTOCOL_ERROR)]
_ALREADY = [LoginRejected(reason=LoginRejectReason.LOGIN_ALREADY_LOGGED_IN)]
#: today's answer to each event in each live state (in CLOSED: nothing, always)
EXPECTED: dict[tuple[SessionState, Event], list[Message]] = {
    (AWAIT_LOGIN, Event.LOGIN_ACCEPTED): [LoginAccepted(session_id=7, next_seq_num=LIVE_NEXT_SEQ,
                                                        heartbeat_interval_ms=1000)],
    (AWAIT_LOGIN, Event.LOGIN_REJECTED): [LoginRejected(reason=LoginRejectReason.LOGIN_BAD_TOKEN)],
    (AWAIT_LOGIN, Event.HEARTBEAT): [],
    (AWAIT_LOGIN, Event.LOGOUT): [Logout(reason=LogoutReason.NORMAL)],
    (AWAIT_LOGIN, Event.ORDER): [reject(_NOT_LOGGED_IN, NewOrder.TEMPLATE_ID)],
    (AWAIT_LOGIN, Event.POSITION_QUERY): [reject(_NOT_LOGGED_IN, PositionQuery.TEMPLATE_ID)],
    (AWAIT_LOGIN, Event.END_OF_SESSION): [reject(_NOT_LOGGED_IN, EndOfSession.TEMPLATE_ID)],
    (AWAIT_LOGIN, Event.SERVER_MESSAGE): [reject(_NOT_LOGGED_IN, LoginAccepted.TEMPLATE_ID)],
    (AWAIT_LOGIN, Event.MALFORMED): _PROTOCOL_ERROR,
    (AWAIT_LOGIN, Event.LOGIN_TIMEOUT): [Logout(reason=LogoutReason.LOGIN_TIMEOUT)],
    # issue 14: the next two become [] (the timers are not armed before login)
    (AWAIT_LOGIN, Event.PEER_SILENT): [Logout(reason=LogoutReason.HEARTBEAT_TIMEOUT)],
    (AWAIT_LOGIN, Event.HEARTBEAT_DUE): [Heartbeat()],
    (AWAIT_LOGIN, Event.VIOLATION_LIMIT): [reject(_NOT_LOGGED_IN, EndOfSession.TEMPLATE_ID),
                                           Logout(reason=LogoutReason.POLICY_VIOLATION)],
    (AWAIT_LOGIN, Event.SHUTDOWN): [Logout(reason=LogoutReason.SERVER_SHUTDOWN)],
    (ACTIVE, Event.LOGIN_ACCEPTED): _ALREADY,
    (ACTIVE, Event.LOGIN_REJECTED): _ALREADY,
    (ACTIVE, Event.HEARTBEAT): [],
    (ACTIVE, Event.LOGOUT): [Logout(reason=LogoutReason.NORMAL)],
    (ACTIVE, Event.ORDER): [],                                   # into the ring
    (ACTIVE, Event.POSITION_QUERY): [report(9)],
    (ACTIVE, Event.END_OF_SESSION): [reject(_NOT_AUTHORIZED, EndOfSession.TEMPLATE_ID)],  # a trader
    (ACTIVE, Event.SERVER_MESSAGE): [reject(_NOT_AUTHORIZED, LoginAccepted.TEMPLATE_ID)],
    (ACTIVE, Event.MALFORMED): _PROTOCOL_ERROR,
    (ACTIVE, Event.LOGIN_TIMEOUT): [],                            # not armed
    (ACTIVE, Event.PEER_SILENT): [Logout(reason=LogoutReason.HEARTBEAT_TIMEOUT)],
    (ACTIVE, Event.HEARTBEAT_DUE): [Heartbeat()],
    (ACTIVE, Event.VIOLATION_LIMIT): [reject(_NOT_AUTHORIZED, EndOfSession.TEMPLATE_ID),
                                      Logout(reason=LogoutReason.POLICY_VIOLATION)],
    (ACTIVE, Event.SHUTDOWN): [Logout(reason=LogoutReason.SERVER_SHUTDOWN)],
}


def in_state(state: SessionState, driver: Driver) -> ServerSession:
    s, _ = make_session(login_timeout_ms=driver.login_timeout_ms,
                        max_violations=driver.max_violations)
    if state is not AWAIT_LOGIN:
        s.receive_data(frame(login() if state is ACTIVE else Logout()), T0)
        s.data_to_send()
    assert s.state is state
    return s


def test_every_event_has_a_driver_and_every_live_cell_an_answer() -> None:
    """So that a new event or state cannot be added without the walk below covering it."""
    assert set(DRIVERS) == set(Event)
    assert set(EXPECTED) == {(st, e) for st in SessionState if st is not CLOSED for e in Event}


@pytest.mark.parametrize(("state", "event"), [(st, e) for st in SessionState for e in Event],
                         ids=lambda v: v.name)
def test_every_state_and_event(state: SessionState, event: Event) -> None:
    """The walk of the table: each event in each state either applies its row (the session
    reaches the row's state, the transition is recorded) or is refused (the state stays, the
    answer is the refusal).  VIOLATION_LIMIT's driver is a refused or unauthorized frame."""
    driver = DRIVERS[event]
    s = in_state(state, driver)
    with recorded_transitions() as log:
        driver.act(s)
    applied = [(st, e) for st, e, nxt in log if nxt is not None]
    if allows(state, event):
        assert (state, event) in applied
        assert s.state is TRANSITIONS[state][event]
    else:
        assert (state, event) not in applied and s.state is state
    assert answers(s) == EXPECTED.get((state, event), [])


# -- any sequence of inputs ------------------------------------------------------------------------
def _inputs(sofh: bool) -> list[bytes]:
    msgs: list[Message] = [login(), login("wrong"), login(DROPCOPY), login(ADMIN, hb=150),
                           login(next_expected=5), Heartbeat(), Logout(), NEW_ORDER, CANCEL,
                           POSITION_QUERY, EOS, SERVER_ONLY]
    frames = [frame(m, sofh) for m in msgs]
    bad = [BAD_SOFH, UNKNOWN_TEMPLATE, b"\x00\x01\x02"] if sofh else [UNKNOWN_TEMPLATE[6:], b"\x07"]
    return frames + bad + [frames[7][:9], frames[0][9:]]       # and pieces of frames


INPUTS = {True: _inputs(True), False: _inputs(False)}
REACHABLE = {state: reachable(state) for state in SessionState}   # outside the recording
STEP = st.tuples(st.integers(0, 6), st.integers(0, 10_000))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sofh=st.booleans(), login_timeout_ms=st.sampled_from([0, 500, 5000]),
       max_violations=st.integers(0, 3), steps=st.lists(STEP, max_size=40))
def test_any_sequence_of_inputs_stays_in_the_table(sofh: bool, login_timeout_ms: int,
                                                   max_violations: int,
                                                   steps: list[tuple[int, int]]) -> None:
    """Valid and invalid frames, pieces of frames, ticks, transport errors and shutdowns in any
    order: the session never raises, every state change it makes is a row of the table, it
    writes only whole frames, and nothing once it is closed."""
    s, _ = make_session(sofh, login_timeout_ms=login_timeout_ms, max_violations=max_violations)
    inputs = INPUTS[sofh]
    now = T0
    with recorded_transitions() as log:
        for kind, arg in steps:
            before = s.state
            now += (arg % 4000) * MS if kind == 1 else 1
            if kind in (0, 6):
                s.receive_data(inputs[arg % len(inputs)], now)
                while s.ring_full:
                    s.ring.pop()
                    s.receive_data(b"", now)
            elif kind == 1:
                s.tick(now)
            elif kind == 2:
                s.end_of_message(now)
            elif kind == 3:
                s.protocol_error(now, arg % 50)
            elif kind == 4:
                s.shutdown(arg % 7)
            else:
                s.note_sent(now)
            assert s.state in REACHABLE[before]
            out = answers(s)
            assert not (before is CLOSED and out)
            assert s.closed == (s.state is CLOSED)
    state = AWAIT_LOGIN
    for st_, event, nxt in log:
        assert st_ is state                      # no state change outside the table
        if nxt is not None:
            assert nxt is TRANSITIONS[st_][event]
            state = nxt
    assert state is s.state
