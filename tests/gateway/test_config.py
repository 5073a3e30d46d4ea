"""Configuration: the documented default file, environment overrides for every key, error
messages with key path, source and reason, and ``hftgw config check | show | reference``."""
from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec
import pytest
from support.gateway_harness import ROOT, hftgw

from gateway.config.load import load_config
from gateway.config.reference import field_docs, live_keys, reference_markdown
from gateway.config.schema import (
    DEV_JWT_SECRET,
    MASK,
    Config,
    ConfigError,
    SymbolConfig,
    ThrottleConfig,
    mask_dsn,
)

DEFAULT_FILE = ROOT / "configs" / "hftgw.toml"


def test_documented_default_file_is_the_default() -> None:
    assert load_config(str(DEFAULT_FILE), {}) == load_config(None, {}) == Config()
    # and it documents every key (a new key must be added to the documented file too)
    with open(DEFAULT_FILE, "rb") as f:
        assert set(tomllib.load(f)) == set(Config.__struct_fields__)


# A valid value other than the default for every key, as an environment string.
ENV_SAMPLES = {
    "listen": "0.0.0.0:7101", "metrics_listen": "0.0.0.0:9191", "journal_dir": "/data/j",
    "durability": "fsync", "journal_segment_bytes": "1048576", "snapshot_dir": "/data/s",
    "snapshot_interval_commands": "5000", "snapshot_keep": "3",
    "pg_dsn": "postgresql://u:pw@db/hftgw", "partition": "p7",
    "event_log_dir": "/data/events", "event_log_segment_bytes": "1048576",
    "message_store_dir": "/data/m",
    "advertise_host": "hftgw-7.hftgw", "directory_file": "/etc/hftgw/directory.json",
    "jwt_secret": "0123456789abcdef0123456789abcdef", "jwt_algorithm": "HS256",
    "heartbeat_interval_ms": "250", "heartbeat_timeout_factor": "2.5",
    "max_heartbeat_interval_ms": "30000", "ring_capacity": "4096", "max_sessions": "64",
    "max_write_buffer": "1048576", "drain_timeout_s": "3.5", "log_level": "DEBUG",
    "log_format": "json", "log_event_burst": "7", "log_summary_interval_s": "2",
    "symbols": '[{"name": "ES", "tick": 2500, "max_qty": 500}]',
    "ws_listen": "0.0.0.0:7202", "md_require_token": "true", "md_max_subscriptions": "7",
    "md_max_control_per_s": "3", "md_conflate_bytes": "1000", "md_max_buffer_bytes": "5000",
    "md_max_connections": "9", "md_socket_sndbuf": "0", "md_slice_us": "250",
    "ws_ping_interval_s": "1.5", "ws_ping_timeout_s": "2.5",
    "jwt_public_key_file": "/etc/hftgw/jwt.pem", "jwt_issuer": "https://idp.example",
    "jwt_audience": "hftgw", "jwt_leeway_s": "5.5", "jwt_roles_claim": "groups",
    "audit_log": "/var/log/hftgw/audit.log", "max_connections": "500",
    "max_connections_per_address": "16", "max_sessions_per_account": "2",
    "max_dropcopy_per_account": "3",
    "login_rate_per_address": "1.5", "login_burst_per_address": "3.5", "login_timeout_ms": "900",
    "max_role_violations": "9", "write_buffer_high": "65536", "slow_consumer_timeout_ms": "700",
    "pre_trade_risk": "false",
    "throttle": '{"trader": {"session_rate": 10, "session_burst": 20}}',
    "risk": '{"max_open_orders": 7, "accounts": {"alice": {"max_notional": 1000}}}',
}


def test_every_key_has_an_environment_override() -> None:
    assert set(ENV_SAMPLES) == set(Config.__struct_fields__)  # a new key needs a sample here
    cfg = load_config(str(DEFAULT_FILE), {f"HFTGW_{k.upper()}": v for k, v in ENV_SAMPLES.items()})
    for key, raw in ENV_SAMPLES.items():
        value = getattr(cfg, key)
        if key == "symbols":
            assert value == [SymbolConfig("ES", 2500, 500)]
        elif key == "throttle":
            assert value == {"trader": ThrottleConfig(session_rate=10, session_burst=20)}
        elif key == "risk":
            assert value.max_open_orders == 7 and value.accounts["alice"].max_notional == 1000
        else:
            assert str(value).lower() == raw or value == type(value)(raw), key
            if key != "jwt_algorithm":  # the only value there is
                assert value != getattr(Config(), key), key


