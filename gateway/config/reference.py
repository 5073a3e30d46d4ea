"""The config keys as documented: one FieldDoc per key from the structs' ``Meta`` (description,
``live``, ``secret``), and the key table (docs/configuration.md) that ``hftgw config reference`` prints."""
from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from gateway.config.schema import DEV_JWT_SECRET, ENV_PREFIX, MASK, Config, SymbolConfig, mask_dsn


# -- field metadata ------------------------------------------------------------------------------
class FieldDoc(msgspec.Struct, frozen=True):
    """One key as the reference documents it."""

    name: str
    env: str
    type: str
    default: object
    description: str
    live: bool
    secret: bool


def _type_name(tp: object) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin is Literal:
        return " \\| ".join(f'"{a}"' for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return "table"
    return getattr(tp, "__name__", str(tp))


def field_docs(struct: type[msgspec.Struct] = Config, prefix: str = "") -> list[FieldDoc]:
    """Every key of ``struct`` with its environment variable, type, default and description,
    in declaration order (tables of SymbolConfig are documented under ``symbols[].``)."""
    hints = typing.get_type_hints(struct, include_extras=True)
    out: list[FieldDoc] = []
    for f in msgspec.structs.fields(struct):
        tp = hints[f.name]
        meta = [m for m in typing.get_args(tp)[1:] if isinstance(m, Meta)] \
            if typing.get_origin(tp) is Annotated else []
        desc = next((m.description for m in meta if m.description), "")
        extra: dict[str, Any] = {}
        for m in meta:
            extra.update(m.extra or {})
        if f.default is not msgspec.NODEFAULT:
            default: object = f.default
        elif f.default_factory is not msgspec.NODEFAULT:
            default = f.default_factory()
        else:
            default = None
        key = prefix + f.name
        out.append(FieldDoc(key, ENV_PREFIX + key.upper() if not prefix else "", _type_name(tp),
                            default, desc, bool(extra.get("live")), bool(extra.get("secret"))))
    return out


def live_keys() -> frozenset[str]:
    """Top-level keys a SIGHUP reload may change in the running gateway."""
    return frozenset(d.name for d in field_docs() if d.live)


def secret_keys() -> frozenset[str]:
    return frozenset(d.name for d in field_docs() if d.secret)


def reference_markdown() -> str:
    """The table of every key (docs/configuration.md) with its default (``hftgw config reference``)."""

    def fmt(v: object) -> str:
        if isinstance(v, list):
            return ", ".join(s.name for s in v) if v and isinstance(v[0], SymbolConfig) else str(v)
        return f"`{v!r}`".replace("'", '"') if isinstance(v, str) else f"`{v}`"

    rows = ["| key | environment | type | default | live | meaning |",
            "| --- | --- | --- | --- | --- | --- |"]
    for d in field_docs():
        rows.append(f"| `{d.name}` | `{d.env}` | {d.type} | {fmt(d.default)} | "
                    f"{'yes' if d.live else ''} | {d.description} |")
        if d.name == "symbols":
            for s in field_docs(SymbolConfig, "symbols[]."):
                rows.append(f"| `{s.name}` | (in `{d.env}` JSON) | {s.type} | "
                            f"{fmt(s.default) if s.default is not None else 'required'} | "
                            f"yes | {s.description} |")
    return "\n".join(rows) + "\n"


def masked(cfg: Config) -> dict[str, Any]:
    """The config as plain data with secrets masked (``hftgw config show``)."""
    data: dict[str, Any] = msgspec.to_builtins(cfg)
    for key in secret_keys():
        value = data.get(key)
        if not value:
            continue
        if key == "pg_dsn":
            data[key] = mask_dsn(str(value))
        elif key == "jwt_secret" and value == DEV_JWT_SECRET:
            data[key] = value  # the published development default is no secret
        else:
            data[key] = MASK
    return data
