"""``Engine``: the parts of the gateway's engine, assembled, behind the entry points the
transports, the server, the admin API and the tests use.

The parts (each its own module, sharing only the few state objects they need):

- ``pipeline`` (pipeline.py): rings, sequencer, journal, core, encoder, store, event log; ``pump``;
- ``table`` and ``sessions`` (sessions.py): session ids and accounts; logins, drop copies,
  positions, disconnects, cancel on disconnect;
- ``catalog`` (symbols.py): symbol ids and their definitions;
- ``snapshots`` (snapshots.py) and ``recovery`` (recovery.py): snapshots, the start;
- ``stats`` (stats.py): the read-only figures monitoring reads.

Access control and pre-trade risk (issue 6, docs/security.md): every decoded batch of a
trading session goes through ``risk`` (gateway/risk/pretrade.pyx) before the pump sees it, and
the risk state follows the core's events.  Admin actions (halt, kill switch, limits) are
CMD_ADMIN records queued and journaled like commands, applied to the risk state as they are
queued and again on replay.

The attributes below are the parts' own objects (aliases, never copies), so reading
``engine.journal`` costs what it always did.  Not thread-safe: everything runs on the
event-loop thread.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.config.schema import Config, SymbolConfig, ThrottleConfig, account_limits
from gateway.engine.parts import CorePart, EnginePart
from gateway.engine.pipeline import Pipeline, SessionWriter
from gateway.engine.recovery import Recovery, RecoveryStats
from gateway.engine.sessions import Sessions, SessionTable
from gateway.engine.snapshots import Snapshots
from gateway.engine.symbols import SymbolCatalog, SymbolChanges
from gateway.risk.pretrade import AdminAction, RiskEngine, admin_record
from matching.core import MatchingCore
from matching.records import UNKNOWN_SYMBOL, CommandType, MassCancelScope, pack_command
from protocol.messages import Login, Message
from protocol.session import LoginDecision

if TYPE_CHECKING:
    from persistence.pg_sink import EventSink


class Engine:
    """The engine of one partition, for Config ``cfg``.

    With ``pg_dsn`` set, every order event and fill is appended to ``event_log`` (opened by
    ``recover``) and ``sink``, the PostgreSQL EventSink attached by the server, is notified
    after each append.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        core = MatchingCore([])
        # symbols are defined in it as in the core, from the journal (SymbolCatalog.register)
        self.risk = RiskEngine([], core, cfg.max_sessions, lambda name: account_limits(cfg, name))
        self.risk.enabled = cfg.pre_trade_risk
        self.table = SessionTable(self.risk)
        t = self.table
        self.pipeline = Pipeline(cfg, core, self.risk, t.writers, t.dropcopy, t.account_of_session)
        self.catalog = SymbolCatalog(cfg, self.pipeline, self.risk)
        self.sessions = Sessions(cfg, t, self.pipeline, self.catalog, self.risk)
        self.snapshots = Snapshots(cfg, self.pipeline)
        self.recovery = Recovery(cfg, self.pipeline, t, self.sessions, self.catalog, self.snapshots)
        # imported here, not at the top: stats.py imports this module for the types of the
        # figures it reads (mypy then checks Engine first)
        from gateway.engine.stats import EngineStats
        self.stats = EngineStats(self)
        p = self.pipeline
        self._register_parts()
        # -- aliases of the parts' objects (the names every caller has used) --
        self.inbound, self.events, self.sequencer = p.inbound, p.events, p.sequencer
        self.journal, self.outbound, self.store, self.event_log = p.journal, p.outbound, p.store, p.event_log
        self.post_pump = p.post_pump
        self.symbol_names = self.catalog.names  # by symbol id; shared with the fills sink
        self.symbol_params = self.catalog.params  # name -> (tick, max_qty)
        self.symbols = self.catalog.table
        self.accounts, self.account_ids = t.accounts, t.account_ids
        self.account_of_session, self.account_id_of_session = t.account_of_session, t.account_id_of_session
        self.writers, self.logins, self.dropcopy = t.writers, t.logins, t.dropcopy
        self.session_state = t.session_state
        s = self.sessions
        self.verifier, self.access, self.addresses, self.audit = s.verifier, s.access, s.addresses, s.audit
        self.snapshot_dir = self.snapshots.directory
        self.snapshot_parts = self.snapshots.parts
        self.before_snapshot_commit = self.snapshots.before_commit
        self.journal_retention = self.snapshots.journal_retention
        self.snap_stats = self.snapshots.stats
        # -- entry points, bound once (a call costs what a method of one class did) --
        self.pump: Callable[[], int] = p.pump
        self.request_pump: Callable[[], None] = p.request_pump
        self.inbound_push: Callable[[bytes], None] = p.inbound_push
        #: business messages replayed to re-logged-in sessions (metric; the transports count)
        self.replayed_messages = 0
        self.ready = False

    def _register_parts(self) -> None:
        # restored in this order; other components (e.g. market data) may add theirs
        p = self.pipeline
        core, engine = CorePart(p), EnginePart(p, self.catalog, self.table)
        self.snapshots.parts.update({
            "core": (core.save, core.load),
            "engine": (engine.save, engine.load),
            "outbound": (p.outbound.export_state, p.outbound.import_state),
            "risk": (self.risk.snapshot, self.risk.restore),
            # the event counter, saved whether or not the event log is written, so that turning
            # the sink on later continues the numbering a full replay would give
            "events": (lambda: p.outbound.event_state().to_bytes(8, "little"),
                       lambda b: p.outbound.set_event_state(int.from_bytes(b, "little"))),
            # the sessions attached at the snapshot, so a crash after it still cancels the
            # orders of those with cancel-on-disconnect
            "session_state": (self.table.save_session_state, self.table.load_session_state),
        })
        self.snapshots.captures["core"] = core.capture

    # -- state the parts replace or the server sets -------------------------------------------
    @property
    def core(self) -> MatchingCore:
        """The matching core (a start from a snapshot replaces it)."""
        return self.pipeline.core

    @property
    def sink(self) -> EventSink | None:
        """The PostgreSQL sink (None when not configured), notified after event log appends."""
        return self.pipeline.sink

    @sink.setter
    def sink(self, sink: EventSink | None) -> None:
        self.pipeline.sink = sink

    @property
    def journal_point(self) -> tuple[int, int]:
        """(last event number, last trade id) the journal explained at the start (``recover``):
        the PostgreSQL sink's ``journal_point``."""
        return self.recovery.recovered_event_no, self.recovery.recovered_trade_id

    # -- entry points ------------------------------------------------------------------------
    def recover(self) -> RecoveryStats:
        """The start (gateway/engine/recovery.py ``Recovery.recover``, which lists what it raises)."""
        return self.recovery.recover()

    def login(self, msg: Login, writer: SessionWriter, peer: str | None = None, *,
              sofh: bool = True) -> LoginDecision:
        """Decide a Login (gateway/engine/sessions.py ``Sessions.login``); never raises."""
        return self.sessions.login(msg, writer, peer, sofh=sofh)

    def disconnect(self, writer: SessionWriter, cancel_on_disconnect: bool) -> None:
        """A logged-in connection is gone (any role)."""
        self.sessions.disconnect(writer, cancel_on_disconnect)

    def detach(self, sid: int, cancel_on_disconnect: bool) -> None:
        """Session ``sid``'s connection is gone (``Sessions.detach``)."""
        self.sessions.detach(sid, cancel_on_disconnect)

    def position_reports(self, account: str, symbol_ids: list[int], request_id: int) -> list[Message]:
        """PositionReport messages of ``account`` for ``symbol_ids``."""
        return self.sessions.position_reports(account, symbol_ids, request_id)

    def open_sessions(self, account: str) -> int:
        """Logged-in connections of ``account``: its trading sessions and its drop copies."""
        return self.table.open_sessions(account)

    def account(self, sid: int) -> str:
        """The account of session ``sid`` ("" for an unknown id)."""
        return self.table.account(sid)

    def sessions_connected(self) -> int:
        """Trading sessions with a connection."""
        return len(self.table.writers)

    def _register_session(self, sid: int, account: str, account_id: int, name: str = "") -> None:
        self.table.register(sid, account, account_id, name)

    def save_session_state(self) -> bytes:
        """The attached sessions (snapshot part "session_state")."""
        return self.table.save_session_state()

    def load_session_state(self, data: bytes) -> None:
        """Restore ``save_session_state``'s bytes.  Raises ValueError for a bad length."""
        self.table.load_session_state(data)

    def apply_symbols(self, symbols: list[SymbolConfig]) -> SymbolChanges:
        """Make the served symbols match ``symbols`` (``SymbolCatalog.apply_symbols``)."""
        return self.catalog.apply_symbols(symbols)

    def apply_symbol_risk(self, old: list[SymbolConfig], new: list[SymbolConfig]) -> list[str]:
        """A config reload's symbol risk settings (``SymbolCatalog.apply_symbol_risk``)."""
        return self.catalog.apply_symbol_risk(old, new)

    def apply_throttles(self, throttle: dict[str, ThrottleConfig]) -> int:
        """A config reload's throttles (``Sessions.apply_throttles``)."""
        return self.sessions.apply_throttles(throttle)

    def write_snapshot(self, background: bool) -> str | None:
        """Snapshot the engine now (``Snapshots.write_snapshot``); never raises for I/O errors."""
        return self.snapshots.write_snapshot(background)

    def snapshot_running(self) -> bool:
        """True while a background snapshot is being captured or written."""
        return self.snapshots.running()

    def admin(self, action: int, *, account: str = "", symbol_id: int | None = None, field: int = 0,
              value: int = 0) -> dict[str, Any]:
        """Apply one admin action to the risk state and journal it as a CMD_ADMIN command;
        BLOCK (kill switch) also cancels every resting order of the account (journaled mass
        cancels, reason KILL_SWITCH).  Returns the applied fields.  Raises ValueError for an
        action the risk state refuses (nothing is journaled then).  Event-loop thread only."""
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

    def close(self) -> None:
        """Close the journal, the message store and the event log (each syncs what it holds
        first; the next ``recover`` of another Engine on the same directories may open them)."""
        self.pipeline.close()


def account_lookup(engine: Engine) -> Callable[[int], str]:
    """session id -> account, for the PostgreSQL sink."""
    return engine.account
