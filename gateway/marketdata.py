"""Market data for WebSocket price subscribers (DESIGN §1): BBO, trades and L2 depth with book
sequence numbers, binary (SBE templates 40-43) or JSON, conflated for slow readers.

Source, per engine pump and never per order: the outbound encoder notes in C which symbols'
books the pump's events changed and copies the fill records (``Outbound.md_tap``); after the
session writes of the pump (``Engine.post_pump``) the publisher reads the top 20 levels of each
changed book that has BBO or depth subscribers (``MatchingCore.book_levels``, C), compares them
with what it last published, and encodes each resulting message once per (symbol, stream,
encoding): the WebSocket frame is built once and the same bytes are written to every
subscriber, one ``writelines`` per connection per pump.  Trades are encoded in C
(``protocol.mdfeed``).

Sequence numbers: each symbol has a book sequence number (``bookSeq``), counting the changes of
its top 20 levels a side since the gateway started.  A depth stream (symbol, levels 5/10/20)
sends a DepthSnapshot with ``lastSeq`` = the bookSeq of its state, then DepthUpdates with
``firstSeq`` = the previous message's ``lastSeq`` + 1 and ``lastSeq`` = the bookSeq after the
change; so a client keeps an exact copy of the top levels and sees a gap as firstSeq > its
lastSeq + 1 (docs/protocol.md, "Market data feed").

Slow consumers: a connection whose unsent bytes (the transport's write buffer) pass
``md_conflate_bytes`` is "congested": its BBO is conflated (the newest replaces an unsent older
one), its depth updates are dropped and replaced by a fresh snapshot once it has caught up,
its trades are queued (never conflated); when the unsent bytes plus the queued trades pass
``md_max_buffer_bytes`` it is closed with code 1008 and reason "slow consumer".  Everything runs
on the event-loop thread; nothing here blocks.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from protocol import codec
from protocol.mdfeed import encode_trades
from protocol.mdjson import (
    CHANNELS,
    DEPTH_LEVELS,
    ENCODINGS,
    MAX_DEPTH_LEVELS,
    ErrorReply,
    JsonBbo,
    JsonDepthSnapshot,
    JsonDepthUpdate,
    MdError,
    Request,
    Response,
    Subscription,
    encoder,
    request_decoder,
    trades_prefix,
)
from protocol.messages import Bbo, DepthSnapshot, DepthUpdate

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from gateway.engine import Engine

log = logging.getLogger("hftgw.md")

MAX_CONTROL_BYTES = 4096
CLOSE_GRACE_S = 2.0       # a closing subscriber that does not finish the handshake is aborted
SERVICE_INTERVAL_S = 0.05  # how often congested connections are checked when nothing trades

# what an offered frame is, for the conflation rules
TRADE, BBO, DEPTH, CONTROL = 0, 1, 2, 3

Levels = list[tuple[int, int, int]]  # (price, size in lots, order count), best first


def ws_frame(payload: bytes, text: bool) -> bytes:
    """One unmasked (server) WebSocket frame carrying ``payload`` as a text or binary message."""
    return Frame(Opcode.TEXT if text else Opcode.BINARY, payload).serialize(mask=False)


def diff_levels(old: Levels, new: Levels) -> Levels:
    """The entries that turn ``old`` into ``new``: changed or new levels with their new state,
    removed levels with size 0 and order count 0 (order: new levels best first, then removals)."""
    if old == new:
        return []
    before = {p: (q, c) for p, q, c in old}
    out = [(p, q, c) for p, q, c in new if before.get(p) != (q, c)]
    if len(old):
        now = {p for p, _, _ in new}
        out.extend((p, 0, 0) for p, _, _ in old if p not in now)
    return out


@dataclass(slots=True)
class MdCounters:
    """Market-data outcomes, read by the metrics collector at scrape time."""

    messages_sent: int = 0       # WebSocket messages written to subscribers
    bytes_sent: int = 0
    dropped: int = 0             # BBO / depth messages conflated away for slow subscribers
    slow_disconnects: int = 0
    connections_total: int = 0
    refused_connections: int = 0  # over md_max_connections
    auth_failures: int = 0
    control_errors: dict[int, int] = field(default_factory=dict)  # MdError -> count


class DepthStream:
    """One (symbol, levels) depth stream: the state last published and its subscribers."""

    __slots__ = ("levels", "last_seq", "bids", "asks", "subs")

    def __init__(self, levels: int, last_seq: int, bids: Levels, asks: Levels) -> None:
        self.levels = levels
        self.last_seq = last_seq
        self.bids = bids
        self.asks = asks
        self.subs: dict[MdConnection, bool] = {}  # connection -> binary


class SymbolFeed:
    """One symbol's published state and subscribers."""

    __slots__ = ("sid", "name", "json_prefix", "book_seq", "ts", "bids", "asks", "bbo",
                 "bbo_subs", "trade_subs", "streams")

    def __init__(self, sid: int, name: str) -> None:
        self.sid = sid
        self.name = name
        self.json_prefix = trades_prefix(name)
        self.book_seq = 0
        self.ts = 0
        self.bids: Levels = []
        self.asks: Levels = []
        self.bbo = (0, 0, 0, 0)
        self.bbo_subs: dict[MdConnection, bool] = {}
        self.trade_subs: dict[MdConnection, bool] = {}
        self.streams: dict[int, DepthStream] = {}


