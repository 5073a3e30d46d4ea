"""Scale-out by symbol partition (docs/operations.md#scaling): what one partition handles, what two
partitions on the same machine handle together, and how fast a restarted partition replays its
journal before it is ready again.

    python bench/partition_bench.py                       # 1 M requests per phase, 2 sessions per partition
    python bench/partition_bench.py --requests 2000000 --sessions 4

Phases, all in one run so the ratios compare like with like:

1. one ``hftgw serve`` process (partition p0, symbol AAPL): the e2e stream (2/3 GTC limit
   orders crossing about half the time, 1/3 cancels; bench/e2e_bench.py) on ``--sessions``
   connections, acknowledged and journaled;
2. two processes (p0: AAPL, p1: MSFT), the same total number of requests split between them,
   sent concurrently; the aggregate rate and its ratio to phase 1;
3. p0 is stopped (SIGTERM) and started again on its journal: seconds until /ready, and the
   replay rate in commands/s (the gateway's own log line gives the same figure).

The load generator is one uvloop process on this machine too, so on a small machine the two
partitions compete with it and with each other for cores: the ratio says how much of a second
partition this machine can feed, not how partitions scale on separate nodes (there they share
nothing but PostgreSQL).
"""
from __future__ import annotations

import argparse
import asyncio
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from e2e_bench import free_port, make_stream, throughput, wait_ready  # noqa: E402

from persistence.journal import FRAME_SIZE  # noqa: E402


class Partition:
    """One ``hftgw serve`` process with its own journal, listen and side ports."""

    def __init__(self, name: str, symbol: str, journal: str) -> None:
        self.name, self.symbol, self.journal = name, symbol, journal
        self.port, self.mport = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait for /ready; returns the seconds it took."""
        env = dict(os.environ, HFTGW_LISTEN=f"127.0.0.1:{self.port}",
                   HFTGW_METRICS_LISTEN=f"127.0.0.1:{self.mport}", HFTGW_JOURNAL_DIR=self.journal,
                   HFTGW_PARTITION=self.name, HFTGW_SYMBOLS=f'[{{"name": "{self.symbol}"}}]',
                   HFTGW_LOG_LEVEL="WARNING", HFTGW_RING_CAPACITY=str(1 << 16))
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env, cwd=ROOT)
        wait_ready(f"http://127.0.0.1:{self.mport}/ready", self.proc, timeout=300)
        return time.perf_counter() - t0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


async def _concurrent(parts: list[tuple[Partition, list[tuple[bytes, array[int]]]]], window: int) -> float:
    """Every partition's streams at once; aggregate requests answered per second."""
    t0 = time.perf_counter()
    await asyncio.gather(*(throughput("127.0.0.1", p.port, False, streams, window, f"{p.name}-")
                           for p, streams in parts))
    return sum(len(e) for _, streams in parts for _, e in streams) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1_000_000, help="per phase, split over partitions")
    ap.add_argument("--sessions", type=int, default=2, help="connections per partition")
    ap.add_argument("--window", type=int, default=20_000, help="unanswered requests per session")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    root = tempfile.mkdtemp(prefix="hftgw-partition-bench-")
    print(f"# {args.requests:,} requests per phase, {args.sessions} sessions per partition; "
          f"python {sys.version.split()[0]}, {os.cpu_count()} cores (generator on the same machine)")
    one = Partition("p0", "AAPL", os.path.join(root, "one"))
    p0 = Partition("p0", "AAPL", os.path.join(root, "p0"))
    p1 = Partition("p1", "MSFT", os.path.join(root, "p1"))
    try:
        per = args.requests // args.sessions
        streams = [make_stream(per, args.seed + i, "AAPL") for i in range(args.sessions)]
        one.start()
        rate1 = uvloop.run(_concurrent([(one, streams)], args.window))
        one.stop()
        print(f"1 partition               {rate1:>12,.0f} requests/s acked + journaled")

        half = args.requests // 2 // args.sessions
        s0 = [make_stream(half, args.seed + i, "AAPL") for i in range(args.sessions)]
        s1 = [make_stream(half, args.seed + 50 + i, "MSFT") for i in range(args.sessions)]
        p0.start()
        p1.start()
        rate2 = uvloop.run(_concurrent([(p0, s0), (p1, s1)], args.window))
        print(f"2 partitions, together    {rate2:>12,.0f} requests/s   = {rate2 / rate1:.2f} x one "
              f"partition (same machine, same generator)")

        p0.stop()
        size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(p0.journal, "journal-*.log")))
        records = size // FRAME_SIZE
        ready_s = p0.start()
        print(f"restart of p0 on its journal ({records:,} commands, {size / 1e6:.0f} MB): ready in "
              f"{ready_s:.2f} s = {records / ready_s / 1e6:.2f} M commands/s replayed "
              f"(process start included)")
    finally:
        for p in (one, p0, p1):
            p.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
