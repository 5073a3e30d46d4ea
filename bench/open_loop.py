"""The open-loop latency client of bench/e2e_bench.py: requests leave on a schedule, whatever the
answers do.

Request i of a run is due at start + i/rate.  The sender spins on the event loop (yielding each
turn so that answers are read: uvloop's timers have 1 ms resolution) and on every turn writes,
in one write, all the requests due by then.  A request's latency runs from its *scheduled* time,
not from when it was written, to the arrival of its answer, so that a stall of the target, the
kernel or this client is counted in full for every request it held up instead of for one
(coordinated omission).  Gateway: a request is answered by its first response (OrderAccepted or
OrderRejected for a new order, OrderCanceled or CancelRejected for a cancel); echo server: when
its last byte is back.  The hot path does no Python per request: arrival times are stored per
run of answers, and the histogram is built after the run.

The client checks itself (``Run.kept_up``): it must have sent on schedule (the lag of each write's
oldest request behind its due time), at the offered rate, and spent a bounded share of the run in
its own callbacks (reading answers, writing requests); when it did not, the bench prints why
instead of the figures, because they would be the client's.
"""
from __future__ import annotations

import asyncio
import bisect
import gc
import socket
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import cast

from hdrh.histogram import HdrHistogram

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config.schema import DEV_JWT_SECRET  # noqa: E402
from gateway.security.auth import mint_token  # noqa: E402
from protocol import codec  # noqa: E402
from protocol.messages import Login  # noqa: E402

ANSWERS = (20, 21, 23, 25)  # OrderAccepted, OrderRejected, OrderCanceled, CancelRejected
PERCENTILES = (50, 90, 99, 99.9, 100)
#: the client kept up when most of its writes left on time: the median of its send lag is at most
#: this (µs; a turn of its loop takes a few µs; a client behind on its own work is late on most
#: writes, a descheduled one, which is the machine's noise and hits the target too, only on
#: those in the shadow of the deschedule: the tail, printed but no reason to withhold) ...
MAX_SEND_LAG_P50_US = 250
#: ... it sent at least this share of the offered rate (over the whole run) ...
MIN_SENT_SHARE = 0.97
#: ... and it spent at most this share of the run in its callbacks, reading answers and writing
#: requests (wall time, so a deschedule lands in it as often as elsewhere; the rest of a turn of
#: its loop is the loop's own cost, a few µs; past that share the answers wait in the socket for
#: the client, and the latency would be the client's)
MAX_BUSY_SHARE = 0.7
#: a run ends this long after the last answer arrived, answered or not
QUIET_S = 5.0


def login_frame(account: str) -> bytes:
    return codec.encode(Login(heartbeat_interval_ms=30000, next_expected_seq_num=0,
                              cancel_on_disconnect=0, token=mint_token(DEV_JWT_SECRET, account)))


def read_answers(buf: bytearray, data: bytes, logged_in: asyncio.Future[bool]
                 ) -> tuple[array[int], array[int], int]:
    """Add ``data`` to a connection's ``buf`` and take out its complete frames; resolves
    ``logged_in`` at the Login's answer.  Returns the frames' (template, seq, ClOrdID) triples,
    their templates, and how many are answers."""
    buf += data
    triples, used = codec.scan_responses(buf)
    del buf[:used]
    templates = triples[0::3]
    if not logged_in.done():
        if 2 in templates:
            logged_in.set_result(True)
        elif 3 in templates:
            logged_in.set_exception(ConnectionError("login rejected"))
    return triples, templates, sum(templates.count(t) for t in ANSWERS)


