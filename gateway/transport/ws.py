"""The WebSocket port (``ws_listen``, default 127.0.0.1:7002), built on the ``websockets`` library,
in the same event loop as the TCP gateway.

* ``/md``: market data for price subscribers (gateway/marketdata/fanout.py).  With
  ``md_require_token`` the opening handshake must carry a JWT of role ``md`` (or ``admin``), as
  ``?token=...`` or ``Authorization: Bearer ...``; otherwise HTTP 401.
* ``/orders``: order entry for clients that can only speak WebSocket.  Each binary WebSocket
  message holds one or more complete SBE messages without SOFH; the session layer is the same
  sans-I/O ``ServerSession`` as on TCP (``sofh=False``), so login, rejects, sequencing and replay
  are the same, and the engine writes one binary message per session per tick.  The same
  access control as on TCP (issue 6): the connection limits of ``max_connections`` and
  ``max_connections_per_address`` (Logout CONNECTION_LIMIT, then close), the per-address login
  rate limit and the audit log (by the peer address), role checks, ``login_timeout_ms``,
  ``max_role_violations`` and the pre-trade risk gate on every decoded batch.
"""
from __future__ import annotations

import asyncio
import logging
import time
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from gateway.config.schema import parse_hostport
from gateway.engine import Engine
from gateway.marketdata.fanout import MarketData
from gateway.security.access import peer_host
from gateway.security.auth import LoginFailure, unverified_subject
from protocol import codec
from protocol.messages import Login, Logout
from protocol.session import LoginDecision, LogoutReason, ServerSession, SessionCounters

log = logging.getLogger("hftgw.ws")

MD_PATH = "/md"
ORDERS_PATH = "/orders"
MAX_MESSAGE_BYTES = 1 << 20  # one WebSocket message; an order batch of ~20 000 NewOrders
REPLAY_CHUNK = 256 * 1024    # bytes read from the message store per message of a replay

# WebSocket close code for the end of an order session, by Logout reason
_CLOSE_CODES = {int(LogoutReason.NORMAL): 1000, int(LogoutReason.SERVER_SHUTDOWN): 1001}


