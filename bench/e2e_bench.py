"""End to end over TCP: orders/s acknowledged and journaled, and order-to-ack latency at a fixed
offered rate (open loop), against a bare uvloop echo server measured in the same run (DESIGN §3).

    python bench/e2e_bench.py                      # defaults: 1 M requests, 4 sessions, 50 k/s latency
    python bench/e2e_bench.py --requests 2000000 --sessions 8 --rate 50000 --latency-seconds 10
    python bench/e2e_bench.py --lobster            # also the full AMZN LOBSTER replay

The gateway and the echo server run as separate processes (``hftgw serve`` with a scratch
journal); the load generator is one uvloop process whose per-order work is done in C (requests
are pre-encoded; responses are counted with ``protocol.codec.scan_responses``).  On this 2-core
machine the gateway gets one core and the generator the other.

Stream per session: 2/3 GTC limit orders at mid +- 0..9 ticks (both sides, so about half cross),
1/3 cancels of an order sent 30 requests earlier (filled by then or not: either answer counts).
A request counts as answered by its first response: OrderAccepted/OrderRejected for a new order,
OrderCanceled/CancelRejected for a cancel.  Latency is measured open loop: requests leave on a
1 ms schedule whatever the answers do, and each answer's latency is taken from the scheduled
send time of its batch, so a stall shows up instead of hiding (coordinated omission); percentiles
come from an HDR histogram.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from pathlib import Path
from typing import cast

import uvloop
from hdrh.histogram import HdrHistogram

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.config.schema import DEV_JWT_SECRET  # noqa: E402
from gateway.security.auth import mint_token  # noqa: E402
from matching.records import OrdType, Side, TimeInForce  # noqa: E402
from protocol import codec  # noqa: E402
from protocol.messages import CancelOrder, Login, NewOrder  # noqa: E402

ANSWERS = (20, 21, 23, 25)  # OrderAccepted, OrderRejected, OrderCanceled, CancelRejected
MID = 1_000_000
TICK = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_stream(n: int, seed: int, symbol: str = "AAPL") -> tuple[bytes, array[int]]:
    """n pre-encoded requests (ClOrdID = 1..n) and each request's byte end offset."""
    rnd = random.Random(seed)
    parts: list[bytes] = []
    ends = array("Q")
    off = 0
    for cl in range(1, n + 1):
        if cl % 3 == 0 and cl > 30:
            b = codec.encode(CancelOrder(cl_ord_id=cl, orig_cl_ord_id=cl - 30, symbol=symbol))
        else:
            side = Side.SIDE_BUY if rnd.random() < 0.5 else Side.SIDE_SELL
            off_ticks = rnd.randrange(10)
            price = MID - off_ticks * TICK if side == Side.SIDE_BUY else MID + off_ticks * TICK
            # shift so that about half the orders cross the other side's resting orders
            price += (5 * TICK) if side == Side.SIDE_BUY else -(5 * TICK)
            b = codec.encode(NewOrder(cl_ord_id=cl, price=price, order_qty=1 + rnd.randrange(10),
                                      symbol=symbol, side=side, ord_type=OrdType.ORD_LIMIT,
                                      time_in_force=TimeInForce.TIF_GTC))
        parts.append(b)
        off += len(b)
        ends.append(off)
    return b"".join(parts), ends


