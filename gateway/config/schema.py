"""Gateway configuration: typed, validated with msgspec, from TOML and ``HFTGW_*`` variables.

Precedence: embedded defaults < the TOML file < the environment.  Every key can be set from the
environment as ``HFTGW_<KEY>`` (upper case), e.g. ``HFTGW_LISTEN``, ``HFTGW_WS_LISTEN``,
``HFTGW_PG_DSN``; list and table values (``symbols``, ``throttle``, ``risk``) take JSON there.
Unknown keys are errors (``forbid_unknown_fields``), and every error names the key path
(``symbols[1].tick``), where the value came from (the file or the variable) and the reason.

Each key's documentation lives in its ``msgspec.Meta(description=...)``: ``hftgw config
reference`` renders the key table of docs/configuration.md from it.
``Meta(extra={"live": True})`` marks a key that a SIGHUP reload applies to the running gateway
(gateway/config/reload.py); ``{"secret": True}`` one that ``hftgw config show`` masks.
"""
from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

ENV_PREFIX = "HFTGW_"
PRICE_UNITS_PER_CURRENCY = 10_000   # prices are integers in 1e-4 currency units
DEV_JWT_SECRET = "hftgw-development-secret-change-me-now"
MASK = "********"


class ConfigError(ValueError):
    """The configuration is invalid.  ``errors``: one line per problem, each starting with the
    key path (and its source); ``str()`` joins them with newlines."""

    def __init__(self, errors: str | list[str]) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


def _live(description: str, **constraints: Any) -> Meta:
    return Meta(description=description, extra={"live": True}, **constraints)


class SymbolConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One tradable symbol of this partition."""

    name: Annotated[str, Meta(pattern=r"^[!-~]{1,8}$", description=(
        "1 to 8 printable ASCII characters without spaces (the wire's char[8])"))]
    tick: Annotated[int, Meta(gt=0, description=(
        "minimum price increment in price units of 1e-4 currency (100 = $0.01)"))] = 100
    max_qty: Annotated[int, Meta(gt=0, le=(1 << 32) - 1, description=(
        "largest order quantity, lots (the matching core holds 32-bit quantities)"))] = 10_000_000
    # -- pre-trade risk of the symbol (gateway/risk/pretrade.pyx; 0 = no limit) --
    max_order_qty: Annotated[int, Meta(ge=0, description=(
        "pre-trade risk: largest order quantity, lots (MAX_ORDER_QTY); 0 = no limit"))] = 0
    max_notional: Annotated[int, Meta(ge=0, description=(
        "pre-trade risk: largest price x quantity, whole currency units (MAX_NOTIONAL); "
        "0 = no limit"))] = 0
    reference_price: Annotated[int, Meta(ge=0, description=(
        "price units; the centre of the price band until the first trade; 0 = none"))] = 0
    price_band_ticks: Annotated[int, Meta(ge=0, description=(
        "a limit price more ticks than this from the reference is PRICE_BAND; 0 = none"))] = 0
    price_band_pct: Annotated[float, Meta(ge=0, le=100, description=(
        "a limit price more percent than this from the reference is PRICE_BAND (the narrower "
        "band applies when both are set); 0 = none"))] = 0.0


class PositionLimits(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """One account's position limits in one symbol, lots (None = the account's value)."""

    max_position_net: Annotated[int | None, Meta(description="lots, worst case")] = None
    max_position_gross: Annotated[int | None, Meta(description="lots, worst case")] = None


class AccountLimits(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """Pre-trade risk limits of an account (None = the [risk] default; 0 = no limit).

    max_order_qty: lots; max_notional: whole currency units; max_open_orders: live orders;
    max_position_net / max_position_gross: lots per symbol, worst case (open orders count as
    filled; gross = |net| + open buys + open sells); symbols: per-symbol position limits, by
    symbol name.
    """

    max_order_qty: int | None = None
    max_notional: int | None = None
    max_open_orders: int | None = None
    max_position_net: int | None = None
    max_position_gross: int | None = None
    symbols: dict[str, PositionLimits] = msgspec.field(default_factory=dict)


class RiskConfig(AccountLimits, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """``[risk]``: the limits of every account, and ``[risk.accounts.NAME]`` overrides."""

    accounts: dict[str, AccountLimits] = msgspec.field(default_factory=dict)


class ThrottleConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Token buckets of one role: requests per second and burst, per session and per account
    (shared by the account's sessions); 0 = off.  Counted: NewOrder, ReplaceOrder, BookQuery,
    PositionQuery; cancels never are."""

    session_rate: float = 0.0
    session_burst: float = 0.0
    account_rate: float = 0.0
    account_burst: float = 0.0


