"""Prometheus collector for the gateway.

Nothing on the order path calls prometheus-client: the counters live in C (sequencer, outbound
encoder, core) or in per-session Python ints updated on rare events, and this collector reads
them at scrape time (the "custom collector" pattern of prometheus-client's docs), through the
read-only views of monitoring/sources.py that gateway/server.py passes in.
"""
from __future__ import annotations

from collections.abc import Iterator

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
from monitoring.sources import (
    EngineFigures,
    LogLimiterFigures,
    OrderCounters,
    ReloadFigures,
    SessionFigures,
    SinkFigures,
)


def _name(enum_cls: type, value: int, prefix: str) -> str:
    try:
        return str(enum_cls(value).name).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


def reason_totals(stats: EngineFigures, sessions: SessionFigures,
                  with_logins: bool = False) -> dict[str, int]:
    """Rejects by reason name: order/cancel rejects (C counters) plus session-level rejects;
    with_logins adds refused logins as ``login_<reason>`` (the log's reject summary)."""
    totals: dict[str, int] = {}
    for counts in (stats.order_counters()["rejects"], sessions.rejects):
        for reason, n in counts.items():
            key = _name(RejectReason, reason, "REJ_")
            totals[key] = totals.get(key, 0) + n
    if with_logins:
        for reason, n in sessions.login_failures.items():
            key = "login_" + _name(LoginRejectReason, reason, "LOGIN_")
            totals[key] = totals.get(key, 0) + n
    return totals


#: the RejectReasons of the gateway's pre-trade risk checks (33-41)
RISK_REASONS = tuple(r for r in RejectReason if 33 <= r <= 63)


