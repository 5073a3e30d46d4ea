#!/usr/bin/env python3
"""How long a snapshot stops the event loop with a big book (issue 12 item 3: at most ~1 ms
at 1 M resting orders).

A real ``gateway.engine.Engine`` (sequencer, journal, core, outbound, message store, risk) gets
``--resting`` (1 M) passive orders (bench/recovery_bench.py ``deep_orders``), then runs on a
uvloop loop while commands keep flowing: every ``--tick-ms`` a block of ``--block`` commands of
the realistic mix (recovery_bench ``block``, fresh ClOrdIDs) is pushed and pumped.  A probe
callback runs at every loop iteration: the longest gap between two of its runs in a window is
the longest stall of the loop in it (a thread holding the GIL counts too).  The machine is
shared, so the time the loop thread waited for a CPU (its run-queue wait, schedstat) is taken
out; "on-CPU" is the loop thread's own CPU time in the longest gap, "wall" the raw gap.  A
disk's write-back throttling of the journal's writes shows up as stalls in every window
(``--dir /dev/shm`` keeps it out).  Windows of ``--window`` seconds, in the same run:

* idle: the flow only (the floor the probe sees from the pumps themselves);
* memcpy: one plain copy of the pool's bytes (64 B an order) on the loop, the anchor;
* fork: ``os.fork()`` on the loop (the child exits at once), the other copy-on-write candidate;
* old: the capture path before issue 12, emulated: every part saved and every sync plan run
  on the loop, the file encoded (``persistence.snapshot.encode``) and written on a thread;
* new: ``Engine.write_snapshot(background=True)`` as the gateway does it.

Each snapshot's time is from its start to its commit.  Printed per window: the longest stall
and how many gaps were over 1 ms, and for "new" the stats the engine keeps (loop time at the
start, copy steps).  ``--repeat`` alternates old and new.  Starting a capture protects the pool's pages
(one mprotect: ~1 ms of page-table updates at 1 M orders in 4 KiB pages).

Usage:
  python bench/snapshot_stall_bench.py                  # 1 M resting orders
  python bench/snapshot_stall_bench.py --resting 200000 --repeat 1
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from recovery_bench import block, book_arguments, config, deep_orders, feed, open_sessions  # noqa: E402

from gateway.engine import Engine  # noqa: E402
from persistence import snapshot as snapfile  # noqa: E402


class Probe:
    """A callback run at every loop iteration: the gap between two runs is how long the loop
    was held.  The machine is shared, so the time the loop thread waited on the CPU run queue
    (preempted by other processes: /proc/thread-self/schedstat) is taken out of each gap; what
    is left is work on the loop thread and waits for the GIL (a thread holding it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.gaps: list[float] = []     # attributable: wall gap - run-queue wait
        self.walls: list[float] = []
        self.cpus: list[float] = []     # loop-thread CPU time in the gap
        self.at: list[float] = []
        self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        self._prev = self._prev_wait = self._prev_cpu = 0.0
        self._on = False

    def _wait_s(self) -> float:
        return int(os.pread(self._fd, 100, 0).split()[1]) / 1e9

    def start(self) -> None:
        self.gaps, self.walls, self.cpus, self.at = [], [], [], []
        self._on = True
        self._prev, self._prev_wait = time.perf_counter(), self._wait_s()
        self._prev_cpu = time.thread_time()
        self.loop.call_soon(self._tick)

    def stop(self) -> tuple[list[float], list[float], list[float]]:
        self._on = False
        return self.gaps, self.walls, self.cpus

    def _tick(self) -> None:
        now, wait, cpu = time.perf_counter(), self._wait_s(), time.thread_time()
        wall = now - self._prev
        self.walls.append(wall)
        self.gaps.append(wall - (wait - self._prev_wait))
        self.cpus.append(cpu - self._prev_cpu)
        self.at.append(now)
        self._prev, self._prev_wait, self._prev_cpu = now, wait, cpu
        if self._on:
            self.loop.call_soon(self._tick)


class Flow:
    """Blocks of the mixed stream pushed and pumped every tick."""

    def __init__(self, eng: Engine, mix: np.ndarray, per_tick: int, tick_s: float) -> None:
        self.eng, self.mix, self.per_tick, self.tick_s = eng, mix, per_tick, tick_s
        self.pos = self.rep = 0
        self.sent = 0
        self.pumps: list[tuple[float, float, float]] = []   # (start, end, loop-thread CPU s)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            end = min(len(self.mix), self.pos + self.per_tick)
            w = self.mix[self.pos:end].copy()
            for col in (4, 5):                    # fresh ClOrdIDs (and request ids) per repetition
                nz = w[:, col] != 0
                w[nz, col] += np.uint64((self.rep + 1) * 10**8)
            w[:, 1] += np.uint64(self.rep * 10**12)
            t0, c0 = time.perf_counter(), time.thread_time()
            feed(self.eng, w)
            self.pumps.append((t0, time.perf_counter(), time.thread_time() - c0))
            self.sent += len(w)
            self.pos = end
            if self.pos == len(self.mix):
                self.pos, self.rep = 0, self.rep + 1
            await asyncio.sleep(self.tick_s)


def old_capture(eng: Engine, seq: int, done: Callable[[], None]) -> None:
    # the path before issue 12: parts and fsyncs on the loop, encode + write on a thread
    snaps = eng.snapshots
    parts = {name: save() for name, (save, _) in snaps.parts.items()}
    for hook in snaps.before_commit:
        plan = hook()
        try:
            plan.run()
        finally:
            plan.close()
    directory = os.path.join(snaps.directory, "old")
    os.makedirs(directory, exist_ok=True)

    def work() -> None:
        data = snapfile.encode(seq, parts)
        path = os.path.join(directory, snapfile.snapshot_name(seq))
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.unlink(path)
        eng_loop.call_soon_threadsafe(done)

    eng_loop = asyncio.get_running_loop()
    threading.Thread(target=work, daemon=True).start()


async def window(name: str, probe: Probe, flow: Flow, seconds: float,
                 action: Callable[[Callable[[], None]], None] | None) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    flow.pumps = []
    probe.start()
    await asyncio.sleep(seconds / 4)
    t0 = time.perf_counter()
    if action is None:
        finished.set_result(0.0)
    else:
        def done() -> None:
            if not finished.done():
                finished.set_result(time.perf_counter() - t0)

        action(done)
    took = await finished
    rest = seconds - (time.perf_counter() - t0) - seconds / 4
    await asyncio.sleep(max(rest, seconds / 4))
    gaps, walls, cpus = (np.array(x) for x in probe.stop())
    if os.environ.get("STALL_DEBUG"):
        at = np.array(probe.at) - t0
        for i in np.argsort(gaps)[-4:]:
            print(f"      stall {gaps[i] * 1e3:.2f} ms (wall {walls[i] * 1e3:.2f}, cpu {cpus[i] * 1e3:.2f})"
                  f" ending at {at[i] * 1e3:+.1f} ms")
    # the flow's own pumps are in every window: the gaps holding none are the snapshot's
    # (its start, its copy steps, the GIL), and the pumps' CPU time shows its page faults
    ends = np.array(probe.at)
    pumps = np.array(flow.pumps).reshape(-1, 3)
    k = np.searchsorted(pumps[:, 0], ends)        # pumps started before each gap's end
    no_pump = (k == 0) | (pumps[np.maximum(k - 1, 0), 1] < ends - walls)
    out = {"max_ms": gaps.max() * 1e3, "cpu_max_ms": cpus.max() * 1e3, "wall_max_ms": walls.max() * 1e3,
           "over_1ms": int((gaps > 1e-3).sum()), "took_ms": took * 1e3,
           "outside_max_ms": gaps[no_pump].max() * 1e3, "outside_cpu_max_ms": cpus[no_pump].max() * 1e3,
           "pump_cpu_max_ms": pumps[:, 2].max() * 1e3 if len(pumps) else 0.0}
    extra = f"; done in {out['took_ms']:.0f} ms" if action is not None else ""
    print(f"  {name:6s} longest stall {out['max_ms']:7.2f} ms ({out['over_1ms']:2d} over 1 ms), on-CPU "
          f"{out['cpu_max_ms']:7.2f}, wall {out['wall_max_ms']:6.1f}; outside the flow's pumps "
          f"{out['outside_max_ms']:7.2f} ms (on-CPU {out['outside_cpu_max_ms']:6.2f}); longest pump "
          f"{out['pump_cpu_max_ms']:5.2f} ms CPU{extra}")
    return out


def new_snapshot(eng: Engine, done: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    written = eng.snap_stats.written
    eng.write_snapshot(background=True)

    def poll() -> None:
        if eng.snap_stats.written > written or (not eng.snapshot_running()):
            done()
        else:
            loop.call_later(0.001, poll)

    poll()


async def run(args: argparse.Namespace, eng: Engine, mix: np.ndarray) -> None:
    loop = asyncio.get_running_loop()
    probe = Probe(loop)
    stop = asyncio.Event()
    flow = Flow(eng, mix, args.block, args.tick_ms / 1e3)
    flow_task = asyncio.ensure_future(flow.run(stop))
    pool = bytearray(eng.core.order_count() * 64)
    await asyncio.sleep(0.5)

    def memcpy(done: Callable[[], None]) -> None:
        bytes(pool)
        done()

    def fork(done: Callable[[], None]) -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        done()
        os.waitpid(pid, 0)

    def old(done: Callable[[], None]) -> None:
        old_capture(eng, eng.sequencer.next_seq - 1, done)

    print(f"# {eng.core.order_count():,} live orders; flow {args.block} commands every {args.tick_ms} ms")
    await window("idle", probe, flow, args.window, None)
    await window("memcpy", probe, flow, args.window, memcpy)
    await window("fork", probe, flow, args.window, fork)
    for _ in range(args.repeat):
        await window("old", probe, flow, args.window, old)
        await window("new", probe, flow, args.window, lambda d: new_snapshot(eng, d))
        st = eng.snap_stats
        print(f"          new: {st.capture_s * 1e3:.2f} ms on the loop at the start "
              f"({st.capture_cpu_s * 1e3:.2f} CPU; "
              + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in st.capture_parts.items())
              + f"), {st.copy_steps} copy steps of at most {st.copy_max_s * 1e3:.2f} ms "
              f"({st.copy_max_cpu_s * 1e3:.2f} CPU; {st.copy_s * 1e3:.1f} ms in all), written "
              f"{st.written}, failed {st.failed}")
    stop.set()
    await flow_task
    print(f"# {flow.sent:,} commands flowed during the windows")


def main(argv: list[str] | None = None) -> int:
    ap = book_arguments(__doc__ or "", "passive orders in the book", (200, "commands pumped per tick"),
                        "parent of the scratch journal directory (e.g. /dev/shm, to keep the disk's "
                        "write-back throttling out)")
    ap.add_argument("--tick-ms", type=float, default=1.0, help="time between blocks")
    ap.add_argument("--window", type=float, default=2.0, help="seconds per measured window")
    ap.add_argument("--repeat", type=int, default=2, help="old/new pairs")
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="hftgw-snapstall-", dir=args.dir or None)
    try:
        eng = Engine(config(work, os.path.join(work, "snapshots")))
        eng.recover()
        eng.journal_retention.append(lambda: 0)
        open_sessions(eng)
        feed(eng, deep_orders(args.resting))
        mix = block(250_000, args.seed)
        # as the gateway does once it is ready (gateway/server.py)
        gc.collect()
        gc.freeze()
        uvloop.run(run(args, eng, mix))
        eng.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
