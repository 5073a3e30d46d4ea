"""Server side of one order-entry session, as a sans-I/O state machine.

Bytes in (``receive_data``), bytes out (``data_to_send``), a clock passed in (``now_ns``); no
sockets, no event loop, as ``h11`` and ``websockets`` do.  The transport (gateway/transport/tcp.py,
a WebSocket handler) moves the bytes; the engine owns the inbound ring this writes orders into.

Session layer semantics follow SoupBinTCP 4.1 carried in SBE messages (DESIGN §2):
Login -> LoginAccepted | LoginRejected; heartbeats both ways; a peer silent for
``heartbeat_timeout_factor`` intervals is logged out; Logout ends the session.  Which events
are allowed in which state and where they lead is the table in ``protocol.session_table``;
this module classifies its inputs into those events (``frame_event``, the login decision,
the timers in ``tick``), applies the table, and does the side effects (what is sent, the
counters, the ring); a frame the table does not allow is answered by ``_refuse``.  Order-entry
messages are decoded in batches straight into fixed-size command records in the inbound ring
(``protocol.codec.decode_orders``), stamped with the session's account id and default StpMode;
only session messages (and the rare admin EndOfSession) are decoded one by one in Python.

Access control (issue 6): the login decision says which order-entry templates the session may
send.  A trading session (``allowed`` None) takes the batch path, and the gateway's risk gate
checks each batch right after it is decoded, before the engine consumes the ring.  Any other
role's session is decoded frame by frame: a message its role does not allow is answered with
SessionReject NOT_AUTHORIZED, and after ``max_violations`` refused messages (those, orders
sent before login and an EndOfSession from a session without the admin role) the session is
logged out with POLICY_VIOLATION.  A connection that has not logged in after
``login_timeout_ms`` is logged out with LOGIN_TIMEOUT.
"""
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from matching.records import (
    UNKNOWN_SYMBOL,
    CommandType,
    LoginRejectReason,
    RejectReason,
    pack_command,
)
from matching.ring import SpscRing
from protocol import codec
from protocol.messages import (
    EndOfSession,
    Heartbeat,
    Login,
    LoginAccepted,
    LoginRejected,
    Logout,
    Message,
    PositionQuery,
    SessionReject,
)
from protocol.session_table import (
    TRANSITIONS,
    Event,
    SessionProtocolError,
    SessionState,
    expects_login,
    transition,
)
from protocol.symbols import symbol_wire

__all__ = ["LoginDecision", "LogoutReason", "RiskGate", "ServerSession", "SessionCounters",
           "SessionState"]

SOFH_SIZE = 6


# the events looked up on every read or tick, bound once (an Enum attribute costs a lookup)
_ORDER = Event.ORDER
_LOGIN_TIMEOUT = Event.LOGIN_TIMEOUT
_PEER_SILENT = Event.PEER_SILENT
_HEARTBEAT_DUE = Event.HEARTBEAT_DUE

#: the event of a decoded frame, by its message class (order entry and server-to-client templates
#: are told by template id: see frame_event)
_FRAME_EVENTS: dict[type, Event] = {
    Heartbeat: Event.HEARTBEAT,
    Logout: Event.LOGOUT,
    PositionQuery: Event.POSITION_QUERY,
    EndOfSession: Event.END_OF_SESSION,
}


def frame_event(msg: Message) -> Event:
    """The session event a decoded frame from the peer is.  Not for a Login: its event
    (LOGIN_ACCEPTED or LOGIN_REJECTED) is the gateway's decision, asked only when the state
    expects a login."""
    event = _FRAME_EVENTS.get(type(msg))
    if event is not None:
        return event
    if codec.is_order_template(int(type(msg).TEMPLATE_ID)):
        return Event.ORDER
    return Event.SERVER_MESSAGE


class LogoutReason(enum.IntEnum):
    """Logout.reason values sent by the server."""

    NORMAL = 0
    HEARTBEAT_TIMEOUT = 1
    PROTOCOL_ERROR = 2
    SERVER_SHUTDOWN = 3
    SLOW_CONSUMER = 4
    POLICY_VIOLATION = 5      # repeated messages the session's role may not send
    CONNECTION_LIMIT = 6      # too many connections (in all or from the address)
    LOGIN_TIMEOUT = 7         # no Login within login_timeout_ms


