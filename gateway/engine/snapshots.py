"""Snapshots (issue 4, persistence/snapshot.py): capture, write, retention.

Every ``snapshot_interval_commands`` commands (checked once per pump) and on clean shutdown,
the parts registered in ``parts`` (core, engine, outbound, risk, and what other components add)
are captured on the event-loop thread between pumps, and the file is written on a thread after
the ``before_commit`` sync plans made what the snapshot assumes durable (the journal through its
seq first).  So that the loop is not held (issue 12: ~190 ms at 1 M resting orders), a part
with an entry in ``captures`` (the core: ``CoreCapture``, copy-on-write) is copied in bounded
steps between the following loop iterations and serialised on the writer thread, and the
fsyncs run there too; the loop itself only takes the small parts and starts the copy.  A start
restores the newest good snapshot and replays only the journal after it (recovery.py).
Throttle token buckets are not in snapshots: they start full after a restart, as they do
after a full replay.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.config.schema import Config
from gateway.engine.pipeline import Pipeline
from persistence import snapshot as snapfile
from persistence.files import SyncPlan
from persistence.snapshot import SnapshotError

log = logging.getLogger("hftgw.engine")

#: a part: save() -> bytes on the event-loop thread, load(bytes) at start (raises ValueError,
#: KeyError or TypeError for data it cannot restore)
Part = tuple[Callable[[], bytes], Callable[[bytes], None]]

#: bytes of the core's pool copied per loop iteration while a capture is under way (~0.1 ms)
STEP_BYTES = 1 << 20


class PartCapture(Protocol):
    """A part's state taken at one instant without stopping the loop (matching.core.CoreCapture):
    ``step`` between loop iterations until True, then ``view`` (its bytes) on any thread, and
    ``close`` once the views are released."""

    def step(self, max_bytes: int) -> bool: ...
    def finish(self) -> None: ...
    def view(self) -> memoryview: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class _Pending:
    # one background snapshot from its capture to its commit
    seq: int
    t0: float
    parts: dict[str, bytes | memoryview]
    captures: dict[str, PartCapture]
    plans: list[SyncPlan]
    order: list[str] = field(default_factory=list)   # the part names, as the file lists them
    copied_at: int = 0      # the last seq processed when the captures were complete
    loop: asyncio.AbstractEventLoop | None = None


@dataclass(slots=True)
class SnapshotStats:
    """Snapshots written by this process (read at metrics scrape time)."""

    last_seq: int = 0            # seq of the newest snapshot committed (or loaded at start)
    written: int = 0
    failed: int = 0
    duration_s: float = 0.0      # last one: capture + write + commit
    capture_s: float = 0.0       # last one: the part taken on the event-loop thread at once
    # last one: seconds per part saver (or capture start) and for the sync plans ("hooks"),
    # all on the loop
    capture_parts: dict[str, float] = field(default_factory=dict)
    copy_s: float = 0.0          # last one: seconds of the loop spent in capture steps
    copy_steps: int = 0          # last one: how many
    copy_max_s: float = 0.0      # last one: the longest step
    # last one: loop-thread CPU seconds of the start and of the longest step (the wall times
    # above also hold the time the machine ran something else)
    capture_cpu_s: float = 0.0
    copy_max_cpu_s: float = 0.0
    recovery_s: float = 0.0      # the last start (snapshot load + journal tail replay)


class Snapshots:
    """The parts registry, the writer and the retention of snapshots in ``directory``
    (``snapshot_dir``, default the journal's).  Installs itself as the pipeline's
    ``snapshot_due`` hook."""

    def __init__(self, cfg: Config, pipeline: Pipeline) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self.directory = cfg.snapshot_dir or cfg.journal_dir
        #: name -> (save, load); restored in this order
        self.parts: dict[str, Part] = {}
        #: name -> start of a capture, for the parts that need not be saved at once
        self.captures: dict[str, Callable[[], PartCapture]] = {}
        #: each called on the event-loop thread when a snapshot's parts are captured; the plans
        #: run on the writer thread before the file can become visible: they make durable what
        #: the snapshot assumes is (journal through its seq; the event log through its number)
        self.before_commit: list[Callable[[], SyncPlan]] = [pipeline.journal.sync_plan,
                                                            pipeline.store.sync_plan]
        if pipeline.event_log is not None:
            self.before_commit.append(pipeline.event_log.sync_plan)
        #: each returns the highest command seq whose journal records it no longer needs; old
        #: segments are removed through the minimum of these and the oldest kept snapshot
        self.journal_retention: list[Callable[[], int]] = []
        self.stats = SnapshotStats()
        self.recovered = False   # snapshots only of a completely recovered state (set by recover)
        self._thread: threading.Thread | None = None
        self._pending: _Pending | None = None   # capture steps under way on the loop
        pipeline.next_snapshot_seq = cfg.snapshot_interval_commands or 0
        pipeline.snapshot_due = self.maybe_snapshot

    def restore(self, parts: dict[str, bytes], path: str) -> None:
        """Load every registered part from ``parts`` (read from snapshot file ``path``), in
        registration order.  Raises SnapshotError for unknown, missing or unloadable parts."""
        unknown = sorted(set(parts) - set(self.parts))
        if unknown:
            raise SnapshotError(path, -1, f"unknown parts {unknown} (written by a newer hftgw?)")
        missing = sorted(set(self.parts) - set(parts))
        if missing:
            raise SnapshotError(path, -1, f"parts {missing} missing")
        for name, (_, load) in self.parts.items():
            try:
                load(parts[name])
            except (ValueError, KeyError, TypeError) as exc:
                raise SnapshotError(path, -1, f"part {name!r} cannot be restored: {exc}") from exc

    def running(self) -> bool:
        """True while a background snapshot is being captured or written."""
        t = self._thread
        return self._pending is not None or (t is not None and t.is_alive())

    def write_snapshot(self, background: bool) -> str | None:
        """Snapshot the engine at the last sequenced command: every ``parts`` saver runs now,
        on the calling (event-loop) thread, between pumps (with background=True and a running
        loop, the parts in ``captures`` are only started: copied in steps between the next
        loop iterations), and every ``before_commit`` hook gives its sync plan; the file is
        then written to ``directory`` on a thread, the plans run before it is renamed into
        place (background=True; returns None at once, or also when one is still under way:
        that request is skipped) or here (background=False: completes a background one
        first; returns the path).  After the commit, snapshots beyond ``snapshot_keep`` are
        removed and the journal through the oldest kept one (and what ``journal_retention``
        allows).  Never raises for I/O errors: a failed snapshot is logged and counted
        (``stats.failed``) and None returned.  Does nothing (None) before ``recover`` has
        completed, so a failed start never writes a partial state."""
        if not self.recovered:
            return None
        if self.running():
            if background:
                return None
            self._complete_background()
        if len(self.pipeline.inbound):
            self.pipeline.pump()    # the parts must hold every sequenced command and nothing in flight
        loop: asyncio.AbstractEventLoop | None = None
        if background:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        t0 = time.perf_counter()
        seq = self.pipeline.sequencer.next_seq - 1
        job = self._capture(seq, t0, deferred=loop is not None)
        if job is None:
            return None
        self.stats.copy_s = self.stats.copy_max_s = self.stats.copy_max_cpu_s = 0.0
        self.stats.copy_steps = 0
        if loop is None:
            return self._write_here(job)
        job.loop = loop
        self._pending = job
        loop.call_soon(self._step)
        return None

    def _capture(self, seq: int, t0: float, deferred: bool) -> _Pending | None:
        # every part's bytes (or capture), then the sync plans; None (counted) when one failed
        c0 = time.thread_time()
        job = _Pending(seq, t0, {}, {}, [], list(self.parts))
        times: dict[str, float] = {}
        try:
            for name, (save, _) in self.parts.items():
                t1 = time.perf_counter()
                start = self.captures.get(name) if deferred else None
                if start is not None:
                    job.captures[name] = start()
                else:
                    job.parts[name] = save()
                times[name] = time.perf_counter() - t1
            t1 = time.perf_counter()
            for hook in self.before_commit:
                job.plans.append(hook())
            times["hooks"] = time.perf_counter() - t1
        except OSError as exc:
            self._release(job)
            self._failed()
            log.error("snapshot at seq %d abandoned: a capture or a sync plan failed: %s", seq, exc,
                      extra={"event": "snapshot.failed", "seq": seq})
            return None
        except BaseException:
            self._release(job)
            raise
        self.stats.capture_parts = times
        self.stats.capture_s = time.perf_counter() - t0
        self.stats.capture_cpu_s = time.thread_time() - c0
        return job

    @staticmethod
    def _release(job: _Pending) -> None:
        for cap in job.captures.values():
            cap.close()
        for plan in job.plans:
            plan.close()

    def _step(self) -> None:
        # one bounded copy step of every capture of the pending snapshot per loop iteration
        job = self._pending
        if job is None:
            return
        t1, c1 = time.perf_counter(), time.thread_time()
        try:
            done = all([cap.step(STEP_BYTES) for cap in job.captures.values()])
        except Exception:  # a bug in a capture must not stop the order path
            self._pending = None
            self._release(job)
            self._failed()
            log.exception("snapshot at seq %d failed", job.seq, extra={"event": "snapshot.failed"})
            return
        dt = time.perf_counter() - t1
        st = self.stats
        st.copy_s += dt
        st.copy_steps += 1
        st.copy_max_s = max(st.copy_max_s, dt)
        st.copy_max_cpu_s = max(st.copy_max_cpu_s, time.thread_time() - c1)
        if not done:
            assert job.loop is not None
            job.loop.call_soon(self._step)
            return
        self._pending = None
        job.copied_at = self.pipeline.sequencer.next_seq - 1
        self._start_writer(job)

    def _complete_background(self) -> None:
        # the shutdown snapshot waits for a background one: its copy completed now, its write
        job = self._pending
        if job is not None:
            self._pending = None
            for cap in job.captures.values():
                cap.finish()
            job.copied_at = self.pipeline.sequencer.next_seq - 1
            self._start_writer(job)
        if self._thread is not None:
            self._thread.join()

    def _write_file(self, job: _Pending) -> str:
        # on the writer thread (or here): the captures' bytes, the file, the sync plans before
        # its rename; the captures and plans released whatever happens.  Raises.
        try:
            for name, cap in job.captures.items():
                job.parts[name] = cap.view()
            return snapfile.write_snapshot(self.directory, job.seq, {n: job.parts[n] for n in job.order},
                                           [plan.run for plan in job.plans])
        finally:
            for name, cap in job.captures.items():
                job.parts.pop(name, None)   # the views go first: the copies are freed here, off the loop
                cap.close()
            job.captures.clear()
            for plan in job.plans:
                plan.close()

    def _write_here(self, job: _Pending) -> str | None:
        try:
            path = self._write_file(job)
        except OSError as exc:
            self._failed()
            log.error("snapshot at seq %d to %s failed: %s", job.seq, self.directory, exc,
                      extra={"event": "snapshot.failed", "seq": job.seq})
            return None
        self._after_commit(job, path)
        return path

    def _start_writer(self, job: _Pending) -> None:
        loop = job.loop
        assert loop is not None

        def work() -> None:
            try:
                path = self._write_file(job)
            except Exception as exc:
                log.error("snapshot at seq %d to %s failed: %s", job.seq, self.directory, exc,
                          extra={"event": "snapshot.failed", "seq": job.seq})
                loop.call_soon_threadsafe(self._failed)
                return
            # the journal is not thread-safe: its segments are removed on the loop thread
            loop.call_soon_threadsafe(self._after_commit, job, path)

        self._thread = threading.Thread(target=work, name="hftgw-snapshot", daemon=True)
        self._thread.start()

    def _failed(self) -> None:
        self.stats.failed += 1

    def _after_commit(self, job: _Pending, path: str) -> None:
        seq = job.seq
        for plan in job.plans:
            plan.on_synced()
        st = self.stats
        st.last_seq = max(st.last_seq, seq)   # a background one may complete after a later one
        st.written += 1
        st.duration_s = time.perf_counter() - job.t0
        log.info("snapshot at seq %d written to %s in %.3f s (%.4f s on the event loop, the "
                 "longest hold %.4f s; copied in %d steps while commands through seq %d ran)",
                 seq, path, st.duration_s, st.capture_s + st.copy_s, max(st.capture_s, st.copy_max_s),
                 st.copy_steps, max(seq, job.copied_at),
                 extra={"event": "snapshot.written", "seq": seq, "path": path})
        journal = self.pipeline.journal
        try:
            # a background write started since this one ended may have its temp file there
            snapfile.prune(self.directory, self.cfg.snapshot_keep, remove_temp=not self.running())
            kept = snapfile.list_snapshots(self.directory)
            through = min([kept[0][0] if kept else seq] + [f() for f in self.journal_retention])
            if journal.is_open:
                journal.remove_through(through)
        except OSError as exc:  # a full disk must not stop the order path: retried next time
            log.error("removing old snapshots or journal segments failed: %s", exc,
                      extra={"event": "snapshot.prune_failed"})

    def schedule_from(self, last_seq: int) -> None:
        """The next interval snapshot is due ``snapshot_interval_commands`` after ``last_seq``
        (none when the interval is 0)."""
        interval = self.cfg.snapshot_interval_commands
        self.pipeline.next_snapshot_seq = last_seq + interval if interval else 0

    def maybe_snapshot(self) -> None:
        """The pipeline passed ``next_snapshot_seq``: start a background snapshot unless one
        is being written (never raises: a failing part saver is logged and counted)."""
        seqr = self.pipeline.sequencer
        if seqr.next_seq - 1 >= self.pipeline.next_snapshot_seq and not self.running():
            self.pipeline.next_snapshot_seq = seqr.next_seq - 1 + self.cfg.snapshot_interval_commands
            try:
                self.write_snapshot(background=True)
            except Exception:  # a bug in a part's saver must not stop the order path
                self.stats.failed += 1
                log.exception("snapshot at seq %d failed", seqr.next_seq - 1,
                              extra={"event": "snapshot.failed"})
