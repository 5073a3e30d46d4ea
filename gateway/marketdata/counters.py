"""The market-data publisher's outcome counters (plain ints: nothing on the publishing path calls
prometheus-client; monitoring/md_collector.py reads them at scrape time)."""
from __future__ import annotations

from dataclasses import dataclass, field


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
