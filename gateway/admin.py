"""Admin API: JSON over HTTP on the side port, for holders of an ``admin`` token.

Every request carries ``Authorization: Bearer <JWT>``, verified like a login token (same
algorithm, key, issuer, audience, leeway) and required to have the ``admin`` role: no or a bad
token -> 401, a valid token without the role -> 403.  The HTTP server runs in its own thread;
every request is handed to the event-loop thread (``asyncio.run_coroutine_threadsafe``, i.e.
``loop.call_soon_threadsafe``) and awaited there, so the engine is only ever touched by its own
thread.  Changes (halt, resume, kill, release, limits) are journaled CMD_ADMIN commands and
logged.  Every request, reads and refusals included, is one line of the audit log (who, from
where, what, outcome): a refused one names the action its path asks for and the account its
token claims.

Routes (all answers are JSON objects; errors are ``{"error": code, "detail": text}``):

=======  ==============================  =======================================================
GET      /admin/stats                    sessions, orders, fills, rejects by reason, rings, sink
GET      /admin/symbols                  every symbol's risk state (halted, band, limits, prices)
POST     /admin/symbols/SYMBOL/halt      halt trading in SYMBOL (new orders and replaces refused)
POST     /admin/symbols/SYMBOL/resume
GET      /admin/accounts/ACCOUNT         blocked, open orders, limits, positions per symbol
POST     /admin/accounts/ACCOUNT/kill    kill switch: cancel all its orders, refuse new ones
POST     /admin/accounts/ACCOUNT/release
POST     /admin/limits                   {"account": A, "symbol": S, "limits": {field: value}}
=======  ==============================  =======================================================

Limit fields (0 = no limit): with ``account`` (and optionally ``symbol`` for the two position
limits): max_order_qty, max_notional (whole currency units), max_open_orders, max_position_net,
max_position_gross (lots); with ``symbol`` only: max_order_qty, max_notional, price_band_ticks,
price_band_pct (percent, 0-100), reference_price (price units, a multiple of the tick).  The
whole request is validated before any change is made.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.config.schema import PRICE_UNITS_PER_CURRENCY
from gateway.risk.pretrade import AdminAction, RiskField
from gateway.security.auth import LoginFailure, check_account, unverified_subject
from matching.records import EventType, RejectReason

if TYPE_CHECKING:
    from gateway.server import Gateway

log = logging.getLogger("hftgw.admin")

MAX_BODY = 64 * 1024
TIMEOUT_S = 5.0


class AdminError(Exception):
    """An answer other than 200: HTTP status, error code, detail; account: who asked, for the
    audit log of a refused token (the ``sub`` it claims, unverified) or role."""

    def __init__(self, status: int, code: str, detail: str, account: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.account = account


class LimitChange(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /admin/limits."""

    limits: dict[str, int | float]
    account: str = ""
    symbol: str = ""


# name -> (RiskField, scale to the engine's unit); notional is given in currency units
_ACCOUNT_LIMITS = {"max_order_qty": (RiskField.MAX_ORDER_QTY, 1),
                   "max_notional": (RiskField.MAX_NOTIONAL, PRICE_UNITS_PER_CURRENCY),
                   "max_open_orders": (RiskField.MAX_OPEN_ORDERS, 1),
                   "max_position_net": (RiskField.MAX_POSITION_NET, 1),
                   "max_position_gross": (RiskField.MAX_POSITION_GROSS, 1)}
_SYMBOL_LIMITS = {"max_order_qty": (RiskField.MAX_ORDER_QTY, 1),
                  "max_notional": (RiskField.MAX_NOTIONAL, PRICE_UNITS_PER_CURRENCY),
                  "price_band_ticks": (RiskField.PRICE_BAND_TICKS, 1),
                  "price_band_pct": (RiskField.PRICE_BAND_PPM, 10_000),
                  "reference_price": (RiskField.REFERENCE_PRICE, 1)}

_STATUS = {200: "200 OK", 400: "400 Bad Request", 401: "401 Unauthorized", 403: "403 Forbidden",
           404: "404 Not Found", 405: "405 Method Not Allowed", 413: "413 Payload Too Large",
           503: "503 Service Unavailable", 504: "504 Gateway Timeout"}


#: path shape after /admin ("*" = a symbol or account name) -> (method, action, handler name)
_ROUTES: dict[tuple[str, ...], tuple[str, str, str]] = {
    ("stats",): ("GET", "stats", "_stats"),
    ("symbols",): ("GET", "symbols", "_symbols"),
    ("symbols", "*", "halt"): ("POST", "halt", "_halt"),
    ("symbols", "*", "resume"): ("POST", "resume", "_halt"),
    ("accounts", "*"): ("GET", "account", "_account"),
    ("accounts", "*", "kill"): ("POST", "kill", "_kill"),
    ("accounts", "*", "release"): ("POST", "release", "_kill"),
    ("limits",): ("POST", "limits", "_limits"),
}


def _shape(parts: list[str]) -> tuple[str, ...]:
    return tuple("*" if i == 1 and len(parts) > 1 and parts[0] in ("symbols", "accounts") else p
                 for i, p in enumerate(parts))


