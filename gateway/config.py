"""Gateway configuration: typed, validated with msgspec, from TOML and ``HFTGW_*`` variables.

Every key can be set from the environment as ``HFTGW_<KEY>`` (upper case), e.g. ``HFTGW_LISTEN``,
``HFTGW_METRICS_LISTEN``, ``HFTGW_JOURNAL_DIR``, ``HFTGW_PG_DSN``, ``HFTGW_JWT_SECRET``; list and
table values (``symbols``, ``throttle``, ``risk``) take JSON there.  The environment wins over the
file, the file over the embedded defaults.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Literal

import msgspec

ENV_PREFIX = "HFTGW_"
PRICE_UNITS_PER_CURRENCY = 10_000   # prices are integers in 1e-4 currency units
JSON_ENV_KEYS = ("symbols", "throttle", "risk")
DEV_JWT_SECRET = "hftgw-development-secret-change-me-now"


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range; the message names the key."""


class SymbolConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One tradable symbol.

    name: up to 8 ASCII characters; tick: minimum price increment in price units (1e-4 currency,
    so 100 = $0.01); max_qty: largest order quantity in lots (a protocol limit: INVALID_QUANTITY).

    Pre-trade risk (gateway/risk.pyx; 0 = no limit): max_order_qty (lots, MAX_ORDER_QTY);
    max_notional (whole currency units of price x quantity, MAX_NOTIONAL); reference_price (price
    units, the centre of the price band until the first trade); price_band_ticks and
    price_band_pct (a limit price further than this from the reference is PRICE_BAND; when both
    are set the narrower applies).
    """

    name: str
    tick: int = 100
    max_qty: int = 10_000_000
    max_order_qty: int = 0
    max_notional: int = 0
    reference_price: int = 0
    price_band_ticks: int = 0
    price_band_pct: float = 0.0


class PositionLimits(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One account's position limits in one symbol, lots (None = the account's value)."""

    max_position_net: int | None = None
    max_position_gross: int | None = None


