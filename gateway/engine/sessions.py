"""Trading sessions and drop copies: who is logged in, as which account, and what a login,
a disconnect or a position query does (issue 6, docs/security.md).

Logins are verified here (gateway/security/auth.py), rate-limited per source address and
written to the audit log.  Every attach and detach of a trading session is journaled as a
CMD_SESSION_STATE record (with its cancel-on-disconnect flag), so that a start after a crash
knows who was attached and does what their disconnect would have done.
"""
from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable

from gateway.config.schema import Config, ThrottleConfig
from gateway.engine.pipeline import Pipeline, SessionWriter
from gateway.engine.symbols import SymbolCatalog
from gateway.risk.pretrade import RiskEngine
from gateway.security.access import AccessCounters, AddressLimits, AuditLog, peer_host
from gateway.security.auth import ROLE_TEMPLATES, Identity, LoginFailure, TokenVerifier, unverified_subject
from matching.records import (
    COMMAND_RECORD_SIZE,
    UNKNOWN_SYMBOL,
    CommandType,
    LoginRejectReason,
    RejectReason,
    pack_command,
    unpack_command,
)
from protocol.messages import Login, Message, PositionQuery, PositionReport, SessionReject
from protocol.session import LoginDecision

log = logging.getLogger("hftgw.engine")

# CMD_SESSION_STATE flags (matching/records.pxd)
SESSION_ATTACHED = 1
SESSION_COD = 2
_TYPE_OFFSET = 24     # Command.type


class SessionTable:
    """Session ids, accounts and connections (state only; ``Sessions`` changes it).

    Session ids count from 1 in the order their CMD_SESSION_OPEN records were journaled, so a
    replay rebuilds the same table.  The containers are never replaced (the pipeline reads
    ``writers``, ``dropcopy`` and ``account_of_session`` directly on every pump).
    """

    def __init__(self, risk: RiskEngine) -> None:
        # an account has several trading sessions (a venue's several order-entry ports), told
        # apart by the token's session claim; ``accounts`` keeps its first one (a drop copy's
        # LoginAccepted names it; the kill switch's mass cancel is sent from it)
        self.accounts: dict[str, int] = {}       # account -> its first session id
        self.session_ids: dict[tuple[str, str], int] = {}  # (account, session name) -> id
        self.sessions_of_account: dict[str, list[int]] = {}
        self.session_name_of: list[str] = [""]   # session id -> session name
        self.account_of_session: list[str] = [""]  # session id -> account (index 0 unused)
        # account -> account id (uint32 from 1), stamped on every command for STP and mass
        # cancel by account; journaled in the session-open record, so replay rebuilds it
        self.account_ids: dict[str, int] = {}
        self.account_id_of_session: list[int] = [0]
        self.writers: dict[int, SessionWriter] = {}
        self.dropcopy: dict[str, set[SessionWriter]] = {}   # account -> drop-copy connections
        self.logins: dict[SessionWriter, tuple[str, str, int]] = {}  # writer -> (role, account, sid)
        # session id -> cancel-on-disconnect flag, for every attached trading session, as
        # journaled by CMD_SESSION_STATE (so a restart knows who was attached at a crash)
        self.session_state: dict[int, bool] = {}
        self._risk = risk

    def register(self, sid: int, account: str, account_id: int, name: str = "") -> None:
        """Define session ``sid`` (the next id) of ``account``, named ``name`` ("" = the
        default session).  Raises ValueError for an id out of order (a journal that does not
        fit)."""
        if sid != len(self.account_of_session):
            raise ValueError(f"journal session ids out of order: {sid} after "
                             f"{len(self.account_of_session) - 1}")
        self.account_of_session.append(account)
        self.account_id_of_session.append(account_id)
        self.session_name_of.append(name)
        self.accounts.setdefault(account, sid)
        self.session_ids[(account, name)] = sid
        self.sessions_of_account.setdefault(account, []).append(sid)
        self.account_ids.setdefault(account, account_id)
        self._risk.bind_session(sid, account)

    def account(self, sid: int) -> str:
        """The account of session ``sid`` ("" for an unknown id)."""
        return self.account_of_session[sid] if 0 < sid < len(self.account_of_session) else ""

    def open_sessions(self, account: str) -> int:
        """Logged-in connections of ``account``: its trading sessions and its drop copies."""
        return self.open_trading(account) + len(self.dropcopy.get(account, ()))

    def open_trading(self, account: str) -> int:
        """Trading sessions of ``account`` with a connection."""
        return sum(sid in self.writers for sid in self.sessions_of_account.get(account, ()))

    def observe_session_state(self, chunk: bytes) -> None:
        """Follow the CMD_SESSION_STATE records of journaled command records ``chunk``."""
        # they are rare: find them by their type byte at C speed
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

    def save_session_state(self) -> bytes:
        """The attached sessions (snapshot part "session_state"): (u32 session id, u8 cod)*."""
        return b"".join(struct.pack("<IB", sid, cod) for sid, cod in sorted(self.session_state.items()))

    def load_session_state(self, data: bytes) -> None:
        """Restore what ``save_session_state`` returned.  Raises ValueError for a bad length."""
        if len(data) % 5:
            raise ValueError(f"session_state part of {len(data)} bytes is not n * 5")
        self.session_state.clear()
        self.session_state.update({sid: bool(cod) for sid, cod in struct.iter_unpack("<IB", data)})


