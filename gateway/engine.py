"""The order path inside one process (DESIGN §1), driven from the event loop.

    sessions ─► inbound ring ─► sequencer ─► journal ─► matching core ─► events ring ─► outbound
                                                                                     ├► session writers
                                                                                     └► fills sink

The matcher runs on the event-loop thread and is drained once per loop tick: every read of the
tick is decoded into the inbound ring first, then ``pump`` stamps, journals (one write per
group), matches (GIL released inside the core) and encodes the responses, and each session gets
one ``write`` per tick.  Acknowledgements are written only after the journal write of their
commands has returned (``durability="os"``) or been fsynced (``"fsync"``).

Access control and pre-trade risk (issue 6, README "Security"): logins are verified here
(gateway/auth.py), rate-limited per source address and written to the audit log; every decoded
batch of a trading session goes through ``self.risk`` (gateway/risk.pyx) before the pump sees it,
and the risk state follows the core's events.  Admin actions (halt, kill switch, limits) are
CMD_ADMIN records queued and journaled like commands, applied to the risk state as they are
queued and again on replay.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gateway.access import AccessCounters, AddressLimits, AuditLog, peer_host
from gateway.auth import ROLE_TEMPLATES, Identity, LoginFailure, TokenVerifier, unverified_subject
from gateway.config import Config, ThrottleConfig, account_limits, symbol_risk
from gateway.risk import AdminAction, RiskEngine, admin_record
from matching.core import MatchingCore
from matching.records import (
    COMMAND_RECORD_SIZE,
    EVENT_RECORD_SIZE,
    UNKNOWN_SYMBOL,
    CommandType,
    LoginRejectReason,
    RejectReason,
    pack_command,
)
from matching.ring import SpscRing
from matching.sequencer import Sequencer
from persistence.journal import Journal
from protocol.codec import SymbolTable
from protocol.messages import Login, Message, PositionQuery, PositionReport, SessionReject
from protocol.outbound import Outbound
from protocol.session import LoginDecision

if TYPE_CHECKING:
    from persistence.pg_sink import FillSink

log = logging.getLogger("hftgw.engine")

MATCH_SLICE = 256   # commands per MatchingCore.process call


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
        # -- access control and risk (issue 6) --
        self.verifier = TokenVerifier.from_config(cfg)
        self.risk = RiskEngine([symbol_risk(s) for s in cfg.symbols], self.core, cfg.max_sessions,
                               lambda name: account_limits(cfg, name))
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
            self.risk.observe_commands(chunk)
            view = memoryview(chunk)
            for off in range(0, len(view), cap_bytes):
                part = view[off:off + cap_bytes]
                self.inbound.push(part)
                self._match_all()
            stats.commands += len(chunk) // COMMAND_RECORD_SIZE
        self.risk.clear_pending()
        stats.elapsed_s = time.perf_counter() - t0
        return stats

    def _register_session(self, sid: int, account: str) -> None:
        if sid != len(self.account_of_session):
            raise ValueError(f"journal session ids out of order: {sid} after "
                             f"{len(self.account_of_session) - 1}")
        self.account_of_session.append(account)
        self.accounts[account] = sid
        self.risk.bind_session(sid, account)

    # -- sessions ----------------------------------------------------------------------------
    def _refuse(self, peer: str, account: str, reason: int, code: str, role: str = "") -> LoginDecision:
        log.info("login from %s refused: %s%s", peer, code, f" (account {account})" if account else "")
        self.audit.write("login", address=peer, account=account, role=role, outcome="rejected",
                         reason=code)
        return LoginDecision(False, reason=reason)

    def open_sessions(self, account: str) -> int:
        """Logged-in connections of ``account``: its trading session and its drop copies."""
        sid = self.accounts.get(account)
        return (1 if sid is not None and sid in self.writers else 0) + len(self.dropcopy.get(account, ()))

    def login(self, msg: Login, writer: SessionWriter, peer: str = "") -> LoginDecision:
        """Decide a Login from ``peer`` (host:port): rate-limit per address, verify the JWT,
        check the role and the account's session limit, find or create the account's session,
        check the requested sequence number, attach ``writer``.  Every outcome goes to the
        audit log (never the token).  Never raises for bad input."""
        if not self.addresses.login_attempt(peer_host(peer), time.monotonic()):
            return self._refuse(peer, unverified_subject(msg.token), LoginRejectReason.LOGIN_RATE_LIMITED,
                                "rate_limited")
        try:
            ident = self.verifier.verify(msg.token)
        except LoginFailure as exc:
            return self._refuse(peer, unverified_subject(msg.token), exc.reason, exc.code)
        role = ident.role
        if not role:
            return self._refuse(peer, ident.account, LoginRejectReason.LOGIN_NOT_AUTHORIZED,
                                "role_not_allowed", ",".join(sorted(ident.roles)))
        if self.open_sessions(ident.account) >= self.cfg.max_sessions_per_account:
            return self._refuse(peer, ident.account, LoginRejectReason.LOGIN_SESSION_LIMIT,
                                "session_limit", role)
        if role == "dropcopy":
            return self._login_dropcopy(ident, writer, peer)
        sid = self.accounts.get(ident.account)
        if sid is not None and sid in self.writers:
            return self._refuse(peer, ident.account, LoginRejectReason.LOGIN_SESSION_IN_USE,
                                "session_in_use", role)
        if sid is None:
            if len(self.account_of_session) >= self.cfg.max_sessions:
                return self._refuse(peer, ident.account, LoginRejectReason.LOGIN_NOT_AUTHORIZED,
                                    "max_sessions", role)
            sid = len(self.account_of_session)
            # journaled like any command, so a restart assigns the same ids
            self._register_session(sid, ident.account)
            self.inbound_push(pack_command(type=CommandType.CMD_SESSION_OPEN, session_id=sid,
                                           ts=time.time_ns(), symbol_id=UNKNOWN_SYMBOL,
                                           account=ident.account))
            self.pump()
        next_seq = self.outbound.next_seq(sid)
        if msg.next_expected_seq_num > next_seq:
            return self._refuse(peer, ident.account, LoginRejectReason.LOGIN_INVALID_SEQUENCE,
                                "invalid_sequence", role)
        self.writers[sid] = writer
        self.logins[writer] = (role, ident.account, sid)
        self.outbound.set_session(sid, True, True)
        if sid not in self._throttled:
            # configured once per session and account, so that reconnecting does not refill them
            t = self._throttle(role)
            self.risk.set_session_throttle(sid, t.session_rate, t.session_burst)
            self.risk.set_account_throttle(ident.account, t.account_rate, t.account_burst)
            self._throttled.add(sid)
        log.info("session %d (%s) logged in from %s, next seq %d", sid, ident.account, peer, next_seq)
        self.audit.write("login", address=peer, account=ident.account, role=role, outcome="accepted",
                         session_id=sid)
        return LoginDecision(True, session_id=sid, next_seq_num=next_seq,
                             positions=self._positions_answer(ident, role))

    def _throttle(self, role: str) -> ThrottleConfig:
        return self.cfg.throttle.get(role) or ThrottleConfig()

    def _login_dropcopy(self, ident: Identity, writer: SessionWriter, peer: str) -> LoginDecision:
        # read-only: a copy of every business message of the account's trading session
        sid = self.accounts.get(ident.account, 0)
        self.dropcopy.setdefault(ident.account, set()).add(writer)
        self.logins[writer] = ("dropcopy", ident.account, sid)
        if sid:
            self.outbound.set_session(sid, True, True)
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
        # every checked record has been processed: its effect is in the risk state's
        # committed part now
        self.risk.clear_pending()
        self.pumps += 1
        self._flush()
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
        for sid in ob.dirty():
            data = ob.take(sid)
            w = self.writers.get(sid)
            if w is not None:
                w.deliver(data, now)
            if dropcopy:
                for d in list(dropcopy.get(self.account_of_session[sid], ())):
                    d.deliver(data, now)
        if self.sink is not None:
            fills = ob.take_fills()
            if fills:
                self.sink.submit(fills)

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
                self.inbound_push(pack_command(type=CommandType.CMD_MASS_CANCEL, session_id=sid,
                                               symbol_id=UNKNOWN_SYMBOL, depth=1, flags=2,
                                               ts=time.time_ns()))
        self.pump()
        return applied

    # -- introspection for metrics -----------------------------------------------------------
    def account(self, sid: int) -> str:
        return self.account_of_session[sid] if 0 < sid < len(self.account_of_session) else ""

    def sessions_connected(self) -> int:
        return len(self.writers)


def account_lookup(engine: Engine) -> Callable[[int], str]:
    """session id -> account, for the fills sink."""
    return engine.account
