"""``EngineStats``: the one read-only view of the engine that monitoring reads.

It implements monitoring.sources.EngineFigures (checked by mypy where gateway/server.py hands
it to the collector); every figure is read when asked (at scrape time), from the C counters
and plain ints the engine keeps anyway, so nothing on the order path does any work for it.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Generic, Self, TypeVar, cast, overload

from gateway.engine.facade import Engine
from monitoring.sources import OrderCounters, RiskCounters, SinkFigures, SnapshotFigures

T = TypeVar("T")


class _Figure(Generic[T]):
    """A read-only attribute of EngineStats: ``read(engine)``, evaluated on each access."""

    __slots__ = ("_read",)

    def __init__(self, read: Callable[[Engine], T]) -> None:
        self._read = read

    @overload
    def __get__(self, stats: None, owner: type[EngineStats]) -> Self: ...
    @overload
    def __get__(self, stats: EngineStats, owner: type[EngineStats]) -> T: ...
    def __get__(self, stats: EngineStats | None, owner: type[EngineStats]) -> T | Self:
        return self if stats is None else self._read(stats._e)


class EngineStats:
    """Figures of ``engine`` (see monitoring.sources.EngineFigures for their meaning)."""

    __slots__ = ("_e",)

    def __init__(self, engine: Engine) -> None:
        self._e = engine

    # -- order path --------------------------------------------------------------------------
    def commands_by_type(self) -> Mapping[int, int]:
        """CommandType -> commands sequenced."""
        return self._e.sequencer.counts()

    def order_counters(self) -> OrderCounters:
        """The outbound encoder's counters (events, rejects, cancels by reason; fills,
        traded quantity in lots, business messages sent)."""
        return cast(OrderCounters, self._e.outbound.counters())

    def risk_counters(self) -> RiskCounters:
        """The pre-trade checks' counters."""
        return cast(RiskCounters, self._e.risk.counters())

    def ack_latency(self) -> tuple[list[float], list[int], float]:
        """Request read to acknowledgement written to the socket: (bucket bounds in s,
        cumulative counts, sum in s)."""
        return self._e.outbound.latency()

    def ring_occupancy(self) -> Mapping[str, int]:
        """Records waiting in the inbound and the events ring."""
        return {"inbound": len(self._e.inbound), "events": len(self._e.events)}

    def ring_capacity(self) -> Mapping[str, int]:
        """Slots of the inbound and the events ring."""
        return {"inbound": self._e.inbound.capacity, "events": self._e.events.capacity}

    # the rest are attributes: each reads the engine as written here, when asked
    sessions_open = _Figure(lambda e: e.sessions_connected())
    resting_orders = _Figure(lambda e: int(e.core.order_count()))
    sequence_last = _Figure(lambda e: int(e.sequencer.next_seq) - 1)
    # -- durability --------------------------------------------------------------------------
    journal_last_seq = _Figure(lambda e: e.journal.last_seq)
    journal_bytes = _Figure(lambda e: e.journal.bytes_written)
    journal_segments = _Figure(lambda e: len(e.journal.segments()))
    journal_segments_removed = _Figure(lambda e: e.journal.segments_removed)
    snapshots = _Figure[SnapshotFigures](lambda e: e.snap_stats)
    message_store_bytes = _Figure(lambda e: e.store.total_bytes)
    replayed_messages = _Figure(lambda e: e.replayed_messages)
    sink = _Figure[SinkFigures | None](lambda e: e.sink)
    event_log_bytes = _Figure(lambda e: None if e.event_log is None else e.event_log.total_bytes)
    # -- the process -------------------------------------------------------------------------
    ready = _Figure(lambda e: e.ready)
    partition = _Figure(lambda e: e.cfg.partition)
    symbols = _Figure(lambda e: len(e.symbol_names))
    # -- access control and risk -------------------------------------------------------------
    symbols_halted = _Figure(lambda e: len(e.risk.halted()))
    accounts_blocked = _Figure(lambda e: len(e.risk.blocked()))
    connections_refused = _Figure[Mapping[str, int]](lambda e: e.access.connections_refused)
    connections_open = _Figure(lambda e: e.addresses.total)
    login_rate_limited = _Figure(lambda e: e.access.login_rate_limited)
    read_pauses = _Figure(lambda e: e.access.read_pauses)
    audit_lines = _Figure(lambda e: e.audit.lines)
