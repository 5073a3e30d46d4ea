"""The order path of one process (DESIGN §1): rings, sequencer, journal, matching core,
outbound encoder, message store and event log, driven from the event loop.

    sessions ─► inbound ring ─► sequencer ─► journal ─► matching core ─► events ring ─► outbound
                                                                                     ├► session writers
                                                                                     └► event log ─► PG sink

The matcher runs on the event-loop thread and is drained once per loop tick: every read of the
tick is decoded into the inbound ring first, then ``pump`` stamps, journals (one write per
group), matches (GIL released inside the core) and encodes the responses, and each session gets
one ``write`` per tick.  Acknowledgements are written only after the journal write of their
commands has returned (``durability="os"``) or been fsynced (``"fsync"``).  The order-to-ack
histogram takes each acknowledgement's time from the read of its request to the return of its
session's ``write`` (after matching and the message store); the encoder keeps the receive times
in C, one entry per read, so the hot path does one clock read and one call per session per tick,
never per order.

This is the hot path: ``pump`` and ``_flush`` hold their collaborators as direct attributes
(the session table's ``writers``, ``dropcopy`` and ``account_of_session`` are the very
containers the session table keeps, never copies), so a tick costs no more lookups than one
class holding everything did.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from gateway.config.schema import Config
from gateway.risk.pretrade import RiskEngine
from matching.core import MatchingCore
from matching.records import COMMAND_RECORD_SIZE, EVENT_RECORD_SIZE
from matching.ring import SpscRing
from matching.sequencer import Sequencer
from persistence.journal import Journal
from persistence.message_store import MessageStore
from protocol.outbound import Outbound

if TYPE_CHECKING:
    from persistence.event_log import EventLog
    from persistence.pg_sink import EventSink

log = logging.getLogger("hftgw.engine")

MATCH_SLICE = 256   # commands per MatchingCore.process call


class SessionWriter(Protocol):
    """A connected session's transport side, as the engine sees it."""

    def deliver(self, data: bytes, now_ns: int) -> bool | None:
        """Write ``data`` to the connection now; False when it was not written (closing, or a
        replay from the message store will send it), True or None when it was."""


