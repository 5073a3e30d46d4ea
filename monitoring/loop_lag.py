"""``hftgw_event_loop_lag_seconds``: how late a periodic timer fires on the event loop.

Everything of the order path runs on the one event-loop thread, so a callback that holds the
loop (a snapshot capture, a huge read, a long GC pause, the process not being scheduled) delays
every request that arrives meanwhile, and the order-to-ack histogram only shows it spread over
the requests that happened to be waiting.  A timer asked for every ``INTERVAL_S`` that fires
late by L says the loop could not run anything for about L: one observation per firing, so the
cost is a fixed ~50 callbacks/s whatever the order rate.

No library is used for the timer: of the asyncio ones on PyPI, aiodebug's lag monitor (last
release 2022) reports to StatsD only and loopmon (last release 2023) awaits a coroutine callback
per sample; neither has a Prometheus histogram, and the timer is a dozen lines.  The counts
are exported by a collector of their own, like the other families of the side port (no
``_created`` series, bounds chosen here).
"""
from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric

INTERVAL_S = 0.02  # 50 samples/s: a stall of 20 ms or more is always seen

# Upper bounds, s.  0.01 is the threshold of the HftgwEventLoopLagHigh alert
# (deployments/prometheus/hftgw-alerts.yml), so the p99 it compares is exact at that point.
LAG_BOUNDS_S = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0, 10.0)


class LoopLagMonitor:
    """Observes each firing's lateness between ``start`` and ``stop``; registered in
    ``registry`` as the collector of ``hftgw_event_loop_lag_seconds``.  start and stop on the
    loop's thread; ``collect`` may run on any (a scrape may miss the observation being made)."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.counts = [0] * (len(LAG_BOUNDS_S) + 1)  # per bucket, the last for +Inf
        self.sum_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        if registry is not None:
            registry.register(self)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None

    def _arm(self) -> None:
        assert self._loop is not None
        # the due time on the real clock: a loop's own clock may be cached per iteration
        self._timer = self._loop.call_later(self.interval_s, self._fired,
                                            time.monotonic() + self.interval_s)

    def _fired(self, due: float) -> None:
        # a timer may run a hair early (the loop rounds its timeouts): that is no lag
        lag = max(0.0, time.monotonic() - due)
        self.counts[bisect.bisect_left(LAG_BOUNDS_S, lag)] += 1  # bounds are inclusive (le)
        self.sum_s += lag
        if self._loop is not None:
            self._arm()

    def collect(self) -> Iterator[Metric]:
        cumulative, total = [], 0
        for n in list(self.counts):
            total += n
            cumulative.append(total)
        bounds = [repr(b) for b in LAG_BOUNDS_S] + ["+Inf"]
        yield HistogramMetricFamily(
            "hftgw_event_loop_lag_seconds",
            f"How late a timer due every {self.interval_s * 1000:g} ms fired on the event loop",
            buckets=list(zip(bounds, cumulative, strict=True)), sum_value=self.sum_s)
