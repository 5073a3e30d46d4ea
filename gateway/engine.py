"""The order path inside one process (DESIGN §1), driven from the event loop.

    sessions ─► inbound ring ─► sequencer ─► journal ─► matching core ─► events ring ─► outbound
                                                                                     ├► session writers
                                                                                     └► event log ─► PG sink

The matcher runs on the event-loop thread and is drained once per loop tick: every read of the
tick is decoded into the inbound ring first, then ``pump`` stamps, journals (one write per
group), matches (GIL released inside the core) and encodes the responses, and each session gets
one ``write`` per tick.  Acknowledgements are written only after the journal write of their
commands has returned (``durability="os"``) or been fsynced (``"fsync"``).

Access control and pre-trade risk (issue 6, README "Security"): logins are verified here
(gateway/security/auth.py), rate-limited per source address and written to the audit log; every decoded
batch of a trading session goes through ``self.risk`` (gateway/risk/pretrade.pyx) before the pump sees it,
and the risk state follows the core's events.  Admin actions (halt, kill switch, limits) are
CMD_ADMIN records queued and journaled like commands, applied to the risk state as they are
queued and again on replay.

Snapshots (issue 4, persistence/snapshot.py): every ``snapshot_interval_commands`` commands
(checked once per pump) and on clean shutdown, the parts registered in ``snapshot_parts`` (core,
engine, outbound, risk, and what other components add) are captured on the event-loop thread
between pumps, the ``before_snapshot_commit`` hooks make what the snapshot assumes durable (the
journal through its seq first), and the file is written on a thread.  A start restores the
newest good snapshot and replays only the journal after it.  Throttle token buckets are not in
snapshots: they start full after a restart, as they do after a full replay.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.config.schema import Config, SymbolConfig, ThrottleConfig, account_limits, symbol_risk
from gateway.risk.pretrade import AdminAction, RiskEngine, admin_record
from gateway.security.access import AccessCounters, AddressLimits, AuditLog, peer_host
from gateway.security.auth import ROLE_TEMPLATES, Identity, LoginFailure, TokenVerifier, unverified_subject
from matching.core import MatchingCore
from matching.records import (
    COMMAND_RECORD_SIZE,
    EVENT_RECORD_SIZE,
    UNKNOWN_SYMBOL,
    CommandType,
    LoginRejectReason,
    MassCancelScope,
    RejectReason,
    pack_command,
    pack_symbol_add,
    unpack_command,
)
from matching.ring import SpscRing
from matching.sequencer import Sequencer
from persistence import snapshot as snapfile
from persistence.journal import Journal
from persistence.message_store import MessageStore
from persistence.reconcile import JournalBehind, find_divergence
from persistence.snapshot import SnapshotError
from protocol.codec import SymbolTable
from protocol.messages import Login, Message, PositionQuery, PositionReport, SessionReject
from protocol.outbound import Outbound
from protocol.session import LoginDecision

if TYPE_CHECKING:
    from persistence.event_log import EventLog
    from persistence.pg_sink import EventSink

log = logging.getLogger("hftgw.engine")

MATCH_SLICE = 256   # commands per MatchingCore.process call


class SessionWriter(Protocol):
    """A connected session's transport side, as the engine sees it."""

    def deliver(self, data: bytes, now_ns: int) -> None: ...


# CMD_SESSION_STATE flags (matching/records.pxd)
SESSION_ATTACHED = 1
SESSION_COD = 2
_TYPE_OFFSET = 24     # Command.type


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


class SnapshotMismatch(ValueError):
    """The newest snapshot and the journal do not fit together (records between the snapshot
    and the journal's first record are missing, or the journal ends before the snapshot)."""


class JournalBehindSnapshot(SnapshotMismatch):
    """The journal ends before the newest snapshot: the snapshot holds the whole state, the
    journal lost records it had when the snapshot was taken (``hftgw repair`` moves the journal
    aside and the start continues from the snapshot)."""

    def __init__(self, message: str, snapshot_seq: int, journal_last_seq: int) -> None:
        super().__init__(message)
        self.snapshot_seq, self.journal_last_seq = snapshot_seq, journal_last_seq


@dataclass(slots=True)
class SymbolChanges:
    """What ``Engine.apply_symbols`` did: names added (new ids), names whose tick or max_qty
    changed, and names served (ids are permanent) that the config no longer lists."""

    added: list[str]
    updated: list[str]
    unlisted: list[str]


class LegacyJournalError(ValueError):
    """The journal predates journaled symbol definitions, so its symbol ids cannot be trusted."""