class Conn(asyncio.Protocol):
    """One client connection; counts answers (gateway) or echoed bytes (echo)."""

    def __init__(self, echo: bool, hist: HdrHistogram | None = None,
                 send_ns: array[int] | None = None, batch: int = 1) -> None:
        self.echo = echo
        self.buf = bytearray()
        self.answered = 0
        self.received = 0
        self.logged_in = asyncio.get_running_loop().create_future()
        self.progress = asyncio.Event()
        self.hist = hist
        self.send_ns = send_ns
        self.batch = batch
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.echo:
            self.progress.set()
            return
        self.buf += data
        triples, used = codec.scan_responses(self.buf)
        del self.buf[:used]
        templates = triples[0::3]
        if not self.logged_in.done():
            if 2 in templates:
                self.logged_in.set_result(True)
            elif 3 in templates:
                self.logged_in.set_exception(ConnectionError("login rejected"))
        n = sum(templates.count(t) for t in ANSWERS)
        if n:
            self.answered += n
            self.progress.set()
            if self.hist is not None and self.send_ns is not None:
                now = time.perf_counter_ns()
                cls = triples[2::3]
                for t, cl in zip(templates, cls, strict=True):
                    if t in ANSWERS:
                        self.hist.record_value(max(1, (now - self.send_ns[(cl - 1) // self.batch]) // 1000))


async def _open(host: str, port: int, echo: bool, account: str, hist: HdrHistogram | None = None,
                send_ns: array[int] | None = None, batch: int = 1) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Conn(echo, hist, send_ns, batch), host, port)
    if not echo:
        assert conn.transport is not None
        conn.transport.write(codec.encode(Login(heartbeat_interval_ms=30000, next_expected_seq_num=0,
                                                cancel_on_disconnect=0,
                                                token=mint_token(DEV_JWT_SECRET, account))))
        await asyncio.wait_for(conn.logged_in, 10)
    return conn


async def throughput(host: str, port: int, echo: bool, streams: list[tuple[bytes, array[int]]],
                     window: int, tag: str) -> float:
    """Send every stream on its own connection, at most ``window`` requests unanswered per
    connection; returns requests answered per second (echo: requests echoed per second)."""
    conns = [await _open(host, port, echo, f"{tag}{i}") for i in range(len(streams))]

    async def run(conn: Conn, data: bytes, ends: array[int]) -> None:
        assert conn.transport is not None
        n = len(ends)
        sent = 0
        step = max(1, window // 4)
        while True:
            # echo: a request is done when its last byte came back
            done = _count_le(ends, conn.received) if echo else conn.answered
            if done >= n:
                return
            if sent < n and sent - done < window:
                upto = min(n, sent + step)
                lo = ends[sent - 1] if sent else 0
                conn.transport.write(data[lo:ends[upto - 1]])
                sent = upto
                continue
            conn.progress.clear()
            await conn.progress.wait()

    t0 = time.perf_counter()
    await asyncio.gather(*(run(c, d, e) for c, (d, e) in zip(conns, streams, strict=True)))
    dt = time.perf_counter() - t0
    for c in conns:
        assert c.transport is not None
        c.transport.close()
    return sum(len(e) for _, e in streams) / dt


def _count_le(ends: array[int], received: int) -> int:
    import bisect

    return bisect.bisect_right(ends, received)


async def latency(host: str, port: int, stream: tuple[bytes, array[int]], rate: int, seconds: float
                  ) -> tuple[HdrHistogram, HdrHistogram, int, int]:
    """Open loop: every 1 ms send the next rate/1000 requests; returns the histogram (µs),
    requests sent and answered."""
    data, ends = stream
    batch = max(1, rate // 1000)
    n = min(len(ends), int(rate * seconds))
    send_ns = array("Q", [0]) * (n // batch + 2)
    hist = HdrHistogram(1, 60_000_000, 3)
    late = HdrHistogram(1, 60_000_000, 3)  # how late the generator itself sent each batch (µs)
    conn = await _open(host, port, False, "lat", hist=hist, send_ns=send_ns, batch=batch)
    assert conn.transport is not None
    start = time.perf_counter_ns()
    sent = 0
    k = 0
    while sent < n:
        due = start + k * 1_000_000
        # spin to the due time (yielding so answers are read): event-loop timers have 1 ms
        # resolution, and a late wake-up would be charged to the gateway as latency
        while time.perf_counter_ns() < due:
            await asyncio.sleep(0)
        upto = min(n, sent + batch)
        late.record_value(max(1, (time.perf_counter_ns() - due) // 1000))
        send_ns[k] = due  # the schedule, not the actual send: a late send counts as latency
        lo = ends[sent - 1] if sent else 0
        conn.transport.write(data[lo:ends[upto - 1]])
        sent = upto
        k += 1
    deadline = time.monotonic() + 10
    while conn.answered < n and time.monotonic() < deadline:
        conn.progress.clear()
        try:
            await asyncio.wait_for(conn.progress.wait(), 1)
        except TimeoutError:
            pass
    conn.transport.close()
    return hist, late, n, conn.answered


def server_latency_buckets(url: str) -> dict[float, float]:
    """Cumulative counts of hftgw_order_ack_latency_seconds by upper bound (s)."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("hftgw_order_ack_latency_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def bucket_quantile(cum: dict[float, float], q: float) -> float:
    """Upper bound of the bucket holding quantile q of a cumulative histogram."""
    total = cum.get(float("inf"), 0.0)
    for le in sorted(cum):
        if total and cum[le] >= q * total:
            return le
    return float("nan")


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(url)


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(port)


def latency_phase(gw_port: int, m_port: int, stream: tuple[bytes, array[int]], rate: int,
                  seconds: float) -> None:
    """The open-loop latency run, printed: the client's order-to-ack percentiles (us), the
    generator's own lateness, and the gateway's histogram over the same phase (its metrics)."""
    metrics = f"http://127.0.0.1:{m_port}/metrics"
    before = server_latency_buckets(metrics)
    hist, late, sent, answered = uvloop.run(latency("127.0.0.1", gw_port, stream, rate, seconds))
    pct = {p: hist.get_value_at_percentile(p) for p in (50, 90, 99, 99.9, 100)}
    print(f"open loop at {rate:,}/s for {seconds:g}s: sent {sent:,}, "
          f"answered {answered:,}; order-to-ack latency us (client, from the send "
          f"schedule): p50 {pct[50]} p90 {pct[90]} p99 {pct[99]} p99.9 {pct[99.9]} "
          f"max {pct[100]}")
    print(f"  the generator's own send lateness (us, part of the figures above): "
          f"p99 {late.get_value_at_percentile(99)} p99.9 {late.get_value_at_percentile(99.9)} "
          f"max {late.get_value_at_percentile(100)}")
    after = server_latency_buckets(metrics)
    delta = {b: after[b] - before.get(b, 0) for b in after}
    print("  gateway's own histogram (read to ack written), same phase: "
          + ", ".join(f"p{q} <= {bucket_quantile(delta, q / 100) * 1e6:g} us"
                      for q in (50, 99, 99.9)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1_000_000, help="total, split over sessions")
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--window", type=int, default=20_000, help="unanswered requests per session")
    ap.add_argument("--rate", type=int, default=50_000, help="offered rate of the latency phase")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--durability", choices=["os", "fsync"], default="os")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lobster", action="store_true", help="also replay the AMZN LOBSTER day")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                    help="pin the gateway to core 0 and the generator to core 1")
    args = ap.parse_args()

    per = args.requests // args.sessions
    t0 = time.perf_counter()
    streams = [make_stream(per, args.seed + i) for i in range(args.sessions)]
    lat_stream = make_stream(int(args.rate * args.latency_seconds), args.seed + 99, symbol="MSFT")
    gc.collect()
    gc.freeze()  # the pre-encoded streams are long-lived: keep them out of the collector's scans
    print(f"# {args.sessions} sessions x {per:,} requests (2/3 new orders, 1/3 cancels), "
          f"window {args.window:,}; encoded in {time.perf_counter() - t0:.1f}s; "
          f"python {sys.version.split()[0]}, {os.cpu_count()} cores")

    jdir = tempfile.mkdtemp(prefix="hftgw-bench-")
    gw_port, m_port, echo_port = free_port(), free_port(), free_port()
    env = dict(os.environ, HFTGW_LISTEN=f"127.0.0.1:{gw_port}",
               HFTGW_METRICS_LISTEN=f"127.0.0.1:{m_port}", HFTGW_JOURNAL_DIR=jdir,
               HFTGW_DURABILITY=args.durability, HFTGW_LOG_LEVEL="WARNING",
               HFTGW_RING_CAPACITY=str(1 << 16), HFTGW_WS_LISTEN=f"127.0.0.1:{free_port()}")
    echo = subprocess.Popen([sys.executable, str(ROOT / "bench" / "echo_server.py"), "--listen",
                             f"127.0.0.1:{echo_port}"], stdout=subprocess.DEVNULL)
    gw = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env, cwd=ROOT)
    if args.pin and (os.cpu_count() or 1) >= 2:
        # one core each, so the spinning generator never shares the gateway's core
        os.sched_setaffinity(gw.pid, {0})
        os.sched_setaffinity(0, {1})
    try:
        wait_port(echo_port)
        wait_ready(f"http://127.0.0.1:{m_port}/ready", gw)
        if not args.skip_throughput:
            echo_rate = uvloop.run(throughput("127.0.0.1", echo_port, True, streams, args.window,
                                              "e"))
            gw_rate = uvloop.run(throughput("127.0.0.1", gw_port, False, streams, args.window, "t"))
            print(f"echo server (ceiling)        {echo_rate:>12,.0f} requests/s")
            print(f"gateway, acked + journaled   {gw_rate:>12,.0f} requests/s   = "
                  f"{gw_rate / echo_rate:.3f} of the echo ceiling  (durability={args.durability})")
        latency_phase(gw_port, m_port, lat_stream, args.rate, args.latency_seconds)
        if args.lobster:
            lob = ROOT.parent / "shared" / "data" / "lobster"
            out = subprocess.run(
                [sys.executable, "-m", "gateway.cli", "replay-lobster", "--json", "--connect",
                 f"127.0.0.1:{gw_port}", "--account", "lobster-bench",
                 str(lob / "AMZN_2012-06-21_34200000_57600000_message_1.csv"),
                 str(lob / "AMZN_2012-06-21_34200000_57600000_orderbook_1.csv")],
                capture_output=True, text=True, cwd=ROOT, check=True)
            print(f"LOBSTER AMZN replay (queries after every message, waits before "
                  f"cancels): {out.stdout.strip()}")
    finally:
        for p in (gw, echo):
            p.terminate()
            p.wait(15)
        shutil.rmtree(jdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