class AccountLimits(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Pre-trade risk limits of an account (None = the [risk] default; 0 = no limit).

    max_order_qty: lots; max_notional: whole currency units; max_open_orders: live orders;
    max_position_net / max_position_gross: lots per symbol, worst case (open orders count as
    filled; gross = |net| + open buys + open sells); symbols: per-symbol position limits.
    """

    max_order_qty: int | None = None
    max_notional: int | None = None
    max_open_orders: int | None = None
    max_position_net: int | None = None
    max_position_gross: int | None = None
    symbols: dict[str, PositionLimits] = msgspec.field(default_factory=dict)


class RiskConfig(AccountLimits, forbid_unknown_fields=True, frozen=True):
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
    """The whole gateway configuration (see configs/hftgw.toml for the documented default)."""

    listen: str = "127.0.0.1:7001"
    metrics_listen: str = "127.0.0.1:9090"
    journal_dir: str = "./var"
    durability: Literal["os", "fsync"] = "os"
    pg_dsn: str = ""
    partition: str = "p0"
    jwt_secret: str = DEV_JWT_SECRET
    # -- access control (issue 6; README "Security") --------------------------------------------
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    jwt_public_key_file: str = ""      # PEM public key, required for RS256 / ES256
    jwt_issuer: str = ""               # when set, tokens must carry this `iss`
    jwt_audience: str = ""             # when set, tokens must carry this `aud`
    jwt_leeway_s: float = 30.0         # clock skew allowed on exp / nbf / iat
    jwt_roles_claim: str = "roles"     # claim with the role or list of roles (`role` also read)
    audit_log: str = ""                # JSON lines file; "" = <journal_dir>/audit.log
    max_connections: int = 10_000
    max_connections_per_address: int = 256
    max_sessions_per_account: int = 4  # logged-in connections of one account (trader + drop copies)
    login_rate_per_address: float = 5.0
    login_burst_per_address: float = 20.0
    login_timeout_ms: int = 5000       # a connection that has not logged in by then is closed
    max_role_violations: int = 3       # refused messages before the session is logged out
    write_buffer_high: int = 1 << 20   # unread bytes above which the server stops reading
    slow_consumer_timeout_ms: int = 5000  # reading paused this long: disconnect
    # false turns the whole risk layer off (no throttles, checks, halt or kill-switch blocking,
    # positions): for simulators and benchmarks only
    pre_trade_risk: bool = True
    throttle: dict[str, ThrottleConfig] = msgspec.field(default_factory=dict)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    heartbeat_interval_ms: int = 1000
    heartbeat_timeout_factor: float = 3.0
    max_heartbeat_interval_ms: int = 60_000
    ring_capacity: int = 1 << 16
    max_sessions: int = 4096
    max_write_buffer: int = 16 << 20
    log_level: str = "INFO"
    symbols: list[SymbolConfig] = msgspec.field(default_factory=lambda: list(DEFAULT_SYMBOLS))

    def __post_init__(self) -> None:
        for key in ("listen", "metrics_listen"):
            parse_hostport(getattr(self, key), key)
        if not self.symbols:
            raise ConfigError("symbols: at least one symbol is required")
        names = set()
        for i, s in enumerate(self.symbols):
            if not (1 <= len(s.name) <= 8) or not s.name.isascii():
                raise ConfigError(f"symbols[{i}].name: 1 to 8 ASCII characters, got {s.name!r}")
            if s.name in names:
                raise ConfigError(f"symbols[{i}].name: duplicate symbol {s.name!r}")
            names.add(s.name)
            if s.tick <= 0 or s.max_qty <= 0:
                raise ConfigError(f"symbols[{i}]: tick and max_qty must be positive")
            if min(s.max_order_qty, s.max_notional, s.reference_price, s.price_band_ticks) < 0 \
                    or not (0 <= s.price_band_pct <= 100):
                raise ConfigError(f"symbols[{i}]: risk limits must be >= 0 (price_band_pct 0-100)")
            if s.reference_price % s.tick:
                raise ConfigError(f"symbols[{i}].reference_price: not a multiple of the tick {s.tick}")
        self._check_access(names)
        if self.ring_capacity < 1024 or self.ring_capacity & (self.ring_capacity - 1):
            raise ConfigError("ring_capacity: a power of two >= 1024")
        if not (100 <= self.heartbeat_interval_ms <= self.max_heartbeat_interval_ms):
            raise ConfigError("heartbeat_interval_ms: between 100 and max_heartbeat_interval_ms")
        if self.heartbeat_timeout_factor < 1.5:
            raise ConfigError("heartbeat_timeout_factor: at least 1.5")
        if not (1 <= self.max_sessions <= 1 << 20):
            raise ConfigError("max_sessions: 1 to 1048576")


    def _check_access(self, names: set[str]) -> None:
        if self.jwt_algorithm != "HS256":
            if not self.jwt_public_key_file:
                raise ConfigError(f"jwt_public_key_file: required with jwt_algorithm {self.jwt_algorithm}")
            if not os.path.isfile(self.jwt_public_key_file):
                raise ConfigError(f"jwt_public_key_file: no such file {self.jwt_public_key_file!r}")
        if self.jwt_leeway_s < 0:
            raise ConfigError("jwt_leeway_s: must be >= 0")
        for key in ("max_connections", "max_connections_per_address", "max_sessions_per_account",
                    "login_timeout_ms", "max_role_violations", "write_buffer_high",
                    "slow_consumer_timeout_ms"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1")
        if self.login_rate_per_address < 0 or self.login_burst_per_address < 0:
            raise ConfigError("login_rate_per_address / login_burst_per_address: must be >= 0")
        if self.write_buffer_high > self.max_write_buffer:
            raise ConfigError("write_buffer_high: must not exceed max_write_buffer")
        for role, t in self.throttle.items():
            if role not in ("trader", "dropcopy", "md", "admin"):
                raise ConfigError(f"throttle.{role}: unknown role (trader, dropcopy, md, admin)")
            if min(t.session_rate, t.session_burst, t.account_rate, t.account_burst) < 0:
                raise ConfigError(f"throttle.{role}: rates and bursts must be >= 0")
        for where, lim in [("risk", self.risk)] + [(f"risk.accounts.{a}", v)
                                                  for a, v in self.risk.accounts.items()]:
            _check_limits(where, lim, names)


def _check_limits(where: str, lim: AccountLimits, names: set[str]) -> None:
    for f in ("max_order_qty", "max_notional", "max_open_orders", "max_position_net",
              "max_position_gross"):
        v = getattr(lim, f)
        if v is not None and v < 0:
            raise ConfigError(f"{where}.{f}: must be >= 0 (0 = no limit)")
    for sym, pl in lim.symbols.items():
        if sym not in names:
            raise ConfigError(f"{where}.symbols.{sym}: not a configured symbol")
        for f in ("max_position_net", "max_position_gross"):
            v = getattr(pl, f)
            if v is not None and v < 0:
                raise ConfigError(f"{where}.symbols.{sym}.{f}: must be >= 0")


def account_limits(cfg: Config, account: str) -> dict[str, object]:
    """The effective limits of ``account`` for gateway.risk.RiskEngine: the [risk] defaults
    overridden by [risk.accounts.ACCOUNT]; max_notional converted to price units x lots;
    ``symbols`` keyed by symbol id."""
    base, over = cfg.risk, cfg.risk.accounts.get(account)
    out: dict[str, object] = {}
    for f in ("max_order_qty", "max_notional", "max_open_orders", "max_position_net",
              "max_position_gross"):
        v = getattr(over, f) if over is not None and getattr(over, f) is not None else getattr(base, f)
        out[f] = (v or 0) * (PRICE_UNITS_PER_CURRENCY if f == "max_notional" else 1)
    ids = {s.name: i for i, s in enumerate(cfg.symbols)}
    per: dict[int, dict[str, int]] = {}
    for table in (base.symbols, over.symbols if over is not None else {}):
        for sym, pl in table.items():
            d = per.setdefault(ids[sym], {})
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


def _env_overrides(environ: Mapping[str, str]) -> dict[str, object]:
    out: dict[str, object] = {}
    fields = {f.name: f.type for f in msgspec.structs.fields(Config)}
    for name in fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if name in JSON_ENV_KEYS:
            try:
                out[name] = msgspec.json.decode(raw)
            except msgspec.DecodeError as exc:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}: not JSON: {exc}") from None
        else:
            out[name] = raw
    return out


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the effective config: embedded defaults < TOML file at ``path`` < environment.

    Raises ConfigError with the key path and the reason for any invalid value, and for a file that
    cannot be read or parsed.
    """
    data: dict[str, object] = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    data.update(_env_overrides(os.environ if environ is None else environ))
    try:
        # strict=False lets environment strings convert to ints/floats
        return msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(str(exc)) from None