JWT_ALGORITHMS = ("HS256", "RS256", "ES256")


DEFAULT_SYMBOLS = [SymbolConfig(n) for n in ("AAPL", "AMZN", "GOOG", "INTC", "MSFT")]


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole gateway configuration (configs/hftgw.toml is the documented default)."""

    listen: Annotated[str, Meta(description=(
        "order entry, host:port (TCP, SBE messages in SOFH frames)"))] = "127.0.0.1:7001"
    metrics_listen: Annotated[str, Meta(description=(
        "side port, host:port: /metrics, /health, /ready, /directory"))] = "127.0.0.1:9090"
    journal_dir: Annotated[str, Meta(description=(
        "directory of the command journal, replayed on start (a persistent volume in "
        "production)"))] = "./var"
    message_store_dir: Annotated[str, Meta(description=(
        "directory of the message store (every session's sequenced messages, replayed on "
        "re-login; kept in full); empty = journal_dir"))] = ""
    durability: Annotated[Literal["os", "fsync"], Meta(description=(
        "`os`: acknowledge once the journal write returned (survives a process crash); "
        "`fsync`: after fdatasync of each group (survives power loss)"))] = "os"
    journal_segment_bytes: Annotated[int, Meta(ge=4096, description=(
        "the journal's active segment file is closed and a new one started once it reaches "
        "this size in bytes; whole old segments are removed once no snapshot needs them"))] = 268435456
    snapshot_dir: Annotated[str, Meta(description=(
        "directory of the engine snapshots (start = newest good snapshot + the journal after "
        "it); empty = journal_dir"))] = ""
    snapshot_interval_commands: Annotated[int, Meta(ge=0, description=(
        "a snapshot is written in the background every this many sequenced commands (and on "
        "clean shutdown); 0 = only on shutdown"))] = 1_000_000
    snapshot_keep: Annotated[int, Meta(ge=1, description=(
        "snapshot files kept; journal segments are removed only behind the oldest kept one, so "
        "a start can fall back to it when the newest is damaged"))] = 2
    pg_dsn: Annotated[str, Meta(description=(
        "PostgreSQL DSN of the sink of fills and order events; empty = sink and event log off"),
        extra={"secret": True})] = ""
    event_log_dir: Annotated[str, Meta(description=(
        "directory of the event log (numbered order events and fills the PostgreSQL sink reads; "
        "written only when pg_dsn is set); empty = journal_dir"))] = ""
    event_log_segment_bytes: Annotated[int, Meta(ge=4096, description=(
        "size at which an event-log segment file is closed; segments whose events are all "
        "in PostgreSQL are deleted, bytes"))] = 64 * 2**20
    partition: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,63}$", description=(
        "name of this symbol partition (fills rows and the sink checkpoint are keyed by it; "
        "the directory lists it)"))] = "p0"
    advertise_host: Annotated[str, Meta(description=(
        "host name clients use to reach this process, published in the directory; empty = "
        "the host of `listen`"))] = ""
    directory_file: Annotated[str, _live(
        "JSON directory of every partition (symbol -> endpoints), served on /directory with "
        "this partition's entry kept live; empty = this partition only")] = ""
    jwt_secret: Annotated[str, Meta(min_length=32, description=(
        "HS256 secret of login tokens, at least 32 characters (RFC 7518 §3.2); `hftgw token` "
        "mints tokens with it; change it outside development"), extra={"secret": True})] = DEV_JWT_SECRET
    # -- access control (issue 6; docs/security.md) --
    jwt_algorithm: Annotated[Literal["HS256", "RS256", "ES256"], Meta(description=(
        "JWT signature algorithm, the only one accepted: HS256 with `jwt_secret`, or RS256 / "
        "ES256 with `jwt_public_key_file`"))] = "HS256"
    jwt_public_key_file: Annotated[str, Meta(description=(
        "PEM public key of the token issuer, required for RS256 / ES256"))] = ""
    jwt_issuer: Annotated[str, Meta(description=(
        "when set, tokens must carry this `iss`"))] = ""
    jwt_audience: Annotated[str, Meta(description=(
        "when set, tokens must carry this `aud`"))] = ""
    jwt_leeway_s: Annotated[float, Meta(ge=0, description=(
        "clock skew allowed on `exp` / `nbf` / `iat`, s"))] = 30.0
    jwt_roles_claim: Annotated[str, Meta(description=(
        "claim with the role or list of roles (`role` is read too); trader, dropcopy, md, "
        "admin"))] = "roles"
    audit_log: Annotated[str, Meta(description=(
        "JSON-lines audit log of logins and admin actions; empty = <journal_dir>/audit.log"))] = ""
    max_connections: Annotated[int, Meta(ge=1, description=(
        "open order-entry connections at once (TCP and WebSocket)"))] = 10_000
    max_connections_per_address: Annotated[int, Meta(ge=1, description=(
        "open order-entry connections from one IP address"))] = 256
    max_sessions_per_account: Annotated[int, Meta(ge=1, description=(
        "logged-in trading sessions of one account (its order-entry ports, told apart by the "
        "token's `session` claim; drop copies not counted)"))] = 4
    max_dropcopy_per_account: Annotated[int, Meta(ge=1, description=(
        "logged-in drop-copy connections of one account (counted apart from its trading "
        "sessions)"))] = 4
    login_rate_per_address: Annotated[float, Meta(ge=0, description=(
        "login attempts per second from one IP address (token bucket)"))] = 5.0
    login_burst_per_address: Annotated[float, Meta(ge=0, description=(
        "burst of login attempts from one IP address"))] = 20.0
    login_timeout_ms: Annotated[int, Meta(ge=1, description=(
        "a connection that has not logged in by then is logged out (LOGIN_TIMEOUT)"))] = 5000
    max_role_violations: Annotated[int, Meta(ge=1, description=(
        "messages refused as NOT_AUTHORIZED / NOT_LOGGED_IN before the session is logged out "
        "(POLICY_VIOLATION)"))] = 3
    write_buffer_high: Annotated[int, Meta(ge=1, description=(
        "unread bytes to one client above which the server stops reading from it"))] = 1 << 20
    slow_consumer_timeout_ms: Annotated[int, Meta(ge=1, description=(
        "reading paused this long for unread output: disconnected as a slow consumer"))] = 5000
    pre_trade_risk: Annotated[bool, Meta(description=(
        "false turns the whole risk layer off (throttles, checks, halts, kill switch, "
        "positions): for simulators and benchmarks only"))] = True
    throttle: Annotated[dict[str, ThrottleConfig], _live(
        "token buckets by role, `[throttle.ROLE]` tables (`session_rate`, `session_burst`, "
        "`account_rate`, `account_burst`; 0 = off); a reload applies to sessions that log in "
        "afterwards")] = msgspec.field(default_factory=dict)
    risk: Annotated[RiskConfig, _live(
        "pre-trade risk limits of every account and `[risk.accounts.NAME]` overrides "
        "(`max_order_qty`, `max_notional`, `max_open_orders`, `max_position_net`, "
        "`max_position_gross`, `symbols.SYMBOL`); a reload applies to accounts seen "
        "afterwards")] = msgspec.field(default_factory=RiskConfig)
    heartbeat_interval_ms: Annotated[int, Meta(ge=100, description=(
        "server heartbeat after this many ms without other traffic; a client may ask for its "
        "own interval at login"))] = 1000
    heartbeat_timeout_factor: Annotated[float, Meta(ge=1.5, description=(
        "a peer silent for this many of its intervals is logged out"))] = 3.0
    max_heartbeat_interval_ms: Annotated[int, Meta(ge=100, description=(
        "the longest heartbeat interval a client may ask for, ms"))] = 60_000
    # 8 Ki slots (512 KiB + 1 MiB) stay in L2 as the core wraps them; with 64 Ki every event
    # record was a store miss and each pump a bigger batch (bench/e2e_bench.py, 1 M requests,
    # alternated: 3.09-3.16 M requests/s against 1.26-1.30 M)
    ring_capacity: Annotated[int, Meta(ge=1024, le=1 << 24, description=(
        "slots in each of the inbound (64 B) and events (128 B) rings, a power of two"))] = 1 << 13
    max_sessions: Annotated[int, Meta(ge=1, le=1 << 20, description=(
        "most sessions (accounts) ever, journal included"))] = 4096
    max_write_buffer: Annotated[int, Meta(ge=65536, description=(
        "bytes queued to one client before it is disconnected as too slow"))] = 16 << 20
    drain_timeout_s: Annotated[float, Meta(ge=0, le=600, description=(
        "on SIGTERM/SIGINT, the bound of the whole graceful shutdown (final pump, Logouts, "
        "snapshot, journal fsync, PostgreSQL sink commit), s "
        "(Kubernetes: keep terminationGracePeriodSeconds above preStop + this + 5)"))] = 10.0
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], _live(
        "root log level")] = "INFO"
    log_format: Annotated[Literal["auto", "json", "text"], _live(
        "`json`: one JSON object per line; `text`: for people; `auto`: text on a terminal, "
        "JSON otherwise")] = "auto"
    log_event_burst: Annotated[int, _live(
        "per kind of session event (login, logout, refusal...), lines logged per "
        "`log_summary_interval_s` before the rest are only counted in the summary", ge=1)] = 100
    log_summary_interval_s: Annotated[float, _live(
        "seconds between reject summary lines (rejects by reason since the last line) and "
        "the rate-limit window of session event lines", gt=0, le=3600)] = 10.0
    ws_listen: Annotated[str, Meta(description=(
        "WebSocket port, host:port: market data for price subscribers on /md, order entry on "
        "/orders (SBE messages without SOFH); empty = off"))] = "127.0.0.1:7002"
    md_require_token: Annotated[bool, Meta(description=(
        "market data needs a JWT of role `md` (or `admin`), as ?token= or a Bearer header"))] = False
    md_max_subscriptions: Annotated[int, Meta(ge=1, le=100_000, description=(
        "subscriptions per market-data connection, one per (channel, symbol)"))] = 100
    md_max_control_per_s: Annotated[int, Meta(ge=1, description=(
        "control messages per market-data connection per second; more closes it"))] = 20
    md_conflate_bytes: Annotated[int, Meta(gt=0, description=(
        "unsent bytes to a subscriber above which its BBO and depth are conflated (latest "
        "state wins; trades never)"))] = 256 << 10
    md_max_buffer_bytes: Annotated[int, Meta(gt=0, description=(
        "unsent bytes to a subscriber above which it is closed (1008 slow consumer)"))] = 4 << 20
    md_max_connections: Annotated[int, Meta(ge=1, description=(
        "market-data connections at once"))] = 16384
    md_socket_sndbuf: Annotated[int, Meta(ge=0, description=(
        "kernel send buffer per subscriber (SO_SNDBUF), bytes; 0 = OS default"))] = 256 << 10
    md_slice_us: Annotated[int, Meta(ge=1, le=1_000_000, description=(
        "event-loop time one market-data fan-out slice may take, µs (bounds the order path's "
        "wait)"))] = 1000
    ws_ping_interval_s: Annotated[float, Meta(ge=0, description=(
        "WebSocket keepalive ping interval, s; 0 = none"))] = 20.0
    ws_ping_timeout_s: Annotated[float, Meta(gt=0, description=(
        "how long a WebSocket pong may take, s"))] = 20.0
    symbols: Annotated[list[SymbolConfig], _live(
        "this partition's symbols, `[[symbols]]` tables (`name`, `tick`, `max_qty`); ids are "
        "journaled, so order does not matter and symbols are never removed, only added or "
        "redefined")] = msgspec.field(default_factory=lambda: list(DEFAULT_SYMBOLS))

    def __post_init__(self) -> None:
        problems: list[str] = []
        for key in ("listen", "metrics_listen"):
            try:
                parse_hostport(getattr(self, key), key)
            except ConfigError as exc:
                problems.append(str(exc))
        if self.ws_listen:
            try:
                parse_hostport(self.ws_listen, "ws_listen")
            except ConfigError as exc:
                problems.append(str(exc))
        if self.md_conflate_bytes >= self.md_max_buffer_bytes:
            problems.append("md_conflate_bytes: must be below md_max_buffer_bytes "
                            f"({self.md_conflate_bytes} >= {self.md_max_buffer_bytes})")
        if not self.symbols:
            problems.append("symbols: at least one symbol is required")
        seen: set[str] = set()
        for i, s in enumerate(self.symbols):
            if s.name in seen:
                problems.append(f"symbols[{i}].name: duplicate symbol {s.name!r}")
            seen.add(s.name)
            if s.reference_price % s.tick:
                problems.append(f"symbols[{i}].reference_price: not a multiple of the tick {s.tick}")
        problems.extend(self._access_problems(seen))
        if self.ring_capacity & (self.ring_capacity - 1):
            problems.append(f"ring_capacity: must be a power of two, got {self.ring_capacity}")
        if self.heartbeat_interval_ms > self.max_heartbeat_interval_ms:
            problems.append("heartbeat_interval_ms: must not exceed max_heartbeat_interval_ms "
                            f"({self.heartbeat_interval_ms} > {self.max_heartbeat_interval_ms})")
        if problems:
            # one ValueError per struct: msgspec adds the position, _format_error splits it again
            raise ValueError("\n".join(problems))

    def _access_problems(self, names: set[str]) -> list[str]:
        problems = []
        if self.jwt_algorithm != "HS256":
            if not self.jwt_public_key_file:
                problems.append(f"jwt_public_key_file: required with jwt_algorithm {self.jwt_algorithm}")
            elif not os.path.isfile(self.jwt_public_key_file):
                problems.append(f"jwt_public_key_file: no such file {self.jwt_public_key_file!r}")
        if self.write_buffer_high > self.max_write_buffer:
            problems.append("write_buffer_high: must not exceed max_write_buffer "
                            f"({self.write_buffer_high} > {self.max_write_buffer})")
        for role, t in self.throttle.items():
            if role not in ("trader", "dropcopy", "md", "admin"):
                problems.append(f"throttle.{role}: unknown role (trader, dropcopy, md, admin)")
            if min(t.session_rate, t.session_burst, t.account_rate, t.account_burst) < 0:
                problems.append(f"throttle.{role}: rates and bursts must be >= 0")
        for where, lim in [("risk", self.risk)] + [(f"risk.accounts.{a}", v)
                                                  for a, v in self.risk.accounts.items()]:
            problems.extend(_limit_problems(where, lim, names))
        return problems


# -- helpers -------------------------------------------------------------------------------------
def _limit_problems(where: str, lim: AccountLimits, names: set[str]) -> list[str]:
    problems = []
    for f in ("max_order_qty", "max_notional", "max_open_orders", "max_position_net",
              "max_position_gross"):
        v = getattr(lim, f)
        if v is not None and v < 0:
            problems.append(f"{where}.{f}: must be >= 0 (0 = no limit)")
    for sym, pl in lim.symbols.items():
        if sym not in names:
            problems.append(f"{where}.symbols.{sym}: not a configured symbol")
        for f in ("max_position_net", "max_position_gross"):
            v = getattr(pl, f)
            if v is not None and v < 0:
                problems.append(f"{where}.symbols.{sym}.{f}: must be >= 0")
    return problems


def account_limits(cfg: Config, account: str) -> dict[str, object]:
    """The effective limits of ``account`` for gateway.risk.RiskEngine: the [risk] defaults
    overridden by [risk.accounts.ACCOUNT]; max_notional converted to price units x lots;
    ``symbols`` keyed by symbol name (ids are the journal's, not the config order)."""
    base, over = cfg.risk, cfg.risk.accounts.get(account)
    out: dict[str, object] = {}
    for f in ("max_order_qty", "max_notional", "max_open_orders", "max_position_net",
              "max_position_gross"):
        v = getattr(over, f) if over is not None and getattr(over, f) is not None else getattr(base, f)
        out[f] = (v or 0) * (PRICE_UNITS_PER_CURRENCY if f == "max_notional" else 1)
    per: dict[str, dict[str, int]] = {}
    for table in (base.symbols, over.symbols if over is not None else {}):
        for sym, pl in table.items():
            d = per.setdefault(sym, {})
            for f in ("max_position_net", "max_position_gross"):
                if getattr(pl, f) is not None:
                    d[f] = getattr(pl, f)
    out["symbols"] = per
    return out


def symbol_risk(s: SymbolConfig) -> dict[str, int]:
    """A symbol's risk settings for gateway.risk.RiskEngine (notional in price units x lots,
    band in millionths of the reference)."""
    return {"tick": s.tick, "reference_price": s.reference_price, "band_ticks": s.price_band_ticks,
            "band_ppm": round(s.price_band_pct * 10_000), "max_order_qty": s.max_order_qty,
            "max_notional": s.max_notional * PRICE_UNITS_PER_CURRENCY}


def parse_hostport(value: str, key: str = "address") -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too).  Raises ConfigError naming ``key``."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise ConfigError(f"{key}: expected host:port, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mask_dsn(dsn: str) -> str:
    """A PostgreSQL DSN with its password replaced by ``********`` (URL and key=value forms)."""
    dsn = re.sub(r"(://[^:/@]*:)[^@]*@", rf"\g<1>{MASK}@", dsn)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", rf"\g<1>{MASK}", dsn)


def warnings_for(cfg: Config) -> list[str]:
    """Valid but risky settings, logged at start and printed by ``hftgw config check``."""
    out = []
    host, _ = parse_hostport(cfg.listen, "listen")
    if cfg.jwt_secret == DEV_JWT_SECRET and not is_loopback(host):
        out.append("jwt_secret: the published development secret while order entry listens on "
                   f"{cfg.listen}; anyone can mint tokens (set HFTGW_JWT_SECRET)")
    return out


def changed_keys(old: Config, new: Config) -> list[str]:
    """Top-level keys whose values differ, in declaration order."""
    return [f for f in old.__struct_fields__ if getattr(old, f) != getattr(new, f)]
