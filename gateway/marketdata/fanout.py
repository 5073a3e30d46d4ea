"""Market data for WebSocket price subscribers (DESIGN §1): BBO, trades and L2 depth with book
sequence numbers, binary (SBE templates 40-43) or JSON, conflated for slow readers.

Publishing, per engine pump and never per order: the outbound encoder notes in C which symbols'
books the pump's events changed and copies the fill records (``Outbound.md_tap``); after the
session writes of the pump (``Engine.post_pump``) the publisher reads the top 20 levels of each
changed book that has BBO or depth subscribers (``MatchingCore.book_levels``, C), compares them
with what it last published, and encodes each resulting message ONCE per encoding: a WebSocket
frame built once is written to every subscriber.  Trades are encoded in C (``protocol.mdfeed``).
Publishing costs the same with 1 or 10 000 subscribers: it only appends to the topic's log (trades,
depth updates) or bumps its version (BBO).

Fan-out: a sweep visits the subscribed connections and writes to each, in one ``writelines``,
its pending control replies and snapshots, the log entries past its cursor and the newest BBO if
it has not sent that version.  The sweep runs in slices of at most ``md_slice_us`` of event-loop
time (the first one right after the pump, the next ones as ready callbacks), so the order path is
never held up for longer than one slice, however many subscribers there are; BBOs published
between two visits of a connection are conflated (the newest one is sent).

Sequence numbers: each symbol has a book sequence number (``bookSeq``), counting the changes of
its top 20 levels a side since the gateway started.  A depth stream (symbol, levels 5/10/20)
sends a DepthSnapshot with ``lastSeq`` = the bookSeq of its state, then DepthUpdates with
``firstSeq`` = the previous message's ``lastSeq`` + 1 and ``lastSeq`` = the bookSeq after the
change; so a client keeps an exact copy of the top levels and sees a gap as firstSeq > its
lastSeq + 1 (docs/protocol.md, "Market data feed").

Slow consumers: a connection whose unsent bytes (the transport's write buffer) pass
``md_conflate_bytes`` is "congested": it gets no BBO (the newest is sent once it has caught up)
and no depth updates (a fresh snapshot replaces them once it has caught up); trades are never
conflated, so they keep going into its buffer, and past ``md_max_buffer_bytes`` unsent the
connection is closed with code 1008 and reason "slow consumer".  Everything runs on the
event-loop thread; nothing here blocks.
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
    from matching.core import MatchingCore

log = logging.getLogger("hftgw.md")

MAX_CONTROL_BYTES = 4096
CLOSE_GRACE_S = 2.0        # a closing subscriber that does not finish the handshake is aborted
SERVICE_INTERVAL_S = 0.05  # how often congested connections are looked at when nothing changes
CHECK_EVERY = 16           # connections visited between two looks at the clock

TRADES, BBO, DEPTH = 0, 1, 2
KINDS = {"trades": TRADES, "bbo": BBO, "depth": DEPTH}

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
    writes: int = 0              # writes to subscribers' sockets (one per connection visited with news)
    bytes_sent: int = 0
    dropped: int = 0             # BBO / depth messages conflated away (never sent to someone)
    slow_disconnects: int = 0
    connections_total: int = 0
    refused_connections: int = 0  # over md_max_connections
    auth_failures: int = 0
    sweeps: int = 0              # complete fan-out sweeps
    slices: int = 0              # fan-out slices (a sweep takes one or more)
    fanout_ns: int = 0           # event-loop time spent in fan-out slices
    control_errors: dict[int, int] = field(default_factory=dict)  # MdError -> count


class Topic:
    """One published stream of one symbol, in both encodings, and its subscribers.

    BBO: ``version`` of the newest state (the feed's ``bbo``), its frames built on demand.
    TRADES, DEPTH: ``log`` of (json frame, binary frame) entries, the first at absolute index
    ``base``; a frame is None when nobody took that encoding when it was published.  DEPTH also
    holds the stream's state after its last update (``levels``, ``last_seq``, ``bids``, ``asks``).
    """

    __slots__ = ("kind", "feed", "levels", "subs", "n_binary", "version", "frames", "log", "base",
                 "mark", "last_seq", "bids", "asks")

    def __init__(self, kind: int, feed: SymbolFeed, levels: int = 0) -> None:
        self.kind = kind
        self.feed = feed
        self.levels = levels
        self.subs: dict[MdConnection, bool] = {}   # connection -> binary
        self.n_binary = 0
        self.version = 0
        self.frames: list[bytes | None] = [None, None]
        self.log: list[tuple[bytes | None, bytes | None]] = []
        self.base = 0
        self.mark = 0
        self.last_seq = feed.book_seq
        self.bids: Levels = feed.bids[:levels]
        self.asks: Levels = feed.asks[:levels]

    @property
    def end(self) -> int:
        return self.base + len(self.log)

    def encodings(self) -> tuple[bool, bool]:
        """(somebody takes JSON, somebody takes binary)."""
        return len(self.subs) > self.n_binary, self.n_binary > 0


class SymbolFeed:
    """One symbol's published book state and topics."""

    __slots__ = ("sid", "name", "json_prefix", "book_seq", "ts", "bids", "asks", "bbo",
                 "bbo_topic", "trades", "streams")

    def __init__(self, sid: int, name: str) -> None:
        self.sid = sid
        self.name = name
        self.json_prefix = trades_prefix(name)
        self.book_seq = 0
        self.ts = 0
        self.bids: Levels = []
        self.asks: Levels = []
        self.bbo = (0, 0, 0, 0)
        self.bbo_topic: Topic | None = None
        self.trades: Topic | None = None
        self.streams: dict[int, Topic] = {}  # depth topics by levels


class MdConnection:
    """One market-data WebSocket connection: its subscriptions with their cursors, the control
    frames to send, and the depth streams it owes a fresh snapshot (after conflation)."""

    __slots__ = ("md", "ws", "transport", "peer", "subs", "topics", "control", "resync", "tokens",
                 "refill_at", "strikes", "closing")

    def __init__(self, md: MarketData, ws: ServerConnection) -> None:
        self.md = md
        self.ws = ws
        self.transport: Any = ws.transport
        peer = ws.remote_address
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.subs: dict[tuple[str, int], tuple[bool, int]] = {}  # (channel, sid) -> (binary, levels)
        # topic -> [binary, cursor]: BBO the version sent last (-1 none), else the next log index
        self.topics: dict[Topic, list[Any]] = {}
        self.control: list[bytes] = []
        self.resync: set[Topic] = set()
        self.tokens = float(md.cfg.md_max_control_per_s)
        self.refill_at = time.monotonic()
        self.strikes = 0
        self.closing = False

    def close(self, code: int, reason: str) -> None:
        """Close with a WebSocket close code and reason; aborted if the peer does not answer in
        CLOSE_GRACE_S (a slow reader may never get to the close frame)."""
        if self.closing:
            return
        self.closing = True
        self.control = []
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
        self.symbols = engine.symbols
        self.feeds: list[SymbolFeed] = []
        self.sid_by_name: dict[str, int] = {}
        self.sync_symbols()
        self.conns: set[MdConnection] = set()
        self.active: dict[MdConnection, None] = {}  # connections with subscriptions, in order
        self.congested: set[MdConnection] = set()
        self.log_topics: set[Topic] = set()
        self.counters = MdCounters()
        self.n_subs = 0
        self.n_trade_subs = 0
        self.sub_counts = dict.fromkeys(CHANNELS, 0)
        self.changed = False       # something was published since the current sweep began
        self._sweep: list[MdConnection] | None = None
        self._sweep_pos = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._service: asyncio.Task[None] | None = None

    @property
    def core(self) -> MatchingCore:
        # read through the engine: a start from a snapshot replaces its core
        return self.engine.core

    def sync_symbols(self) -> None:
        """Give every served symbol a feed: symbols are defined from the journal after start
        and by config reloads, always appended (ids are permanent)."""
        names = self.engine.symbol_names
        for i in range(len(self.feeds), len(names)):
            self.feeds.append(SymbolFeed(i, names[i]))
            self.sid_by_name[names[i]] = i

    # -- introspection -----------------------------------------------------------------------
    def book_seq(self, symbol: str) -> int:
        """The symbol's current book sequence number (as last computed)."""
        return self.feeds[self.sid_by_name[symbol]].book_seq

    def subscriptions_by_channel(self) -> dict[str, int]:
        """Subscriptions per channel (a copy: safe to call from the metrics thread)."""
        return dict(self.sub_counts)

    def spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # -- publishing --------------------------------------------------------------------------
    def on_pump(self) -> None:
        """After each engine pump: publish trades, then the changed books' depth updates and
        BBOs; then fan out (the first slice of a sweep, if none is under way)."""
        if len(self.feeds) != len(self.engine.symbol_names):
            self.sync_symbols()
        if self.n_subs:
            ob = self.engine.outbound
            if self.n_trade_subs:
                fills = ob.take_md_trades()
                if fills:
                    self._publish_trades(fills)
            for sid, ts in ob.take_md_touched():
                f = self.feeds[sid]
                if f.bbo_topic is not None or f.streams:
                    self._refresh(f, ts)
        if self.changed and self._sweep is None:
            self._start_sweep()
            self._slice()

    def _publish_trades(self, fills: bytes) -> None:
        for sid, (sbe, js) in encode_trades(fills, self.symbols).items():
            topic = self.feeds[sid].trades
            if topic is None:
                continue
            want_json, want_binary = topic.encodings()
            assert sbe is not None and js is not None
            topic.log.append((ws_frame(topic.feed.json_prefix + js + b"]}", True) if want_json else None,
                              ws_frame(sbe, False) if want_binary else None))
            self.changed = True

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
        for topic in f.streams.values():
            nb = bids[:topic.levels]
            na = asks[:topic.levels]
            db = diff_levels(topic.bids, nb)
            da = diff_levels(topic.asks, na)
            if not db and not da:
                continue
            first = topic.last_seq + 1
            topic.bids = nb
            topic.asks = na
            topic.last_seq = f.book_seq
            want_json, want_binary = topic.encodings()
            js = bs = None
            if want_json:
                js = ws_frame(encoder.encode(JsonDepthUpdate(f.name, ts, first, f.book_seq, topic.levels,
                                                             db, da)), True)
            if want_binary:
                msg = DepthUpdate(f.name, ts, first, f.book_seq, topic.levels, db, da)  # type: ignore[arg-type]
                bs = ws_frame(codec.encode(msg, sofh=False), False)
            topic.log.append((js, bs))
            self.changed = True
        bbo = ((bids[0][0], bids[0][1]) if bids else (0, 0)) + ((asks[0][0], asks[0][1]) if asks else (0, 0))
        if bbo != f.bbo:
            f.bbo = bbo
            if f.bbo_topic is not None:
                f.bbo_topic.version += 1
                f.bbo_topic.frames = [None, None]
                self.changed = True

    # -- encoders (once per message, whatever the number of subscribers) ---------------------
    def bbo_frame(self, topic: Topic, binary: bool) -> bytes:
        fr = topic.frames[binary]
        if fr is None:
            f = topic.feed
            bp, bs, ap, asz = f.bbo
            if binary:
                fr = ws_frame(codec.encode(Bbo(f.name, f.ts, f.book_seq, bp, bs, ap, asz), sofh=False), False)
            else:
                fr = ws_frame(encoder.encode(JsonBbo(f.name, f.ts, f.book_seq, bp, bs, ap, asz)), True)
            topic.frames[binary] = fr
        return fr

    def snapshot_frame(self, topic: Topic, binary: bool) -> bytes:
        f = topic.feed
        if binary:
            msg = DepthSnapshot(f.name, f.ts, topic.last_seq, topic.levels,
                                topic.bids, topic.asks)  # type: ignore[arg-type]
            return ws_frame(codec.encode(msg, sofh=False), False)
        return ws_frame(encoder.encode(JsonDepthSnapshot(f.name, f.ts, topic.last_seq, topic.levels,
                                                         topic.bids, topic.asks)), True)

    # -- fan-out -----------------------------------------------------------------------------
    def _start_sweep(self) -> None:
        self.changed = False
        self._sweep = list(self.active)
        self._sweep_pos = 0
        for topic in self.log_topics:
            topic.mark = topic.end

    def _slice(self) -> None:
        """Visit connections of the current sweep for at most md_slice_us; schedule the rest."""
        sweep = self._sweep
        if sweep is None:
            return
        self.counters.slices += 1
        t0 = time.perf_counter_ns()
        deadline = t0 + self.cfg.md_slice_us * 1000
        pos = self._sweep_pos
        n = len(sweep)
        visit = self.visit
        while pos < n:
            conn = sweep[pos]
            pos += 1
            if not conn.closing:
                try:
                    visit(conn)
                except Exception:  # one broken connection must not stop the fan-out
                    log.exception("market-data subscriber %s: write failed", conn.peer)
                    conn.close(1011, "internal error")
            if pos % CHECK_EVERY == 0:
                now = time.perf_counter_ns()
                if now > deadline:
                    self.counters.fanout_ns += now - t0
                    self._sweep_pos = pos
                    asyncio.get_running_loop().call_soon(self._slice)
                    return
        # every connection has read each log up to the mark: drop those entries
        for topic in self.log_topics:
            if topic.mark > topic.base:
                del topic.log[:topic.mark - topic.base]
                topic.base = topic.mark
        self._sweep = None
        self.counters.sweeps += 1
        self.counters.fanout_ns += time.perf_counter_ns() - t0
        if self.changed:
            self._start_sweep()
            asyncio.get_running_loop().call_soon(self._slice)

    def visit(self, conn: MdConnection) -> None:
        """Write to one connection everything it has not had yet, as its state allows."""
        if conn.closing or self.ws_closed(conn):
            return
        t = conn.transport
        congested = t.get_write_buffer_size() > self.cfg.md_conflate_bytes
        frames = conn.control
        conn.control = []
        c = self.counters
        for topic, st in conn.topics.items():
            kind = topic.kind
            if kind == BBO:
                if topic.version != st[1] and not congested:
                    if st[1] >= 0:
                        c.dropped += topic.version - st[1] - 1
                    frames.append(self.bbo_frame(topic, st[0]))
                    st[1] = topic.version
                continue
            end = topic.base + len(topic.log)
            if kind == DEPTH and (congested or topic in conn.resync):
                # what is skipped is covered by the snapshot the connection gets once it has
                # caught up (the stream's state at its end)
                c.dropped += end - st[1]
                st[1] = end
                if congested:
                    conn.resync.add(topic)
                else:
                    conn.resync.discard(topic)
                    frames.append(self.snapshot_frame(topic, st[0]))
                continue
            if st[1] < end:
                b = st[0]
                frames.extend(e[b] for e in topic.log[st[1] - topic.base:])  # type: ignore[misc]
                st[1] = end
        if frames:
            t.writelines(frames)
            c.writes += 1
            c.messages_sent += len(frames)
            c.bytes_sent += sum(map(len, frames))
            unsent = t.get_write_buffer_size()
            if unsent > self.cfg.md_max_buffer_bytes:
                self.disconnect_slow(conn, unsent)
                return
            congested = congested or unsent > self.cfg.md_conflate_bytes
        if congested or conn.resync:
            self.congested.add(conn)
        else:
            self.congested.discard(conn)

    @staticmethod
    def ws_closed(conn: MdConnection) -> bool:
        return conn.ws.protocol.state is not State.OPEN or conn.transport.is_closing()

    def disconnect_slow(self, conn: MdConnection, unsent: int) -> None:
        log.warning("market-data subscriber %s too slow: %d bytes unsent, disconnecting",
                    conn.peer, unsent)
        self.counters.slow_disconnects += 1
        conn.close(1008, f"slow consumer: {unsent} bytes unsent")

    async def service_loop(self) -> None:
        """Look at congested subscribers even when nothing is published, so that one that
        has caught up gets its snapshots and the newest BBO."""
        while True:
            await asyncio.sleep(SERVICE_INTERVAL_S)
            for conn in list(self.congested):
                self.visit(conn)

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
                self.visit(conn)
                conn.close(1008, "too many control messages")
                return
            self._error(conn, None, MdError.RATE_LIMITED, f"more than {rate} control messages per second")
            self.visit(conn)
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
        self.visit(conn)  # the reply (and a new subscription's first data) right away

    def _reply(self, conn: MdConnection, msg: Response | ErrorReply) -> None:
        conn.control.append(ws_frame(encoder.encode(msg), True))

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
        self.sync_symbols()
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
        snapshots = []
        congested = conn.transport.get_write_buffer_size() > self.cfg.md_conflate_bytes
        for ch, sid in keys:
            f = self.feeds[sid]
            levels = req.levels if ch == "depth" else 0
            conn.subs[(ch, sid)] = (binary, levels)
            self.n_subs += 1
            self.sub_counts[ch] += 1
            kind = KINDS[ch]
            if kind == TRADES:
                topic = f.trades = f.trades or self._new_topic(TRADES, f)
                self.n_trade_subs += 1
            elif kind == BBO:
                topic = f.bbo_topic = f.bbo_topic or Topic(BBO, f)
            else:
                topic = f.streams.get(levels) or self._new_topic(DEPTH, f, levels)
                f.streams[levels] = topic
            topic.subs[conn] = binary
            topic.n_binary += binary
            # BBO: -1 = the newest state is due; logs: from their end on
            conn.topics[topic] = [binary, -1 if kind == BBO else topic.end]
            if kind == DEPTH:
                if congested:
                    conn.resync.add(topic)
                else:
                    snapshots.append(self.snapshot_frame(topic, binary))
        self.active[conn] = None
        self._update_tap()
        self._reply(conn, Response(req.id, "subscribed", self._subscriptions(conn)))
        conn.control.extend(snapshots)  # the reply, then each depth stream's snapshot

    def _new_topic(self, kind: int, f: SymbolFeed, levels: int = 0) -> Topic:
        topic = Topic(kind, f, levels)
        self.log_topics.add(topic)
        return topic

    def _remove(self, conn: MdConnection, key: tuple[str, int]) -> None:
        _, levels = conn.subs.pop(key)
        ch, sid = key
        f = self.feeds[sid]
        self.n_subs -= 1
        self.sub_counts[ch] -= 1
        kind = KINDS[ch]
        if kind == TRADES:
            topic = f.trades
            self.n_trade_subs -= 1
        elif kind == BBO:
            topic = f.bbo_topic
        else:
            topic = f.streams[levels]
        assert topic is not None
        binary = topic.subs.pop(conn)
        topic.n_binary -= binary
        del conn.topics[topic]
        conn.resync.discard(topic)
        if not conn.topics:
            self.active.pop(conn, None)
        if not topic.subs:
            self.log_topics.discard(topic)
            if kind == TRADES:
                f.trades = None
            elif kind == BBO:
                f.bbo_topic = None
            else:
                del f.streams[levels]

    def _update_tap(self) -> None:
        self.engine.outbound.md_tap(self.n_subs > 0, self.n_trade_subs > 0)