class WsOrderSession:
    """One ``/orders`` connection: binary messages to the session state machine, its output and
    the engine's responses back as binary messages.  The engine sees it as a session writer."""

    sofh = False

    def __init__(self, engine: Engine, ws: ServerConnection, counters: SessionCounters) -> None:
        self.engine = engine
        self.ws = ws
        self.counters = counters
        peer = ws.remote_address
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.host = peer_host(self.peer)
        cfg = engine.cfg
        self.session = ServerSession(
            engine.symbols, engine.inbound, self._login, now_ns=time.time_ns(), sofh=False,
            heartbeat_ms=cfg.heartbeat_interval_ms, timeout_factor=cfg.heartbeat_timeout_factor,
            max_heartbeat_ms=cfg.max_heartbeat_interval_ms, counters=counters,
            gate=engine.risk if cfg.pre_trade_risk else None,
            login_timeout_ms=cfg.login_timeout_ms, max_violations=cfg.max_role_violations)
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        self.replay_next = 0           # seqNum the replay sends next (0 = live)
        self._replay_task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        limits = self.engine.addresses
        refused = limits.connect(self.host, time.monotonic())
        if refused:
            if limits.may_log(time.monotonic()):
                log.warning("WebSocket connection from %s refused: %s connection limit", self.peer, refused)
            self._send(codec.encode(Logout(reason=LogoutReason.CONNECTION_LIMIT), sofh=False))
            await self.ws.close(1008, "connection limit")
            return
        try:
            await self._run()
        finally:
            limits.disconnect(self.host)

    async def _run(self) -> None:
        s = self.session
        try:
            async for msg in self.ws:
                now = time.time_ns()
                if isinstance(msg, str):
                    s.protocol_error(now)  # the order protocol is binary: SessionReject + Logout
                else:
                    s.receive_data(msg, now)
                    while s.ring_full:
                        self.engine.pump()
                        s.receive_data(b"", now)
                    s.end_of_message(now)
                if s.commands_queued:
                    s.commands_queued = 0
                    self.engine.request_pump()
                self._write_session_output()
                if self._close_task is not None:
                    await self._close_task  # the handler must not end (close 1000) before it
                    break
        except ConnectionClosed:
            pass
        finally:
            if self in self.engine.logins:
                self.engine.disconnect(self, s.cancel_on_disconnect)
                log.info("session %d (%s, WebSocket) disconnected", s.session_id, self.peer)

    def _login(self, msg: Login) -> LoginDecision:
        decision = self.engine.login(msg, self, self.peer, sofh=False)
        self.replay_next = decision.replay_from
        if decision.replay_from:
            # starts once this read's session output (LoginAccepted) has been sent
            self._replay_task = asyncio.get_running_loop().create_task(self._replay())
        return decision

    async def _replay(self) -> None:
        """Send messages replay_next .. the store's end from the message store, one awaited
        (flow-controlled) WebSocket message per chunk; live messages meanwhile are in the store
        and go out as part of it."""
        store = self.engine.store
        sid = self.session.session_id
        try:
            while self.replay_next and not self._closing:
                data, nxt = store.read(sid, self.replay_next,
                                       min(REPLAY_CHUNK, self.engine.cfg.max_write_buffer // 4))
                if data:
                    out = self.session.data_to_send()
                    if out:
                        self._send(out)
                    await self.ws.send(codec.strip_sofh(data))
                    self.engine.replayed_messages += nxt - self.replay_next
                    self.session.note_sent(time.time_ns())
                self.replay_next = nxt if nxt <= store.end_seq(sid) else 0
        except ConnectionClosed:
            self.replay_next = 0
        except Exception:
            # a replay that cannot go on would leave a gap: end the connection instead
            log.exception("session %d (%s, WebSocket): replay failed", sid, self.peer)
            self.replay_next = 0
            self._closing = True
            await self.ws.close(1011, "replay failed")

    def _send(self, data: bytes) -> None:
        if self.ws.protocol.state is State.OPEN:
            broadcast([self.ws], data)  # a synchronous send of one binary message

    def deliver(self, data: bytes, now_ns: int) -> bool:
        """Responses for this session from the engine (one call per tick); False when they
        were not sent now (closing, or the replay sends them from the store)."""
        if self._closing or self.replay_next:
            return False  # during a replay these messages go out from the store, in order
        out = self.session.data_to_send()
        if out:
            # session output of this tick (LoginAccepted) goes before business messages
            self._send(out)
        sent = self.ws.protocol.state is State.OPEN
        # the engine's (and the store's) framing is SOFH; a WebSocket message carries bare SBE
        self._send(codec.strip_sofh(data))
        self.session.note_sent(now_ns)
        transport = self.ws.transport
        if transport.get_write_buffer_size() > self.engine.cfg.max_write_buffer:
            log.warning("session %d (%s, WebSocket) too slow: %d bytes unread, disconnecting",
                        self.session.session_id, self.peer, transport.get_write_buffer_size())
            self.session.shutdown(LogoutReason.SLOW_CONSUMER)
            self.counters.slow_consumers += 1
            self.session.data_to_send()  # the Logout cannot get past a full buffer anyway
            self._closing = True
            transport.abort()
        return sent

    def tick(self, now_ns: int) -> None:
        """Heartbeat timers (called by the server every ~100 ms)."""
        self.session.tick(now_ns)
        self._write_session_output()

    def shutdown(self) -> None:
        self.session.shutdown()
        self._write_session_output()

    def _write_session_output(self) -> None:
        s = self.session
        out = s.data_to_send()
        if out and not self._closing:
            self._send(out)
        if s.closed and not self._closing:
            self._closing = True
            reason = s.close_reason if s.close_reason is not None else int(LogoutReason.PROTOCOL_ERROR)
            if s.session_id:
                code = _CLOSE_CODES.get(reason, 1008)
                text = f"logout reason {reason}"
            else:  # LoginRejected (its reason) or a protocol error before login
                code, text = 1008, f"closed before login, reason {reason}"
            log.info("closing %s (WebSocket): %s", self.peer, text)
            self._close_task = asyncio.get_running_loop().create_task(self.ws.close(code, text))


class WsGateway:
    """The WebSocket listener: routes ``/md`` to the market-data publisher and ``/orders`` to
    order sessions.  ``start`` binds (raises OSError when the port is taken)."""

    def __init__(self, engine: Engine, md: MarketData, counters: SessionCounters) -> None:
        self.engine = engine
        self.cfg = engine.cfg
        self.md = md
        self.counters = counters
        self.order_sessions: set[WsOrderSession] = set()
        self.server: Server | None = None
        self.port = 0

    async def start(self) -> None:
        host, port = parse_hostport(self.cfg.ws_listen, "ws_listen")
        ping = self.cfg.ws_ping_interval_s or None
        self.server = await serve(
            self._handler, host, port, process_request=self._process_request,
            # market-data frames are built once for all subscribers: no per-connection deflate
            compression=None,
            max_size=MAX_MESSAGE_BYTES, ping_interval=ping, ping_timeout=self.cfg.ws_ping_timeout_s,
            close_timeout=2.0, reuse_address=True, backlog=4096,
            logger=logging.getLogger("hftgw.ws.server"))
        sock = next(iter(self.server.sockets))
        self.port = int(sock.getsockname()[1])

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == ORDERS_PATH:
            return None
        if url.path != MD_PATH:
            return _respond(connection, HTTPStatus.NOT_FOUND,
                            f"no WebSocket endpoint at {url.path}: use {MD_PATH} or {ORDERS_PATH}\n")
        if len(self.md.conns) >= self.cfg.md_max_connections:
            self.md.counters.refused_connections += 1
            self._audit_md(connection, HTTPStatus.SERVICE_UNAVAILABLE, "rejected", "connection_limit")
            return _respond(connection, HTTPStatus.SERVICE_UNAVAILABLE, "too many market-data connections\n")
        if self.cfg.md_require_token:
            token = parse_qs(url.query).get("token", [""])[0]
            auth = request.headers.get("Authorization", "")
            if not token and auth.lower().startswith("bearer "):
                token = auth[7:].strip()
            try:
                ident = self.engine.verifier.verify(token)
                if not ident.roles & {"md", "admin"}:
                    raise LoginFailure(0, f"roles {sorted(ident.roles)} may not read market data",
                                       "role_not_allowed")
            except LoginFailure as exc:
                self.md.counters.auth_failures += 1
                self._audit_md(connection, HTTPStatus.UNAUTHORIZED, "rejected", exc.code,
                               unverified_subject(token))
                return _respond(connection, HTTPStatus.UNAUTHORIZED, f"market data needs a token: {exc}\n")
            # a verified token is a login: audited like an order-entry one
            self._audit_md(connection, HTTPStatus.SWITCHING_PROTOCOLS, "accepted", "", ident.account)
        return None

    def _audit_md(self, connection: ServerConnection, status: HTTPStatus, outcome: str, reason: str,
                  account: str = "") -> None:
        # one line per refused /md handshake (and per accepted one that showed a token)
        peer = connection.remote_address
        self.engine.audit.write("md_handshake", address=f"{peer[0]}:{peer[1]}" if peer else "?",
                                account=account, outcome=outcome, reason=reason, status=int(status))

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        if urlsplit(ws.request.path).path == ORDERS_PATH:
            session = WsOrderSession(self.engine, ws, self.counters)
            self.order_sessions.add(session)
            try:
                await session.run()
            finally:
                self.order_sessions.discard(session)
        else:
            await self.md.serve(ws)

    def tick(self, now_ns: int) -> None:
        for s in list(self.order_sessions):
            s.tick(now_ns)

    def stop_accepting(self) -> None:
        """Close the listening socket; connections already open go on until ``close``."""
        if self.server is not None:
            self.server.server.close()

    async def close(self) -> None:
        """Log the order sessions out, close the subscribers, stop listening."""
        for s in list(self.order_sessions):
            s.shutdown()
        await self.md.close()
        if self.server is not None:
            self.server.close()
            try:
                await asyncio.wait_for(self.server.wait_closed(), 3.0)
            except TimeoutError:
                log.warning("WebSocket connections still open after 3 s; leaving them")


def _respond(connection: ServerConnection, status: HTTPStatus, text: str) -> Response:
    resp = connection.respond(status, text)
    # the handshake is refused: tell the client not to keep the connection for another try
    resp.headers = Headers(resp.headers)
    resp.headers["Connection"] = "close"
    return resp