class MdConnection:
    """One market-data WebSocket connection: subscriptions, this pump's frames, and the
    conflation state while it is congested."""

    __slots__ = ("md", "ws", "transport", "peer", "subs", "out", "congested", "pending_trades",
                 "pending_bytes", "pending_bbo", "resync", "tokens", "refill_at", "strikes",
                 "closing")

    def __init__(self, md: MarketData, ws: ServerConnection) -> None:
        self.md = md
        self.ws = ws
        self.transport: Any = ws.transport
        peer = ws.remote_address
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.subs: dict[tuple[str, int], tuple[bool, int]] = {}  # (channel, sid) -> (binary, levels)
        self.out: list[bytes] = []
        self.congested = False
        self.pending_trades: list[bytes] = []
        self.pending_bytes = 0
        self.pending_bbo: dict[int, bytes] = {}
        self.resync: set[tuple[int, int]] = set()  # (sid, levels) owed a fresh snapshot
        self.tokens = float(md.cfg.md_max_control_per_s)
        self.refill_at = time.monotonic()
        self.strikes = 0
        self.closing = False

    def offer(self, kind: int, key: Any, frame: bytes) -> None:
        """Queue a frame for this pump's write, or conflate it while congested."""
        if self.closing:
            return
        if not self.congested:
            if not self.out:
                self.md.dirty.append(self)
            self.out.append(frame)
            return
        if kind == BBO:
            if key in self.pending_bbo:
                self.md.counters.dropped += 1
            self.pending_bbo[key] = frame
        elif kind == DEPTH:
            self.md.counters.dropped += 1
            self.resync.add(key)
        else:  # trades and control replies are never conflated
            self.pending_trades.append(frame)
            self.pending_bytes += len(frame)
            if self.pending_bytes + self.transport.get_write_buffer_size() > self.md.cfg.md_max_buffer_bytes:
                self.disconnect_slow()

    def write_out(self) -> None:
        out = self.out
        self.out = []
        if self.closing or self.ws.protocol.state is not State.OPEN or self.transport.is_closing():
            return
        self.transport.writelines(out)
        c = self.md.counters
        c.messages_sent += len(out)
        c.bytes_sent += sum(map(len, out))
        unsent = self.transport.get_write_buffer_size()
        if unsent > self.md.cfg.md_conflate_bytes:
            if unsent > self.md.cfg.md_max_buffer_bytes:
                self.disconnect_slow()
            elif not self.congested:
                self.congested = True
                self.md.congested.add(self)

    def catch_up(self) -> None:
        """The client has read enough: send what was held back, fresh snapshots for the
        conflated depth streams, and go back to live delivery."""
        self.congested = False
        frames = self.pending_trades
        frames.extend(self.pending_bbo.values())
        for sid, levels in sorted(self.resync):
            stream = self.md.feeds[sid].streams.get(levels)
            if stream is not None and self in stream.subs:
                frames.append(self.md.snapshot_frame(self.md.feeds[sid], stream, stream.subs[self]))
        self.pending_trades = []
        self.pending_bytes = 0
        self.pending_bbo = {}
        self.resync = set()
        if frames:
            self.out.extend(frames)
            if len(self.out) == len(frames):
                self.md.dirty.append(self)

    def disconnect_slow(self) -> None:
        if self.closing:
            return
        unsent = self.transport.get_write_buffer_size() + self.pending_bytes
        log.warning("market-data subscriber %s too slow: %d bytes unsent, disconnecting",
                    self.peer, unsent)
        self.md.counters.slow_disconnects += 1
        self.close(1008, f"slow consumer: {unsent} bytes unsent")

    def close(self, code: int, reason: str) -> None:
        """Close with a WebSocket close code and reason; aborted if the peer does not answer in
        CLOSE_GRACE_S (a slow reader may never get to the close frame)."""
        if self.closing:
            return
        self.closing = True
        self.out = []
        self.pending_trades = []
        self.pending_bytes = 0
        self.pending_bbo = {}
        self.resync = set()
        self.md.congested.discard(self)
        self.md.spawn(self.ws.close(code, reason))
        asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self._abort)

    def _abort(self) -> None:
        if self.ws.protocol.state is not State.CLOSED:
            self.transport.abort()


