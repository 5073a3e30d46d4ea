"""The order path inside one process (DESIGN §1), driven from the event loop.

    sessions ─► inbound ring ─► sequencer ─► journal ─► matching core ─► events ring ─► outbound
                                                                                     ├► session writers
                                                                                     └► fills sink

The matcher runs on the event-loop thread and is drained once per loop tick: every read of the
tick is decoded into the inbound ring first, then ``pump`` stamps, journals (one write per
group), matches (GIL released inside the core) and encodes the responses, and each session gets
one ``write`` per tick.  Acknowledgements are written only after the journal write of their
commands has returned (``durability="os"``) or been fsynced (``"fsync"``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gateway.auth import LoginFailure, verify_token
from gateway.config import Config, SymbolConfig
from matching.core import MatchingCore
from matching.records import (
    COMMAND_RECORD_SIZE,
    EVENT_RECORD_SIZE,
    UNKNOWN_SYMBOL,
    CommandType,
    LoginRejectReason,
    pack_command,
    pack_symbol_add,
    unpack_command,
)
from matching.ring import SpscRing
from matching.sequencer import Sequencer
from persistence.journal import Journal
from protocol.codec import SymbolTable
from protocol.messages import Login
from protocol.outbound import Outbound
from protocol.session import LoginDecision

if TYPE_CHECKING:
    from persistence.pg_sink import FillSink

log = logging.getLogger("hftgw.engine")


class SessionWriter(Protocol):
    """A connected session's transport side, as the engine sees it."""

    def deliver(self, data: bytes, now_ns: int) -> None: ...


