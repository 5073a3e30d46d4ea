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

Sequence numbers: each symbol has a book sequence number (``bookSeq``), one step per published
change of its top 20 levels a side since the gateway started: at most one per pump (``refresh``
compares the pump's end state), and only while the symbol has BBO or depth subscribers.  A
depth stream (symbol, levels 5/10/20) sends a DepthSnapshot with ``lastSeq`` = the bookSeq of
its state, then DepthUpdates with ``firstSeq`` = the previous message's ``lastSeq`` + 1 and
``lastSeq`` = the bookSeq after the change; so a client keeps an exact copy of the top levels
and sees a gap as firstSeq > its lastSeq + 1 (docs/protocol.md, "Market data feed").

Slow consumers: a connection whose unsent bytes (the transport's write buffer) pass
``md_conflate_bytes`` is "congested": it gets no BBO (the newest is sent once it has caught up)
and no depth updates (a fresh snapshot replaces them once it has caught up); trades are never
conflated, so they keep going into its buffer, and past ``md_max_buffer_bytes`` unsent the
connection is closed with code 1008 and reason "slow consumer".  Everything runs on the
event-loop thread; nothing here blocks.

The room: this module is the publisher (``MarketData``: per-pump publishing, the sliced fan-out,
the connections' lifetime and the topic bookkeeping of subscriptions); topics.py the published
state, frames.py the encoders, connection.py one subscriber connection, control.py its control
requests, counters.py the counters the metrics collector reads.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from gateway.marketdata.connection import CLOSE_GRACE_S, MdConnection
from gateway.marketdata.control import ControlHandler, Key
from gateway.marketdata.counters import MdCounters
from gateway.marketdata.frames import bbo_frame, depth_update_entry, snapshot_frame, trade_entry
from gateway.marketdata.topics import BBO, DEPTH, KINDS, TRADES, Cursor, SymbolFeed, Topic, diff_levels
from protocol.mdfeed import encode_trades
from protocol.mdjson import CHANNELS, MAX_DEPTH_LEVELS

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from gateway.engine import Engine
    from matching.core import MatchingCore

log = logging.getLogger("hftgw.md")

SERVICE_INTERVAL_S = 0.05  # how often congested connections are looked at when nothing changes
CHECK_EVERY = 16           # connections visited between two looks at the clock


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
        self.controls = ControlHandler(self)
        self._sweep: list[MdConnection] | None = None
        self._sweep_pos = 0
        self._tasks: set[asyncio.Task[None]] = set()
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

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task that ``close`` waits for (up to CLOSE_GRACE_S)."""
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
                    self.refresh(f, ts)
        if self.changed and self._sweep is None:
            self._start_sweep()
            self._slice()

    def _publish_trades(self, fills: bytes) -> None:
        for sid, (sbe, js) in encode_trades(fills, self.symbols).items():
            topic = self.feeds[sid].trades
            if topic is None:
                continue
            assert sbe is not None and js is not None  # both encodings were asked for
            topic.log.append(trade_entry(topic, sbe, js))
            self.changed = True

    def refresh(self, f: SymbolFeed, ts: int) -> None:
        """Re-read the symbol's top levels; on a change number it and publish the depth updates
        and the BBO it implies (``ts``: ns since the epoch, the time of the change)."""
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
            topic.log.append(depth_update_entry(topic, ts, first, db, da))
            self.changed = True
        bbo = ((bids[0][0], bids[0][1]) if bids else (0, 0)) + ((asks[0][0], asks[0][1]) if asks else (0, 0))
        if bbo != f.bbo:
            f.bbo = bbo
            if f.bbo_topic is not None:
                f.bbo_topic.version += 1
                f.bbo_topic.frames = [None, None]
                self.changed = True

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
                if topic.version != st.at and not congested:
                    if st.at >= 0:
                        c.dropped += topic.version - st.at - 1
                    frames.append(bbo_frame(topic, st.binary))
                    st.at = topic.version
                continue
            end = topic.base + len(topic.log)
            if kind == DEPTH and (congested or topic in conn.resync):
                # what is skipped is covered by the snapshot the connection gets once it has
                # caught up (the stream's state at its end)
                c.dropped += end - st.at
                st.at = end
                if congested:
                    conn.resync.add(topic)
                else:
                    conn.resync.discard(topic)
                    frames.append(snapshot_frame(topic, st.binary))
                continue
            if st.at < end:
                b = st.binary
                # the cursor started at the log's end when the connection subscribed, so every
                # entry past it was published with a subscriber of its encoding: never None
                frames.extend(cast("list[bytes]", [e[b] for e in topic.log[st.at - topic.base:]]))
                st.at = end
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
                self.controls.handle(conn, msg)
        except ConnectionClosed:
            pass
        finally:
            self._drop(conn)

    def _drop(self, conn: MdConnection) -> None:
        conn.closing = True
        self.conns.discard(conn)
        self.congested.discard(conn)
        for key in list(conn.subs):
            self.remove_subscription(conn, key)
        self.update_tap()

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

    # -- subscriptions (checked and answered by control.py) ----------------------------------
    def add_subscriptions(self, conn: MdConnection, keys: list[Key], binary: bool,
                          levels: int) -> list[bytes]:
        """Subscribe ``conn`` to each (channel, symbol id) of ``keys`` (none of which it has),
        ``levels`` a side for depth; returns the depth streams' snapshot frames it is owed now
        (a congested connection gets them once it has caught up)."""
        snapshots = []
        congested = conn.transport.get_write_buffer_size() > self.cfg.md_conflate_bytes
        for ch, sid in keys:
            f = self.feeds[sid]
            lv = levels if ch == "depth" else 0
            conn.subs[(ch, sid)] = (binary, lv)
            self.n_subs += 1
            self.sub_counts[ch] += 1
            kind = KINDS[ch]
            if kind == TRADES:
                topic = f.trades = f.trades or self._new_topic(TRADES, f)
                self.n_trade_subs += 1
            elif kind == BBO:
                topic = f.bbo_topic = f.bbo_topic or Topic(BBO, f)
            else:
                topic = f.streams.get(lv) or self._new_topic(DEPTH, f, lv)
                f.streams[lv] = topic
            topic.subs[conn] = binary
            topic.n_binary += binary
            # BBO: -1 = the newest state is due; logs: from their end on
            conn.topics[topic] = Cursor(binary, -1 if kind == BBO else topic.end)
            if kind == DEPTH:
                if congested:
                    conn.resync.add(topic)
                else:
                    snapshots.append(snapshot_frame(topic, binary))
        self.active[conn] = None
        return snapshots

    def _new_topic(self, kind: int, f: SymbolFeed, levels: int = 0) -> Topic:
        topic = Topic(kind, f, levels)
        self.log_topics.add(topic)
        return topic

    def remove_subscription(self, conn: MdConnection, key: Key) -> None:
        """Unsubscribe ``conn`` from ``key`` (a subscription it has); a topic left without
        subscribers is dropped."""
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

    def update_tap(self) -> None:
        """Tell the outbound encoder what to note for market data (books touched, trades)."""
        self.engine.outbound.md_tap(self.n_subs > 0, self.n_trade_subs > 0)
