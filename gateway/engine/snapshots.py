"""Snapshots (issue 4, persistence/snapshot.py): capture, write, retention.

Every ``snapshot_interval_commands`` commands (checked once per pump) and on clean shutdown,
the parts registered in ``parts`` (core, engine, outbound, risk, and what other components add)
are captured on the event-loop thread between pumps, the ``before_commit`` hooks make what the
snapshot assumes durable (the journal through its seq first), and the file is written on a
thread.  A start restores the newest good snapshot and replays only the journal after it
(gateway/engine/recovery.py).  Throttle token buckets are not in snapshots: they start full
after a restart, as they do after a full replay.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config.schema import Config
from gateway.engine.pipeline import Pipeline
from persistence import snapshot as snapfile
from persistence.snapshot import SnapshotError

log = logging.getLogger("hftgw.engine")

#: a part: save() -> bytes on the event-loop thread, load(bytes) at start (raises ValueError,
#: KeyError or TypeError for data it cannot restore)
Part = tuple[Callable[[], bytes], Callable[[bytes], None]]


@dataclass(slots=True)
class SnapshotStats:
    """Snapshots written by this process (read at metrics scrape time)."""

    last_seq: int = 0            # seq of the newest snapshot committed (or loaded at start)
    written: int = 0
    failed: int = 0
    duration_s: float = 0.0      # last one: capture + write + commit
    capture_s: float = 0.0       # last one: the part taken on the event-loop thread
    # last one: seconds per part saver and for the pre-commit hooks ("hooks"), all on the loop
    capture_parts: dict[str, float] = field(default_factory=dict)
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
        #: run on the event-loop thread when a snapshot's parts are captured, before the file
        #: can become visible: make durable what the snapshot assumes is (journal through its
        #: seq; the event log through its event number)
        self.before_commit: list[Callable[[], None]] = [pipeline.journal.sync, pipeline.store.sync]
        if pipeline.event_log is not None:
            self.before_commit.append(pipeline.event_log.sync)
        #: each returns the highest command seq whose journal records it no longer needs; old
        #: segments are removed through the minimum of these and the oldest kept snapshot
        self.journal_retention: list[Callable[[], int]] = []
        self.stats = SnapshotStats()
        self.recovered = False   # snapshots only of a completely recovered state (set by recover)
        self._thread: threading.Thread | None = None
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
        """True while a background snapshot is being written."""
        t = self._thread
        return t is not None and t.is_alive()

    def write_snapshot(self, background: bool) -> str | None:
        """Snapshot the engine at the last sequenced command: every ``parts`` saver runs now,
        on the calling (event-loop) thread, between pumps, then every ``before_commit`` hook;
        the file is then written to ``directory`` on a thread (background=True; returns None at
        once, or also when one is still being written: that request is skipped) or here
        (background=False: waits for a background one first; returns the path).  After the
        commit, snapshots beyond ``snapshot_keep`` are removed and the journal through the
        oldest kept one (and what ``journal_retention`` allows).  Never raises for I/O errors:
        a failed snapshot is logged and counted (``stats.failed``) and None returned.  Does
        nothing (None) before ``recover`` has completed, so a failed start never writes a
        partial state."""
        if not self.recovered:
            return None
        if self.running():
            if background:
                return None
            assert self._thread is not None
            self._thread.join()
        if len(self.pipeline.inbound):
            self.pipeline.pump()    # the parts must hold every sequenced command and nothing in flight
        t0 = time.perf_counter()
        seq = self.pipeline.sequencer.next_seq - 1
        parts = self._capture(seq, t0)
        if parts is None:
            return None
        loop: asyncio.AbstractEventLoop | None = None
        if background:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        if loop is None:
            return self._write_here(seq, parts, t0)
        self._write_in_background(loop, seq, parts, t0)
        return None

    def _capture(self, seq: int, t0: float) -> dict[str, bytes] | None:
        # every part's bytes, then the pre-commit hooks; None (counted) when a hook failed
        parts: dict[str, bytes] = {}
        times: dict[str, float] = {}
        for name, (save, _) in self.parts.items():
            t1 = time.perf_counter()
            parts[name] = save()
            times[name] = time.perf_counter() - t1
        t1 = time.perf_counter()
        try:
            for hook in self.before_commit:
                hook()
        except OSError as exc:
            self._failed()
            log.error("snapshot at seq %d abandoned: a pre-commit hook failed: %s", seq, exc,
                      extra={"event": "snapshot.failed", "seq": seq})
            return None
        times["hooks"] = time.perf_counter() - t1
        self.stats.capture_parts = times
        self.stats.capture_s = time.perf_counter() - t0
        return parts

    def _write_here(self, seq: int, parts: dict[str, bytes], t0: float) -> str | None:
        try:
            path = snapfile.write_snapshot(self.directory, seq, parts)
        except OSError as exc:
            self._failed()
            log.error("snapshot at seq %d to %s failed: %s", seq, self.directory, exc,
                      extra={"event": "snapshot.failed", "seq": seq})
            return None
        self._after_commit(seq, path, t0)
        return path

    def _write_in_background(self, loop: asyncio.AbstractEventLoop, seq: int,
                             parts: dict[str, bytes], t0: float) -> None:
        def work() -> None:
            try:
                path = snapfile.write_snapshot(self.directory, seq, parts)
            except Exception as exc:
                log.error("snapshot at seq %d to %s failed: %s", seq, self.directory, exc,
                          extra={"event": "snapshot.failed", "seq": seq})
                loop.call_soon_threadsafe(self._failed)
                return
            # the journal is not thread-safe: its segments are removed on the loop thread
            loop.call_soon_threadsafe(self._after_commit, seq, path, t0)

        self._thread = threading.Thread(target=work, name="hftgw-snapshot", daemon=True)
        self._thread.start()

    def _failed(self) -> None:
        self.stats.failed += 1

    def _after_commit(self, seq: int, path: str, t0: float) -> None:
        st = self.stats
        st.last_seq = max(st.last_seq, seq)   # a background one may complete after a later one
        st.written += 1
        st.duration_s = time.perf_counter() - t0
        log.info("snapshot at seq %d written to %s in %.3f s (%.3f s on the event loop)", seq, path,
                 st.duration_s, st.capture_s,
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