@dataclass(slots=True)
class RecoveryStats:
    """What the start-up replay of the journal did."""

    commands: int = 0
    sessions: int = 0
    symbols: int = 0
    elapsed_s: float = 0.0


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

    cfg: the gateway Config.  ``sink`` is the optional PostgreSQL FillSink (attached by the
    server before ``recover``).  Not thread-safe: everything runs on the event-loop thread.
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
        self.journal = Journal(cfg.journal_dir, cfg.durability)
        self.outbound = Outbound([], cfg.max_sessions)
        self.core.on_events_full = self._drain_events
        self.sink: FillSink | None = None  # set when PostgreSQL is configured
        self.accounts: dict[str, int] = {}       # account -> session id
        self.account_of_session: list[str] = [""]  # session id -> account (index 0 unused)
        # account -> account id (uint32 from 1), stamped on every command for STP and mass
        # cancel by account; journaled in the session-open record, so replay rebuilds it
        self.account_ids: dict[str, int] = {}
        self.account_id_of_session: list[int] = [0]
        self.writers: dict[int, SessionWriter] = {}
        #: called after every pump, once the sessions' responses are written (market data)
        self.post_pump: list[Callable[[], None]] = []
        self.ready = False
        self.pumps = 0
        self._pump_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._now_ns = 0  # 0 while replaying: no latency observations, no writes

    # -- start-up ----------------------------------------------------------------------------
    def recover(self) -> RecoveryStats:
        """Replay the journal into the core so symbols, books, session ids and every session's
        next sequence number are those before the restart, then define the config's symbols
        that the journal does not have yet (``apply_symbols``).  Raises
        persistence.journal.JournalCorrupt for damage before the tail, ValueError for a
        sequence gap, LegacyJournalError for a journal without symbol definitions."""
        t0 = time.perf_counter()
        stats = RecoveryStats()
        self.journal.open()
        cap_bytes = self.cfg.ring_capacity * COMMAND_RECORD_SIZE
        first = True
        for chunk in self.journal.replay():
            if first and len(chunk) and unpack_command(chunk)["type"] != CommandType.CMD_SYMBOL_ADD:
                raise LegacyJournalError(
                    f"journal {self.journal.path} was written before symbol definitions were "
                    "journaled, so its symbol ids are the config order of that time; move it "
                    "away (the books start empty) or replay it with the hftgw version that wrote it")
            first = False
            defs: list[tuple[int, str, int, int]] = []
            for sid, account, account_id in self.sequencer.observe(chunk, defs):
                self._register_session(sid, account, account_id)
                stats.sessions += 1
            for sym_id, name, tick, max_qty in defs:
                self._register_symbol(sym_id, name, tick, max_qty)
                stats.symbols += 1
            view = memoryview(chunk)
            for off in range(0, len(view), cap_bytes):
                part = view[off:off + cap_bytes]
                self.inbound.push(part)
                self._match_all()
            stats.commands += len(chunk) // COMMAND_RECORD_SIZE
        self.apply_symbols(self.cfg.symbols)
        stats.elapsed_s = time.perf_counter() - t0
        return stats

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

    def _register_session(self, sid: int, account: str, account_id: int) -> None:
        if sid != len(self.account_of_session):
            raise ValueError(f"journal session ids out of order: {sid} after "
                             f"{len(self.account_of_session) - 1}")
        self.account_of_session.append(account)
        self.account_id_of_session.append(account_id)
        self.accounts[account] = sid
        self.account_ids.setdefault(account, account_id)

    # -- sessions ----------------------------------------------------------------------------
    def login(self, msg: Login, writer: SessionWriter, sofh: bool = True) -> LoginDecision:
        """Decide a Login: verify the JWT, find or create the account's session, check the
        requested sequence number, attach ``writer``.  sofh: the transport frames messages with
        SOFH (TCP) or not (WebSocket: the writer gets bare SBE messages back to back).  Never
        raises for bad input.  Logs one ``session.login`` or ``session.login_refused`` event (the
        writer's ``peer`` if any)."""
        peer = str(getattr(writer, "peer", ""))
        try:
            ident = verify_token(msg.token, self.cfg.jwt_secret)
        except LoginFailure as exc:
            return self._refuse(exc.reason, peer, "", str(exc))
        sid = self.accounts.get(ident.account)
        if sid is not None and sid in self.writers:
            return self._refuse(LoginRejectReason.LOGIN_SESSION_IN_USE, peer, ident.account,
                                "the account's session is logged in on another connection")
        if sid is None:
            if len(self.account_of_session) >= self.cfg.max_sessions:
                return self._refuse(LoginRejectReason.LOGIN_NOT_AUTHORIZED, peer, ident.account,
                                    f"max_sessions ({self.cfg.max_sessions}) reached")
            sid = len(self.account_of_session)
            account_id = self.account_ids.get(ident.account, len(self.account_ids) + 1)
            # journaled like any command, so a restart assigns the same ids
            self._register_session(sid, ident.account, account_id)
            self.inbound_push(pack_command(type=CommandType.CMD_SESSION_OPEN, session_id=sid,
                                           ts=time.time_ns(), symbol_id=UNKNOWN_SYMBOL,
                                           account=ident.account, account_id=account_id))
            self.pump()
        next_seq = self.outbound.next_seq(sid)
        if msg.next_expected_seq_num > next_seq:
            return self._refuse(LoginRejectReason.LOGIN_INVALID_SEQUENCE, peer, ident.account,
                                f"asked for seq {msg.next_expected_seq_num}, next is {next_seq}")
        self.writers[sid] = writer
        self.outbound.set_session(sid, True, sofh)
        log.info("session %d (%s) logged in from %s, next seq %d", sid, ident.account, peer, next_seq,
                 extra={"event": "session.login", "session_id": sid, "account": ident.account,
                        "peer": peer, "next_seq": next_seq})
        return LoginDecision(True, session_id=sid, next_seq_num=next_seq,
                             account_id=self.account_id_of_session[sid], role=ident.role)

    def _refuse(self, reason: int, peer: str, account: str, detail: str) -> LoginDecision:
        name = LoginRejectReason(reason).name.removeprefix("LOGIN_").lower()
        log.info("login from %s%s refused (%s): %s", peer, f" ({account})" if account else "", name,
                 detail, extra={"event": "session.login_refused", "peer": peer, "account": account,
                                "reason": name, "detail": detail})
        return LoginDecision(False, reason=reason)

    def detach(self, sid: int, cancel_on_disconnect: bool) -> None:
        """The session's connection is gone: stop buffering its messages; with
        cancel-on-disconnect, cancel its resting orders (a journaled mass cancel)."""
        if self.writers.pop(sid, None) is None:
            return
        self.outbound.set_session(sid, False, True)
        if cancel_on_disconnect:
            self.inbound_push(pack_command(type=CommandType.CMD_MASS_CANCEL, session_id=sid,
                                           symbol_id=UNKNOWN_SYMBOL, depth=1, flags=1,
                                           account_id=self.account_id_of_session[sid],
                                           ts=time.time_ns()))
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
        self.pumps += 1
        self._flush()
        for hook in self.post_pump:
            try:
                hook()
            except Exception:  # a market-data fault must never stop the order path
                log.exception("post-pump hook %r failed", hook)
        return total

    def _match_all(self) -> None:
        while len(self.inbound):
            self.core.process(self.inbound, self.events)
            self._drain_events()

    def _drain_events(self) -> None:
        self.outbound.drain(self.events, self._now_ns)

    def _flush(self) -> None:
        ob = self.outbound
        now = time.time_ns()
        for sid in ob.dirty():
            data = ob.take(sid)
            w = self.writers.get(sid)
            if w is not None:
                w.deliver(data, now)
        if self.sink is not None:
            fills = ob.take_fills()
            if fills:
                self.sink.submit(fills)

    # -- introspection for metrics -----------------------------------------------------------
    def account(self, sid: int) -> str:
        return self.account_of_session[sid] if 0 < sid < len(self.account_of_session) else ""

    def sessions_connected(self) -> int:
        return len(self.writers)


def account_lookup(engine: Engine) -> Callable[[int], str]:
    """session id -> account, for the fills sink."""
    return engine.account