@pytest.mark.parametrize(("toml", "env", "expected"), [
    ("colour = 'blue'\n", {}, ["{file}: colour: unknown key"]),
    ("max_sessions = 'many'\n", {}, ["{file}: max_sessions: expected `int`, got `str`"]),
    ("max_sessions = 0\n", {}, ["{file}: max_sessions: expected `int` >= 1"]),
    ("durability = 'never'\n", {},
     ["{file}: durability: invalid enum value 'never', expected one of: os, fsync"]),
    ("[[symbols]]\nname = 'AAPL'\ntick = -5\n", {}, ["{file}: symbols[0].tick: expected `int` >= 1"]),
    ("[[symbols]]\nname = 'AAPL'\nlot = 5\n", {}, ["{file}: symbols[0].lot: unknown key"]),
    ("[[symbols]]\nname = 'TOOLONGNAME'\n", {}, ["{file}: symbols[0].name: expected `str` matching"]),
    ("[[symbols]]\nname = 'A'\n[[symbols]]\nname = 'A'\n", {},
     ["{file}: symbols[1].name: duplicate symbol 'A'"]),
    ("ring_capacity = 3000\n", {}, ["{file}: ring_capacity: must be a power of two"]),
    ("listen = 'no-port'\n", {}, ["{file}: listen: expected host:port, got 'no-port'"]),
    ("heartbeat_interval_ms = 5000\nmax_heartbeat_interval_ms = 1000\n", {},
     ["{file}: heartbeat_interval_ms: must not exceed max_heartbeat_interval_ms"]),
    ("listen = \n", {}, ["{file}: not valid TOML: Invalid value (at line 1, column 10)"]),
    ("", {"HFTGW_MAX_SESSIONS": "lots"},
     ["max_sessions (from HFTGW_MAX_SESSIONS): expected `int`, got `str`"]),
    ("", {"HFTGW_SYMBOLS": "[{"}, ["symbols (from HFTGW_SYMBOLS): not JSON"]),
    ("", {"HFTGW_SYMBOLS": '[{"name": "A", "tick": 0}]'},
     ["symbols[0].tick (from HFTGW_SYMBOLS): expected `int` >= 1"]),
    ("", {"HFTGW_JWT_SECRET": "short"},
     ["jwt_secret (from HFTGW_JWT_SECRET): expected `str` of length >= 32"]),
    # every broken key is reported in one run, not just the first
    ("colour = 1\nmax_sessions = 'x'\nring_capacity = 3\n[[symbols]]\nname = 'A'\ntick = 0\n", {},
     ["{file}: colour: unknown key", "{file}: max_sessions: expected `int`",
      "{file}: ring_capacity: expected `int` >= 1024", "{file}: symbols[0].tick: expected `int` >= 1"]),
])
def test_errors_name_the_key_path_source_and_reason(tmp_path: Path, toml: str, env: dict[str, str],
                                                    expected: list[str]) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env)
    errors = info.value.errors
    assert len(errors) == len(expected), errors
    for want in expected:
        want = want.format(file=path)
        assert any(e.startswith(want) for e in errors), (want, errors)


