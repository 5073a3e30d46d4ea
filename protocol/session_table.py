"""The order-entry session's states and transitions, as data (the model is h11's ``_state.py``).

``TRANSITIONS[state][event]`` is the state a session in ``state`` moves to on ``event``; an event
missing from a state's row is not allowed there.  ``transition`` applies the table and raises
``SessionProtocolError`` for an event it does not allow.  What a transition *does* (the bytes it
sends, the counters it bumps, the gateway's login decision, role checks) is not here: it lives in
``protocol.session.ServerSession``, which classifies its inputs into these events, asks this
table, and then runs the side effects.  So this module answers one question, "may this happen
now, and where does it lead", and reading the table is reading the protocol:

- Before login (AWAIT_LOGIN) a peer may log in, send heartbeats or log out; order entry,
  PositionQuery and EndOfSession are not allowed (answered SessionReject NOT_LOGGED_IN).  The
  login timeout is its only timer.
- Logged in (ACTIVE) it may send order entry, PositionQuery, EndOfSession, heartbeats and
  Logout; a second Login is not allowed (LoginRejected LOGIN_ALREADY_LOGGED_IN).  Which of
  those its *role* may send is checked after the table, by the session (access control is per
  session, not per state).
- CLOSED is final: nothing is allowed, and the session ignores every input.
- A server-to-client template sent by the peer (SERVER_MESSAGE) is allowed nowhere.

Timer events (LOGIN_TIMEOUT, PEER_SILENT, HEARTBEAT_DUE) are different in one way: a timer whose
event a state's row does not have is simply not armed in that state (``tick`` checks a timer
only where the row has it: ``timers_armed``), rather than being a protocol error.  Before login
only the login timeout is armed: a connection that has not logged in gets no heartbeats and is
not timed out for silence, only for not logging in (Logout LOGIN_TIMEOUT).

The session relies on one property of the table: every state but CLOSED has MALFORMED, SHUTDOWN
and VIOLATION_LIMIT (it applies them with no refusal path; tests/protocol/test_session_state.py checks).
"""
from __future__ import annotations

import enum
from collections.abc import Mapping


class SessionState(enum.Enum):
    """Where one connection's session is: waiting for its Login, logged in, or over."""

    AWAIT_LOGIN = 1
    ACTIVE = 2
    CLOSED = 3

    # members are singletons compared by identity, so the identity hash is right; Enum's own
    # (hash of the name, in Python) would make every table lookup on the order path cost
    # ~10x more
    __hash__ = object.__hash__


class Event(enum.Enum):
    """What can happen to a session: a frame from the peer (classified by its template and,
    for a Login, by the gateway's decision), a timer that expired in ``tick``, or something
    the session or the server decides."""

    # -- frames from the peer --
    LOGIN_ACCEPTED = "login accepted"     # a Login the gateway's decision accepted
    LOGIN_REJECTED = "login rejected"     # a Login the gateway's decision refused
    HEARTBEAT = "heartbeat"
    LOGOUT = "logout"
    ORDER = "order"                       # order entry: NewOrder .. BookQuery (templates 10-14)
    POSITION_QUERY = "position query"
    END_OF_SESSION = "end of session"
    SERVER_MESSAGE = "server message"     # a server-to-client template: no peer may send one
    MALFORMED = "malformed"               # a frame the codec refuses, or a non-SBE WS message
    # -- timers (tick) --
    LOGIN_TIMEOUT = "login timeout"       # no Login within login_timeout_ms
    PEER_SILENT = "peer silent"           # nothing received for timeout_factor intervals
    HEARTBEAT_DUE = "heartbeat due"       # nothing sent for one heartbeat interval
    # -- decided by the session or the server --
    VIOLATION_LIMIT = "violation limit"   # max_violations refused messages reached
    SHUTDOWN = "shutdown"                 # the server ends the session (ServerSession.shutdown)

    __hash__ = object.__hash__            # as SessionState's


AWAIT_LOGIN = SessionState.AWAIT_LOGIN
ACTIVE = SessionState.ACTIVE
CLOSED = SessionState.CLOSED

#: (state, event) -> next state.  Every state has a row; a missing event is not allowed.
TRANSITIONS: Mapping[SessionState, Mapping[Event, SessionState]] = {
    AWAIT_LOGIN: {
        Event.LOGIN_ACCEPTED: ACTIVE,
        Event.LOGIN_REJECTED: CLOSED,
        Event.HEARTBEAT: AWAIT_LOGIN,
        Event.LOGOUT: CLOSED,
        Event.MALFORMED: CLOSED,
        # the only timer before login: no PEER_SILENT (it would log a silent peer out with
        # HEARTBEAT_TIMEOUT before the login timeout fires) and no HEARTBEAT_DUE (SoupBinTCP
        # sends no heartbeats before the login is accepted); issue 14
        Event.LOGIN_TIMEOUT: CLOSED,
        Event.VIOLATION_LIMIT: CLOSED,
        Event.SHUTDOWN: CLOSED,
    },
    ACTIVE: {
        Event.ORDER: ACTIVE,
        Event.POSITION_QUERY: ACTIVE,
        Event.END_OF_SESSION: ACTIVE,
        Event.HEARTBEAT: ACTIVE,
        Event.LOGOUT: CLOSED,
        Event.MALFORMED: CLOSED,
        Event.PEER_SILENT: CLOSED,
        Event.HEARTBEAT_DUE: ACTIVE,
        Event.VIOLATION_LIMIT: CLOSED,
        Event.SHUTDOWN: CLOSED,
    },
    CLOSED: {},
}

#: the timer events, in the order ``tick`` checks them (the first armed and due one fires)
TIMERS: tuple[Event, ...] = (Event.LOGIN_TIMEOUT, Event.PEER_SILENT, Event.HEARTBEAT_DUE)


class SessionProtocolError(Exception):
    """An event the table does not allow in the session's state.  state, event: what was
    attempted.  The session catches it and answers the peer (protocol.session ``_refuse``)."""

    def __init__(self, state: SessionState, event: Event) -> None:
        super().__init__(f"{event.value} is not allowed in {state.name}")
        self.state = state
        self.event = event


def allows(state: SessionState, event: Event) -> bool:
    """True when ``event`` has a row in ``state``."""
    return event in TRANSITIONS[state]


def transition(state: SessionState, event: Event) -> SessionState:
    """The state after ``event`` in ``state``.  Raises SessionProtocolError when the table does
    not allow it (the state is then unchanged: the caller keeps its old one)."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise SessionProtocolError(state, event) from None


def expects_login(state: SessionState) -> bool:
    """True when a Login is allowed in ``state``: the session asks the gateway for a decision
    only then (its outcome is the LOGIN_ACCEPTED or LOGIN_REJECTED event)."""
    row = TRANSITIONS[state]
    return Event.LOGIN_ACCEPTED in row or Event.LOGIN_REJECTED in row


def timers_armed(state: SessionState) -> tuple[Event, ...]:
    """The timer events ``tick`` checks in ``state``, in priority order (TIMERS' order)."""
    return tuple(t for t in TIMERS if t in TRANSITIONS[state])


def reachable(state: SessionState) -> frozenset[SessionState]:
    """Every state reachable from ``state`` in zero or more transitions."""
    seen = {state}
    todo = [state]
    while todo:
        for nxt in TRANSITIONS[todo.pop()].values():
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return frozenset(seen)