def _request_id(text: str) -> int | None:
    """The integer ``id`` of a control message that is JSON but not a valid request, for the
    error reply; None when there is none."""
    try:
        doc = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
    rid = doc.get("id") if isinstance(doc, dict) else None
    return rid if isinstance(rid, int) and not isinstance(rid, bool) else None


class MarketData:
    """The market-data publisher and the ``/md`` WebSocket endpoint (see the module docstring).

    engine: the gateway Engine (its core, outbound encoder and symbols); install with
    ``engine.post_pump.append(md.on_pump)`` and serve connections with ``serve``.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.cfg = engine.cfg
        self.core = engine.core
        self.symbols = engine.symbols
        self.feeds = [SymbolFeed(i, name) for i, name in enumerate(engine.symbol_names)]
        self.sid_by_name = {name: i for i, name in enumerate(engine.symbol_names)}
        self.conns: set[MdConnection] = set()
        self.dirty: list[MdConnection] = []
        self.congested: set[MdConnection] = set()
        self.counters = MdCounters()
        self.n_subs = 0
        self.n_trade_subs = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._service: asyncio.Task[None] | None = None

    # -- introspection -----------------------------------------------------------------------
    def book_seq(self, symbol: str) -> int:
        """The symbol's current book sequence number (as last computed)."""
        return self.feeds[self.sid_by_name[symbol]].book_seq

    def subscriptions_by_channel(self) -> dict[str, int]:
        out = dict.fromkeys(CHANNELS, 0)
        for conn in self.conns:
            for ch, _ in conn.subs:
                out[ch] += 1
        return out

    def spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # -- the publisher -----------------------------------------------------------------------
    def on_pump(self) -> None:
        """After each engine pump: publish trades, then the changed books' depth updates and
        BBOs, then write every connection's frames."""
        if self.n_subs:
            ob = self.engine.outbound
            if self.n_trade_subs:
                fills = ob.take_md_trades()
                if fills:
                    self._publish_trades(fills)
            for sid, ts in ob.take_md_touched():
                f = self.feeds[sid]
                if f.bbo_subs or f.streams:
                    self._refresh(f, ts)
        self.flush()

    def flush(self) -> None:
        dirty = self.dirty
        if dirty:
            self.dirty = []
            for conn in dirty:
                conn.write_out()
        if self.congested:
            self._service_congested()

    def _service_congested(self) -> None:
        low = self.cfg.md_conflate_bytes // 2
        caught_up = [c for c in self.congested if c.transport.get_write_buffer_size() <= low]
        for conn in caught_up:
            self.congested.discard(conn)
            conn.catch_up()
        if caught_up:
            self.flush()

    async def service_loop(self) -> None:
        """Let congested subscribers catch up even when nothing is published."""
        while True:
            await asyncio.sleep(SERVICE_INTERVAL_S)
            if self.congested or self.dirty:
                self.flush()

    def _publish_trades(self, fills: bytes) -> None:
        for sid, (sbe, js) in encode_trades(fills, self.symbols).items():
            f = self.feeds[sid]
            if not f.trade_subs:
                continue
            frames: dict[bool, bytes] = {}
            for conn, binary in f.trade_subs.items():
                fr = frames.get(binary)
                if fr is None:
                    assert sbe is not None and js is not None
                    fr = frames[binary] = (ws_frame(sbe, False) if binary
                                           else ws_frame(f.json_prefix + js + b"]}", True))
                conn.offer(TRADE, None, fr)

    def _refresh(self, f: SymbolFeed, ts: int) -> None:
        """Re-read the symbol's top levels; on a change number it and publish the depth updates
        and the BBO it implies."""
        bids = self.core.book_levels(f.sid, 1, MAX_DEPTH_LEVELS)
        asks = self.core.book_levels(f.sid, 2, MAX_DEPTH_LEVELS)
        if bids == f.bids and asks == f.asks:
            return
        f.book_seq += 1
        f.ts = ts
        f.bids = bids
        f.asks = asks
        for stream in f.streams.values():
            nb = bids[:stream.levels]
            na = asks[:stream.levels]
            db = diff_levels(stream.bids, nb)
            da = diff_levels(stream.asks, na)
            if not db and not da:
                continue
            first = stream.last_seq + 1
            stream.bids = nb
            stream.asks = na
            stream.last_seq = f.book_seq
            frames: dict[bool, bytes] = {}
            key = (f.sid, stream.levels)
            for conn, binary in stream.subs.items():
                fr = frames.get(binary)
                if fr is None:
                    fr = frames[binary] = self._update_frame(f, stream.levels, first, db, da, binary)
                conn.offer(DEPTH, key, fr)
        bbo = ((bids[0][0], bids[0][1]) if bids else (0, 0)) + ((asks[0][0], asks[0][1]) if asks else (0, 0))
        if bbo != f.bbo:
            f.bbo = bbo
            frames = {}
            for conn, binary in f.bbo_subs.items():
                fr = frames.get(binary)
                if fr is None:
                    fr = frames[binary] = self.bbo_frame(f, binary)
                conn.offer(BBO, f.sid, fr)

    # -- encoders (once per message, whatever the number of subscribers) ---------------------
    def bbo_frame(self, f: SymbolFeed, binary: bool) -> bytes:
        bp, bs, ap, asz = f.bbo
        if binary:
            return ws_frame(codec.encode(Bbo(f.name, f.ts, f.book_seq, bp, bs, ap, asz), sofh=False), False)
        return ws_frame(encoder.encode(JsonBbo(f.name, f.ts, f.book_seq, bp, bs, ap, asz)), True)

    def snapshot_frame(self, f: SymbolFeed, stream: DepthStream, binary: bool) -> bytes:
        if binary:
            msg = DepthSnapshot(f.name, f.ts, stream.last_seq, stream.levels,
                                stream.bids, stream.asks)  # type: ignore[arg-type]
            return ws_frame(codec.encode(msg, sofh=False), False)
        return ws_frame(encoder.encode(JsonDepthSnapshot(f.name, f.ts, stream.last_seq, stream.levels,
                                                         stream.bids, stream.asks)), True)

    def _update_frame(self, f: SymbolFeed, levels: int, first: int, bids: Levels, asks: Levels,
                      binary: bool) -> bytes:
        if binary:
            msg = DepthUpdate(f.name, f.ts, first, f.book_seq, levels, bids, asks)  # type: ignore[arg-type]
            return ws_frame(codec.encode(msg, sofh=False), False)
        return ws_frame(encoder.encode(JsonDepthUpdate(f.name, f.ts, first, f.book_seq, levels,
                                                       bids, asks)), True)

    # -- connections -------------------------------------------------------------------------
    async def serve(self, ws: ServerConnection) -> None:
        """The handler of one ``/md`` connection: control messages until it closes."""
        conn = MdConnection(self, ws)
        sock = conn.transport.get_extra_info("socket")
        if self.cfg.md_socket_sndbuf and sock is not None:
            # bounded kernel memory per subscriber, and a reader that stalls shows up in the
            # transport's buffer (where conflation and the byte limit act) after this much
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.cfg.md_socket_sndbuf)
        self.conns.add(conn)
        self.counters.connections_total += 1
        if self._service is None:
            self._service = asyncio.get_running_loop().create_task(self.service_loop())
        try:
            async for msg in ws:
                self.control(conn, msg)
        except ConnectionClosed:
            pass
        finally:
            self._drop(conn)

    def _drop(self, conn: MdConnection) -> None:
        conn.closing = True
        self.conns.discard(conn)
        self.congested.discard(conn)
        for key in list(conn.subs):
            self._remove(conn, key)
        self._update_tap()

    async def close(self) -> None:
        """Server shutdown: close every subscriber (1001 going away)."""
        for conn in list(self.conns):
            conn.close(1001, "server shutdown")
        if self._service is not None:
            self._service.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._service
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_GRACE_S)

    # -- control messages --------------------------------------------------------------------
    def control(self, conn: MdConnection, msg: str | bytes) -> None:
        """Handle one message from a subscriber; every request gets exactly one reply."""
        if conn.closing:
            return
        now = time.monotonic()
        rate = self.cfg.md_max_control_per_s
        conn.tokens = min(float(rate), conn.tokens + (now - conn.refill_at) * rate)
        conn.refill_at = now
        if conn.tokens < 1.0:
            conn.strikes += 1
            if conn.strikes > rate:
                self._error(conn, None, MdError.RATE_LIMITED, "too many control messages: closing")
                self.flush()
                conn.close(1008, "too many control messages")
                return
            self._error(conn, None, MdError.RATE_LIMITED, f"more than {rate} control messages per second")
            self.flush()
            return
        conn.tokens -= 1.0
        conn.strikes = 0
        if isinstance(msg, bytes):
            self._error(conn, None, MdError.BAD_REQUEST, "control messages are JSON text frames")
        elif len(msg) > MAX_CONTROL_BYTES:
            self._error(conn, None, MdError.BAD_REQUEST, f"control message over {MAX_CONTROL_BYTES} bytes")
        else:
            try:
                req = request_decoder.decode(msg)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self._error(conn, _request_id(msg), MdError.BAD_REQUEST, str(exc))
            else:
                self._request(conn, req)
        self.flush()

    def _reply(self, conn: MdConnection, msg: Response | ErrorReply) -> None:
        conn.offer(CONTROL, None, ws_frame(encoder.encode(msg), True))

    def _error(self, conn: MdConnection, rid: int | None, code: MdError, message: str) -> None:
        self.counters.control_errors[code] = self.counters.control_errors.get(code, 0) + 1
        self._reply(conn, ErrorReply(rid, int(code), code.name, message))

    def _subscriptions(self, conn: MdConnection) -> list[Subscription]:
        return [Subscription(ch, self.feeds[sid].name, "binary" if binary else "json", levels)
                for (ch, sid), (binary, levels) in sorted(conn.subs.items())]

    def _request(self, conn: MdConnection, req: Request) -> None:
        if req.op == "ping":
            self._reply(conn, Response(req.id, "pong"))
        elif req.op == "list":
            self._reply(conn, Response(req.id, "list", self._subscriptions(conn)))
        elif req.op in ("subscribe", "unsubscribe"):
            keys = self._validate(conn, req)
            if keys is None:
                return
            if req.op == "subscribe":
                self._subscribe(conn, req, keys)
            else:
                for key in keys:
                    if key in conn.subs:
                        self._remove(conn, key)
                self._update_tap()
                self._reply(conn, Response(req.id, "unsubscribed", self._subscriptions(conn)))
        else:
            self._error(conn, req.id, MdError.UNKNOWN_OP,
                        f"unknown op {req.op!r}: subscribe, unsubscribe, list or ping")

    def _validate(self, conn: MdConnection, req: Request) -> list[tuple[str, int]] | None:
        if not req.channels or not req.symbols:
            self._error(conn, req.id, MdError.BAD_REQUEST, "channels and symbols must not be empty")
            return None
        for ch in req.channels:
            if ch not in CHANNELS:
                self._error(conn, req.id, MdError.UNKNOWN_CHANNEL,
                            f"unknown channel {ch!r}: {', '.join(CHANNELS)}")
                return None
        sids = []
        for name in req.symbols:
            sid = self.sid_by_name.get(name)
            if sid is None:
                self._error(conn, req.id, MdError.UNKNOWN_SYMBOL, f"unknown symbol {name!r}")
                return None
            sids.append(sid)
        if req.op == "subscribe":
            if req.encoding not in ENCODINGS:
                self._error(conn, req.id, MdError.BAD_ENCODING,
                            f"unknown encoding {req.encoding!r}: json or binary")
                return None
            if "depth" in req.channels and req.levels not in DEPTH_LEVELS:
                self._error(conn, req.id, MdError.BAD_LEVELS,
                            f"depth levels must be one of {DEPTH_LEVELS}, got {req.levels}")
                return None
        keys = list(dict.fromkeys((ch, sid) for ch in req.channels for sid in sids))
        if req.op == "subscribe":
            new = sum(1 for k in keys if k not in conn.subs)
            if len(conn.subs) + new > self.cfg.md_max_subscriptions:
                self._error(conn, req.id, MdError.TOO_MANY_SUBSCRIPTIONS,
                            f"at most {self.cfg.md_max_subscriptions} subscriptions per connection")
                return None
        return keys

    def _subscribe(self, conn: MdConnection, req: Request, keys: list[tuple[str, int]]) -> None:
        binary = req.encoding == "binary"
        for key in keys:
            if key in conn.subs:
                self._remove(conn, key)  # a repeated subscription re-sends the initial state
        # bring each book up to date first: a change found now goes to the existing subscribers
        now = time.time_ns()
        for sid in dict.fromkeys(sid for ch, sid in keys if ch != "trades"):
            self._refresh(self.feeds[sid], now)
        for ch, sid in keys:
            f = self.feeds[sid]
            levels = req.levels if ch == "depth" else 0
            conn.subs[(ch, sid)] = (binary, levels)
            self.n_subs += 1
            if ch == "trades":
                f.trade_subs[conn] = binary
                self.n_trade_subs += 1
            elif ch == "bbo":
                f.bbo_subs[conn] = binary
            else:
                stream = f.streams.get(levels)
                if stream is None:
                    stream = f.streams[levels] = DepthStream(levels, f.book_seq, f.bids[:levels],
                                                             f.asks[:levels])
                stream.subs[conn] = binary
        self._update_tap()
        self._reply(conn, Response(req.id, "subscribed", self._subscriptions(conn)))
        # the initial state: a snapshot per depth stream, the current BBO
        for ch, sid in keys:
            f = self.feeds[sid]
            if ch == "depth":
                stream = f.streams[req.levels]
                if conn.congested:
                    conn.resync.add((sid, req.levels))
                else:
                    conn.offer(DEPTH, (sid, req.levels), self.snapshot_frame(f, stream, binary))
            elif ch == "bbo":
                conn.offer(BBO, sid, self.bbo_frame(f, binary))

    def _remove(self, conn: MdConnection, key: tuple[str, int]) -> None:
        _, levels = conn.subs.pop(key)
        ch, sid = key
        f = self.feeds[sid]
        self.n_subs -= 1
        if ch == "trades":
            del f.trade_subs[conn]
            self.n_trade_subs -= 1
        elif ch == "bbo":
            del f.bbo_subs[conn]
            conn.pending_bbo.pop(sid, None)
        else:
            stream = f.streams[levels]
            del stream.subs[conn]
            conn.resync.discard((sid, levels))
            if not stream.subs:
                del f.streams[levels]

    def _update_tap(self) -> None:
        self.engine.outbound.md_tap(self.n_subs > 0, self.n_trade_subs > 0)
