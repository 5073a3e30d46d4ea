"""``EngineStats``: the one read-only view of the engine that monitoring reads.

It implements monitoring.sources.EngineFigures (checked by mypy where gateway/server.py hands
it to the collector); every figure is read when asked (at scrape time), from the C counters
and plain ints the engine keeps anyway, so nothing on the order path does any work for it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from monitoring.sources import OrderCounters, RiskCounters, SinkFigures, SnapshotFigures

if TYPE_CHECKING:
    from gateway.engine.facade import Engine


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
        """Receive to acknowledgement written: (bucket bounds in s, cumulative counts, sum in s)."""
        return self._e.outbound.latency()

    def ring_occupancy(self) -> Mapping[str, int]:
        """Records waiting in the inbound and the events ring."""
        return {"inbound": len(self._e.inbound), "events": len(self._e.events)}

    def ring_capacity(self) -> Mapping[str, int]:
        """Slots of the inbound and the events ring."""
        return {"inbound": self._e.inbound.capacity, "events": self._e.events.capacity}

    @property
    def sessions_open(self) -> int:
        return self._e.sessions_connected()

    @property
    def resting_orders(self) -> int:
        return int(self._e.core.order_count())

    @property
    def sequence_last(self) -> int:
        return int(self._e.sequencer.next_seq) - 1

    # -- durability --------------------------------------------------------------------------
    @property
    def journal_last_seq(self) -> int:
        return self._e.journal.last_seq

    @property
    def journal_bytes(self) -> int:
        return self._e.journal.bytes_written

    @property
    def journal_segments(self) -> int:
        return len(self._e.journal.segments())

    @property
    def journal_segments_removed(self) -> int:
        return self._e.journal.segments_removed

    @property
    def snapshots(self) -> SnapshotFigures:
        return self._e.snap_stats

    @property
    def message_store_bytes(self) -> int:
        return self._e.store.total_bytes

    @property
    def replayed_messages(self) -> int:
        return self._e.replayed_messages

    @property
    def sink(self) -> SinkFigures | None:
        return self._e.sink

    @property
    def event_log_bytes(self) -> int | None:
        log = self._e.event_log
        return None if log is None else log.total_bytes

    # -- the process -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._e.ready

    @property
    def partition(self) -> str:
        return self._e.cfg.partition

    @property
    def symbols(self) -> int:
        return len(self._e.symbol_names)

    # -- access control and risk -------------------------------------------------------------
    @property
    def symbols_halted(self) -> int:
        return len(self._e.risk.halted())

    @property
    def accounts_blocked(self) -> int:
        return len(self._e.risk.blocked())

    @property
    def connections_refused(self) -> Mapping[str, int]:
        return self._e.access.connections_refused

    @property
    def connections_open(self) -> int:
        return self._e.addresses.total

    @property
    def login_rate_limited(self) -> int:
        return self._e.access.login_rate_limited

    @property
    def read_pauses(self) -> int:
        return self._e.access.read_pauses

    @property
    def audit_lines(self) -> int:
        return self._e.audit.lines