def _action_of(parts: list[str]) -> str:
    """The action a path names whatever the method ("unknown" for no route)."""
    route = _ROUTES.get(_shape(parts))
    return route[1] if route is not None else "unknown"


def _name(enum_cls: type, value: int, prefix: str) -> str:
    try:
        return str(enum_cls(value).name).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


class AdminApi:
    """The WSGI application mounted at /admin of the side port."""

    def __init__(self, gateway: Gateway, loop: asyncio.AbstractEventLoop) -> None:
        self.gw = gateway
        self.engine = gateway.engine
        self.loop = loop
        self.requests: dict[tuple[str, str], int] = {}   # (action, outcome) -> count

    # -- WSGI --------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        peer = str(environ.get("REMOTE_ADDR", "?"))
        parts = [p for p in path.split("/") if p][1:]     # after "admin"
        # named before the token is checked, so that a refused request's line says what it tried
        action, who = _action_of(parts), ""
        try:
            who = self._authorize(environ)
            action, handler = self._route(method, parts)
            body = self._body(environ) if method == "POST" else b""
            status, out = 200, self._on_loop(lambda: handler(parts, body, who, peer))
            outcome = "ok"
        except AdminError as exc:
            status, out, outcome = exc.status, {"error": exc.code, "detail": str(exc)}, exc.code
            who = who or exc.account
        key = (action, outcome)
        self.requests[key] = self.requests.get(key, 0) + 1
        # every request, reads and refusals included: who looked at what is part of the record
        self.engine.audit.write("admin", address=peer, account=who, action=action, method=method,
                                path=path, outcome=outcome, status=status)
        data = json.dumps(out, default=str).encode()
        start_response(_STATUS.get(status, f"{status} Error"),
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def _authorize(self, environ: dict[str, Any]) -> str:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AdminError(401, "unauthorized", "Authorization: Bearer <admin JWT> required")
        try:
            ident = self.engine.verifier.verify(token.strip())
        except LoginFailure as exc:
            raise AdminError(401, "unauthorized", f"token refused: {exc.code}",
                             unverified_subject(token.strip())) from None
        if "admin" not in ident.roles:
            raise AdminError(403, "forbidden", f"the token of {ident.account} has no admin role",
                             ident.account)
        return ident.account

    def _body(self, environ: dict[str, Any]) -> bytes:
        try:
            n = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise AdminError(400, "bad_request", "bad Content-Length") from None
        if n > MAX_BODY:
            raise AdminError(413, "too_large", f"body over {MAX_BODY} bytes")
        return bytes(environ["wsgi.input"].read(n)) if n > 0 else b""

    def _route(self, method: str, parts: list[str]) -> tuple[str, Callable[..., dict[str, Any]]]:
        route = _ROUTES.get(_shape(parts))
        if route is None:
            raise AdminError(404, "not_found", "unknown admin route")
        want, action, handler = route
        if method != want:
            raise AdminError(405, "method_not_allowed", f"{action} takes {want}")
        return action, getattr(self, handler)

    def _on_loop(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        # the engine belongs to the event-loop thread: run there, wait here
        if not self.engine.ready:
            raise AdminError(503, "not_ready", "the gateway is still starting")

        async def run() -> dict[str, Any]:
            return fn()

        fut = asyncio.run_coroutine_threadsafe(run(), self.loop)
        try:
            return fut.result(TIMEOUT_S)
        except TimeoutError:
            fut.cancel()
            raise AdminError(504, "timeout", "the event loop did not answer in time") from None

    # -- handlers (event-loop thread) ----------------------------------------------------------
    def _symbol_id(self, name: str) -> int:
        try:
            return self.engine.symbol_names.index(name)
        except ValueError:
            raise AdminError(404, "unknown_symbol", f"no symbol {name!r}") from None

    def _stats(self, parts: list[str], body: bytes, who: str, peer: str) -> dict[str, Any]:
        # the figures /metrics exports too, from the same read-only stats object
        e, st = self.engine, self.engine.stats
        oc = st.order_counters()
        by_type = st.commands_by_type()
        rc = st.risk_counters()
        rejects: dict[str, int] = {}
        for reason, n in list(oc["rejects"].items()) + list(self.gw.session_counters.rejects.items()):
            key = _name(RejectReason, reason, "REJ_")
            rejects[key] = rejects.get(key, 0) + n
        sink = st.sink
        used, capacity = st.ring_occupancy(), st.ring_capacity()
        return {
            "sessions": {"connected": st.sessions_open, "known": len(e.account_of_session) - 1,
                         "drop_copies": sum(len(v) for v in e.dropcopy.values()),
                         "connections": st.connections_open},
            "orders": {"received": by_type.get(1, 0) + rc["refused_new"],
                       "accepted": oc["events"].get(int(EventType.EVT_ACCEPTED), 0),
                       "resting": st.resting_orders},
            "fills": {"count": oc["fills"], "quantity": oc["traded_qty"]},
            "rejects": dict(sorted(rejects.items())),
            "risk": {"checked": rc["checked"],
                     "throttled_session": rc["throttled_session"],
                     "throttled_account": rc["throttled_account"],
                     "halted": [e.symbol_names[i] for i in e.risk.halted()],
                     "blocked": e.risk.blocked()},
            "rings": {ring: {"used": used[ring], "capacity": capacity[ring]} for ring in used},
            "journal": {"last_seq": st.journal_last_seq,
                        "lag_records": max(0, st.sequence_last - st.journal_last_seq)},
            "sink": ({"enabled": False} if sink is None else
                     {"enabled": True, "connected": sink.connected, "lag_events": sink.lag_events,
                      "last_event_no": sink.last_event_no, "rows_written": sink.rows_written,
                      "order_events_written": sink.order_events_written}),
        }

    def _symbols(self, parts: list[str], body: bytes, who: str, peer: str) -> dict[str, Any]:
        return {"symbols": {name: self.engine.risk.symbol_state(i)
                            for i, name in enumerate(self.engine.symbol_names)}}

    def _halt(self, parts: list[str], body: bytes, who: str, peer: str) -> dict[str, Any]:
        symbol_id = self._symbol_id(parts[1])
        action = AdminAction.HALT if parts[2] == "halt" else AdminAction.RESUME
        self._apply(who, peer, action, symbol_id=symbol_id)
        return {"symbol": parts[1], **self.engine.risk.symbol_state(symbol_id)}

    def _account_name(self, name: str) -> str:
        try:
            check_account(name)
        except ValueError as exc:
            raise AdminError(400, "bad_account", str(exc)) from None
        return name

    def _account(self, parts: list[str], body: bytes, who: str, peer: str) -> dict[str, Any]:
        account = self._account_name(parts[1])
        risk = self.engine.risk
        if not risk.has_account(account):
            raise AdminError(404, "unknown_account", f"no account {account!r} seen")
        return {"account": account, **risk.account_state(account),
                "sessions_open": self.engine.open_sessions(account),
                "positions": {name: risk.position(account, i)
                              for i, name in enumerate(self.engine.symbol_names)}}

    def _kill(self, parts: list[str], body: bytes, who: str, peer: str) -> dict[str, Any]:
        account = self._account_name(parts[1])
        action = AdminAction.BLOCK if parts[2] == "kill" else AdminAction.RELEASE
        before = self.engine.core.order_count()
        self._apply(who, peer, action, account=account)
        return {"account": account, "blocked": action == AdminAction.BLOCK,
                "orders_canceled": before - self.engine.core.order_count()}

    def _limits(self, parts: list[str], body: bytes, who: str, peer: str) -> dict[str, Any]:
        try:
            req = msgspec.json.decode(body, type=LimitChange)
        except msgspec.DecodeError as exc:
            raise AdminError(400, "bad_request", f"body: {exc}") from None
        if not req.limits:
            raise AdminError(400, "bad_request", "no limits given")
        symbol_id = self._symbol_id(req.symbol) if req.symbol else None
        changes: list[tuple[int, dict[str, Any]]] = []
        action: int
        for name, value in req.limits.items():
            if req.account:
                spec = _ACCOUNT_LIMITS.get(name)
                if symbol_id is not None and name not in ("max_position_net", "max_position_gross"):
                    spec = None
                action = AdminAction.SET_ACCOUNT_LIMIT
            else:
                spec = _SYMBOL_LIMITS.get(name) if symbol_id is not None else None
                action = AdminAction.SET_SYMBOL_LIMIT
            if spec is None:
                raise AdminError(400, "bad_limit", f"{name!r} is not a limit of this scope "
                                 "(account, account + symbol, or symbol)")
            field, scale = spec
            if isinstance(value, float) and name != "price_band_pct":
                raise AdminError(400, "bad_limit", f"{name}: an integer")
            scaled = round(value * scale)
            if scaled < 0 or scaled >= 1 << 63 or (name == "price_band_pct" and value > 100):
                raise AdminError(400, "bad_limit", f"{name}: out of range")
            if name == "reference_price" and symbol_id is not None \
                    and scaled % self.engine.cfg.symbols[symbol_id].tick:
                raise AdminError(400, "bad_limit", "reference_price: not a multiple of the tick")
            changes.append((action, {"account": self._account_name(req.account) if req.account else "",
                                     "symbol_id": symbol_id, "field": field, "value": scaled}))
        for action, kw in changes:
            self._apply(who, peer, action, **kw)
        return {"applied": len(changes), "account": req.account, "symbol": req.symbol,
                "limits": req.limits}

    def _apply(self, who: str, peer: str, action: int, **kw: Any) -> None:
        try:
            applied = self.engine.admin(action, **kw)
        except ValueError as exc:
            raise AdminError(400, "refused", str(exc)) from None
        what = {"account": applied["account"] or None,
                "symbol": None if applied["symbol_id"] is None
                else self.engine.symbol_names[applied["symbol_id"]],
                "field": RiskField(applied["field"]).name.lower() if applied["field"] else None,
                "value": applied["value"] if applied["field"] else None}
        log.warning("admin %s from %s: %s %s", who, peer, AdminAction(action).name.lower(),
                    " ".join(f"{k}={v}" for k, v in what.items() if v is not None))
