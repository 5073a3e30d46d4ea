"""End to end over TCP: orders/s acknowledged and journaled, and a latency profile (open loop at
several offered rates), each against a bare uvloop echo server measured in the same run (DESIGN §3).

    python bench/e2e_bench.py                      # 1 M requests, 4 sessions; 10k-500k/s, 5 s each
                                                   # per target, in 5 alternated rounds
    python bench/e2e_bench.py --requests 2000000 --sessions 8 --rates 50000 --latency-seconds 10
    python bench/e2e_bench.py --json out.json      # the figures, machine-readable
    python bench/e2e_bench.py --lobster            # also the full AMZN LOBSTER replay

The gateway (``hftgw serve`` with a scratch journal) and the echo server run as separate
processes, both pinned to core 0; the load generator is one uvloop process on core 1 whose
per-order work is done in C (requests are pre-encoded; responses are counted with
``protocol.codec.scan_responses``).

Stream per session: 2/3 GTC limit orders at mid +- 0..9 ticks (both sides, so about half cross),
1/3 cancels of an order sent 30 requests earlier (filled by then or not: either answer counts).
A request counts as answered by its first response: OrderAccepted/OrderRejected for a new order,
OrderCanceled/CancelRejected for a cancel.

Three gateway processes, one after the other: the throughput run (closed loop, the default
config); the latency profile (snapshots off, so that no run has one at an unknown point): at
each ``--rates`` rate, ``--rounds`` open-loop runs on the gateway alternated with as many on the
echo server with the same schedule, so that the machine's slow spells hit both alike, each
target's rounds pooled (bench/open_loop.py: latency from each request's scheduled send time, so
a stall is not hidden by coordinated omission; percentiles from HDR histograms; where the client
itself could not keep up the bench prints why instead of figures);
and the snapshot run: a book of ``--snapshot-book`` resting orders on another symbol, then one
open-loop run at ``--snapshot-rate`` with ``snapshot_interval_commands`` set so that a snapshot
falls due half-way through it.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from open_loop import MAX_BUSY_SHARE, Run, login_frame, merge, open_run, read_answers  # noqa: E402
from order_stream import MID, TICK, mixed_stream, resting_stream  # noqa: E402

DEFAULT_RATES = "10000,50000,200000,500000"
#: a target that answered less than this share of the offered rate was saturated
BEHIND = 0.97


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_stream(n: int, seed: int, symbol: str = "AAPL") -> tuple[bytes, array[int]]:
    """n pre-encoded requests (ClOrdID = 1..n) and each request's byte end offset."""
    # shifted by 5 ticks so that about half the orders cross the other side's resting orders
    return mixed_stream(n, seed, symbol,
                        lambda buy, k: MID - k * TICK + 5 * TICK if buy else MID + k * TICK - 5 * TICK)