def test_max_qty_fits_the_cores_32_bit_quantities(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[[symbols]]\nname = 'AAPL'\nmax_qty = 4294967296\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    assert info.value.errors == [f"{path}: symbols[0].max_qty: expected `int` <= 4294967295"]
    path.write_text("[[symbols]]\nname = 'AAPL'\nmax_qty = 4294967295\n")
    assert load_config(str(path), {}).symbols[0].max_qty == 4294967295


def test_missing_file_is_an_error() -> None:
    with pytest.raises(ConfigError, match="/nonexistent.toml: cannot read: No such file"):
        load_config("/nonexistent.toml", {})


def test_dsn_masking() -> None:
    assert mask_dsn("postgresql://hftgw:s3cr:et@db:5432/x") == f"postgresql://hftgw:{MASK}@db:5432/x"
    assert mask_dsn("postgresql://hftgw@db/x") == "postgresql://hftgw@db/x"
    assert mask_dsn("host=db password='a b' user=u") == f"host=db password={MASK} user=u"


def test_config_check_command(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('partition = "p3"\n[[symbols]]\nname = "ES"\ntick = 2500\n')
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 1\n[[symbols]]\nname = 'ES'\ntick = 0\n")
    out = hftgw("config", "check", str(DEFAULT_FILE), str(good))
    assert out.returncode == 0, out.stderr
    assert f"{good}: ok (partition p3, 1 symbols: ES)" in out.stdout
    out = hftgw("config", "check", str(good), str(bad))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"{bad}: colour: unknown key (see `hftgw config reference` "
                                       "for the keys)", f"{bad}: symbols[0].tick: expected `int` >= 1"]
    # the environment is part of what is checked, and risky settings are warned about
    out = hftgw("config", "check", str(good), env={"HFTGW_LISTEN": "0.0.0.0:7001"})
    assert out.returncode == 0 and "warning: jwt_secret: the published development secret" in out.stderr
    out = hftgw("config", "check", str(good), env={"HFTGW_RING_CAPACITY": "1000"})
    assert out.returncode == 2 and "ring_capacity (from HFTGW_RING_CAPACITY)" in out.stderr
    # a directory file that gives this partition's symbol to another partition fails the check
    directory = tmp_path / "dir.json"
    directory.write_text('{"partitions": [{"name": "p9", "order_entry": "h:1", "symbols": ["ES"]}]}')
    out = hftgw("config", "check", str(good), env={"HFTGW_DIRECTORY_FILE": str(directory)})
    assert out.returncode == 2 and "'ES', which the directory gives to partition 'p9'" in out.stderr


def test_config_show_masks_secrets_and_round_trips(tmp_path: Path) -> None:
    env = {"HFTGW_PG_DSN": "postgresql://hftgw:hunter2hunter2@db/hftgw",
           "HFTGW_JWT_SECRET": "a-real-secret-of-32-bytes-......", "HFTGW_MAX_SESSIONS": "77"}
    out = hftgw("config", "show", str(DEFAULT_FILE), env=env)
    assert out.returncode == 0, out.stderr
    assert "hunter2" not in out.stdout and "a-real-secret" not in out.stdout
    shown = tomllib.loads(out.stdout)
    assert shown["pg_dsn"] == f"postgresql://hftgw:{MASK}@db/hftgw" and shown["jwt_secret"] == MASK
    # what is shown is the effective config: it loads back to the same values, secrets aside
    effective = load_config(str(DEFAULT_FILE), env)
    path = tmp_path / "shown.toml"
    path.write_text(out.stdout)
    again = load_config(str(path), {"HFTGW_PG_DSN": effective.pg_dsn,
                                    "HFTGW_JWT_SECRET": effective.jwt_secret})
    assert again == effective and again.max_sessions == 77
    js = hftgw("config", "show", "--format", "json", env=env)
    assert msgspec.json.decode(js.stdout)["jwt_secret"] == MASK
    # the development default is public, so it is shown as is (and warned about elsewhere)
    assert tomllib.loads(hftgw("config", "show").stdout)["jwt_secret"] == DEV_JWT_SECRET


def test_reference_lists_every_key() -> None:
    table = reference_markdown()
    for d in field_docs():
        assert f"| `{d.name}` | `HFTGW_{d.name.upper()}` |" in table
        assert d.description, f"{d.name} has no description"
    assert live_keys() == {"log_level", "log_format", "log_event_burst", "log_summary_interval_s",
                           "symbols", "directory_file", "throttle", "risk"}
    out = hftgw("config", "reference")
    assert out.returncode == 0 and out.stdout == table


def test_docs_configuration_table_is_generated() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    start = page.index("<!-- config-reference:start -->\n") + len("<!-- config-reference:start -->\n")
    end = page.index("<!-- config-reference:end -->")
    assert page[start:end] == reference_markdown(), (
        "docs/configuration.md's key table is stale: regenerate it with `hftgw config reference`")
