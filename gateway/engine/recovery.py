"""The start: restore the newest good snapshot, replay the journal after it, reconcile the
message store and the event log with the journal (persistence/reconcile.py), then cancel for
the sessions a crash left attached and define the config's new symbols."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.config.schema import Config
from gateway.engine.errors import JournalBehindSnapshot, LegacyJournalError, SnapshotMismatch
from gateway.engine.pipeline import Pipeline
from gateway.engine.sessions import Sessions, SessionTable
from gateway.engine.snapshots import Snapshots
from gateway.engine.symbols import SymbolCatalog
from matching.records import COMMAND_RECORD_SIZE, CommandType, unpack_command
from persistence import snapshot as snapfile
from persistence.reconcile import JournalBehind, find_divergence
from persistence.snapshot import SnapshotError


@dataclass(slots=True)
class RecoveryStats:
    """What the start-up replay of the journal did."""

    commands: int = 0
    sessions: int = 0
    symbols: int = 0
    elapsed_s: float = 0.0
    snapshot_seq: int = 0        # seq of the snapshot the start began from; 0 = full replay
    snapshot_path: str = ""
    snapshot_load_s: float = 0.0  # reading and restoring it (included in elapsed_s)
    #: sessions attached with cancel-on-disconnect at the crash, whose orders were canceled
    cod_canceled: int = 0


@dataclass(eq=False, repr=False)  # a repr would print cfg, jwt_secret included
class Recovery:
    """Runs the start once (``recover``), with the engine's parts; afterwards
    ``recovered_event_no`` is the last event number the journal explained (a sink checkpoint
    beyond it belongs to a history the journal lost) and ``recovered_trade_id`` the same for
    the last trade id."""

    cfg: Config
    pipeline: Pipeline
    table: SessionTable
    sessions: Sessions
    catalog: SymbolCatalog
    snapshots: Snapshots
    recovered_event_no: int = field(default=0, init=False)
    recovered_trade_id: int = field(default=0, init=False)

    def recover(self) -> RecoveryStats:
        """Load the newest good snapshot (``snapshot_dir``), then replay the journal after its
        seq (the whole journal when there is none), so symbols, books, session ids, every
        session's next sequence number and the risk state are those before the restart; then
        define the config's symbols that are new (``apply_symbols``).  A damaged newest
        snapshot is logged and the next older one used.  Raises
        persistence.journal.JournalCorrupt for damage before the tail, ValueError for a
        sequence gap, LegacyJournalError for a journal without symbol definitions,
        SnapshotError for a snapshot whose parts cannot be restored, SnapshotMismatch when the
        journal does not continue the snapshot (JournalBehindSnapshot when it ends before it),
        persistence.reconcile.JournalBehind when the message store or the event log hold more
        than the journal explains.  After those the engine is closed."""
        t0 = time.perf_counter()
        stats = RecoveryStats()
        p = self.pipeline
        if p.event_log is not None:
            # before the replay, which regenerates events the log may hold already (skipped)
            p.event_log.open()
        # before the journal replay, which regenerates the messages the store lost or never got
        p.store.open()
        p.journal.open()
        after = self._load_snapshot(stats, t0)
        self._replay(after or 0, after is None, stats)
        p.risk.clear_pending()
        self._reconcile()
        stats.cod_canceled = self.sessions.detach_crashed_sessions()
        self.snapshots.schedule_from(p.sequencer.next_seq - 1)
        self.snapshots.recovered = True
        self.catalog.apply_symbols(self.cfg.symbols)
        stats.elapsed_s = time.perf_counter() - t0
        self.snapshots.stats.recovery_s = stats.elapsed_s
        return stats

    def _load_snapshot(self, stats: RecoveryStats, t0: float) -> int | None:
        # the newest good snapshot, checked against the journal; returns its seq (None: none)
        journal, directory = self.pipeline.journal, self.snapshots.directory
        found = snapfile.load_latest(directory)
        if found is None:
            if journal.first_seq > 1:
                raise SnapshotMismatch(
                    f"journal in {journal.directory} starts at seq {journal.first_seq} and "
                    f"there is no usable snapshot in {directory}: records 1.."
                    f"{journal.first_seq - 1} are missing (were the snapshots removed?)")
            return None
        after, parts, path = found
        self._restore(after, parts, path)
        stats.snapshot_seq, stats.snapshot_path = after, path
        stats.snapshot_load_s = time.perf_counter() - t0
        last, first = journal.last_seq, journal.first_seq
        # an empty journal continues any snapshot (``hftgw repair`` moved it aside)
        if last < after and journal.records:
            self.pipeline.close()
            raise JournalBehindSnapshot(
                f"snapshot {path} is at seq {after} but the journal in {journal.directory} "
                f"ends at seq {last} (records {last + 1}..{after} lost, or not the journal this "
                "snapshot was taken with); the snapshot holds the state: `hftgw repair "
                "--apply` moves the journal aside and the start continues from the snapshot",
                after, last)
        if first > after + 1:
            raise SnapshotMismatch(
                f"journal in {journal.directory} starts at seq {first}, snapshot {path} "
                f"is at seq {after}: records {after + 1}..{first - 1} are missing")
        self.snapshots.stats.last_seq = after
        return after

    def _restore(self, seq: int, parts: dict[str, bytes], path: str) -> None:
        self.snapshots.restore(parts, path)
        p = self.pipeline
        if p.sequencer.next_seq != seq + 1:
            raise SnapshotError(path, -1, f"engine part is at seq {p.sequencer.next_seq - 1}, "
                                          f"the file at {seq}")
        if p.core.n_symbols != len(self.catalog.names):
            raise SnapshotError(path, -1, f"core has {p.core.n_symbols} symbols, the engine "
                                          f"part {len(self.catalog.names)}")

    def _replay(self, after: int, full: bool, stats: RecoveryStats) -> None:
        # the journal after seq ``after`` (full: no snapshot, from the first record), chunk by
        # chunk: definitions first, then matching
        p = self.pipeline
        cap_bytes = self.cfg.ring_capacity * COMMAND_RECORD_SIZE
        first_chunk = full
        for chunk in p.journal.replay(after):
            if first_chunk and len(chunk) and unpack_command(chunk)["type"] != CommandType.CMD_SYMBOL_ADD:
                raise LegacyJournalError(
                    f"journal {p.journal.path} was written before symbol definitions were "
                    "journaled, so its symbol ids are the config order of that time; move it "
                    "away (the books start empty) or replay it with the hftgw version that wrote it")
            first_chunk = False
            defs: list[tuple[int, str, int, int]] = []
            for sid, account, account_id, name in p.sequencer.observe(chunk, defs):
                self.table.register(sid, account, account_id, name)
                stats.sessions += 1
            for sym_id, name, tick, max_qty in defs:
                self.catalog.register(sym_id, name, tick, max_qty)
                stats.symbols += 1
            # after the chunk's symbol definitions, which its admin records may name
            p.risk.observe_commands(chunk)
            self.table.observe_session_state(chunk)
            view = memoryview(chunk)
            for off in range(0, len(view), cap_bytes):
                p.inbound.push(view[off:off + cap_bytes])
                p.match_all()
            # no writers yet: the regenerated messages only go to the store and the events to
            # the event log (bounded memory)
            p.flush()
            stats.commands += len(chunk) // COMMAND_RECORD_SIZE

    def _reconcile(self) -> None:
        # before anything new is journaled: the logs derived from the journal must not hold
        # more than it explains, or new commands would reuse their numbers with other content
        p = self.pipeline
        self.recovered_event_no = p.outbound.event_state()
        self.recovered_trade_id = p.core.next_trade_id - 1
        divergence = find_divergence(p.store, p.event_log,
                                     lambda sid: p.outbound.next_seq(sid) - 1,
                                     self.recovered_event_no)
        if divergence:
            p.close()
            raise JournalBehind(p.journal.directory, p.store.directory,
                                p.event_log.directory if p.event_log else None, divergence)