class Conn(asyncio.Protocol):
    """One client connection; counts answers (gateway) or echoed bytes (echo)."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.buf = bytearray()
        self.answered = 0
        self.received = 0
        self.logged_in: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.progress = asyncio.Event()
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
        n = read_answers(self.buf, data, self.logged_in)[2]
        if n:
            self.answered += n
            self.progress.set()


async def _open(host: str, port: int, echo: bool, account: str) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Conn(echo), host, port)
    if not echo:
        assert conn.transport is not None
        conn.transport.write(login_frame(account))
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



def metric_value(url: str, name: str) -> float:
    """The sum of the samples of metric ``name`` (any labels; a counter's ``_total``) at ``url``."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        key = line.split("{", 1)[0].split(" ", 1)[0]
        if key in (name, f"{name}_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class Gateway:
    port: int
    metrics: str          # the side port's /metrics URL
    proc: subprocess.Popen[bytes]


@contextmanager
def gateway(durability: str, pin: bool, **settings: str) -> Iterator[Gateway]:
    """A ready ``hftgw serve`` on a scratch journal, on core 0 if ``pin``; ``settings``: more
    config keys (lower case) passed as HFTGW_* variables."""
    jdir = tempfile.mkdtemp(prefix="hftgw-bench-")
    port, m_port = free_port(), free_port()
    env = dict(os.environ, HFTGW_LISTEN=f"127.0.0.1:{port}",
               HFTGW_METRICS_LISTEN=f"127.0.0.1:{m_port}", HFTGW_JOURNAL_DIR=jdir,
               HFTGW_DURABILITY=durability, HFTGW_LOG_LEVEL="WARNING",
               HFTGW_WS_LISTEN=f"127.0.0.1:{free_port()}")
    env.update({f"HFTGW_{k.upper()}": v for k, v in settings.items()})
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env, cwd=ROOT)
    try:
        if pin:
            os.sched_setaffinity(proc.pid, {0})
        wait_ready(f"http://127.0.0.1:{m_port}/ready", proc)
        yield Gateway(port, f"http://127.0.0.1:{m_port}/metrics", proc)
    finally:
        proc.terminate()
        proc.wait(15)
        shutil.rmtree(jdir, ignore_errors=True)


def _pcts(run: Run) -> str:
    p = run.pct
    return f"p50 {p[50]} p90 {p[90]} p99 {p[99]} p99.9 {p[99.9]} max {p[100]}"


def _rates(run: Run) -> str:
    return (f"{run.rounds} round{'s' if run.rounds > 1 else ''}: "
            f"offered {run.rate:,}/s, sent {run.sent_per_s:,.0f}/s, answered "
            f"{run.answered_per_s:,.0f}/s; the client's loop busy {run.busy_share:.0%} of the time")


def print_gateway_run(run: Run, seconds: float, own: dict[float, float]) -> None:
    """The gateway's run of one rate: the client's order-to-ack percentiles (us), the
    generator's own lateness, and the gateway's histogram over the same run (its metrics)."""
    head = (f"open loop at {run.rate:,}/s for {seconds:g}s: sent {run.n:,}, "
            f"answered {run.answered:,}; ")
    if run.kept_up:
        print(head + f"order-to-ack latency us (client, from the send schedule): {_pcts(run)}")
    else:
        print(head + f"NO latency figure: the client could not keep up ({'; '.join(run.problems)})")
    print(f"  the generator's own send lateness (us, part of the figures above): "
          f"p99 {run.lag[99]} p99.9 {run.lag[99.9]} max {run.lag[100]}")
    print("  gateway's own histogram (read to ack written), same phase: "
          + ", ".join(f"p{q} <= {bucket_quantile(own, q / 100) * 1e6:g} us" for q in (50, 99, 99.9)))
    print(f"  {_rates(run)}")
    if run.answered_per_s < BEHIND * run.rate:
        print(f"  the gateway fell behind the offered rate (answered {run.answered_per_s:,.0f}/s): "
              "saturated, its latency here grows with the length of the run")


def print_echo_run(run: Run, gw: Run) -> None:
    head = f"  echo server, same schedule: sent {run.n:,}, answered {run.answered:,}; "
    if run.kept_up:
        print(head + f"latency us {_pcts(run)}; send lateness p99 {run.lag[99]}")
    else:
        print(head + f"NO latency figure: the client could not keep up ({'; '.join(run.problems)})")
    print(f"    {_rates(run)}")
    if run.kept_up and gw.kept_up:
        print(f"  gateway p99 / echo p99 at {run.rate:,}/s: {gw.pct[99] / run.pct[99]:.2f}  "
              f"(p99.9: {gw.pct[99.9] / run.pct[99.9]:.2f})")


def run_fields(run: Run) -> dict[str, Any]:
    """One run's JSON fields, prefixed by its target; the percentiles are null when the client
    could not keep up (``*_client_problems`` says why)."""
    ok = run.kept_up
    t = run.target
    out: dict[str, Any] = {f"{t}_{k}_us": run.pct[p] if ok else None
                           for k, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9),
                                        ("max", 100))}
    out.update({f"{t}_requests": run.n, f"{t}_answered": run.answered,
                f"{t}_offered_per_s": run.rate, f"{t}_sent_per_s": round(run.sent_per_s),
                f"{t}_achieved_per_s": round(run.answered_per_s), f"{t}_client_kept_up": ok,
                f"{t}_client_problems": run.problems, f"{t}_send_lag_p99_us": run.lag[99],
                f"{t}_client_busy_share": round(run.busy_share, 3),
                f"{t}_worst_due_at_s": round(run.worst_at_s, 3)})
    return out


def profile(gw: Gateway, echo_port: int, stream: tuple[bytes, array[int]], rates: list[int],
            seconds: float, rounds: int) -> list[dict[str, Any]]:
    """At each rate ``rounds`` open-loop runs on the gateway and as many on the echo server, of
    seconds/rounds each, alternated (which goes first alternates from round to round), each
    target's rounds pooled; returns the JSON rows."""
    rows = []
    for i, rate in enumerate(rates):
        runs: dict[str, list[Run]] = {"gateway": [], "echo": []}
        before = server_latency_buckets(gw.metrics)
        for k in range(rounds):
            for target in ("gateway", "echo") if (i + k) % 2 == 0 else ("echo", "gateway"):
                echo = target == "echo"
                runs[target].append(uvloop.run(open_run(
                    "127.0.0.1", echo_port if echo else gw.port, echo, f"lat{i}.{k}", stream, rate,
                    seconds / rounds)))
        after = server_latency_buckets(gw.metrics)
        g, e = merge(runs["gateway"]), merge(runs["echo"])
        print_gateway_run(g, seconds, {b: after[b] - before.get(b, 0) for b in after})
        print_echo_run(e, g)
        ratio = g.pct[99] / e.pct[99] if g.kept_up and e.kept_up else None
        rows.append({"rate": rate, "seconds": seconds, "rounds": rounds, **run_fields(g),
                     **run_fields(e), "p99_ratio": ratio})
    return rows