class Sessions:
    """Logins (trading and drop copy), position queries, disconnects, cancel on disconnect and
    the session throttles, on the event-loop thread."""

    def __init__(self, cfg: Config, table: SessionTable, pipeline: Pipeline,
                 catalog: SymbolCatalog, risk: RiskEngine) -> None:
        self.cfg = cfg
        self.table = table
        self.pipeline = pipeline
        self.catalog = catalog
        self.risk = risk
        self.verifier = TokenVerifier.from_config(cfg)
        self.access = AccessCounters()
        self.addresses = AddressLimits(cfg.max_connections, cfg.max_connections_per_address,
                                       cfg.login_rate_per_address, cfg.login_burst_per_address,
                                       self.access)
        self.audit = AuditLog(cfg.audit_log or os.path.join(cfg.journal_dir, "audit.log"))
        self._throttled: set[int] = set()      # session ids whose buckets are configured

    # -- login -------------------------------------------------------------------------------
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
        admitted = self._admit(msg, peer)
        if isinstance(admitted, LoginDecision):
            return admitted
        if admitted.role == "dropcopy":
            return self._login_dropcopy(admitted, writer, peer, sofh)
        return self._login_trading(admitted, msg, writer, peer, sofh)

    def _admit(self, msg: Login, peer: str) -> Identity | LoginDecision:
        # the checks every role passes: address rate, token, role, the account's session limit
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
        # trading sessions and drop copies are counted apart: a firm's read-only copies never
        # take one of its order-entry ports
        if role == "dropcopy":
            key, limit = "max_dropcopy_per_account", self.cfg.max_dropcopy_per_account
            open_now = len(self.table.dropcopy.get(ident.account, ()))
        else:
            key, limit = "max_sessions_per_account", self.cfg.max_sessions_per_account
            open_now = self.table.open_trading(ident.account)
        if open_now >= limit:
            return self._refuse(LoginRejectReason.LOGIN_SESSION_LIMIT, peer, ident.account,
                                f"{key} ({limit}) reached", "session_limit", role)
        return ident

    def _login_trading(self, ident: Identity, msg: Login, writer: SessionWriter, peer: str,
                       sofh: bool) -> LoginDecision:
        role = ident.role
        t = self.table
        sid = t.session_ids.get((ident.account, ident.session))
        if sid is not None and sid in t.writers:
            return self._refuse(LoginRejectReason.LOGIN_SESSION_IN_USE, peer, ident.account,
                                "the session is logged in on another connection",
                                "session_in_use", role)
        if sid is None:
            opened = self._open_session(ident.account, ident.session, peer, role)
            if isinstance(opened, LoginDecision):
                return opened
            sid = opened
        want = msg.next_expected_seq_num
        if want and len(self.pipeline.inbound):
            # the store must hold every message up to next - 1 before the replay reads it
            self.pipeline.pump()
        next_seq = self.pipeline.outbound.next_seq(sid)
        if want > next_seq:
            return self._refuse(LoginRejectReason.LOGIN_INVALID_SEQUENCE, peer, ident.account,
                                f"asked for seq {want}, next is {next_seq}",
                                "invalid_sequence", role)
        # SoupBinTCP: 0 = the live stream only; N <= next = replay N .. next-1 first
        replay_from = want if 0 < want < next_seq else 0
        t.writers[sid] = writer
        t.logins[writer] = (role, ident.account, sid)
        self.pipeline.outbound.set_session(sid, True, sofh)
        self.session_state_record(sid, True, bool(msg.cancel_on_disconnect))
        self.pipeline.request_pump()
        if sid not in self._throttled:
            # configured once per session and account, so that reconnecting does not refill them
            th = self._throttle(role)
            self.risk.set_session_throttle(sid, th.session_rate, th.session_burst)
            if not any(s in self._throttled for s in t.sessions_of_account[ident.account]):
                # the account's bucket is shared by its sessions: a second one does not refill it
                self.risk.set_account_throttle(ident.account, th.account_rate, th.account_burst)
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
                             account_id=t.account_id_of_session[sid],
                             role="admin" if "admin" in ident.roles else role,
                             allowed=None if role == "trader" else ROLE_TEMPLATES[role],
                             positions=self._positions_answer(ident, role)
                             if role == "trader" else None)

    def _open_session(self, account: str, name: str, peer: str, role: str) -> int | LoginDecision:
        # the session's first login: a new session id, journaled like any command, so a
        # restart assigns the same ids
        t = self.table
        if len(t.account_of_session) >= self.cfg.max_sessions:
            return self._refuse(LoginRejectReason.LOGIN_NOT_AUTHORIZED, peer, account,
                                f"max_sessions ({self.cfg.max_sessions}) reached", "max_sessions",
                                role)
        sid = len(t.account_of_session)
        account_id = t.account_ids.get(account, len(t.account_ids) + 1)
        t.register(sid, account, account_id, name)
        self.pipeline.inbound_push(pack_command(type=CommandType.CMD_SESSION_OPEN, session_id=sid,
                                                ts=time.time_ns(), symbol_id=UNKNOWN_SYMBOL,
                                                account=account, account_id=account_id,
                                                session_name=name))
        self.pipeline.pump()
        return sid

    def _throttle(self, role: str) -> ThrottleConfig:
        return self.cfg.throttle.get(role) or ThrottleConfig()

    def _login_dropcopy(self, ident: Identity, writer: SessionWriter, peer: str,
                        sofh: bool) -> LoginDecision:
        # read-only: a copy of every business message of the account's trading sessions, in
        # each trading session's framing while it is connected (see docs/security.md)
        t = self.table
        sid = t.accounts.get(ident.account, 0)
        t.dropcopy.setdefault(ident.account, set()).add(writer)
        t.logins[writer] = ("dropcopy", ident.account, sid)
        for s in t.sessions_of_account.get(ident.account, ()):
            if s not in t.writers:
                self.pipeline.outbound.set_session(s, True, sofh)
        next_seq = self.pipeline.outbound.next_seq(sid) if sid else 1
        log.info("drop copy of %s (session %d) logged in from %s", ident.account, sid, peer)
        self.audit.write("login", address=peer, account=ident.account, role="dropcopy",
                         outcome="accepted", session_id=sid)
        return LoginDecision(True, session_id=sid, next_seq_num=next_seq,
                             allowed=ROLE_TEMPLATES["dropcopy"],
                             positions=self._positions_answer(ident, "dropcopy"))

    def _refuse(self, reason: int, peer: str, account: str, detail: str, code: str,
                role: str = "") -> LoginDecision:
        name = LoginRejectReason(reason).name.removeprefix("LOGIN_").lower()
        log.info("login from %s%s refused (%s): %s", peer, f" ({account})" if account else "", name,
                 detail, extra={"event": "session.login_refused", "peer": peer, "account": account,
                                "reason": name, "detail": detail})
        self.audit.write("login", address=peer, account=account, role=role, outcome="rejected",
                         reason=code)
        return LoginDecision(False, reason=reason)

    # -- position queries --------------------------------------------------------------------
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
                symbol_id = self.catalog.table.lookup(q.symbol)
                if symbol_id == UNKNOWN_SYMBOL:
                    return [SessionReject(reason=RejectReason.REJ_UNKNOWN_SYMBOL,
                                          ref_template_id=PositionQuery.TEMPLATE_ID)]
                ids = [symbol_id]
            else:
                ids = list(range(len(self.catalog.names)))
            # everything decoded before the query is matched and its messages written first, so
            # the report agrees with the Executions the client has already been sent
            self.pipeline.pump()
            return self.position_reports(account, ids, q.request_id)

        return answer

    def position_reports(self, account: str, symbol_ids: list[int], request_id: int) -> list[Message]:
        """PositionReport messages of ``account`` for ``symbol_ids`` (zeros for an account that
        never traded)."""
        self.risk.account_index(account)
        out: list[Message] = []
        names = self.catalog.names
        for i, symbol_id in enumerate(symbol_ids, start=1):
            p = self.risk.position(account, symbol_id)
            out.append(PositionReport(
                request_id=request_id, symbol=names[symbol_id], net_position=p["net"],
                avg_price=p["avg_price"], realized_pnl=p["realized_pnl"], open_buy_qty=p["open_buy"],
                open_sell_qty=p["open_sell"], bought_qty=p["bought"], sold_qty=p["sold"],
                report_index=i, report_count=len(symbol_ids)))
        return out

    # -- disconnects -------------------------------------------------------------------------
    def disconnect(self, writer: SessionWriter, cancel_on_disconnect: bool) -> None:
        """A logged-in connection is gone (any role)."""
        t = self.table
        info = t.logins.pop(writer, None)
        if info is None:
            return
        role, account, sid = info
        if role != "dropcopy":
            self.detach(sid, cancel_on_disconnect)
            return
        dcs = t.dropcopy.get(account)
        if dcs is not None:
            dcs.discard(writer)
            if not dcs:
                del t.dropcopy[account]
        if account not in t.dropcopy:
            for s in t.sessions_of_account.get(account, ()):
                if s not in t.writers:
                    self.pipeline.outbound.set_session(s, False, True)

    def detach(self, sid: int, cancel_on_disconnect: bool) -> None:
        """The session's connection is gone: stop buffering its messages (unless a drop copy
        still reads them); with cancel-on-disconnect, cancel its resting orders (a journaled
        mass cancel)."""
        t = self.table
        w = t.writers.pop(sid, None)
        if w is None:
            return
        t.logins.pop(w, None)
        if t.account(sid) not in t.dropcopy:
            self.pipeline.outbound.set_session(sid, False, True)
        if cancel_on_disconnect:
            self._cod_mass_cancel(sid)
        self.session_state_record(sid, False, False)
        self.pipeline.request_pump()

    def session_state_record(self, sid: int, attached: bool, cod: bool) -> None:
        """Journal (queue) the CMD_SESSION_STATE record of an attach (with its
        cancel-on-disconnect flag ``cod``) or a detach of session ``sid``."""
        flags = (SESSION_ATTACHED | (SESSION_COD if cod else 0)) if attached else 0
        state = self.table.session_state
        if attached:
            state[sid] = cod
        else:
            state.pop(sid, None)
        self.pipeline.inbound_push(pack_command(type=CommandType.CMD_SESSION_STATE, session_id=sid,
                                                symbol_id=UNKNOWN_SYMBOL, flags=flags,
                                                account_id=self.table.account_id_of_session[sid],
                                                ts=time.time_ns()))

    def _cod_mass_cancel(self, sid: int) -> None:
        self.pipeline.inbound_push(pack_command(type=CommandType.CMD_MASS_CANCEL, session_id=sid,
                                                symbol_id=UNKNOWN_SYMBOL, depth=1, flags=1,
                                                account_id=self.table.account_id_of_session[sid],
                                                ts=time.time_ns()))

    def detach_crashed_sessions(self) -> int:
        """Sessions still attached at the end of the journal lost their connection in a crash:
        do now what a disconnect would have done, journaled (the mass cancel of those with
        cancel-on-disconnect, then the detach record).  Returns how many were canceled."""
        n = 0
        state = self.table.session_state
        for sid, cod in sorted(state.items()):
            if cod:
                self._cod_mass_cancel(sid)
                n += 1
            self.session_state_record(sid, False, False)
        if state or len(self.pipeline.inbound):
            self.pipeline.pump()
        if n:
            log.info("canceled the orders of %d cancel-on-disconnect session(s) attached at the "
                     "crash", n, extra={"event": "recovery.cancel_on_disconnect", "sessions": n})
        return n

    # -- config reloads ----------------------------------------------------------------------
    def apply_throttles(self, throttle: dict[str, ThrottleConfig]) -> int:
        """A config reload: the token buckets of the logged-in sessions and their accounts
        become the new ones of their role (full buckets); sessions not connected get theirs at
        their next login.  Returns how many sessions were updated."""
        n = 0
        logins = self.table.logins
        for role, account, sid in list(logins.values()):
            if role == "dropcopy":
                continue
            t = throttle.get(role) or ThrottleConfig()
            self.risk.set_session_throttle(sid, t.session_rate, t.session_burst)
            self.risk.set_account_throttle(account, t.account_rate, t.account_burst)
            n += 1
        connected = {sid for role, _, sid in logins.values() if role != "dropcopy"}
        self._throttled &= connected
        return n