class Probe(asyncio.Protocol):
    """One connection of an open-loop run: stores when each request's answer arrived."""

    def __init__(self, echo: bool, ends: array[int], n: int) -> None:
        self.echo = echo
        self.ends = ends
        self.n = n
        self.arrival = array("q", bytes(8 * n))   # perf_counter_ns; 0 = no answer yet
        self.answered = 0
        self.received = 0
        self.busy_ns = 0
        self.in_order = True
        self.buf = bytearray()
        self.logged_in: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        if self.echo:
            self.received += len(data)
            k = bisect.bisect_right(self.ends, self.received, 0, self.n)
            self._arrived(k, now)
        else:
            self._answers(data, now)
        self.busy_ns += time.perf_counter_ns() - now

    def _arrived(self, k: int, now: int) -> None:
        """Requests [answered, k) were answered at ``now``."""
        if k > self.answered:
            self.arrival[self.answered:k] = array("q", [now]) * (k - self.answered)
            self.answered = k

    def _answers(self, data: bytes, now: int) -> None:
        triples, templates, count = read_answers(self.buf, data, self.logged_in)
        if not count:
            return
        if self.in_order:
            # one session's answers leave the gateway's pipeline in request order, so this
            # chunk answers the next `count` requests; checked on its last answer
            last = next(j for j in range(len(templates) - 1, -1, -1) if templates[j] in ANSWERS)
            if triples[3 * last + 2] == self.answered + count:
                self._arrived(self.answered + count, now)
                return
            self.in_order = False
        for t, cl in zip(templates, triples[2::3], strict=True):
            if t in ANSWERS and 0 < cl <= self.n and not self.arrival[cl - 1]:
                self.arrival[cl - 1] = now
                self.answered += 1


@dataclass
class Run:
    """One open-loop run's figures, or several runs' pooled (``merge``): latencies in µs, rates
    in requests/s."""

    target: str
    rate: int
    n: int
    answered: int
    counts: Counter[int]            # latency (µs) -> requests
    lag_counts: Counter[int]        # the client's send lag behind the schedule (µs) -> writes
    send_ns: int                    # from the start through the last write's schedule slot
    answer_ns: int                  # from the start to the last answer
    busy_ns: int                    # in the client's callbacks
    worst_us: int
    worst_at_s: float               # when (from its run's start) the worst request was due
    rounds: int = 1

    @cached_property
    def pct(self) -> dict[float, int]:
        return percentiles(histogram(self.counts))

    @cached_property
    def lag(self) -> dict[float, int]:
        return percentiles(histogram(self.lag_counts))

    @property
    def sent_per_s(self) -> float:
        return self.n * 1e9 / max(1, self.send_ns)

    @property
    def answered_per_s(self) -> float:
        return self.answered * 1e9 / max(1, self.answer_ns)

    @property
    def busy_share(self) -> float:
        return self.busy_ns / max(1, self.send_ns, self.answer_ns)

    @cached_property
    def problems(self) -> list[str]:
        """Why the client did not keep up (empty: it did)."""
        out = []
        if self.lag[50] > MAX_SEND_LAG_P50_US:
            out.append(f"send lag p50 {self.lag[50]} us > {MAX_SEND_LAG_P50_US}")
        if self.sent_per_s < MIN_SENT_SHARE * self.rate:
            out.append(f"sent {self.sent_per_s:,.0f}/s < {MIN_SENT_SHARE:.0%} of {self.rate:,}/s")
        if self.busy_share > MAX_BUSY_SHARE:
            out.append(f"busy {self.busy_share:.0%} of the time > {MAX_BUSY_SHARE:.0%}")
        return out

    @property
    def kept_up(self) -> bool:
        return not self.problems


def merge(runs: list[Run]) -> Run:
    """Runs of one target at one rate pooled: their samples in one histogram, their durations
    summed (so the rates are over all of them)."""
    worst = max(runs, key=lambda r: r.worst_us)
    return Run(runs[0].target, runs[0].rate, sum(r.n for r in runs),
               sum(r.answered for r in runs), sum((r.counts for r in runs), Counter()),
               sum((r.lag_counts for r in runs), Counter()), sum(r.send_ns for r in runs),
               sum(r.answer_ns for r in runs), sum(r.busy_ns for r in runs), worst.worst_us,
               worst.worst_at_s, sum(r.rounds for r in runs))