def print_profile(rows: list[dict[str, Any]]) -> None:
    """The profile as one table (us; '-' where the client could not keep up), and whether the
    client kept up at every rate."""
    def f(v: Any) -> str:
        return "-" if v is None else f"{v:,}"

    cols = (("p50", 9), ("p99", 9), ("p999", 9), ("max", 9))
    print("latency profile, us (open loop, one session; gateway and echo server alternated, "
          "same schedule):")
    print(f"  {'offered/s':>9} | {'gateway answered/s':>18} {'p50':>9} {'p99':>9} {'p99.9':>9} "
          f"{'max':>9} | {'echo answered/s':>15} {'p50':>9} {'p99':>9} {'p99.9':>9} {'max':>9} "
          f"| p99 ratio")
    for r in rows:
        ratio = "-" if r["p99_ratio"] is None else f"{r['p99_ratio']:.2f}"
        print(f"  {r['rate']:>9,} | {r['gateway_achieved_per_s']:>18,} "
              + " ".join(f"{f(r['gateway_' + k + '_us']):>{w}}" for k, w in cols)
              + f" | {r['echo_achieved_per_s']:>15,} "
              + " ".join(f"{f(r['echo_' + k + '_us']):>{w}}" for k, w in cols) + f" | {ratio}")
    behind = [f"{r['rate']:,}/s ({t}: {'; '.join(r[t + '_client_problems'])})"
              for r in rows for t in ("gateway", "echo") if not r[t + "_client_kept_up"]]
    print("  the client kept up at every rate (sent on schedule, busy at most "
          f"{MAX_BUSY_SHARE:.0%} of the time)" if not behind else
          "  the client could NOT keep up at " + ", ".join(behind) + ": no figure for those")


def snapshot_run(args: argparse.Namespace, pin: bool, stream: tuple[bytes, array[int]],
                 sessions: int = 4) -> dict[str, Any]:
    """A fresh gateway; a book of ``--snapshot-book`` resting orders on AMZN (closed loop), then
    one open-loop run on MSFT at ``--snapshot-rate`` with a snapshot due at its middle."""
    per = max(1, args.snapshot_book // sessions)
    book = resting_stream(per, "AMZN")     # the same orders in every session: no cl clash
    rate = args.snapshot_rate
    n = min(len(stream[1]), int(rate * args.latency_seconds))
    # seq counts every sequenced command (the few logins too): due n/2 requests into the run
    interval = per * sessions + n // 2
    with gateway(args.durability, pin, snapshot_interval_commands=str(interval)) as gw:
        t0 = time.perf_counter()
        uvloop.run(throughput("127.0.0.1", gw.port, False, [book] * sessions, args.window, "book"))
        rested = time.perf_counter() - t0
        written = metric_value(gw.metrics, "hftgw_snapshots_written")
        run = uvloop.run(open_run("127.0.0.1", gw.port, False, "snaplat", stream, rate,
                                  args.latency_seconds))
        deadline = time.monotonic() + 10      # the file is written on a thread: let it commit
        while (metric_value(gw.metrics, "hftgw_snapshots_written") == written
               and time.monotonic() < deadline):
            time.sleep(0.05)
        written = metric_value(gw.metrics, "hftgw_snapshots_written") - written
        capture = metric_value(gw.metrics, "hftgw_snapshot_capture_seconds")
    due_at = n // 2 / rate
    print(f"snapshot due mid-run: a book of {per * sessions:,} resting orders (AMZN, placed in "
          f"{rested:.1f}s), snapshot_interval_commands {interval:,} = due at request {n // 2:,} "
          f"of {n:,} (t = {due_at:.2f}s)")
    head = f"  open loop at {rate:,}/s: sent {run.n:,}, answered {run.answered:,}; "
    if run.kept_up:
        print(head + f"order-to-ack latency us {_pcts(run)}; the worst request was due at "
              f"t = {run.worst_at_s:.2f}s")
    else:
        print(head + f"NO latency figure: the client could not keep up ({'; '.join(run.problems)})")
    print(f"  snapshots written during the run: {written:g}; its capture held the event loop "
          f"{capture * 1e3:.1f} ms")
    return {"resting_orders": per * sessions, "snapshot_interval_commands": interval,
            "due_at_s": round(due_at, 3), "snapshots_written": written,
            "capture_ms": round(capture * 1e3, 3), "rate": rate, "seconds": args.latency_seconds,
            **run_fields(run)}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1_000_000, help="total, split over sessions")
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--window", type=int, default=20_000, help="unanswered requests per session")
    ap.add_argument("--rates", default=DEFAULT_RATES,
                    help="offered rates of the latency profile, orders/s, comma-separated")
    ap.add_argument("--latency-seconds", type=float, default=5.0,
                    help="open-loop time per target and rate (the snapshot run: its length)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="the gateway's and the echo server's runs alternate this many times per rate")
    ap.add_argument("--snapshot-book", type=int, default=1_000_000,
                    help="resting orders in the book of the snapshot run (0: no snapshot run)")
    ap.add_argument("--snapshot-rate", type=int, default=50_000)
    ap.add_argument("--durability", choices=["os", "fsync"], default="os")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lobster", action="store_true", help="also replay the AMZN LOBSTER day")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--json", metavar="FILE", help="write the figures as one JSON object")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                    help="pin the gateway and the echo server to core 0, the generator to core 1")
    return ap.parse_args()