class Engine:
    """Owns the rings, the sequencer, the journal, the matching core and the outbound encoder.

    cfg: the gateway Config.  With ``pg_dsn`` set, every order event and fill is appended to
    ``event_log`` (opened by ``recover``) and ``sink``, the PostgreSQL EventSink attached by the
    server, is notified after each append.  Not thread-safe: everything runs on the event-loop
    thread.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        # Symbol ids come from the journal (CMD_SYMBOL_ADD records), never from the config
        # order: ``recover`` replays them, then ``apply_symbols`` journals the config's new ones.
        self.symbol_names: list[str] = []  # by symbol id; shared with the fills sink
        self.symbol_params: dict[str, tuple[int, int]] = {}  # name -> (tick, max_qty)
        self.symbols = SymbolTable([])
        self.core = MatchingCore([])
        self.inbound = SpscRing(cfg.ring_capacity, COMMAND_RECORD_SIZE)
        self.events = SpscRing(cfg.ring_capacity, EVENT_RECORD_SIZE)
        self.sequencer = Sequencer()
        self.journal = Journal(cfg.journal_dir, cfg.durability, cfg.journal_segment_bytes)
        self.outbound = Outbound([], cfg.max_sessions)
        # every session's messages are encoded, SOFH-framed, for the message store
        self.outbound.retain = True
        self.store = MessageStore(cfg.message_store_dir or cfg.journal_dir)
        #: business messages replayed to re-logged-in sessions (metric)
        self.replayed_messages = 0
        # session id -> cancel-on-disconnect flag, for every attached trading session, as
        # journaled by CMD_SESSION_STATE (so a restart knows who was attached at a crash)
        self.session_state: dict[int, bool] = {}
        self.core.on_events_full = self._drain_events
        self.sink: EventSink | None = None  # set when PostgreSQL is configured
        # the durable history of order events and fills that the sink reads; written only with a
        # sink (it costs a write per pump and the disk it fills until PostgreSQL has it)
        self.event_log: EventLog | None = None
        if cfg.pg_dsn:
            from persistence.event_log import EventLog
            self.event_log = EventLog(cfg.event_log_dir or cfg.journal_dir,
                                      cfg.event_log_segment_bytes)
            self.outbound.capture_events(True)
        self.accounts: dict[str, int] = {}       # account -> session id
        self.account_of_session: list[str] = [""]  # session id -> account (index 0 unused)
        # account -> account id (uint32 from 1), stamped on every command for STP and mass
        # cancel by account; journaled in the session-open record, so replay rebuilds it
        self.account_ids: dict[str, int] = {}
        self.account_id_of_session: list[int] = [0]
        self.writers: dict[int, SessionWriter] = {}
        # -- access control and risk (issue 6) --
        self.verifier = TokenVerifier.from_config(cfg)
        # symbols are defined in it as in the core, from the journal (``_register_symbol``)
        self.risk = RiskEngine([], self.core, cfg.max_sessions, lambda name: account_limits(self.cfg, name))
        self.risk.enabled = cfg.pre_trade_risk
        if cfg.pre_trade_risk:
            # open quantities, positions and last prices follow every event in the encoder's pass
            self.outbound.set_observer(self.risk)
        self.access = AccessCounters()
        self.addresses = AddressLimits(cfg.max_connections, cfg.max_connections_per_address,
                                       cfg.login_rate_per_address, cfg.login_burst_per_address,
                                       self.access)
        self.audit = AuditLog(cfg.audit_log or os.path.join(cfg.journal_dir, "audit.log"))
        self.dropcopy: dict[str, set[SessionWriter]] = {}   # account -> drop-copy connections
        self.logins: dict[SessionWriter, tuple[str, str, int]] = {}  # writer -> (role, account, sid)
        self._throttled: set[int] = set()      # session ids whose buckets are configured
        #: called after every pump, once the sessions' responses are written (market data)
        self.post_pump: list[Callable[[], None]] = []
        # -- snapshots (issue 4): name -> (save() -> bytes, load(bytes)); restored in this order
        self.snapshot_dir = cfg.snapshot_dir or cfg.journal_dir
        self.snapshot_parts: dict[str, tuple[Callable[[], bytes], Callable[[bytes], None]]] = {
            "core": (self._save_core, self._load_core),
            "engine": (self._save_engine, self._load_engine),
            "outbound": (self.outbound.export_state, self.outbound.import_state),
            "risk": (self.risk.snapshot, self.risk.restore),
            # the event counter, saved whether or not the event log is written, so that turning
            # the sink on later continues the numbering a full replay would give
            "events": (lambda: self.outbound.event_state().to_bytes(8, "little"),
                       lambda b: self.outbound.set_event_state(int.from_bytes(b, "little"))),
            # the sessions attached at the snapshot, so a crash after it still cancels the
            # orders of those with cancel-on-disconnect
            "session_state": (self.save_session_state, self.load_session_state),
        }
        #: run on the event-loop thread when a snapshot's parts are captured, before the file
        #: can become visible: make durable what the snapshot assumes is (journal through its
        #: seq; the event log through its event number)
        self.before_snapshot_commit: list[Callable[[], None]] = [self.journal.sync,
                                                                 self.store.sync]
        if self.event_log is not None:
            self.before_snapshot_commit.append(self.event_log.sync)
        #: each returns the highest command seq whose journal records it no longer needs; old
        #: segments are removed through the minimum of these and the oldest kept snapshot
        self.journal_retention: list[Callable[[], int]] = []
        self.snap_stats = SnapshotStats()
        self._snap_thread: threading.Thread | None = None
        self._recovered = False   # snapshots only of a completely recovered state
        self._next_snapshot_seq = cfg.snapshot_interval_commands or 0
        #: the last event number the journal explained at the start (``recover``): a sink
        #: checkpoint beyond it belongs to a history the journal lost
        self.recovered_event_no = 0
        self.recovered_trade_id = 0     # the same for the last trade id
        self.ready = False
        self.pumps = 0
        self._pump_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._now_ns = 0  # 0 while replaying: no latency observations, no writes

    # -- start-up ----------------------------------------------------------------------------
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
        if self.event_log is not None:
            # before the replay, which regenerates events the log may hold already (skipped)
            self.event_log.open()
        # before the journal replay, which regenerates the messages the store lost or never got
        self.store.open()
        self.journal.open()
        after = 0
        found = snapfile.load_latest(self.snapshot_dir)
        if found is not None:
            after, parts, path = found
            self._restore_parts(after, parts, path)
            stats.snapshot_seq, stats.snapshot_path = after, path
            stats.snapshot_load_s = time.perf_counter() - t0
            last, first = self.journal.last_seq, self.journal.first_seq
            # an empty journal continues any snapshot (``hftgw repair`` moved it aside)
            if last < after and self.journal.records:
                self.close()
                raise JournalBehindSnapshot(
                    f"snapshot {path} is at seq {after} but the journal in {self.journal.directory} "
                    f"ends at seq {last} (records {last + 1}..{after} lost, or not the journal this "
                    "snapshot was taken with); the snapshot holds the state: `hftgw repair "
                    "--apply` moves the journal aside and the start continues from the snapshot",
                    after, last)
            if first > after + 1:
                raise SnapshotMismatch(
                    f"journal in {self.journal.directory} starts at seq {first}, snapshot {path} "
                    f"is at seq {after}: records {after + 1}..{first - 1} are missing")
            self.snap_stats.last_seq = after
        elif self.journal.first_seq > 1:
            raise SnapshotMismatch(
                f"journal in {self.journal.directory} starts at seq {self.journal.first_seq} and "
                f"there is no usable snapshot in {self.snapshot_dir}: records 1.."
                f"{self.journal.first_seq - 1} are missing (were the snapshots removed?)")
        cap_bytes = self.cfg.ring_capacity * COMMAND_RECORD_SIZE
        first_chunk = found is None
        for chunk in self.journal.replay(after):
            if first_chunk and len(chunk) and unpack_command(chunk)["type"] != CommandType.CMD_SYMBOL_ADD:
                raise LegacyJournalError(
                    f"journal {self.journal.path} was written before symbol definitions were "
                    "journaled, so its symbol ids are the config order of that time; move it "
                    "away (the books start empty) or replay it with the hftgw version that wrote it")
            first_chunk = False
            defs: list[tuple[int, str, int, int]] = []
            for sid, account, account_id in self.sequencer.observe(chunk, defs):
                self._register_session(sid, account, account_id)
                stats.sessions += 1
            for sym_id, name, tick, max_qty in defs:
                self._register_symbol(sym_id, name, tick, max_qty)
                stats.symbols += 1
            # after the chunk's symbol definitions, which its admin records may name
            self.risk.observe_commands(chunk)
            self._observe_session_state(chunk)
            view = memoryview(chunk)
            for off in range(0, len(view), cap_bytes):
                part = view[off:off + cap_bytes]
                self.inbound.push(part)
                self._match_all()
            # no writers yet: the regenerated messages only go to the store and the events to
            # the event log (bounded memory)
            self._flush()
            stats.commands += len(chunk) // COMMAND_RECORD_SIZE
        self.risk.clear_pending()
        # before anything new is journaled: the logs derived from the journal must not hold
        # more than it explains, or new commands would reuse their numbers with other content
        self.recovered_event_no = self.outbound.event_state()
        self.recovered_trade_id = self.core.next_trade_id - 1
        divergence = find_divergence(self.store, self.event_log,
                                     lambda sid: self.outbound.next_seq(sid) - 1,
                                     self.recovered_event_no)
        if divergence:
            self.close()
            raise JournalBehind(self.journal.directory, self.store.directory,
                                self.event_log.directory if self.event_log else None, divergence)
        stats.cod_canceled = self._detach_crashed_sessions()
        interval = self.cfg.snapshot_interval_commands
        self._next_snapshot_seq = self.sequencer.next_seq - 1 + interval if interval else 0
        self._recovered = True
        self.apply_symbols(self.cfg.symbols)
        stats.elapsed_s = time.perf_counter() - t0
        self.snap_stats.recovery_s = stats.elapsed_s
        return stats

    # -- snapshots ---------------------------------------------------------------------------
    def _restore_parts(self, seq: int, parts: dict[str, bytes], path: str) -> None:
        unknown = sorted(set(parts) - set(self.snapshot_parts))
        if unknown:
            raise SnapshotError(path, -1, f"unknown parts {unknown} (written by a newer hftgw?)")
        missing = sorted(set(self.snapshot_parts) - set(parts))
        if missing:
            raise SnapshotError(path, -1, f"parts {missing} missing")
        for name, (_, load) in self.snapshot_parts.items():
            try:
                load(parts[name])
            except (ValueError, KeyError, TypeError) as exc:
                raise SnapshotError(path, -1, f"part {name!r} cannot be restored: {exc}") from exc
        if self.sequencer.next_seq != seq + 1:
            raise SnapshotError(path, -1, f"engine part is at seq {self.sequencer.next_seq - 1}, "
                                          f"the file at {seq}")
        if self.core.n_symbols != len(self.symbol_names):
            raise SnapshotError(path, -1, f"core has {self.core.n_symbols} symbols, the engine "
                                          f"part {len(self.symbol_names)}")

    def _save_core(self) -> bytes:
        return self.core.snapshot()

    def _load_core(self, data: bytes) -> None:
        core = MatchingCore.restore(data)
        core.on_events_full = self._drain_events
        self.core = core
        self.risk.set_core(core)

    def _save_engine(self) -> bytes:
        seqr = self.sequencer
        return json.dumps({
            "version": 1, "next_seq": seqr.next_seq, "last_ts": seqr.last_ts,
            "symbols": [[n, *self.symbol_params[n]] for n in self.symbol_names],
            "sessions": [[self.account_of_session[sid], self.account_id_of_session[sid]]
                         for sid in range(1, len(self.account_of_session))],
            "accounts": self.accounts, "account_ids": self.account_ids,
        }, separators=(",", ":")).encode()

    def _load_engine(self, data: bytes) -> None:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise ValueError("engine part: not version 1")
        if self.symbol_names or len(self.account_of_session) > 1:
            raise ValueError("engine part: restore into an engine that has symbols or sessions")
        self.sequencer.next_seq = int(doc["next_seq"])
        self.sequencer.last_ts = int(doc["last_ts"])
        for sym_id, (name, tick, max_qty) in enumerate(doc["symbols"]):
            self._register_symbol(sym_id, str(name), int(tick), int(max_qty))
        for sid, (account, account_id) in enumerate(doc["sessions"], start=1):
            self._register_session(sid, str(account), int(account_id))
        self.accounts = {str(k): int(v) for k, v in doc["accounts"].items()}
        self.account_ids = {str(k): int(v) for k, v in doc["account_ids"].items()}

    def snapshot_running(self) -> bool:
        """True while a background snapshot is being written."""
        t = self._snap_thread
        return t is not None and t.is_alive()

    def write_snapshot(self, background: bool) -> str | None:
        """Snapshot the engine at the last sequenced command: every ``snapshot_parts`` saver
        runs now, on the calling (event-loop) thread, between pumps, then every
        ``before_snapshot_commit`` hook; the file is then written to ``snapshot_dir`` on a
        thread (background=True; returns None at once, or also when one is still being
        written: that request is skipped) or here (background=False: waits for a background
        one first; returns the path).  After the commit, snapshots beyond ``snapshot_keep`` are
        removed and the journal through the oldest kept one (and what ``journal_retention``
        allows).  Never raises for I/O errors: a failed snapshot is logged and counted
        (``snap_stats.failed``) and None returned.  Does nothing (None) before ``recover`` has
        completed, so a failed start never writes a partial state."""
        if not self._recovered:
            return None
        if self.snapshot_running():
            if background:
                return None
            assert self._snap_thread is not None
            self._snap_thread.join()
        if len(self.inbound):
            self.pump()    # the parts must hold every sequenced command and nothing in flight
        t0 = time.perf_counter()
        seq = self.sequencer.next_seq - 1
        parts: dict[str, bytes] = {}
        times: dict[str, float] = {}
        for name, (save, _) in self.snapshot_parts.items():
            t1 = time.perf_counter()
            parts[name] = save()
            times[name] = time.perf_counter() - t1
        t1 = time.perf_counter()
        try:
            for hook in self.before_snapshot_commit:
                hook()
        except OSError as exc:
            self._snapshot_failed()
            log.error("snapshot at seq %d abandoned: a pre-commit hook failed: %s", seq, exc,
                      extra={"event": "snapshot.failed", "seq": seq})
            return None
        times["hooks"] = time.perf_counter() - t1
        self.snap_stats.capture_parts = times
        self.snap_stats.capture_s = time.perf_counter() - t0
        loop: asyncio.AbstractEventLoop | None = None
        if background:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        if loop is None:
            try:
                path = snapfile.write_snapshot(self.snapshot_dir, seq, parts)
            except OSError as exc:
                self._snapshot_failed()
                log.error("snapshot at seq %d to %s failed: %s", seq, self.snapshot_dir, exc,
                          extra={"event": "snapshot.failed", "seq": seq})
                return None
            self._after_commit(seq, path, t0)
            return path
        running = loop

        def work() -> None:
            try:
                path = snapfile.write_snapshot(self.snapshot_dir, seq, parts)
            except Exception as exc:
                log.error("snapshot at seq %d to %s failed: %s", seq, self.snapshot_dir, exc,
                          extra={"event": "snapshot.failed", "seq": seq})
                running.call_soon_threadsafe(self._snapshot_failed)
                return
            # the journal is not thread-safe: its segments are removed on the loop thread
            running.call_soon_threadsafe(self._after_commit, seq, path, t0)

        self._snap_thread = threading.Thread(target=work, name="hftgw-snapshot", daemon=True)
        self._snap_thread.start()
        return None

    def _snapshot_failed(self) -> None:
        self.snap_stats.failed += 1

    def _after_commit(self, seq: int, path: str, t0: float) -> None:
        st = self.snap_stats
        st.last_seq = max(st.last_seq, seq)   # a background one may complete after a later one
        st.written += 1
        st.duration_s = time.perf_counter() - t0
        log.info("snapshot at seq %d written to %s in %.3f s (%.3f s on the event loop)", seq, path,
                 st.duration_s, st.capture_s,
                 extra={"event": "snapshot.written", "seq": seq, "path": path})
        try:
            # a background write started since this one ended may have its temp file there
            snapfile.prune(self.snapshot_dir, self.cfg.snapshot_keep,
                           remove_temp=not self.snapshot_running())
            kept = snapfile.list_snapshots(self.snapshot_dir)
            through = min([kept[0][0] if kept else seq] + [f() for f in self.journal_retention])
            if self.journal.is_open:
                self.journal.remove_through(through)
        except OSError as exc:  # a full disk must not stop the order path: retried next time
            log.error("removing old snapshots or journal segments failed: %s", exc,
                      extra={"event": "snapshot.prune_failed"})

    def _maybe_snapshot(self) -> None:
        if self.sequencer.next_seq - 1 >= self._next_snapshot_seq and not self.snapshot_running():
            self._next_snapshot_seq = self.sequencer.next_seq - 1 + self.cfg.snapshot_interval_commands
            try:
                self.write_snapshot(background=True)
            except Exception:  # a bug in a part's saver must not stop the order path
                self.snap_stats.failed += 1
                log.exception("snapshot at seq %d failed", self.sequencer.next_seq - 1,
                              extra={"event": "snapshot.failed"})

    # -- session state (cancel on disconnect across a crash) ----------------------------------
    def _observe_session_state(self, chunk: bytes) -> None:
        # CMD_SESSION_STATE records are rare: find them by their type byte at C speed
        types = chunk[_TYPE_OFFSET::COMMAND_RECORD_SIZE]
        i = types.find(CommandType.CMD_SESSION_STATE)
        while i >= 0:
            rec = unpack_command(chunk, i * COMMAND_RECORD_SIZE)
            sid, flags = rec["session_id"], rec["flags"]
            if flags & SESSION_ATTACHED:
                self.session_state[sid] = bool(flags & SESSION_COD)
            else:
                self.session_state.pop(sid, None)
            i = types.find(CommandType.CMD_SESSION_STATE, i + 1)

    def _session_state_record(self, sid: int, attached: bool, cod: bool) -> None:
        flags = (SESSION_ATTACHED | (SESSION_COD if cod else 0)) if attached else 0
        if attached:
            self.session_state[sid] = cod
        else:
            self.session_state.pop(sid, None)
        self.inbound_push(pack_command(type=CommandType.CMD_SESSION_STATE, session_id=sid,
                                       symbol_id=UNKNOWN_SYMBOL, flags=flags,
                                       account_id=self.account_id_of_session[sid],
                                       ts=time.time_ns()))

    def _cod_mass_cancel(self, sid: int) -> None:
        self.inbound_push(pack_command(type=CommandType.CMD_MASS_CANCEL, session_id=sid,
                                       symbol_id=UNKNOWN_SYMBOL, depth=1, flags=1,
                                       account_id=self.account_id_of_session[sid],
                                       ts=time.time_ns()))

    def _detach_crashed_sessions(self) -> int:
        # sessions still attached at the end of the journal lost their connection in a crash:
        # what a disconnect would have done is done now, journaled (mass cancel with
        # cancel-on-disconnect, then the detach record)
        n = 0
        for sid, cod in sorted(self.session_state.items()):
            if cod:
                self._cod_mass_cancel(sid)
                n += 1
            self._session_state_record(sid, False, False)
        if self.session_state or len(self.inbound):
            self.pump()
        if n:
            log.info("canceled the orders of %d cancel-on-disconnect session(s) attached at the "
                     "crash", n, extra={"event": "recovery.cancel_on_disconnect", "sessions": n})
        return n

    def save_session_state(self) -> bytes:
        """The attached sessions (snapshot part "session_state"): (u32 session id, u8 cod)*."""
        return b"".join(struct.pack("<IB", sid, cod) for sid, cod in sorted(self.session_state.items()))

    def load_session_state(self, data: bytes) -> None:
        """Restore what ``save_session_state`` returned.  Raises ValueError for a bad length."""
        if len(data) % 5:
            raise ValueError(f"session_state part of {len(data)} bytes is not n * 5")
        self.session_state = {sid: bool(cod) for sid, cod in struct.iter_unpack("<IB", data)}

    # -- symbols -----------------------------------------------------------------------------
    def _register_symbol(self, sym_id: int, name: str, tick: int, max_qty: int) -> None:
        if sym_id == len(self.symbol_names):
            self.symbols.add(name)
            self.outbound.add_symbol(name)
            self.symbol_names.append(name)
        elif sym_id > len(self.symbol_names) or self.symbol_names[sym_id] != name:
            raise ValueError(f"journal symbol definition out of order: id {sym_id} {name!r} "
                             f"with {len(self.symbol_names)} symbols known")
        self.symbol_params[name] = (tick, max_qty)
        # the risk state's per-symbol arrays follow the core's books (the configured risk
        # settings of a new symbol; a redefinition changes its tick only)
        conf = next((s for s in self.cfg.symbols if s.name == name), None)
        settings: dict[str, Any] = symbol_risk(conf) if conf is not None else {}
        self.risk.define_symbol(sym_id, {**settings, "name": name, "tick": tick})

    def apply_symbols(self, symbols: list[SymbolConfig]) -> SymbolChanges:
        """Make the served symbols match ``symbols``: a new name gets the next symbol id and an
        existing one with another tick or max_qty is redefined, each through a journaled
        CMD_SYMBOL_ADD, so ids survive restarts whatever the config order.  Symbols served but
        no longer listed stay (ids and resting orders are permanent); they are returned in
        ``unlisted``.  Raises OSError when the journal cannot be written."""
        changes = SymbolChanges([], [], [])
        listed = set()
        for s in symbols:
            listed.add(s.name)
            old = self.symbol_params.get(s.name)
            if old == (s.tick, s.max_qty):
                continue
            sym_id = self.symbols.lookup(s.name) if old is not None else len(self.symbol_names)
            self._register_symbol(sym_id, s.name, s.tick, s.max_qty)
            self.inbound_push(pack_symbol_add(sym_id, s.name, s.tick, s.max_qty, time.time_ns()))
            (changes.updated if old is not None else changes.added).append(s.name)
        if changes.added or changes.updated:
            self.pump()
        changes.unlisted = [n for n in self.symbol_names if n not in listed]
        return changes

    def apply_symbol_risk(self, old: list[SymbolConfig], new: list[SymbolConfig]) -> list[str]:
        """A config reload: symbols served whose risk settings (max_order_qty, max_notional,
        reference_price, price bands) differ between ``old`` and ``new`` get the new ones (an
        admin change of the same limit is replaced).  Returns their names."""
        before = {s.name: symbol_risk(s) for s in old}
        out = []
        for s in new:
            settings = symbol_risk(s)
            sym_id = self.symbols.lookup(s.name)
            if sym_id != UNKNOWN_SYMBOL and s.name in before and before[s.name] != settings:
                self.risk.configure_symbol(sym_id, settings)
                out.append(s.name)
        return out

    def apply_throttles(self, throttle: dict[str, ThrottleConfig]) -> int:
        """A config reload: the token buckets of the logged-in sessions and their accounts
        become the new ones of their role (full buckets); sessions not connected get theirs at
        their next login.  Returns how many sessions were updated."""
        n = 0
        for role, account, sid in list(self.logins.values()):
            if role == "dropcopy":
                continue
            t = throttle.get(role) or ThrottleConfig()
            self.risk.set_session_throttle(sid, t.session_rate, t.session_burst)
            self.risk.set_account_throttle(account, t.account_rate, t.account_burst)
            n += 1
        connected = {sid for role, _, sid in self.logins.values() if role != "dropcopy"}
        self._throttled &= connected
        return n

    def _register_session(self, sid: int, account: str, account_id: int) -> None:
        if sid != len(self.account_of_session):
            raise ValueError(f"journal session ids out of order: {sid} after "
                             f"{len(self.account_of_session) - 1}")
        self.account_of_session.append(account)
        self.account_id_of_session.append(account_id)
        self.accounts[account] = sid
        self.account_ids.setdefault(account, account_id)
        self.risk.bind_session(sid, account)

    # -- sessions ----------------------------------------------------------------------------
    def _refuse(self, reason: int, peer: str, account: str, detail: str, code: str,
                role: str = "") -> LoginDecision:
        name = LoginRejectReason(reason).name.removeprefix("LOGIN_").lower()
        log.info("login from %s%s refused (%s): %s", peer, f" ({account})" if account else "", name,
                 detail, extra={"event": "session.login_refused", "peer": peer, "account": account,
                                "reason": name, "detail": detail})
        self.audit.write("login", address=peer, account=account, role=role, outcome="rejected",
                         reason=code)
        return LoginDecision(False, reason=reason)

    def open_sessions(self, account: str) -> int:
        """Logged-in connections of ``account``: its trading session and its drop copies."""
        sid = self.accounts.get(account)
        return (1 if sid is not None and sid in self.writers else 0) + len(self.dropcopy.get(account, ()))

    def login(self, msg: Login, writer: SessionWriter, peer: str | None = None, *,
              sofh: bool = True) -> LoginDecision:
        """Decide a Login from ``peer`` (host:port; default: the writer's ``peer``): rate-limit
        per address, verify the JWT, check the role and the account's session limit, find or
        create the account's session, check the requested sequence number, attach ``writer``.
        sofh: the transport frames messages with SOFH (TCP) or not (WebSocket: the writer gets
        bare SBE messages back to back).  Every outcome goes to the audit log (never the token)
        and to one ``session.login`` or ``session.login_refused`` log event.  Never raises for
        bad input."""
        if peer is None:
            peer = str(getattr(writer, "peer", ""))
        if not self.addresses.login_attempt(peer_host(peer), time.monotonic()):
            return self._refuse(LoginRejectReason.LOGIN_RATE_LIMITED, peer, unverified_subject(msg.token),
                                "too many login attempts from the address", "rate_limited")
        try:
            ident = self.verifier.verify(msg.token)
        except LoginFailure as exc:
            return self._refuse(exc.reason, peer, unverified_subject(msg.token), str(exc), exc.code)
        role = ident.role
        if not role:
            return self._refuse(LoginRejectReason.LOGIN_NOT_AUTHORIZED, peer, ident.account,
                                f"no order-entry role in {sorted(ident.roles)}", "role_not_allowed",
                                ",".join(sorted(ident.roles)))
        if self.open_sessions(ident.account) >= self.cfg.max_sessions_per_account:
            return self._refuse(LoginRejectReason.LOGIN_SESSION_LIMIT, peer, ident.account,
                                f"max_sessions_per_account ({self.cfg.max_sessions_per_account}) "
                                "reached", "session_limit", role)
        if role == "dropcopy":
            return self._login_dropcopy(ident, writer, peer, sofh)
        sid = self.accounts.get(ident.account)
        if sid is not None and sid in self.writers:
            return self._refuse(LoginRejectReason.LOGIN_SESSION_IN_USE, peer, ident.account,
                                "the account's session is logged in on another connection",
                                "session_in_use", role)
        if sid is None:
            if len(self.account_of_session) >= self.cfg.max_sessions:
                return self._refuse(LoginRejectReason.LOGIN_NOT_AUTHORIZED, peer, ident.account,
                                    f"max_sessions ({self.cfg.max_sessions}) reached", "max_sessions",
                                    role)
            sid = len(self.account_of_session)
            account_id = self.account_ids.get(ident.account, len(self.account_ids) + 1)
            # journaled like any command, so a restart assigns the same ids
            self._register_session(sid, ident.account, account_id)
            self.inbound_push(pack_command(type=CommandType.CMD_SESSION_OPEN, session_id=sid,
                                           ts=time.time_ns(), symbol_id=UNKNOWN_SYMBOL,
                                           account=ident.account, account_id=account_id))
            self.pump()
        want = msg.next_expected_seq_num
        if want and len(self.inbound):
            # the store must hold every message up to next - 1 before the replay reads it
            self.pump()
        next_seq = self.outbound.next_seq(sid)
        if want > next_seq:
            return self._refuse(LoginRejectReason.LOGIN_INVALID_SEQUENCE, peer, ident.account,
                                f"asked for seq {want}, next is {next_seq}",
                                "invalid_sequence", role)
        # SoupBinTCP: 0 = the live stream only; N <= next = replay N .. next-1 first
        replay_from = want if 0 < want < next_seq else 0
        self.writers[sid] = writer
        self.logins[writer] = (role, ident.account, sid)
        self.outbound.set_session(sid, True, sofh)
        self._session_state_record(sid, True, bool(msg.cancel_on_disconnect))
        self.request_pump()
        if sid not in self._throttled:
            # configured once per session and account, so that reconnecting does not refill them
            t = self._throttle(role)
            self.risk.set_session_throttle(sid, t.session_rate, t.session_burst)
            self.risk.set_account_throttle(ident.account, t.account_rate, t.account_burst)
            self._throttled.add(sid)
        log.info("session %d (%s) logged in from %s, next seq %d, replay from %d", sid,
                 ident.account, peer, next_seq, replay_from,
                 extra={"event": "session.login", "session_id": sid, "account": ident.account,
                        "peer": peer, "next_seq": next_seq, "replay_from": replay_from})
        self.audit.write("login", address=peer, account=ident.account, role=role, outcome="accepted",
                         session_id=sid)
        # a trader takes the batch path (allowed None); an admin-only token may only send
        # EndOfSession; "admin" among the roles is what lets a session send EndOfSession
        return LoginDecision(True, session_id=sid, next_seq_num=replay_from or next_seq,
                             replay_from=replay_from,
                             account_id=self.account_id_of_session[sid],
                             role="admin" if "admin" in ident.roles else role,
                             allowed=None if role == "trader" else ROLE_TEMPLATES[role],
                             positions=self._positions_answer(ident, role)
                             if role == "trader" else None)

    def _throttle(self, role: str) -> ThrottleConfig:
        return self.cfg.throttle.get(role) or ThrottleConfig()

    def _login_dropcopy(self, ident: Identity, writer: SessionWriter, peer: str,
                        sofh: bool) -> LoginDecision:
        # read-only: a copy of every business message of the account's trading session, in
        # the trading session's framing while it is connected (see README "Security")
        sid = self.accounts.get(ident.account, 0)
        self.dropcopy.setdefault(ident.account, set()).add(writer)
        self.logins[writer] = ("dropcopy", ident.account, sid)
        if sid and sid not in self.writers:
            self.outbound.set_session(sid, True, sofh)
        next_seq = self.outbound.next_seq(sid) if sid else 1
        log.info("drop copy of %s (session %d) logged in from %s", ident.account, sid, peer)
        self.audit.write("login", address=peer, account=ident.account, role="dropcopy",
                         outcome="accepted", session_id=sid)
        return LoginDecision(True, session_id=sid, next_seq_num=next_seq,
                             allowed=ROLE_TEMPLATES["dropcopy"],
                             positions=self._positions_answer(ident, "dropcopy"))

    def _positions_answer(self, ident: Identity, role: str) -> Callable[[PositionQuery], list[Message]]:
        t = self._throttle(role)
        bucket = [t.session_burst or 1.0, time.monotonic()]
        account = ident.account

        def answer(q: PositionQuery) -> list[Message]:
            if t.session_rate > 0:
                now = time.monotonic()
                bucket[0] = min(max(t.session_burst, 1.0), bucket[0] + (now - bucket[1]) * t.session_rate)
                bucket[1] = now
                if bucket[0] < 1.0:
                    return [SessionReject(reason=RejectReason.REJ_THROTTLED,
                                          ref_template_id=PositionQuery.TEMPLATE_ID)]
                bucket[0] -= 1.0
            if q.symbol:
                symbol_id = self.symbols.lookup(q.symbol)
                if symbol_id == UNKNOWN_SYMBOL:
                    return [SessionReject(reason=RejectReason.REJ_UNKNOWN_SYMBOL,
                                          ref_template_id=PositionQuery.TEMPLATE_ID)]
                ids = [symbol_id]
            else:
                ids = list(range(len(self.symbol_names)))
            # everything decoded before the query is matched and its messages written first, so
            # the report agrees with the Executions the client has already been sent
            self.pump()
            return self.position_reports(account, ids, q.request_id)

        return answer

    def position_reports(self, account: str, symbol_ids: list[int], request_id: int) -> list[Message]:
        """PositionReport messages of ``account`` for ``symbol_ids`` (zeros for an account that
        never traded)."""
        self.risk.account_index(account)
        out: list[Message] = []
        for i, symbol_id in enumerate(symbol_ids, start=1):
            p = self.risk.position(account, symbol_id)
            out.append(PositionReport(
                request_id=request_id, symbol=self.symbol_names[symbol_id], net_position=p["net"],
                avg_price=p["avg_price"], realized_pnl=p["realized_pnl"], open_buy_qty=p["open_buy"],
                open_sell_qty=p["open_sell"], bought_qty=p["bought"], sold_qty=p["sold"],
                report_index=i, report_count=len(symbol_ids)))
        return out

    def disconnect(self, writer: SessionWriter, cancel_on_disconnect: bool) -> None:
        """A logged-in connection is gone (any role)."""
        info = self.logins.pop(writer, None)
        if info is None:
            return
        role, account, sid = info
        if role != "dropcopy":
            self.detach(sid, cancel_on_disconnect)
            return
        dcs = self.dropcopy.get(account)
        if dcs is not None:
            dcs.discard(writer)
            if not dcs:
                del self.dropcopy[account]
        sid = self.accounts.get(account, 0)
        if sid and sid not in self.writers and account not in self.dropcopy:
            self.outbound.set_session(sid, False, True)

    def detach(self, sid: int, cancel_on_disconnect: bool) -> None:
        """The session's connection is gone: stop buffering its messages (unless a drop copy
        still reads them); with cancel-on-disconnect, cancel its resting orders (a journaled
        mass cancel)."""
        w = self.writers.pop(sid, None)
        if w is None:
            return
        self.logins.pop(w, None)
        if self.account(sid) not in self.dropcopy:
            self.outbound.set_session(sid, False, True)
        if cancel_on_disconnect:
            self._cod_mass_cancel(sid)
        self._session_state_record(sid, False, False)
        self.request_pump()

    def inbound_push(self, record: bytes) -> None:
        """Queue one command record from the slow path (session open, cancel on disconnect)."""
        while self.inbound.push(record) == 0:
            self.pump()

    # -- the order path ----------------------------------------------------------------------
    def request_pump(self) -> None:
        """Schedule one pump at the end of this loop tick (after every read of the tick)."""
        if not self._pump_scheduled:
            self._pump_scheduled = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self.pump()

    def pump(self) -> int:
        """Sequence, journal, match and answer everything in the inbound ring; returns the
        commands handled.  Raises OSError when the journal cannot be written (nothing of the
        group is acknowledged then)."""
        ring = self.inbound
        total = 0
        while True:
            n = len(ring)
            if n == 0:
                break
            self.sequencer.stamp(ring, n)
            self.journal.append_ring(ring, n)
            self._now_ns = time.time_ns()
            self._match_all()
            total += n
        # every checked record has been processed: its effect is in the risk state's
        # committed part now
        self.risk.clear_pending()
        self.pumps += 1
        self._flush()
        for hook in self.post_pump:
            try:
                hook()
            except Exception:  # a market-data fault must never stop the order path
                log.exception("post-pump hook %r failed", hook)
        if self._next_snapshot_seq and self.sequencer.next_seq > self._next_snapshot_seq:
            self._maybe_snapshot()
        return total

    def _match_all(self) -> None:
        # in slices, so that the events of a slice are still in the CPU cache when the risk
        # state and the outbound encoder read them (measured in bench/risk_bench.py)
        while len(self.inbound):
            self.core.process(self.inbound, self.events, MATCH_SLICE)
            self._drain_events()

    def _drain_events(self) -> None:
        self.outbound.drain(self.events, self._now_ns)

    def _flush(self) -> None:
        ob = self.outbound
        now = time.time_ns()
        dropcopy = self.dropcopy
        store = self.store
        for sid in ob.dirty():
            first, data = ob.take_seq(sid)
            # stored before it is sent: a message a client saw can always be replayed
            store.append(sid, first, data, ob.next_seq(sid) - first)
            w = self.writers.get(sid)
            if w is not None:
                w.deliver(data, now)
            if dropcopy:
                for d in list(dropcopy.get(self.account_of_session[sid], ())):
                    d.deliver(data, now)
        self._append_events()

    def _append_events(self) -> None:
        if self.event_log is None:
            return
        first, data = self.outbound.take_events()
        if data:
            self.event_log.append(first, data)
            if self.sink is not None:
                self.sink.notify()

    # -- admin actions (event-loop thread only) ---------------------------------------------
    def admin(self, action: int, *, account: str = "", symbol_id: int | None = None, field: int = 0,
              value: int = 0) -> dict[str, Any]:
        """Apply one admin action to the risk state and journal it as a CMD_ADMIN command;
        BLOCK (kill switch) also cancels every resting order of the account (journaled mass
        cancels, reason KILL_SWITCH).  Returns the applied fields.  Raises ValueError for an
        action the risk state refuses (nothing is journaled then)."""
        record = admin_record(action, account=account, symbol_id=symbol_id, field=field,
                              value=value, ts=time.time_ns())
        applied = self.risk.apply_admin(record)
        self.inbound_push(record)
        if action == AdminAction.BLOCK:
            sid = self.accounts.get(account)
            if sid is not None:
                # every order of the account, in any session (scope ACCOUNT), reason KILL_SWITCH
                self.inbound_push(pack_command(type=CommandType.CMD_MASS_CANCEL, session_id=sid,
                                               symbol_id=UNKNOWN_SYMBOL, depth=1, flags=2,
                                               account_id=self.account_ids[account],
                                               scope=MassCancelScope.SCOPE_ACCOUNT,
                                               ts=time.time_ns()))
        self.pump()
        return applied

    # -- introspection for metrics -----------------------------------------------------------
    def account(self, sid: int) -> str:
        return self.account_of_session[sid] if 0 < sid < len(self.account_of_session) else ""

    def sessions_connected(self) -> int:
        return len(self.writers)

    def close(self) -> None:
        """Close the journal, the message store and the event log (each syncs what it holds
        first; the next ``recover`` of another Engine on the same directories may open them)."""
        self.journal.close()
        self.store.close()
        if self.event_log is not None:
            self.event_log.close()


def account_lookup(engine: Engine) -> Callable[[int], str]:
    """session id -> account, for the PostgreSQL sink."""
    return engine.account