class GatewayCollector(Collector):
    """Reads the engine's figures (``stats``), the sessions' counters, the log limiter's and
    (when given) the config reloader's on each scrape."""

    def __init__(self, stats: EngineFigures, sessions: SessionFigures,
                 limiter: LogLimiterFigures, reloader: ReloadFigures | None = None) -> None:
        self.stats = stats
        self.sessions = sessions
        self.limiter = limiter
        self.reloader = reloader

    def collect(self) -> Iterator[Metric]:
        """Every gateway metric, in the order /metrics has always listed them."""
        oc = self.stats.order_counters()
        yield from self._orders(oc)
        yield from self._sessions()
        yield from self._rings_and_journal()
        yield from self._snapshots_and_store()
        yield from self._sink(self.stats.sink)
        yield from self._latency_and_process()
        yield from self._reloads()
        yield from self._access_and_risk()

    def _orders(self, oc: OrderCounters) -> Iterator[Metric]:
        """Commands, orders, rejects, cancels, fills and messages (``oc``: the encoder's
        counters of this scrape)."""
        st = self.stats
        by_type = st.commands_by_type()
        c = CounterMetricFamily("hftgw_commands", "Sequenced commands by type", labels=["type"])
        for t, n in sorted(by_type.items()):
            c.add_metric([_name(CommandType, t, "CMD_")], n)
        yield c
        yield CounterMetricFamily("hftgw_orders_received", "New orders received and sequenced",
                                  value=by_type.get(int(CommandType.CMD_NEW), 0)
                                  + st.risk_counters()["refused_new"])   # refused before the book
        yield CounterMetricFamily("hftgw_orders_accepted", "New orders accepted",
                                  value=oc["events"].get(int(EventType.EVT_ACCEPTED), 0))
        rej = CounterMetricFamily("hftgw_rejects", "Rejected requests by reason code",
                                  labels=["reason"])
        # every reason is exported from the start (at 0), so rate() and alerts see the series
        # before the first reject instead of "no data"
        totals = {_name(RejectReason, r, "REJ_"): 0 for r in RejectReason if r != RejectReason.REJ_NONE}
        totals.update(reason_totals(st, self.sessions))
        for key, n in sorted(totals.items()):
            rej.add_metric([key], n)
        yield rej
        cx = CounterMetricFamily("hftgw_cancels", "Orders canceled by reason", labels=["reason"])
        cancels = {_name(CancelReason, r, "CXL_"): 0 for r in CancelReason}
        cancels.update({_name(CancelReason, r, "CXL_"): n for r, n in oc["cancels"].items()})
        for key, n in sorted(cancels.items()):
            cx.add_metric([key], n)
        yield cx
        yield CounterMetricFamily("hftgw_fills", "Executions (one per maker/taker match)",
                                  value=oc["fills"])
        yield CounterMetricFamily("hftgw_traded_quantity", "Traded quantity in lots",
                                  value=oc["traded_qty"])
        yield CounterMetricFamily("hftgw_messages_out", "Business messages sent to sessions",
                                  value=oc["messages_out"])

    def _sessions(self) -> Iterator[Metric]:
        """Refused logins, timeouts and slow consumers; open sessions and resting orders."""
        s = self.sessions
        lf = CounterMetricFamily("hftgw_login_failures", "Refused logins by reason",
                                 labels=["reason"])
        failures = {_name(LoginRejectReason, r, "LOGIN_"): 0 for r in LoginRejectReason}
        failures.update({_name(LoginRejectReason, r, "LOGIN_"): n
                         for r, n in s.login_failures.items()})
        for key, n in sorted(failures.items()):
            lf.add_metric([key], n)
        yield lf
        yield CounterMetricFamily("hftgw_heartbeat_timeouts",
                                  "Sessions logged out for silence", value=s.heartbeat_timeouts)
        yield CounterMetricFamily("hftgw_slow_consumer_disconnects",
                                  "Sessions dropped for unread responses", value=s.slow_consumers)
        yield GaugeMetricFamily("hftgw_sessions_open", "Logged-in sessions",
                                value=self.stats.sessions_open)
        yield GaugeMetricFamily("hftgw_resting_orders", "Orders resting in the books",
                                value=self.stats.resting_orders)

    def _rings_and_journal(self) -> Iterator[Metric]:
        """Ring occupancy and capacity, the sequence and the journal."""
        st = self.stats
        occ = GaugeMetricFamily("hftgw_ring_occupancy", "Records waiting in a ring",
                                labels=["ring"])
        for ring, n in st.ring_occupancy().items():
            occ.add_metric([ring], n)
        yield occ
        cap = GaugeMetricFamily("hftgw_ring_capacity", "Slots in a ring", labels=["ring"])
        for ring, n in st.ring_capacity().items():
            cap.add_metric([ring], n)
        yield cap
        last_seq = st.sequence_last
        yield GaugeMetricFamily("hftgw_sequence_last", "Last command sequence number given",
                                value=last_seq)
        yield GaugeMetricFamily("hftgw_journal_lag_records",
                                "Sequenced commands not yet in the journal",
                                value=max(0, last_seq - st.journal_last_seq))
        yield CounterMetricFamily("hftgw_journal_bytes", "Bytes appended to the journal",
                                  value=st.journal_bytes)
        yield GaugeMetricFamily("hftgw_journal_segments", "Journal segment files on disk",
                                value=st.journal_segments)
        yield CounterMetricFamily("hftgw_journal_segments_removed",
                                  "Journal segments deleted once no snapshot needed them",
                                  value=st.journal_segments_removed)

    def _snapshots_and_store(self) -> Iterator[Metric]:
        """Snapshots, the last start, the message store and replays."""
        sn = self.stats.snapshots
        yield GaugeMetricFamily("hftgw_snapshot_last_seq",
                                "Command seq of the newest snapshot written or loaded at start",
                                value=sn.last_seq)
        yield CounterMetricFamily("hftgw_snapshots_written", "Snapshots written by this process",
                                  value=sn.written)
        yield CounterMetricFamily("hftgw_snapshots_failed",
                                  "Snapshots abandoned on an I/O error (logged)", value=sn.failed)
        yield GaugeMetricFamily("hftgw_snapshot_duration_seconds",
                                "Last snapshot: capture, write and commit", value=sn.duration_s)
        yield GaugeMetricFamily("hftgw_snapshot_capture_seconds",
                                "Last snapshot: time the event loop was held to capture it",
                                value=sn.capture_s)
        yield GaugeMetricFamily("hftgw_recovery_seconds",
                                "Last start: snapshot load and journal replay", value=sn.recovery_s)
        yield GaugeMetricFamily("hftgw_message_store_bytes",
                                "Bytes in the message store (every session's messages)",
                                value=self.stats.message_store_bytes)
        yield CounterMetricFamily("hftgw_replayed_messages",
                                  "Business messages replayed to sessions after a re-login",
                                  value=self.stats.replayed_messages)

    def _sink(self, sink: SinkFigures | None) -> Iterator[Metric]:
        """The PostgreSQL sink (its figures only when it is on) and the event log it reads."""
        yield GaugeMetricFamily("hftgw_sink_enabled", "1 when the PostgreSQL sink is on",
                                value=1 if sink is not None else 0)
        if sink is not None:
            yield GaugeMetricFamily("hftgw_sink_lag_events",
                                    "Events in the event log not yet committed to PostgreSQL",
                                    value=sink.lag_events)
            yield GaugeMetricFamily("hftgw_sink_last_event_no",
                                    "Number of the last event committed to PostgreSQL (the checkpoint)",
                                    value=sink.last_event_no)
            yield GaugeMetricFamily("hftgw_sink_connected", "1 while the sink is connected",
                                    value=1 if sink.connected else 0)
            yield GaugeMetricFamily("hftgw_sink_diverged",
                                    "1 when PostgreSQL holds events the journal does not explain "
                                    "and the sink has stopped writing (run hftgw repair)",
                                    value=1 if sink.diverged else 0)
            yield CounterMetricFamily("hftgw_sink_rows", "Fills committed to PostgreSQL",
                                      value=sink.rows_written)
            yield CounterMetricFamily("hftgw_sink_order_events",
                                      "Order events (not fills) committed to PostgreSQL",
                                      value=sink.order_events_written)
            yield CounterMetricFamily("hftgw_sink_errors", "Sink batches that failed and were retried",
                                      value=sink.errors)
        event_log_bytes = self.stats.event_log_bytes
        if event_log_bytes is not None:
            yield GaugeMetricFamily("hftgw_event_log_bytes", "Bytes of the event log's segment files",
                                    value=event_log_bytes)

    def _latency_and_process(self) -> Iterator[Metric]:
        """The ack latency histogram, readiness, the partition, symbols, suppressed log lines."""
        st = self.stats
        bounds, cumulative, total = st.ack_latency()
        buckets = [("+Inf" if b == float("inf") else repr(float(b)), n)
                   for b, n in zip(bounds, cumulative, strict=True)]
        yield HistogramMetricFamily("hftgw_order_ack_latency_seconds",
                                    "Read of a new order to the socket write of its "
                                    "acknowledgement (matching and message store included)",
                                    buckets=buckets, sum_value=total)
        yield GaugeMetricFamily("hftgw_ready", "1 once the journal is replayed and listeners are up",
                                value=1 if st.ready else 0)
        info = GaugeMetricFamily("hftgw_partition_info", "This process's symbol partition (always 1)",
                                 labels=["partition"])
        info.add_metric([st.partition], 1)
        yield info
        yield GaugeMetricFamily("hftgw_symbols", "Symbols this partition serves", value=st.symbols)
        yield CounterMetricFamily("hftgw_log_lines_suppressed",
                                  "Log lines dropped by the per-event rate limit",
                                  value=self.limiter.suppressed_total)

    def _reloads(self) -> Iterator[Metric]:
        """SIGHUP reload outcomes (nothing without a reloader)."""
        r = self.reloader
        if r is None:
            return
        rl = CounterMetricFamily("hftgw_config_reloads", "SIGHUP config reloads by result",
                                 labels=["result"])
        rl.add_metric(["ok"], r.reloads_ok)
        rl.add_metric(["refused"], r.reloads_refused)
        yield rl
        yield GaugeMetricFamily("hftgw_config_last_reload_successful",
                                "0 when the last config reload was refused, else 1",
                                value=1 if r.last_ok else 0)

    def _access_and_risk(self) -> Iterator[Metric]:
        """Access control, throttles and pre-trade risk (issue 6)."""
        st, s = self.stats, self.sessions
        rc = st.risk_counters()
        yield CounterMetricFamily("hftgw_risk_checked", "Requests through the pre-trade checks",
                                  value=rc["checked"])
        rr = CounterMetricFamily("hftgw_risk_rejects", "Requests refused by the gateway's checks "
                                 "before the book, by reason", labels=["reason"])
        # every reason the checks give, 0 included, so that rate() has a series from the start
        rejected = {int(r): 0 for r in (RejectReason.REJ_THROTTLED, *RISK_REASONS)}
        rejected.update(rc["rejected"])
        for reason, n in sorted(rejected.items()):
            rr.add_metric([_name(RejectReason, reason, "REJ_")], n)
        yield rr
        th = CounterMetricFamily("hftgw_throttled", "Requests refused by a token bucket",
                                 labels=["scope"])
        th.add_metric(["session"], rc["throttled_session"])
        th.add_metric(["account"], rc["throttled_account"])
        yield th
        yield GaugeMetricFamily("hftgw_symbols_halted", "Symbols halted by an admin",
                                value=st.symbols_halted)
        yield GaugeMetricFamily("hftgw_accounts_blocked", "Accounts with the kill switch engaged",
                                value=st.accounts_blocked)
        cr = CounterMetricFamily("hftgw_connections_refused", "Connections closed at once by a "
                                 "connection limit", labels=["limit"])
        for limit, n in sorted({"total": 0, "per_address": 0, **st.connections_refused}.items()):
            cr.add_metric([limit], n)
        yield cr
        yield GaugeMetricFamily("hftgw_connections_open", "Open order-entry connections",
                                value=st.connections_open)
        yield CounterMetricFamily("hftgw_login_rate_limited", "Logins refused by the per-address "
                                  "rate limit", value=st.login_rate_limited)
        yield CounterMetricFamily("hftgw_role_violations", "Messages refused because the session's "
                                  "role (or no login) does not allow them", value=s.role_violations)
        yield CounterMetricFamily("hftgw_policy_disconnects", "Sessions logged out for repeated "
                                  "violations", value=s.policy_disconnects)
        yield CounterMetricFamily("hftgw_login_timeouts", "Connections closed for not logging in",
                                  value=s.login_timeouts)
        yield CounterMetricFamily("hftgw_read_pauses", "Times reading from a client was paused "
                                  "because it left output unread", value=st.read_pauses)
        yield CounterMetricFamily("hftgw_audit_lines", "Lines written to the audit log",
                                  value=st.audit_lines)