def lobster(port: int) -> None:
    lob = ROOT.parent / "shared" / "data" / "lobster"
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "replay-lobster", "--json", "--connect",
         f"127.0.0.1:{port}", "--account", "lobster-bench",
         str(lob / "AMZN_2012-06-21_34200000_57600000_message_1.csv"),
         str(lob / "AMZN_2012-06-21_34200000_57600000_orderbook_1.csv")],
        capture_output=True, text=True, cwd=ROOT, check=True)
    print(f"LOBSTER AMZN replay (queries after every message, waits before "
          f"cancels): {out.stdout.strip()}")


def throughput_phase(args: argparse.Namespace, pin: bool, echo_port: int,
                     streams: list[tuple[bytes, array[int]]]) -> dict[str, Any]:
    """The closed-loop runs (echo server, then gateway with the default config) and LOBSTER."""
    out: dict[str, Any] = {"gateway_requests_per_s": None, "echo_requests_per_s": None}
    with gateway(args.durability, pin) as gw:
        if not args.skip_throughput:
            echo_rate = uvloop.run(throughput("127.0.0.1", echo_port, True, streams, args.window,
                                              "e"))
            gw_rate = uvloop.run(throughput("127.0.0.1", gw.port, False, streams, args.window, "t"))
            print(f"echo server (ceiling)        {echo_rate:>12,.0f} requests/s")
            print(f"gateway, acked + journaled   {gw_rate:>12,.0f} requests/s   = "
                  f"{gw_rate / echo_rate:.3f} of the echo ceiling  (durability={args.durability})")
            out = {"gateway_requests_per_s": round(gw_rate), "echo_requests_per_s": round(echo_rate)}
        if args.lobster:
            lobster(gw.port)
    return out


def main() -> int:
    args = parse_args()
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    per = args.requests // args.sessions
    t0 = time.perf_counter()
    streams = [] if args.skip_throughput else [make_stream(per, args.seed + i)
                                               for i in range(args.sessions)]
    need = [r * args.latency_seconds / args.rounds for r in rates]
    if args.snapshot_book:
        need.append(args.snapshot_rate * args.latency_seconds)
    lat_stream = make_stream(int(max(need)) + 1, args.seed + 99, symbol="MSFT")
    gc.collect()
    gc.freeze()  # the pre-encoded streams are long-lived: keep them out of the collector's scans
    print(f"# {args.sessions} sessions x {per:,} requests (2/3 new orders, 1/3 cancels), "
          f"window {args.window:,}; encoded in {time.perf_counter() - t0:.1f}s; "
          f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    pin = args.pin and (os.cpu_count() or 1) >= 2
    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, str(ROOT / "bench" / "echo_server.py"), "--listen",
                             f"127.0.0.1:{echo_port}"], stdout=subprocess.DEVNULL)
    if pin:
        # the targets share core 0, so that the spinning generator never shares theirs
        os.sched_setaffinity(echo.pid, {0})
        os.sched_setaffinity(0, {1})
    try:
        wait_port(echo_port)
        fig = throughput_phase(args, pin, echo_port, streams)
        with gateway(args.durability, pin, snapshot_interval_commands="0") as gw:
            fig["latency"] = profile(gw, echo_port, lat_stream, rates, args.latency_seconds,
                                     args.rounds)
        fig["snapshot"] = snapshot_run(args, pin, lat_stream) if args.snapshot_book else None
    finally:
        echo.terminate()
        echo.wait(15)
    print_profile(fig["latency"])
    fig.update(durability=args.durability, latency_seconds=args.latency_seconds)
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