@dataclass(frozen=True, slots=True)
class LoginDecision:
    """The gateway's answer to a Login: accepted with the session id and the next server sequence
    number, or refused with a LoginRejectReason."""

    accepted: bool
    session_id: int = 0
    next_seq_num: int = 0    # of the next message this connection gets (the replay's first)
    #: nextExpectedSeqNum of the Login when it asked for a replay (messages replay_from ..
    #: next - 1 come from the message store before any live message); 0 = no replay
    replay_from: int = 0
    reason: int = 0
    account_id: int = 0      # stamped on every command of the session (STP, mass cancel)
    role: str = "trader"     # the JWT role; "admin" may send EndOfSession
    #: order-entry templates the session may send; None = all of them (a trading session,
    #: decoded in batches into the ring)
    allowed: frozenset[int] | None = None
    #: answers a PositionQuery with the messages to send (None: the role may not ask)
    positions: Callable[[PositionQuery], list[Message]] | None = None


class RiskGate(Protocol):
    """The gateway's pre-trade check of the records a decode just published (gateway/risk/pretrade.pyx)."""

    def check_recent(self, ring: SpscRing, n: int) -> int: ...


@dataclass(slots=True)
class SessionCounters:
    """Session-layer outcomes, summed by the gateway into metrics (never per order)."""

    rejects: dict[int, int] = field(default_factory=dict)       # SessionReject reason -> count
    login_failures: dict[int, int] = field(default_factory=dict)  # LoginRejectReason -> count
    heartbeat_timeouts: int = 0
    slow_consumers: int = 0
    role_violations: int = 0      # messages refused as NOT_AUTHORIZED or NOT_LOGGED_IN
    policy_disconnects: int = 0   # sessions logged out for repeated violations
    login_timeouts: int = 0