class Pipeline:
    """Owns the rings, the sequencer, the journal, the matching core, the outbound encoder, the
    message store and (with ``pg_dsn``) the event log; runs ``core`` (the one ``risk`` was built
on).

    writers: session id -> connected writer; dropcopy: account -> drop-copy writers;
    account_of_session: session id -> account (index 0 unused).  All three are the session
    table's own containers, read (never replaced) here.  ``risk`` follows the core's events in
    the encoder's pass when ``cfg.pre_trade_risk`` is on.  Not thread-safe: everything runs on
    the event-loop thread.
    """

    def __init__(self, cfg: Config, core: MatchingCore, risk: RiskEngine, writers: dict[int, SessionWriter],
                 dropcopy: dict[str, set[SessionWriter]], account_of_session: list[str]) -> None:
        self.inbound = SpscRing(cfg.ring_capacity, COMMAND_RECORD_SIZE)
        self.events = SpscRing(cfg.ring_capacity, EVENT_RECORD_SIZE)
        self.sequencer = Sequencer()
        self.journal = Journal(cfg.journal_dir, cfg.durability, cfg.journal_segment_bytes)
        self.outbound = Outbound([], cfg.max_sessions)
        # every session's messages are encoded, SOFH-framed, for the message store
        self.outbound.retain = True
        self.store = MessageStore(cfg.message_store_dir or cfg.journal_dir)
        self.risk = risk
        self.core = core
        self.core.on_events_full = self._drain_events
        self.sink: EventSink | None = None  # set when PostgreSQL is configured
        # the durable history of order events and fills that the sink reads; written only with a
        # sink (it costs a write per pump and the disk it fills until PostgreSQL has it)
        self.event_log: EventLog | None = None
        if cfg.pg_dsn:
            from persistence.event_log import EventLog
            self.event_log = EventLog(cfg.event_log_dir or cfg.journal_dir,
                                      cfg.event_log_segment_bytes)
            self.outbound.capture_events(True)
        if cfg.pre_trade_risk:
            # open quantities, positions and last prices follow every event in the encoder's pass
            self.outbound.set_observer(risk)
        self.writers = writers
        self.dropcopy = dropcopy
        self.account_of_session = account_of_session
        #: called after every pump, once the sessions' responses are written (market data)
        self.post_pump: list[Callable[[], None]] = []
        #: the seq past which ``pump`` calls ``snapshot_due`` (0 = never; kept by Snapshots)
        self.next_snapshot_seq = 0
        self.snapshot_due: Callable[[], None] = lambda: None
        self.pumps = 0
        self._pump_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._live = False  # while replaying: no latency observations, no writes

    def replace_core(self, core: MatchingCore) -> None:
        """Run ``core`` (restored from a snapshot) instead of the current one; the risk state
        follows it."""
        core.on_events_full = self._drain_events
        self.core = core
        self.risk.set_core(core)

    # -- the order path ----------------------------------------------------------------------
    def inbound_push(self, record: bytes) -> None:
        """Queue one command record from the slow path (session open, cancel on disconnect)."""
        while self.inbound.push(record) == 0:
            self.pump()

    def request_pump(self) -> None:
        """Schedule one pump at the end of this loop tick (after every read of the tick)."""
        if not self._pump_scheduled:
            self._pump_scheduled = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self.pump()

    def pump(self) -> int:
        """Sequence, journal, match and answer everything in the inbound ring; returns the
        commands handled.  Raises OSError when the journal cannot be written (nothing of the
        group is acknowledged then)."""
        ring = self.inbound
        total = 0
        while True:
            n = len(ring)
            if n == 0:
                break
            self.sequencer.stamp(ring, n)
            self.journal.append_ring(ring, n)
            self._live = True
            self.match_all()
            total += n
        # every checked record has been processed: its effect is in the risk state's
        # committed part now
        self.risk.clear_pending()
        self.pumps += 1
        self.flush()
        for hook in self.post_pump:
            try:
                hook()
            except Exception:  # a market-data fault must never stop the order path
                log.exception("post-pump hook %r failed", hook)
        if self.next_snapshot_seq and self.sequencer.next_seq > self.next_snapshot_seq:
            self.snapshot_due()
        return total

    def match_all(self) -> None:
        """Match everything in the inbound ring and encode the events (no journal write: the
        caller has journaled it, or it is being replayed from the journal)."""
        # in slices, so that the events of a slice are still in the CPU cache when the risk
        # state and the outbound encoder read them (measured in bench/risk_bench.py)
        while len(self.inbound):
            self.core.process(self.inbound, self.events, MATCH_SLICE)
            self._drain_events()

    def _drain_events(self) -> None:
        self.outbound.drain(self.events, self._live)

    def flush(self) -> None:
        """Store every session's new messages, write them to its connection and its drop
        copies (one ``deliver`` per session), and append the new events to the event log."""
        ob = self.outbound
        now = time.time_ns()
        dropcopy = self.dropcopy
        store = self.store
        for sid in ob.dirty():
            first, data = ob.take_seq(sid)
            # stored before it is sent: a message a client saw can always be replayed
            store.append(sid, first, data, ob.next_seq(sid) - first)
            w = self.writers.get(sid)
            # the acknowledgements count as sent once the write returned (the order-to-ack
            # histogram); the same clock as the receive stamps
            written = w is not None and w.deliver(data, now) is not False
            ob.acks_written(sid, time.time_ns() if written else 0)
            if dropcopy:
                for d in list(dropcopy.get(self.account_of_session[sid], ())):
                    d.deliver(data, now)
        self._append_events()

    def _append_events(self) -> None:
        if self.event_log is None:
            return
        first, data = self.outbound.take_events()
        if data:
            self.event_log.append(first, data)
            if self.sink is not None:
                self.sink.notify()

    def close(self) -> None:
        """Close the journal, the message store and the event log (each syncs what it holds
        first; the next ``recover`` of another Engine on the same directories may open them)."""
        self.journal.close()
        self.store.close()
        if self.event_log is not None:
            self.event_log.close()
