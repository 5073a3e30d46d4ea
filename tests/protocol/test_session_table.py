"""The session's table (protocol/session_table.py): its shape, ``transition``'s refusals, a walk
of every state times every event through the real session (the row's transition or the
refusal, with today's answer in each cell), and a hypothesis property test: any sequence of
valid and invalid inputs never raises out of the session and never leaves the table.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.session_inputs import (
    ACTIVE,
    ADMIN,
    AWAIT_LOGIN,
    BAD_SOFH,
    CANCEL,
    CLOSED,
    DROPCOPY,
    EOS,
    LIVE_NEXT_SEQ,
    MS,
    NEW_ORDER,
    POSITION_QUERY,
    SERVER_ONLY,
    T0,
    UNKNOWN_TEMPLATE,
    answers,
    frame,
    login,
    make_session,
    recorded_transitions,
    reject,
    report,
)

from matching.records import LoginRejectReason, RejectReason
from protocol.messages import (
    EndOfSession,
    Heartbeat,
    LoginAccepted,
    LoginRejected,
    Logout,
    Message,
    NewOrder,
    PositionQuery,
)
from protocol.session import LogoutReason, ServerSession
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
    # before login only the login timeout: no heartbeats, no silence timeout (issue 14)
    assert timers_armed(AWAIT_LOGIN) == (Event.LOGIN_TIMEOUT,)
    assert set(TIMERS) == {Event.LOGIN_TIMEOUT, Event.PEER_SILENT, Event.HEARTBEAT_DUE}


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
    (AWAIT_LOGIN, Event.PEER_SILENT): [],                         # not armed before login
    (AWAIT_LOGIN, Event.HEARTBEAT_DUE): [],                       # not armed before login
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