class ServerSession:
    """One connection's session state.

    symbols: the codec's SymbolTable; ring: the inbound ring order commands are written to;
    login: the gateway's decision function for a Login message (verifies the token, assigns the
    session id); sofh: True on TCP (SOFH framing), False on WebSocket (one or more SBE messages
    per WebSocket message); heartbeat_ms: the server's default interval, which a client may
    change at login up to max_heartbeat_ms.  gate: the risk gate run on every decoded batch
    (None: no checks); login_timeout_ms: 0 = none; max_violations: 0 = never log out for them.
    """

    def __init__(self, symbols: codec.SymbolTable, ring: SpscRing,
                 login: Callable[[Login], LoginDecision], *, now_ns: int, sofh: bool = True,
                 heartbeat_ms: int = 1000, timeout_factor: float = 3.0,
                 max_heartbeat_ms: int = 60_000, counters: SessionCounters | None = None,
                 gate: RiskGate | None = None, login_timeout_ms: int = 0,
                 max_violations: int = 0) -> None:
        self.symbols = symbols
        self.ring = ring
        self._login = login
        self.sofh = sofh
        self.state = SessionState.AWAIT_LOGIN
        self.session_id = 0
        self.account = ""
        self.account_id = 0
        self.role = ""
        self.stp_default = 0
        self.cancel_on_disconnect = False
        self.heartbeat_ms = heartbeat_ms
        self.timeout_factor = timeout_factor
        self.max_heartbeat_ms = max_heartbeat_ms
        self.counters = counters if counters is not None else SessionCounters()
        self.close_reason: int | None = None
        #: True when decoding stopped because the inbound ring is full: the caller drains the
        #: engine and calls receive_data(b"", now) again.
        self.ring_full = False
        #: order commands written into the ring since the caller last reset it
        self.commands_queued = 0
        self._buf = bytearray()
        self._pos = 0
        self._out = bytearray()
        self._last_rx_ns = now_ns
        self._last_tx_ns = now_ns
        self.gate = gate
        self.allowed: frozenset[int] | None = None
        self._positions: Callable[[PositionQuery], list[Message]] | None = None
        self._login_deadline_ns = now_ns + login_timeout_ms * 1_000_000 if login_timeout_ms else 0
        self.max_violations = max_violations
        self.violations = 0

    # -- inputs ------------------------------------------------------------------------------
    def receive_data(self, data: bytes, now_ns: int) -> None:
        """Feed bytes from the peer.  Complete order messages go to the ring in one batch;
        session messages are handled here; a partial frame waits for more bytes."""
        if self.state is SessionState.CLOSED:
            return
        if data:
            self._last_rx_ns = now_ns
            if self._pos and self._pos == len(self._buf):
                self._buf.clear()
                self._pos = 0
            self._buf += data
        self.ring_full = False
        self._process(now_ns)
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[:self._pos]
            self._pos = 0

    def end_of_message(self, now_ns: int) -> None:
        """For transports that delimit messages (WebSocket, ``sofh=False``): call after the
        bytes of one transport message were fed.  Bytes left over then are a truncated SBE
        message: SessionReject MALFORMED, then Logout PROTOCOL_ERROR."""
        if self.state is SessionState.CLOSED or self.ring_full or self._pos >= len(self._buf):
            return
        self._malformed(RejectReason.REJ_MALFORMED, self._template_at(self._pos), now_ns)

    def protocol_error(self, now_ns: int, template_id: int = 0) -> None:
        """The transport got something that is not this protocol at all (a WebSocket text
        message): SessionReject MALFORMED, then Logout PROTOCOL_ERROR."""
        if self.state is not SessionState.CLOSED:
            self._malformed(RejectReason.REJ_MALFORMED, template_id, now_ns)

    def tick(self, now_ns: int) -> None:
        """Timers, at most one per call: the first of the state's armed timers
        (``session_table.timers_armed``: login timeout, silent peer, heartbeat due) that is
        due fires.  A silent peer or a missed login is logged out; a Heartbeat is sent after an
        interval with nothing sent."""
        if self.state is SessionState.CLOSED:
            return
        # the timers in session_table.TIMERS' order, each only where the state's row has it
        # (written out rather than looped: this runs for every connection on every tick)
        row = TRANSITIONS[self.state]
        interval = self.heartbeat_ms * 1_000_000
        if (_LOGIN_TIMEOUT in row and self._login_deadline_ns
                and now_ns > self._login_deadline_ns):
            timer = _LOGIN_TIMEOUT
        elif _PEER_SILENT in row and now_ns - self._last_rx_ns > interval * self.timeout_factor:
            timer = _PEER_SILENT
        elif _HEARTBEAT_DUE in row and now_ns - self._last_tx_ns >= interval:
            timer = _HEARTBEAT_DUE
        else:
            return
        self.state = transition(self.state, timer)
        self._timer_fired(timer, now_ns)

    def _timer_fired(self, timer: Event, now_ns: int) -> None:
        if timer is Event.LOGIN_TIMEOUT:
            self.counters.login_timeouts += 1
            self._logout(LogoutReason.LOGIN_TIMEOUT)
        elif timer is Event.PEER_SILENT:
            self.counters.heartbeat_timeouts += 1
            self._logout(LogoutReason.HEARTBEAT_TIMEOUT)
        else:
            self._send(Heartbeat(), now_ns)

    def note_sent(self, now_ns: int) -> None:
        """The transport wrote business messages for this session (they reset the heartbeat)."""
        self._last_tx_ns = now_ns

    def shutdown(self, reason: int = LogoutReason.SERVER_SHUTDOWN) -> None:
        """Server-initiated end: a Logout with ``reason``, then the transport closes."""
        if self.state is not SessionState.CLOSED:
            self.state = transition(self.state, Event.SHUTDOWN)
            self._logout(reason)

    # -- outputs -----------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        """Session-layer bytes (login answers, heartbeats, rejects, logout) to write now."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def closed(self) -> bool:
        return self.state is SessionState.CLOSED

    # -- internals ---------------------------------------------------------------------------
    def _send(self, msg: Message, now_ns: int) -> None:
        self._out += codec.encode(msg, sofh=self.sofh)
        self._last_tx_ns = now_ns

    def _logout(self, reason: int) -> None:
        # what every transition to CLOSED sends (but LOGIN_REJECTED's, which is the
        # LoginRejected alone); the caller has applied the table already
        self._out += codec.encode(Logout(reason=int(reason)), sofh=self.sofh)
        self.close_reason = int(reason)

    def _malformed(self, reject_reason: int, template_id: int, now_ns: int) -> None:
        # a frame (or transport message) that is not this protocol: SessionReject, then Logout
        self.state = transition(self.state, Event.MALFORMED)
        self._reject(reject_reason, template_id, now_ns)
        self._logout(LogoutReason.PROTOCOL_ERROR)

    def _reject(self, reason: int, template_id: int, now_ns: int) -> None:
        self.counters.rejects[reason] = self.counters.rejects.get(reason, 0) + 1
        self._send(SessionReject(reason=int(reason), ref_template_id=template_id), now_ns)

    def _violation(self, reason: int, template_id: int, now_ns: int) -> None:
        # a message the session may not send (role, or not logged in): reject, and end the
        # session once it keeps doing so
        self.counters.role_violations += 1
        self.violations += 1
        self._reject(reason, template_id, now_ns)
        if self.max_violations and self.violations >= self.max_violations:
            self.state = transition(self.state, Event.VIOLATION_LIMIT)
            self.counters.policy_disconnects += 1
            self._logout(LogoutReason.POLICY_VIOLATION)

    def _process(self, now_ns: int) -> None:
        while self.state is not SessionState.CLOSED:
            row = TRANSITIONS[self.state]
            if self.allowed is None and _ORDER in row:
                # a trading session: order frames in bulk, the table's ORDER row applied once
                # per batch rather than per order (the decoder stops at the first other frame),
                # and read directly rather than through transition(): the row is there, and
                # this is the per-read path
                pos, n, status = codec.decode_orders(
                    self._buf, self._pos, len(self._buf), self.ring, self.session_id,
                    self.symbols, now_ns, self.sofh, self.account_id, self.stp_default)
                self._pos = pos
                if n:
                    self.state = row[_ORDER]
                if n and self.gate is not None:
                    # before anything else runs on this thread, so before the engine's pump
                    self.gate.check_recent(self.ring, n)
                self.commands_queued += n
                if status == codec.NEED_MORE:
                    return
                if status == codec.RING_FULL:
                    self.ring_full = True
                    return
                if status == codec.MALFORMED or status == codec.UNKNOWN_TEMPLATE:
                    reason = (RejectReason.REJ_MALFORMED if status == codec.MALFORMED
                              else RejectReason.REJ_UNKNOWN_TEMPLATE)
                    self._malformed(reason, self._template_at(pos), now_ns)
                    return
                # SESSION_MESSAGE: fall through to one-by-one handling of that frame
            try:
                msg, nxt = codec.decode_next(self._buf, self._pos, self.sofh)
            except codec.ProtocolError as exc:
                self._malformed(exc.reason, self._template_at(self._pos), now_ns)
                return
            if msg is None or not self._on_frame(msg, nxt, now_ns):
                return

    def _on_frame(self, msg: Message, nxt: int, now_ns: int) -> bool:
        """One decoded frame ending at ``nxt``: classify it, ask the table, run its effects.
        Returns False when the caller must stop with the frame not consumed (ring full)."""
        if isinstance(msg, Login):
            self._pos = nxt
            self._on_login(msg, now_ns)
            return True
        template = int(type(msg).TEMPLATE_ID)
        event = frame_event(msg)
        try:
            self.state = transition(self.state, event)
        except SessionProtocolError:
            self._pos = nxt
            self._refuse(event, template, now_ns)
            return True
        if event is Event.ORDER:
            return self._order_by_role(template, nxt, now_ns)
        if event is Event.END_OF_SESSION:
            assert isinstance(msg, EndOfSession)
            if not self._end_of_session(msg, now_ns):
                self.ring_full = True          # retried once the engine has drained
                return False
            self._pos = nxt
            return True
        self._pos = nxt
        if event is Event.LOGOUT:
            self._logout(LogoutReason.NORMAL)
        elif event is Event.POSITION_QUERY:
            assert isinstance(msg, PositionQuery)
            if self._positions is None:
                self._violation(RejectReason.REJ_NOT_AUTHORIZED, template, now_ns)
            else:
                for m in self._positions(msg):
                    self._send(m, now_ns)
        # HEARTBEAT: receiving it (any bytes) already reset the peer's silence timer
        return True

    def _refuse(self, event: Event, template: int, now_ns: int) -> None:
        # a frame the table does not allow in this state: answered, the state unchanged (unless
        # the refusals add up to max_violations).  Before login it is NOT_LOGGED_IN, after it
        # NOT_AUTHORIZED; a server-to-client template before login is rejected without
        # counting as a violation (it is noise, not an attempt to trade).
        if expects_login(self.state):
            if event is Event.SERVER_MESSAGE:
                self._reject(RejectReason.REJ_NOT_LOGGED_IN, template, now_ns)
            else:
                self._violation(RejectReason.REJ_NOT_LOGGED_IN, template, now_ns)
        else:
            self._violation(RejectReason.REJ_NOT_AUTHORIZED, template, now_ns)

    def _order_by_role(self, template: int, end: int, now_ns: int) -> bool:
        # an order-entry frame on a session that is not a trading session: into the ring when
        # its role allows it (through the same batch decoder and gate), refused otherwise.
        # Returns False when the caller must stop (ring full).
        if self.allowed is None or template not in self.allowed:
            self._pos = end
            self._violation(RejectReason.REJ_NOT_AUTHORIZED, template, now_ns)
            return True
        pos, n, status = codec.decode_orders(self._buf, self._pos, end, self.ring, self.session_id,
                                             self.symbols, now_ns, self.sofh, self.account_id,
                                             self.stp_default)
        if status == codec.RING_FULL:
            self.ring_full = True
            return False
        self._pos = pos
        if n and self.gate is not None:
            self.gate.check_recent(self.ring, n)
        self.commands_queued += n
        return True

    def _end_of_session(self, msg: EndOfSession, now_ns: int) -> bool:
        """An admin session's EndOfSession becomes a journaled CMD_END_OF_SESSION in the ring
        (False: the ring is full); any other role gets SessionReject NOT_AUTHORIZED."""
        if self.role != "admin":
            self._violation(RejectReason.REJ_NOT_AUTHORIZED, EndOfSession.TEMPLATE_ID, now_ns)
            return True
        symbol_id = self.symbols.lookup(msg.symbol) if msg.symbol else UNKNOWN_SYMBOL
        # an unknown name rides along in `reserved` for the reject to echo (as decode_orders does)
        name = int.from_bytes(symbol_wire(msg.symbol), "little") if symbol_id == UNKNOWN_SYMBOL else 0
        record = pack_command(type=CommandType.CMD_END_OF_SESSION, ts=now_ns, session_id=self.session_id,
                              account_id=self.account_id, symbol_id=symbol_id,
                              depth=1 if not msg.symbol else 0, cl_ord_id=msg.cl_ord_id,
                              reserved=name)
        if self.ring.push(record) == 0:
            return False
        self.commands_queued += 1
        return True

    def _template_at(self, pos: int) -> int:
        # the refused frame's template id, when it can be told: not when the SOFH itself is bad
        # (then the bytes after it mean nothing, and whether they have arrived yet depends on
        # how the stream was split)
        buf = self._buf
        if self.sofh:
            if len(buf) < pos + SOFH_SIZE:
                return 0
            n = int.from_bytes(buf[pos:pos + 4], "big")
            if not (codec.MIN_FRAME_SIZE <= n <= codec.MAX_FRAME_SIZE) \
                    or buf[pos + 4:pos + 6] != b"\xeb\x50":
                return 0
        off = pos + (SOFH_SIZE if self.sofh else 0)
        if len(buf) >= off + 4:
            return int.from_bytes(buf[off + 2:off + 4], "little")
        return 0

    def _on_login(self, msg: Login, now_ns: int) -> None:
        if not expects_login(self.state):
            # a second Login: refused, the session goes on
            self._login_failed(LoginRejectReason.LOGIN_ALREADY_LOGGED_IN, now_ns, close=False)
            return
        # the agreed interval is echoed in LoginAccepted, so clamping is visible to the client
        hb = min(max(msg.heartbeat_interval_ms or self.heartbeat_ms, 100), self.max_heartbeat_ms)
        decision = self._login(msg)
        if not decision.accepted:
            self._login_failed(decision.reason, now_ns)
            return
        self.state = transition(self.state, Event.LOGIN_ACCEPTED)
        self.session_id = decision.session_id
        self.allowed = decision.allowed
        self._positions = decision.positions
        self.account_id = decision.account_id
        self.role = decision.role
        # stamped on the NewOrders sent with stpMode NONE (an invalid value makes the core
        # reject those orders with INVALID_FIELD, so the mistake is visible)
        self.stp_default = msg.default_stp_mode
        self.cancel_on_disconnect = bool(msg.cancel_on_disconnect)
        self.heartbeat_ms = hb
        self._send(LoginAccepted(session_id=decision.session_id,
                                 next_seq_num=decision.next_seq_num,
                                 heartbeat_interval_ms=hb), now_ns)

    def _login_failed(self, reason: int, now_ns: int, close: bool = True) -> None:
        self.counters.login_failures[int(reason)] = self.counters.login_failures.get(int(reason), 0) + 1
        self._send(LoginRejected(reason=int(reason)), now_ns)
        if close:
            # no Logout after a LoginRejected: the rejection is the end
            self.state = transition(self.state, Event.LOGIN_REJECTED)
            self.close_reason = int(reason)
