"""Market-data fan-out over WebSocket: 1 000 and 10 000 BBO subscribers on one gateway process,
under a steady order load, and the order path's throughput with and without them, in one run.

    python bench/md_fanout_bench.py                                # 1 000 and 10 000 subscribers
    python bench/md_fanout_bench.py --subscribers 1000 --rate 5000 --seconds 10

One ``hftgw serve`` process (pinned to core 0 when there are 2 cores; everything else on core 1).
Subscribers live in several client processes (at most 2 500 connections each); every one
subscribes to the binary BBO of the 5 default symbols, and --probes of them (spread evenly) also
to their trades.  To keep the clients' CPU (on the same machine) small, a subscriber does the opening
handshake with the ``websockets`` sans-I/O client and then only counts: a probe walks the frame
headers and reads the transactTime of each Bbo / Trade message (the gateway's receive time of the
order that caused it) for the fill-to-subscriber latency (HDR histograms); any other subscriber
counts bytes, every message it gets being a binary Bbo frame of BBO_FRAME bytes.

Per subscriber count:
  * steady load: --rate orders/s (open loop, 1 ms schedule; limit orders around the mid on both
    sides of the 5 symbols, 1/3 of them cancels) for --seconds; messages/s delivered to the
    subscribers (counted by the clients) and written by the gateway (its metrics), messages the
    gateway conflated away for slow readers, and latency p50/p99 of BBO and trade messages;
  * order path: the same windowed throughput run as with no subscribers (closed loop, e2e_bench's
    load); the ratio of the two, and the gateway's CPU time per request in each.
Figures from this shared 2-core VM are noisy: the subscribers' processes, the load generator and
the gateway compete for the same 2 cores.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import cast

import uvloop
from hdrh.histogram import HdrHistogram

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from e2e_bench import Conn, _open, free_port, throughput, wait_ready  # noqa: E402
from order_stream import MID, TICK, mixed_stream  # noqa: E402

SYMBOLS = ["AAPL", "AMZN", "GOOG", "INTC", "MSFT"]
PER_PROCESS = 2500
TPL_BBO, TPL_TRADE = 40, 41
BBO_FRAME = 2 + 8 + 56  # WebSocket header, SBE header, Bbo block


# -- subscriber processes -------------------------------------------------------------------
@dataclass(slots=True)
class SubStats:
    """What one subscriber process's connections counted: WebSocket frames and bytes (probes),
    bytes (the others, all BBO_FRAME frames), connections lost, latency histograms (us)."""

    frames: int = 0
    bytes: int = 0
    plain_bytes: int = 0
    lost: int = 0
    bbo_hist: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 60_000_000, 3))
    trade_hist: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 60_000_000, 3))


class Subscriber(asyncio.Protocol):
    """One market-data connection: handshake with websockets' sans-I/O client, then count frames
    (and, for a probe, read each message's transactTime)."""

    def __init__(self, url: str, probe: bool, stats: SubStats, ready: asyncio.Future[None]) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.ws = ClientProtocol(parse_uri(url))
        self.probe = probe
        self.stats = stats
        self.ready = ready
        self.open = False
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        self.ws.send_request(self.ws.connect())
        self.transport.write(b"".join(self.ws.data_to_send()))

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.ws.receive_data(data)
            events = self.ws.events_received()
            if not events:
                return
            from websockets.protocol import State

            if self.ws.state is not State.OPEN:
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(f"handshake refused: {events[0]}"))
                return
            self.open = True
            channels = '["bbo", "trades"]' if self.probe else '["bbo"]'
            symbols = ", ".join(f'"{s}"' for s in SYMBOLS)
            self.ws.send_text(f'{{"op": "subscribe", "id": 1, "channels": {channels}, '
                              f'"symbols": [{symbols}], "encoding": "binary"}}'.encode())
            assert self.transport is not None
            self.transport.write(b"".join(self.ws.data_to_send()))
            self.ready.set_result(None)
            return
        if not self.probe:
            self.stats.plain_bytes += len(data)
            return
        buf = self.buf
        buf += data
        pos, n = 0, len(buf)
        st = self.stats
        now = time.time_ns()
        while n - pos >= 2:
            ln = buf[pos + 1] & 0x7F
            hdr = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 4], "big")
                hdr = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 10], "big")
                hdr = 10
            if n - pos < hdr + ln:
                break
            opcode = buf[pos] & 0x0F
            st.frames += 1
            st.bytes += hdr + ln
            if opcode == 2:
                m = pos + hdr
                end = m + ln
                while m + 8 <= end:
                    blen = buf[m] | buf[m + 1] << 8
                    tid = buf[m + 2] | buf[m + 3] << 8
                    ts = int.from_bytes(buf[m + 16:m + 24], "little")
                    lat = max(1, (now - ts) // 1000)
                    if tid == TPL_BBO:
                        st.bbo_hist.record_value(min(lat, 60_000_000))
                    elif tid == TPL_TRADE:
                        st.trade_hist.record_value(min(lat, 60_000_000))
                    m += 8 + blen
            pos += hdr + ln
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.lost += 1


def subscriber_process(url: str, count: int, probe_every: int, first: int, pipe: Connection) -> None:
    """Open ``count`` subscribers, report "ready", then answer "reset" / "report" / "stop"."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stats = SubStats()
        host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
        transports = []
        for k in range(0, count, 200):  # in waves, within the listen backlog
            waves = []
            for i in range(k, min(count, k + 200)):
                ready: asyncio.Future[None] = loop.create_future()
                probe = (first + i) % probe_every == 0
                tr, _ = await loop.create_connection(
                    functools.partial(Subscriber, url, probe, stats, ready), host, int(port))
                transports.append(tr)
                waves.append(ready)
            await asyncio.wait_for(asyncio.gather(*waves), 60)
        await asyncio.sleep(0.5)  # the subscribe replies and first BBOs
        pipe.send("ready")
        done = asyncio.Event()

        def command() -> None:
            cmd = pipe.recv()
            if cmd == "reset":
                stats.frames = stats.bytes = stats.plain_bytes = 0
                stats.bbo_hist.reset()
                stats.trade_hist.reset()
                pipe.send("ok")
            elif cmd == "report":
                pipe.send({"frames": stats.frames + stats.plain_bytes // BBO_FRAME,
                           "bytes": stats.bytes + stats.plain_bytes, "lost": stats.lost,
                           "bbo": stats.bbo_hist.encode(), "trade": stats.trade_hist.encode()})
            else:
                done.set()
        loop.add_reader(pipe.fileno(), command)
        await done.wait()
        for tr in transports:
            tr.abort()
    uvloop.run(main())


class SubscriberFleet:
    """N subscribers in ceil(N / PER_PROCESS) processes."""

    def __init__(self, url: str, n: int, probes: int, cpus: set[int] | None) -> None:
        probe_every = max(1, n // max(1, probes))
        ctx = mp.get_context("spawn")
        self.procs: list[BaseProcess] = []
        self.pipes: list[Connection] = []
        for first in range(0, n, PER_PROCESS):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=subscriber_process,
                            args=(url, min(PER_PROCESS, n - first), probe_every, first, theirs), daemon=True)
            p.start()
            if cpus and p.pid is not None:
                os.sched_setaffinity(p.pid, cpus)
            self.procs.append(p)
            self.pipes.append(mine)
        for pipe in self.pipes:
            if not pipe.poll(180):
                raise TimeoutError("subscribers did not connect in 180 s")
            assert pipe.recv() == "ready"

    def reset(self) -> None:
        for pipe in self.pipes:
            pipe.send("reset")
        for pipe in self.pipes:
            assert pipe.recv() == "ok"

    def report(self) -> tuple[int, int, int, HdrHistogram, HdrHistogram]:
        frames = nbytes = lost = 0
        bbo = HdrHistogram(1, 60_000_000, 3)
        trade = HdrHistogram(1, 60_000_000, 3)
        for pipe in self.pipes:
            pipe.send("report")
        for pipe in self.pipes:
            r = pipe.recv()
            frames += r["frames"]
            nbytes += r["bytes"]
            lost += r["lost"]
            bbo.decode_and_add(r["bbo"])
            trade.decode_and_add(r["trade"])
        return frames, nbytes, lost, bbo, trade

    def stop(self) -> None:
        for pipe in self.pipes:
            pipe.send("stop")
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()


# -- order load -------------------------------------------------------------------------------
def symbol_stream(n: int, seed: int, symbol: str) -> tuple[bytes, array[int]]:
    """n pre-encoded requests on one symbol: GTC limits around the mid, both sides, about half
    crossing; every third request cancels the order sent 30 requests earlier."""
    return mixed_stream(n, seed, symbol,
                        lambda buy, k: MID + (k - 5 + (2 if buy else -2)) * TICK)


async def steady_load(port: int, streams: list[tuple[bytes, array[int]]], rate: int, seconds: float,
                      tag: str) -> tuple[int, int]:
    """Open loop: every 1 ms each symbol's session sends its share of ``rate``; returns (sent,
    answered)."""
    conns: list[Conn] = [await _open("127.0.0.1", port, False, f"{tag}{i}") for i in range(len(streams))]
    per_ms = max(1, rate // 1000 // len(streams))
    n = min(min(len(e) for _, e in streams), int(rate * seconds) // len(streams))
    start = time.perf_counter_ns()
    sent, k = 0, 0
    while sent < n:
        due = start + k * 1_000_000
        ahead = due - time.perf_counter_ns()
        if ahead > 0:  # sleep, not spin: the subscribers' processes share this core
            await asyncio.sleep(ahead / 1e9)
        upto = min(n, sent + per_ms)
        for c, (data, ends) in zip(conns, streams, strict=True):
            lo = ends[sent - 1] if sent else 0
            assert c.transport is not None
            c.transport.write(data[lo:ends[upto - 1]])
        sent = upto
        k += 1
    deadline = time.monotonic() + 10
    while sum(c.answered for c in conns) < n * len(conns) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    answered = sum(c.answered for c in conns)
    for c in conns:
        assert c.transport is not None
        c.transport.close()
    return n * len(conns), answered


# -- gateway side -----------------------------------------------------------------------------
def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("hftgw_") and " " in line:
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wait_subscribers(mport: int, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while metrics(mport).get("hftgw_md_subscribers", -1) != n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"gateway does not report {n} subscribers")
        time.sleep(0.1)


def pct(h: HdrHistogram) -> str:
    if not h.get_total_count():
        return "none"
    return (f"p50 {h.get_value_at_percentile(50):,} us, p99 {h.get_value_at_percentile(99):,} us, "
            f"max {h.get_max_value():,} us ({h.get_total_count():,} messages)")


def order_path(gw_pid: int, port: int, streams: list[tuple[bytes, array[int]]], window: int,
               tag: str, repeat: int = 1) -> tuple[float, float]:
    """(acked requests/s, gateway CPU us per request): medians of ``repeat`` windowed
    throughput runs."""
    rates, cpus = [], []
    n = sum(len(e) for _, e in streams)
    for k in range(repeat):
        c0 = cpu_seconds(gw_pid)
        rates.append(uvloop.run(throughput("127.0.0.1", port, False, streams, window, f"{tag}{k}-")))
        cpus.append((cpu_seconds(gw_pid) - c0) / n * 1e6)
    return sorted(rates)[len(rates) // 2], sorted(cpus)[len(cpus) // 2]


class Run:
    """One gateway process and the streams the phases send to it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        per = args.requests // len(SYMBOLS)
        self.tput_streams = [symbol_stream(per, 1 + i, s) for i, s in enumerate(SYMBOLS)]
        self.jdir = tempfile.mkdtemp(prefix="hftgw-md-bench-")
        self.port, self.mport, wsport = free_port(), free_port(), free_port()
        self.url = f"ws://127.0.0.1:{wsport}/md"
        env = dict(os.environ, HFTGW_LISTEN=f"127.0.0.1:{self.port}",
                   HFTGW_METRICS_LISTEN=f"127.0.0.1:{self.mport}", HFTGW_WS_LISTEN=f"127.0.0.1:{wsport}",
                   HFTGW_JOURNAL_DIR=self.jdir, HFTGW_LOG_LEVEL="ERROR",
                   # the counting subscribers do not answer pings
                   HFTGW_WS_PING_INTERVAL_S="0", HFTGW_MD_MAX_CONNECTIONS="20000")
        prof = ["-m", "cProfile", "-o", args.profile] if args.profile else []
        self.gw = subprocess.Popen([sys.executable, *prof, "-m", "gateway.cli", "serve"], env=env, cwd=ROOT)
        self.client_cpus: set[int] | None = None
        if args.pin and (os.cpu_count() or 1) >= 2:
            os.sched_setaffinity(self.gw.pid, {0})
            self.client_cpus = {1}
            os.sched_setaffinity(0, self.client_cpus)
        wait_ready(f"http://127.0.0.1:{self.mport}/ready", self.gw)

    def close(self) -> None:
        self.gw.terminate()
        self.gw.wait(30)
        shutil.rmtree(self.jdir, ignore_errors=True)

    def order_path(self, tag: str) -> tuple[float, float]:
        return order_path(self.gw.pid, self.port, self.tput_streams, self.args.window, tag, self.args.repeat)

    def steady(self, seed: int, tag: str) -> tuple[int, int]:
        a = self.args
        streams = [symbol_stream(int(a.rate * a.seconds) // len(SYMBOLS) + 10, seed + i, s)
                   for i, s in enumerate(SYMBOLS)]
        return uvloop.run(steady_load(self.port, streams, a.rate, a.seconds, tag))

    def fanout(self, n: int) -> tuple[float, float, float]:
        """One subscriber count: steady load, then the order path with and without them.
        Returns (messages/s delivered, throughput ratio, CPU-per-request ratio)."""
        base, base_cpu = self.order_path(f"a{n}-")
        print(f"\norder path, no subscribers        {base:>12,.0f} requests/s   gateway CPU "
              f"{base_cpu:.2f} us/request; gateway RSS {rss_mb(self.gw.pid):,.0f} MB")
        t0 = time.perf_counter()
        fleet = SubscriberFleet(self.url, n, self.args.probes, self.client_cpus)
        try:
            wait_subscribers(self.mport, n)
            print(f"{n:,} subscribers connected and subscribed in {time.perf_counter() - t0:.1f} s "
                  f"({len(fleet.procs)} client processes); gateway RSS {rss_mb(self.gw.pid):,.0f} MB")
            fleet.reset()
            m0 = metrics(self.mport)
            cpu0 = cpu_seconds(self.gw.pid)
            t0 = time.perf_counter()
            sent, answered = self.steady(1000 * n, f"s{n}-")
            time.sleep(1.0)  # let the last messages arrive
            dt = time.perf_counter() - t0
            busy = (cpu_seconds(self.gw.pid) - cpu0) / dt
            m1 = metrics(self.mport)
            frames, nbytes, lost, bbo, trade = fleet.report()

            def d(name: str) -> float:
                return m1[name] - m0[name]
            writes, srv = d("hftgw_md_writes_total"), d("hftgw_md_messages_sent_total")
            sweeps, fan = d("hftgw_md_fanout_sweeps_total"), d("hftgw_md_fanout_seconds_total")
            print(f"steady load: sent {sent:,} orders, answered {answered:,}")
            print(f"  delivered to subscribers {frames / dt:>12,.0f} messages/s "
                  f"({nbytes / dt / 1e6:.1f} MB/s; {frames:,} in {dt:.1f} s)")
            print(f"  written by the gateway   {srv / dt:>12,.0f} messages/s; conflated away "
                  f"{d('hftgw_md_messages_dropped_total'):,.0f}; slow disconnects "
                  f"{d('hftgw_md_slow_disconnects_total'):.0f}; connections lost {lost}")
            print(f"  gateway {busy:.0%} of a core busy = {busy * dt / max(1, writes) * 1e6:.1f} us CPU per "
                  f"socket write ({writes / dt:,.0f} writes/s, {srv / max(1, writes):.1f} messages each)")
            print(f"  fan-out {fan / dt:.0%} of the wall time, {sweeps / dt:,.1f} sweeps/s over all "
                  f"subscribers" + (f" ({fan / sweeps * 1e3:.1f} ms each)" if sweeps else ""))
            print(f"  BBO   order-received-to-subscriber latency: {pct(bbo)}")
            print(f"  trade (fill)-to-subscriber latency:          {pct(trade)}")
            rate, cpu = self.order_path(f"b{n}-")
            print(f"order path with {n:,} subscribers {rate:>12,.0f} requests/s   gateway CPU "
                  f"{cpu:.2f} us/request")
            print(f"  = {rate / base:.2f} x the throughput without subscribers just before; "
                  f"{cpu / base_cpu:.2f} x the CPU per request")
            return frames / dt, rate / base, cpu / base_cpu
        finally:
            fleet.stop()
            wait_subscribers(self.mport, 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subscribers", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--rate", type=int, default=5000, help="steady orders/s over the 5 symbols")
    ap.add_argument("--seconds", type=float, default=10.0, help="steady-load phase length")
    ap.add_argument("--requests", type=int, default=500_000, help="per order-path run, over 5 sessions")
    ap.add_argument("--window", type=int, default=20_000)
    ap.add_argument("--probes", type=int, default=20,
                    help="subscribers that also take trades and measure latency")
    ap.add_argument("--repeat", type=int, default=3, help="order-path runs per condition (median)")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--profile", metavar="FILE", help="run the gateway under cProfile, stats to FILE")
    args = ap.parse_args()
    print(f"# python {sys.version.split()[0]}, {os.cpu_count()} cores; subscribers on the binary "
          f"BBO of {len(SYMBOLS)} symbols ({args.probes} also trades, with latency); "
          f"steady load {args.rate:,} orders/s for {args.seconds:g} s; order path: median of "
          f"{args.repeat} runs of {args.requests:,} requests over {len(SYMBOLS)} sessions, "
          f"window {args.window:,}")
    run = Run(args)
    rows = []
    try:
        run.order_path("warm")
        sent, answered = run.steady(100, "s0-")
        print(f"steady load, no subscribers: sent {sent:,}, answered {answered:,}")
        for n in args.subscribers:
            rows.append((n, *run.fanout(n)))
        print("\nsummary: " + "; ".join(
            f"{n:,} subscribers: {fps:,.0f} messages/s delivered, order path {r:.2f} x the "
            f"throughput, {c:.2f} x the CPU per request" for n, fps, r, c in rows))
    finally:
        run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
