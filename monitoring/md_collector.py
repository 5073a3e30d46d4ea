"""Prometheus collector for the WebSocket port: market-data subscribers and order sessions.

Read at scrape time from plain counters the market-data publisher keeps (gateway/marketdata/fanout.py),
as the gateway's main collector does: nothing on the publishing path calls prometheus-client.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitoring.sources import MarketDataFigures, MdCounterFigures
from protocol.mdjson import MdError

#: the publisher's plain counters, in /metrics order: (metric, help, value)
_COUNTERS: tuple[tuple[str, str, Callable[[MdCounterFigures], float]], ...] = (
    ("hftgw_md_messages_sent", "WebSocket messages written to market-data subscribers",
     lambda c: c.messages_sent),
    ("hftgw_md_writes", "Socket writes to market-data subscribers", lambda c: c.writes),
    ("hftgw_md_bytes_sent", "Bytes written to market-data subscribers", lambda c: c.bytes_sent),
    ("hftgw_md_messages_dropped", "BBO and depth messages conflated away for slow subscribers",
     lambda c: c.dropped),
    ("hftgw_md_slow_disconnects", "Subscribers closed for unread data past md_max_buffer_bytes",
     lambda c: c.slow_disconnects),
    ("hftgw_md_fanout_sweeps", "Complete fan-out passes over the subscribed connections",
     lambda c: c.sweeps),
    ("hftgw_md_fanout_seconds", "Event-loop time spent writing market data to subscribers",
     lambda c: c.fanout_ns / 1e9),
    ("hftgw_md_connections", "Market-data connections accepted", lambda c: c.connections_total),
    ("hftgw_md_connections_refused", "Market-data handshakes refused: over md_max_connections",
     lambda c: c.refused_connections),
    ("hftgw_md_auth_failures", "Market-data handshakes refused: bad token", lambda c: c.auth_failures),
)


class MarketDataCollector(Collector):
    """md: the publisher (gateway/marketdata/fanout.py's ``MarketData``, read through the
    monitoring.sources.MarketDataFigures view); ws_order_connections: the number of
    ``/orders`` connections now."""

    def __init__(self, md: MarketDataFigures, ws_order_connections: Callable[[], int]) -> None:
        self.md = md
        self.ws_order_connections = ws_order_connections

    def collect(self) -> Iterator[Metric]:
        """Every market-data and WebSocket order-entry metric."""
        md = self.md
        c = md.counters
        yield GaugeMetricFamily("hftgw_md_subscribers", "Connected market-data WebSocket clients",
                                value=len(md.conns))
        subs = GaugeMetricFamily("hftgw_md_subscriptions", "Market-data subscriptions by channel",
                                 labels=["channel"])
        for ch, n in md.subscriptions_by_channel().items():
            subs.add_metric([ch], n)
        yield subs
        yield GaugeMetricFamily("hftgw_md_congested", "Subscribers being conflated (slow readers)",
                                value=len(md.congested))
        for name, doc, read in _COUNTERS:
            yield CounterMetricFamily(name, doc, value=read(c))
        err = CounterMetricFamily("hftgw_md_control_errors", "Refused market-data control messages",
                                  labels=["error"])
        seen = dict(c.control_errors)
        for code in MdError:  # every code from 0, so alerts see the series before the first error
            err.add_metric([code.name.lower()], seen.get(int(code), 0))
        yield err
        yield GaugeMetricFamily("hftgw_ws_order_connections", "Order-entry WebSocket connections",
                                value=self.ws_order_connections())