def histogram(counts: Counter[int]) -> HdrHistogram:
    """An HDR histogram (µs, 3 significant digits) of values counted in ``counts``: one record
    per distinct value, not per sample."""
    h = HdrHistogram(1, 120_000_000, 3)
    for v, c in counts.items():
        h.record_value(max(1, v), c)
    return h


def latencies(arrival: array[int], start: int, rate: int, t_end: int) -> tuple[Counter[int], int]:
    """Each request's latency (µs) from its due time counted, and the index of the worst; a
    request never answered counts as answered at ``t_end``."""
    counts: Counter[int] = Counter()
    worst = worst_i = -1
    step = 1_000_000_000 / rate
    for i, a in enumerate(arrival):
        v = (a or t_end) - start - int(i * step)
        counts[v // 1000] += 1
        if v > worst:
            worst, worst_i = v, i
    return counts, worst_i


def percentiles(h: HdrHistogram) -> dict[float, int]:
    return {p: int(h.get_value_at_percentile(p)) for p in PERCENTILES}


async def open_run(host: str, port: int, echo: bool, account: str, stream: tuple[bytes, array[int]],
                   rate: int, seconds: float) -> Run:
    """Offer ``rate`` requests/s of ``stream`` for ``seconds`` on one new connection (logged in
    as ``account`` unless ``echo``); returns the run's figures."""
    data, ends = stream
    n = min(len(ends), max(1, int(rate * seconds)))
    loop = asyncio.get_running_loop()
    _, probe = await loop.create_connection(lambda: Probe(echo, ends, n), host, port)
    assert probe.transport is not None
    if not echo:
        probe.transport.write(login_frame(account))
        await asyncio.wait_for(probe.logged_in, 10)
    gc.disable()    # a collection of the client's garbage would be charged to the target
    try:
        start, lags, t_last, busy = await _send(probe, data, ends, n, rate)
        quiet = time.monotonic() + QUIET_S
        while probe.answered < n and time.monotonic() < quiet:
            seen = probe.answered
            await asyncio.sleep(0.01)
            if probe.answered > seen:
                quiet = time.monotonic() + QUIET_S
    finally:
        gc.enable()
        probe.transport.close()
    return _figures(probe, "echo" if echo else "gateway", rate, start, lags,
                    (t_last, time.perf_counter_ns()), busy)


async def _send(probe: Probe, data: bytes, ends: array[int], n: int, rate: int
                ) -> tuple[int, array[int], int, int]:
    """The sender: returns (start ns, each write's lag ns, time of the last write, ns spent
    writing)."""
    assert probe.transport is not None
    write = probe.transport.write
    clock = time.perf_counter_ns
    lags = array("q")
    start = clock() + 1_000_000
    sent = busy = now = 0
    while sent < n:
        now = clock()
        due = min(n, (now - start) * rate // 1_000_000_000 + 1) if now >= start else 0
        if due > sent:
            lags.append(now - start - sent * 1_000_000_000 // rate)
            write(data[ends[sent - 1] if sent else 0:ends[due - 1]])
            sent = due
            busy += clock() - now
        await asyncio.sleep(0)
    return start, lags, now, busy


def _figures(probe: Probe, target: str, rate: int, start: int, lags: array[int],
             t_last_end: tuple[int, int], busy: int) -> Run:
    """The run's figures (``t_last_end``: the time of the last write and of the end of the wait
    for answers)."""
    t_last, t_end = t_last_end
    step = 1_000_000_000 / rate
    counts, worst = latencies(probe.arrival, start, rate, t_end)
    worst_us = ((probe.arrival[worst] or t_end) - start - int(worst * step)) // 1000
    return Run(target, rate, probe.n, probe.answered, counts, Counter(v // 1000 for v in lags),
               int(t_last - start + step), max(probe.arrival) - start, busy + probe.busy_ns,
               worst_us, worst * step / 1e9)
