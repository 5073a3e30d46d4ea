"""Raw-TCP order entry: the asyncio transport around the sans-I/O ``ServerSession``."""
from __future__ import annotations

import asyncio
import logging
import socket
import time

from gateway.engine import Engine
from matching.records import LoginRejectReason
from protocol.messages import Login
from protocol.session import LoginDecision, LogoutReason, ServerSession, SessionCounters

log = logging.getLogger("hftgw.tcp")


class OrderEntryProtocol(asyncio.Protocol):
    """One TCP connection: bytes to the session state machine, its output and the engine's
    responses back to the socket.  A client whose unread responses exceed
    ``cfg.max_write_buffer`` bytes is disconnected (Logout SLOW_CONSUMER) rather than buffered
    without bound."""

    def __init__(self, engine: Engine, registry: set[OrderEntryProtocol],
                 counters: SessionCounters) -> None:
        self.engine = engine
        self.registry = registry
        self.counters = counters
        self.transport: asyncio.Transport | None = None
        self.session: ServerSession | None = None
        self.peer = ""
        self.login_refusal: int | None = None  # LoginRejectReason of a refused login

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        cfg = self.engine.cfg
        self.session = ServerSession(
            self.engine.symbols, self.engine.inbound, self._login, now_ns=time.time_ns(),
            heartbeat_ms=cfg.heartbeat_interval_ms, timeout_factor=cfg.heartbeat_timeout_factor,
            max_heartbeat_ms=cfg.max_heartbeat_interval_ms, counters=self.counters)
        self.registry.add(self)

    def data_received(self, data: bytes) -> None:
        s = self.session
        assert s is not None
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

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.discard(self)
        s = self.session
        if s is not None and s.session_id:
            self.engine.detach(s.session_id, s.cancel_on_disconnect)
            log.info("session %d (%s) disconnected%s", s.session_id, self.peer,
                     f": {exc}" if exc else "",
                     extra={"event": "session.disconnect", "session_id": s.session_id,
                            "account": self.engine.account(s.session_id), "peer": self.peer,
                            "error": str(exc) if exc else "",
                            "cancel_on_disconnect": s.cancel_on_disconnect})

    # -- engine side -------------------------------------------------------------------------
    def _login(self, msg: Login) -> LoginDecision:
        decision = self.engine.login(msg, self)
        self.login_refusal = None if decision.accepted else decision.reason
        return decision

    def deliver(self, data: bytes, now_ns: int) -> None:
        """Responses for this session from the engine (one call per tick)."""
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(data)
        assert self.session is not None
        self.session.note_sent(now_ns)
        if t.get_write_buffer_size() > self.engine.cfg.max_write_buffer:
            log.warning("session %d (%s) too slow: %d bytes unread, disconnecting",
                        self.session.session_id, self.peer, t.get_write_buffer_size(),
                        extra={"event": "session.slow_consumer", "peer": self.peer,
                               "session_id": self.session.session_id,
                               "unread_bytes": t.get_write_buffer_size()})
            self.session.shutdown(LogoutReason.SLOW_CONSUMER)
            self.counters.slow_consumers += 1
            self.session.data_to_send()  # the Logout cannot get past a full buffer anyway
            t.abort()

    def tick(self, now_ns: int) -> None:
        """Heartbeat timers (called by the server every ~100 ms)."""
        if self.session is not None:
            self.session.tick(now_ns)
            self._write_session_output()

    def shutdown(self) -> None:
        if self.session is not None:
            self.session.shutdown()
            self._write_session_output()

    def _close_reason(self) -> str:
        s = self.session
        assert s is not None
        if self.login_refusal is not None and not s.session_id:
            return "login_" + LoginRejectReason(self.login_refusal).name.removeprefix("LOGIN_").lower()
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
        if s.closed and not t.is_closing():
            reason = self._close_reason()
            log.info("closing %s (session %d): %s", self.peer, s.session_id, reason,
                     extra={"event": "session.closed", "peer": self.peer,
                            "session_id": s.session_id, "reason": reason})
            t.close()
