"""Gateway configuration: typed, validated with msgspec, from TOML and ``HFTGW_*`` variables.

Every key can be set from the environment as ``HFTGW_<KEY>`` (upper case), e.g. ``HFTGW_LISTEN``,
``HFTGW_METRICS_LISTEN``, ``HFTGW_WS_LISTEN``, ``HFTGW_JOURNAL_DIR``, ``HFTGW_PG_DSN``,
``HFTGW_JWT_SECRET``; list and table values (``symbols``) take JSON there.  The environment wins
over the file, the file over the embedded defaults.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Literal

import msgspec

ENV_PREFIX = "HFTGW_"
DEV_JWT_SECRET = "hftgw-development-secret-change-me-now"


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range; the message names the key."""


class SymbolConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One tradable symbol.

    name: up to 8 ASCII characters; tick: minimum price increment in price units (1e-4 currency,
    so 100 = $0.01); max_qty: largest order quantity in lots.
    """

    name: str
    tick: int = 100
    max_qty: int = 10_000_000


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
    jwt_algorithm: Literal["HS256"] = "HS256"
    heartbeat_interval_ms: int = 1000
    heartbeat_timeout_factor: float = 3.0
    max_heartbeat_interval_ms: int = 60_000
    ring_capacity: int = 1 << 16
    max_sessions: int = 4096
    max_write_buffer: int = 16 << 20
    log_level: str = "INFO"
    # WebSocket port (market data on /md, order entry on /orders); "" = no WebSocket listener
    ws_listen: str = "127.0.0.1:7002"
    md_require_token: bool = False      # market data needs a JWT with role "md" (or "admin")
    md_max_subscriptions: int = 100     # per connection, one per (channel, symbol)
    md_max_control_per_s: int = 20      # control messages per connection per second
    md_conflate_bytes: int = 256 << 10  # unsent bytes above which BBO/depth are conflated
    md_max_buffer_bytes: int = 4 << 20  # unsent bytes above which a subscriber is disconnected
    md_max_connections: int = 16384
    md_socket_sndbuf: int = 256 << 10   # kernel send buffer per subscriber (SO_SNDBUF); 0 = OS default
    md_slice_us: int = 1000             # event-loop time one market-data fan-out slice may take
    ws_ping_interval_s: float = 20.0    # WebSocket keepalive ping; 0 = none
    ws_ping_timeout_s: float = 20.0
    symbols: list[SymbolConfig] = msgspec.field(default_factory=lambda: list(DEFAULT_SYMBOLS))

    def __post_init__(self) -> None:
        for key in ("listen", "metrics_listen"):
            parse_hostport(getattr(self, key), key)
        if self.ws_listen:
            parse_hostport(self.ws_listen, "ws_listen")
        if not (1 <= self.md_max_subscriptions <= 100_000):
            raise ConfigError("md_max_subscriptions: 1 to 100000")
        if self.md_max_control_per_s < 1:
            raise ConfigError("md_max_control_per_s: at least 1")
        if not (0 < self.md_conflate_bytes < self.md_max_buffer_bytes):
            raise ConfigError("md_conflate_bytes: positive and below md_max_buffer_bytes")
        if not (1 <= self.md_slice_us <= 1_000_000):
            raise ConfigError("md_slice_us: 1 to 1000000")
        if self.md_socket_sndbuf < 0:
            raise ConfigError("md_socket_sndbuf: 0 (OS default) or a size in bytes")
        if self.md_max_connections < 1:
            raise ConfigError("md_max_connections: at least 1")
        if self.ws_ping_interval_s < 0 or self.ws_ping_timeout_s <= 0:
            raise ConfigError("ws_ping_interval_s >= 0 and ws_ping_timeout_s > 0")
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
        if self.ring_capacity < 1024 or self.ring_capacity & (self.ring_capacity - 1):
            raise ConfigError("ring_capacity: a power of two >= 1024")
        if not (100 <= self.heartbeat_interval_ms <= self.max_heartbeat_interval_ms):
            raise ConfigError("heartbeat_interval_ms: between 100 and max_heartbeat_interval_ms")
        if self.heartbeat_timeout_factor < 1.5:
            raise ConfigError("heartbeat_timeout_factor: at least 1.5")
        if not (1 <= self.max_sessions <= 1 << 20):
            raise ConfigError("max_sessions: 1 to 1048576")


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
        if name == "symbols":
            try:
                out[name] = msgspec.json.decode(raw)
            except msgspec.DecodeError as exc:
                raise ConfigError(f"{ENV_PREFIX}SYMBOLS: not JSON: {exc}") from None
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
