"""Prometheus collector for the gateway.

Nothing on the order path calls prometheus-client: the counters live in C (sequencer, outbound
encoder, core) or in per-session Python ints updated on rare events, and this collector reads
them at scrape time (the "custom collector" pattern of prometheus-client's docs).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from matching.records import (
    CancelReason,
    CommandType,
    EventType,
    LoginRejectReason,
    RejectReason,
)

if TYPE_CHECKING:
    from gateway.engine import Engine
    from protocol.session import SessionCounters


def _name(enum_cls: type, value: int, prefix: str) -> str:
    try:
        return str(enum_cls(value).name).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


class GatewayCollector(Collector):
    """Reads the engine's and the sessions' counters on each scrape."""

    def __init__(self, engine: Engine, sessions: SessionCounters) -> None:
        self.engine = engine
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        e = self.engine
        by_type = e.sequencer.counts()
        c = CounterMetricFamily("hftgw_commands", "Sequenced commands by type", labels=["type"])
        for t, n in sorted(by_type.items()):
            c.add_metric([_name(CommandType, t, "CMD_")], n)
        yield c
        yield CounterMetricFamily("hftgw_orders_received", "New orders received and sequenced",
                                  value=by_type.get(int(CommandType.CMD_NEW), 0)
                                  + e.risk.counters()["refused_new"])   # refused before the book
        oc = e.outbound.counters()
        yield CounterMetricFamily("hftgw_orders_accepted", "New orders accepted",
                                  value=oc["events"].get(int(EventType.EVT_ACCEPTED), 0))
        rej = CounterMetricFamily("hftgw_rejects", "Rejected requests by reason code",
                                  labels=["reason"])
        totals: dict[str, int] = {}
        for reason, n in oc["rejects"].items():
            key = _name(RejectReason, reason, "REJ_")
            totals[key] = totals.get(key, 0) + n
        for reason, n in self.sessions.rejects.items():
            key = _name(RejectReason, reason, "REJ_")
            totals[key] = totals.get(key, 0) + n
        for key, n in sorted(totals.items()):
            rej.add_metric([key], n)
        yield rej
        cx = CounterMetricFamily("hftgw_cancels", "Orders canceled by reason", labels=["reason"])
        for reason, n in sorted(oc["cancels"].items()):
            cx.add_metric([_name(CancelReason, reason, "CXL_")], n)
        yield cx
        yield CounterMetricFamily("hftgw_fills", "Executions (one per maker/taker match)",
                                  value=oc["fills"])
        yield CounterMetricFamily("hftgw_traded_quantity", "Traded quantity in lots",
                                  value=oc["traded_qty"])
        yield CounterMetricFamily("hftgw_messages_out", "Business messages sent to sessions",
                                  value=oc["messages_out"])
        lf = CounterMetricFamily("hftgw_login_failures", "Refused logins by reason",
                                 labels=["reason"])
        for reason, n in sorted(self.sessions.login_failures.items()):
            lf.add_metric([_name(LoginRejectReason, reason, "LOGIN_")], n)
        yield lf
        yield CounterMetricFamily("hftgw_heartbeat_timeouts",
                                  "Sessions logged out for silence", value=self.sessions.heartbeat_timeouts)
        yield CounterMetricFamily("hftgw_slow_consumer_disconnects",
                                  "Sessions dropped for unread responses", value=self.sessions.slow_consumers)
        yield GaugeMetricFamily("hftgw_sessions_open", "Logged-in sessions",
                                value=e.sessions_connected())
        yield GaugeMetricFamily("hftgw_resting_orders", "Orders resting in the books",
                                value=e.core.order_count())
        occ = GaugeMetricFamily("hftgw_ring_occupancy", "Records waiting in a ring",
                                labels=["ring"])
        occ.add_metric(["inbound"], len(e.inbound))
        occ.add_metric(["events"], len(e.events))
        yield occ
        cap = GaugeMetricFamily("hftgw_ring_capacity", "Slots in a ring", labels=["ring"])
        cap.add_metric(["inbound"], e.inbound.capacity)
        cap.add_metric(["events"], e.events.capacity)
        yield cap
        last_seq = e.sequencer.next_seq - 1
        yield GaugeMetricFamily("hftgw_sequence_last", "Last command sequence number given",
                                value=last_seq)
        yield GaugeMetricFamily("hftgw_journal_lag_records",
                                "Sequenced commands not yet in the journal",
                                value=max(0, last_seq - e.journal.last_seq))
        yield CounterMetricFamily("hftgw_journal_bytes", "Bytes appended to the journal",
                                  value=e.journal.bytes_written)
        sink = e.sink
        yield GaugeMetricFamily("hftgw_sink_enabled", "1 when the PostgreSQL fills sink is on",
                                value=1 if sink is not None else 0)
        if sink is not None:
            yield GaugeMetricFamily("hftgw_sink_lag_rows", "Fills not yet committed to PostgreSQL",
                                    value=sink.lag_rows)
            yield GaugeMetricFamily("hftgw_sink_connected", "1 while the sink is connected",
                                    value=1 if sink.connected else 0)
            yield CounterMetricFamily("hftgw_sink_rows", "Fills committed to PostgreSQL",
                                      value=sink.rows_written)
            yield CounterMetricFamily("hftgw_sink_errors", "Sink batches that failed and were retried",
                                      value=sink.errors)
        bounds, cumulative, total = e.outbound.latency()
        buckets = [("+Inf" if b == float("inf") else repr(float(b)), n)
                   for b, n in zip(bounds, cumulative, strict=True)]
        h = HistogramMetricFamily("hftgw_order_ack_latency_seconds",
                                  "Receive to acknowledgement written, per order",
                                  buckets=buckets, sum_value=total)
        yield h
        yield GaugeMetricFamily("hftgw_ready", "1 once the journal is replayed and listeners are up",
                                value=1 if e.ready else 0)
        yield from self._access_and_risk()

    def _access_and_risk(self) -> Iterator[Metric]:
        """Access control, throttles and pre-trade risk (issue 6)."""
        e, s = self.engine, self.sessions
        rc = e.risk.counters()
        yield CounterMetricFamily("hftgw_risk_checked", "Requests through the pre-trade checks",
                                  value=rc["checked"])
        rr = CounterMetricFamily("hftgw_risk_rejects", "Requests refused by the gateway's checks "
                                 "before the book, by reason", labels=["reason"])
        for reason, n in sorted(rc["rejected"].items()):
            rr.add_metric([_name(RejectReason, reason, "REJ_")], n)
        yield rr
        th = CounterMetricFamily("hftgw_throttled", "Requests refused by a token bucket",
                                 labels=["scope"])
        th.add_metric(["session"], rc["throttled_session"])
        th.add_metric(["account"], rc["throttled_account"])
        yield th
        yield GaugeMetricFamily("hftgw_symbols_halted", "Symbols halted by an admin",
                                value=len(e.risk.halted()))
        yield GaugeMetricFamily("hftgw_accounts_blocked", "Accounts with the kill switch engaged",
                                value=len(e.risk.blocked()))
        cr = CounterMetricFamily("hftgw_connections_refused", "Connections closed at once by a "
                                 "connection limit", labels=["limit"])
        for reason, n in sorted(e.access.connections_refused.items()):
            cr.add_metric([reason], n)
        yield cr
        yield GaugeMetricFamily("hftgw_connections_open", "Open order-entry connections",
                                value=e.addresses.total)
        yield CounterMetricFamily("hftgw_login_rate_limited", "Logins refused by the per-address "
                                  "rate limit", value=e.access.login_rate_limited)
        yield CounterMetricFamily("hftgw_role_violations", "Messages refused because the session's "
                                  "role (or no login) does not allow them", value=s.role_violations)
        yield CounterMetricFamily("hftgw_policy_disconnects", "Sessions logged out for repeated "
                                  "violations", value=s.policy_disconnects)
        yield CounterMetricFamily("hftgw_login_timeouts", "Connections closed for not logging in",
                                  value=s.login_timeouts)
        yield CounterMetricFamily("hftgw_read_pauses", "Times reading from a client was paused "
                                  "because it left output unread", value=e.access.read_pauses)
        yield CounterMetricFamily("hftgw_audit_lines", "Lines written to the audit log",
                                  value=e.audit.lines)
