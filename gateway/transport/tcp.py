"""Raw-TCP order entry: the asyncio transport around the sans-I/O ``ServerSession``."""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import cast

from gateway.engine import Engine
from gateway.security.access import peer_host
from matching.records import LoginRejectReason
from protocol import codec
from protocol.messages import Login, Logout
from protocol.session import LoginDecision, LogoutReason, ServerSession, SessionCounters, SessionState

log = logging.getLogger("hftgw.tcp")

LINGER_NS = 1_000_000_000   # how long a closed session waits for its peer to close
REPLAY_CHUNK = 256 * 1024   # bytes read from the message store per write of a replay


class OrderEntryProtocol(asyncio.Protocol):
    """One TCP connection: bytes to the session state machine, its output and the engine's
    responses back to the socket.

    Bounded by construction (issue 6): a connection over ``max_connections`` in all or
    ``max_connections_per_address`` from its address gets Logout CONNECTION_LIMIT and is closed
    at once; when the client leaves more than ``write_buffer_high`` bytes unread the server stops
    reading from it (so it cannot make more responses), and if that lasts
    ``slow_consumer_timeout_ms``, or the unread bytes exceed ``max_write_buffer`` anyway (fills
    of its resting orders), it is disconnected with Logout SLOW_CONSUMER.

    Re-login replay (SoupBinTCP): after LoginAccepted the messages asked for are written from
    the message store in chunks, only while the unread output is below ``write_buffer_high``
    (continued by ``resume_writing``), so a long replay never counts as a slow consumer; live
    messages meanwhile are already in the store and go out as part of the replay."""

    def __init__(self, engine: Engine, registry: set[OrderEntryProtocol],
                 counters: SessionCounters) -> None:
        self.engine = engine
        self.registry = registry
        self.counters = counters
        self.transport: asyncio.Transport | None = None
        self.session: ServerSession | None = None
        self.peer = ""
        self.host = ""
        self.counted = False           # counted in the engine's per-address limits
        self.paused_at_ns = 0          # reading paused for unread output since (0 = reading)
        self.linger_since_ns = 0       # session over, FIN sent, waiting for the peer's close
        self.login_refusal: int | None = None  # LoginRejectReason of a refused login
        self.replay_next = 0           # seqNum the replay writes next (0 = live)

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.host = peer_host(self.peer)
        cfg = self.engine.cfg
        limits = self.engine.addresses
        refused = limits.connect(self.host, time.monotonic())
        t = self.transport
        assert t is not None
        if refused:
            if limits.may_log(time.monotonic()):  # a flood must not flood the log too
                log.warning("connection from %s refused: %s connection limit (%s refused so far)",
                            self.peer, refused, sum(limits.counters.connections_refused.values()))
            t.write(codec.encode(Logout(reason=LogoutReason.CONNECTION_LIMIT)))
            t.close()
            return
        self.counted = True
        t.set_write_buffer_limits(high=cfg.write_buffer_high)
        self.session = ServerSession(
            self.engine.symbols, self.engine.inbound, self._login, now_ns=time.time_ns(),
            heartbeat_ms=cfg.heartbeat_interval_ms, timeout_factor=cfg.heartbeat_timeout_factor,
            max_heartbeat_ms=cfg.max_heartbeat_interval_ms, counters=self.counters,
            gate=self.engine.risk if cfg.pre_trade_risk else None,
            login_timeout_ms=cfg.login_timeout_ms,
            max_violations=cfg.max_role_violations)
        self.registry.add(self)

    def data_received(self, data: bytes) -> None:
        s = self.session
        if s is None:
            return                     # refused connection: closing
        now = time.time_ns()
        s.receive_data(data, now)
        while s.ring_full:
            # the ring filled mid-read: run the order path now and go on decoding
            self.engine.pump()
            s.receive_data(b"", now)
        if s.commands_queued:
            s.commands_queued = 0
            self.engine.request_pump()
        self._write_session_output()
        if self.replay_next:
            self._replay_more()

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.discard(self)
        if self.counted:
            self.engine.addresses.disconnect(self.host)
            self.counted = False
        self._detach(exc)

    def _detach(self, exc: Exception | None = None) -> None:
        # the session is over (logged out, or the connection is gone): once
        s = self.session
        if s is not None and s.state is not SessionState.AWAIT_LOGIN \
                and self in self.engine.logins:
            self.engine.disconnect(self, s.cancel_on_disconnect)
            log.info("session %d (%s) disconnected%s", s.session_id, self.peer,
                     f": {exc}" if exc else "",
                     extra={"event": "session.disconnect", "session_id": s.session_id,
                            "account": self.engine.account(s.session_id), "peer": self.peer,
                            "error": str(exc) if exc else "",
                            "cancel_on_disconnect": s.cancel_on_disconnect})

    def pause_writing(self) -> None:
        # the client leaves output unread: stop reading its input, which is what makes output
        t = self.transport
        if t is not None and not t.is_closing() and not self.paused_at_ns:
            self.paused_at_ns = time.time_ns()
            self.engine.access.read_pauses += 1
            t.pause_reading()

    def resume_writing(self) -> None:
        t = self.transport
        if self.paused_at_ns and t is not None and not t.is_closing():
            t.resume_reading()
        self.paused_at_ns = 0
        if self.replay_next:
            self._replay_more()

    # -- engine side -------------------------------------------------------------------------
    def _login(self, msg: Login) -> LoginDecision:
        decision = self.engine.login(msg, self, self.peer)
        self.login_refusal = None if decision.accepted else decision.reason
        self.replay_next = decision.replay_from
        return decision

    def _replay_more(self) -> None:
        # write replay chunks while the client keeps up; LoginAccepted (session output) first
        t, s = self.transport, self.session
        if t is None or s is None or t.is_closing() or self.linger_since_ns:
            self.replay_next = 0
            return
        out = s.data_to_send()
        if out:
            t.write(out)
        store = self.engine.store
        sid = s.session_id
        cfg = self.engine.cfg
        # stop at the transport's high-water mark (pause_writing follows, resume_writing
        # continues); chunks small enough that the unread bytes stay below max_write_buffer
        limit = cfg.write_buffer_high
        chunk = min(REPLAY_CHUNK, cfg.max_write_buffer // 4)
        while self.replay_next and t.get_write_buffer_size() < limit:
            try:
                data, nxt = store.read(sid, self.replay_next, chunk)
            except Exception:
                # a replay that cannot go on would leave the client a gap: end the connection
                log.exception("session %d (%s): replay from seq %d failed", sid, self.peer,
                              self.replay_next)
                self.replay_next = 0
                t.abort()
                return
            if data:
                t.write(data)
                self.engine.replayed_messages += nxt - self.replay_next
                s.note_sent(time.time_ns())
            # caught up: what the engine delivers from now on follows the store's end
            self.replay_next = nxt if nxt <= store.end_seq(sid) else 0

    def deliver(self, data: bytes, now_ns: int) -> bool:
        """Responses for this session from the engine (one call per tick); False when they
        were not written now (closing, or the replay sends them from the store)."""
        t = self.transport
        if t is None or t.is_closing() or self.linger_since_ns:
            return False
        assert self.session is not None
        if self.replay_next:
            # these messages are in the store already: the replay sends them in order
            self._replay_more()
            return False
        out = self.session.data_to_send()
        if out:
            # session output of this tick (LoginAccepted) goes before business messages
            t.write(out)
        t.write(data)
        self.session.note_sent(now_ns)
        if t.get_write_buffer_size() > self.engine.cfg.max_write_buffer:
            self._slow_consumer(f"{t.get_write_buffer_size()} bytes unread")
        return True

    def _slow_consumer(self, why: str) -> None:
        t = self.transport
        assert self.session is not None and t is not None
        log.warning("session %d (%s) too slow: %s, disconnecting", self.session.session_id,
                    self.peer, why,
                    extra={"event": "session.slow_consumer", "peer": self.peer,
                           "session_id": self.session.session_id,
                           "unread_bytes": t.get_write_buffer_size()})
        self.session.shutdown(LogoutReason.SLOW_CONSUMER)
        self.counters.slow_consumers += 1
        self.session.data_to_send()  # the Logout cannot get past a full buffer anyway
        t.abort()

    def tick(self, now_ns: int) -> None:
        """Timers (called by the server every ~100 ms): heartbeats, login timeout, and the
        slow-consumer timeout while reading is paused."""
        s, t = self.session, self.transport
        if s is None or t is None or t.is_closing():
            return
        if self.linger_since_ns:
            if now_ns - self.linger_since_ns > LINGER_NS:
                t.close()
            return
        if self.paused_at_ns:
            # not reading, so the peer's silence is ours: no heartbeat timeout meanwhile
            limit = self.engine.cfg.slow_consumer_timeout_ms * 1_000_000
            if now_ns - self.paused_at_ns > limit:
                self._slow_consumer(f"reading paused for {(now_ns - self.paused_at_ns) / 1e9:.1f} s")
            return
        s.tick(now_ns)
        self._write_session_output()
        if self.replay_next:
            self._replay_more()

    def shutdown(self) -> None:
        if self.session is not None:
            self.session.shutdown()
            self._write_session_output()

    def _close_reason(self) -> str:
        s = self.session
        assert s is not None
        if self.login_refusal is not None and not s.session_id:
            name: str = LoginRejectReason(self.login_refusal).name
            return "login_" + name.removeprefix("LOGIN_").lower()
        try:
            return LogoutReason(-1 if s.close_reason is None else s.close_reason).name.lower()
        except ValueError:
            return str(s.close_reason)

    def _write_session_output(self) -> None:
        s = self.session
        t = self.transport
        if s is None or t is None:
            return
        out = s.data_to_send()
        if out and not t.is_closing():
            t.write(out)
        if s.closed and not t.is_closing() and not self.linger_since_ns:
            reason = self._close_reason()
            log.info("closing %s (session %d): %s", self.peer, s.session_id, reason,
                     extra={"event": "session.closed", "peer": self.peer,
                            "session_id": s.session_id, "reason": reason})
            self._detach()
            # lingering close: FIN after the Logout, then read and drop what the peer still
            # sends until it closes (or LINGER_NS); closing with unread input would send a
            # RST that can destroy the Logout before the peer reads it
            try:
                if not t.can_write_eof():
                    raise OSError("no half-close on this transport")
                t.write_eof()
            except OSError:  # the peer is already gone (reset): nothing to drain
                t.close()
                return
            self.linger_since_ns = time.time_ns()
            if self.paused_at_ns:
                self.resume_writing()
