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
from gateway.config import Config
from matching.core import MatchingCore
from matching.records import (
    COMMAND_RECORD_SIZE,
    EVENT_RECORD_SIZE,
    UNKNOWN_SYMBOL,
    CommandType,
    LoginRejectReason,
    pack_command,
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
    elapsed_s: float = 0.0


class Engine:
    """Owns the rings, the sequencer, the journal, the matching core and the outbound encoder.

    cfg: the gateway Config.  ``sink`` is the optional PostgreSQL FillSink (attached by the
    server before ``recover``).  Not thread-safe: everything runs on the event-loop thread.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.symbol_names = [s.name for s in cfg.symbols]
        self.symbols = SymbolTable(self.symbol_names)
        self.core = MatchingCore([(s.tick, s.max_qty) for s in cfg.symbols])
        self.inbound = SpscRing(cfg.ring_capacity, COMMAND_RECORD_SIZE)
        self.events = SpscRing(cfg.ring_capacity, EVENT_RECORD_SIZE)
        self.sequencer = Sequencer()
        self.journal = Journal(cfg.journal_dir, cfg.durability)
        self.outbound = Outbound(self.symbol_names, cfg.max_sessions)
        self.core.on_events_full = self._drain_events
        self.sink: FillSink | None = None  # set when PostgreSQL is configured
        self.accounts: dict[str, int] = {}       # account -> session id
        self.account_of_session: list[str] = [""]  # session id -> account (index 0 unused)
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
        """Replay the journal into the core so books, session ids and every session's next
        sequence number are those before the restart.  Raises persistence.journal.JournalCorrupt
        for damage before the tail, ValueError for a sequence gap."""
        t0 = time.perf_counter()
        stats = RecoveryStats()
        self.journal.open()
        cap_bytes = self.cfg.ring_capacity * COMMAND_RECORD_SIZE
        for chunk in self.journal.replay():
            for sid, account in self.sequencer.observe(chunk):
                self._register_session(sid, account)
                stats.sessions += 1
            view = memoryview(chunk)
            for off in range(0, len(view), cap_bytes):
                part = view[off:off + cap_bytes]
                self.inbound.push(part)
                self._match_all()
            stats.commands += len(chunk) // COMMAND_RECORD_SIZE
        stats.elapsed_s = time.perf_counter() - t0
        return stats

    def _register_session(self, sid: int, account: str) -> None:
        if sid != len(self.account_of_session):
            raise ValueError(f"journal session ids out of order: {sid} after "
                             f"{len(self.account_of_session) - 1}")
        self.account_of_session.append(account)
        self.accounts[account] = sid

    # -- sessions ----------------------------------------------------------------------------
    def login(self, msg: Login, writer: SessionWriter, sofh: bool = True) -> LoginDecision:
        """Decide a Login: verify the JWT, find or create the account's session, check the
        requested sequence number, attach ``writer``.  sofh: the transport frames messages with
        SOFH (TCP) or not (WebSocket: the writer gets bare SBE messages back to back).  Never
        raises for bad input."""
        try:
            ident = verify_token(msg.token, self.cfg.jwt_secret)
        except LoginFailure as exc:
            log.info("login refused: %s", exc)
            return LoginDecision(False, reason=exc.reason)
        sid = self.accounts.get(ident.account)
        if sid is not None and sid in self.writers:
            return LoginDecision(False, reason=LoginRejectReason.LOGIN_SESSION_IN_USE)
        if sid is None:
            if len(self.account_of_session) >= self.cfg.max_sessions:
                return LoginDecision(False, reason=LoginRejectReason.LOGIN_NOT_AUTHORIZED)
            sid = len(self.account_of_session)
            # journaled like any command, so a restart assigns the same ids
            self._register_session(sid, ident.account)
            self.inbound_push(pack_command(type=CommandType.CMD_SESSION_OPEN, session_id=sid,
                                           ts=time.time_ns(), symbol_id=UNKNOWN_SYMBOL,
                                           account=ident.account))
            self.pump()
        next_seq = self.outbound.next_seq(sid)
        if msg.next_expected_seq_num > next_seq:
            return LoginDecision(False, reason=LoginRejectReason.LOGIN_INVALID_SEQUENCE)
        self.writers[sid] = writer
        self.outbound.set_session(sid, True, sofh)
        log.info("session %d (%s) logged in, next seq %d", sid, ident.account, next_seq)
        return LoginDecision(True, session_id=sid, next_seq_num=next_seq)

    def detach(self, sid: int, cancel_on_disconnect: bool) -> None:
        """The session's connection is gone: stop buffering its messages; with
        cancel-on-disconnect, cancel its resting orders (a journaled mass cancel)."""
        if self.writers.pop(sid, None) is None:
            return
        self.outbound.set_session(sid, False, True)
        if cancel_on_disconnect:
            self.inbound_push(pack_command(type=CommandType.CMD_MASS_CANCEL, session_id=sid,
                                           symbol_id=UNKNOWN_SYMBOL, depth=1, flags=1,
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
