"""Loading the config: embedded defaults < the TOML file < ``HFTGW_*`` variables, each error
with the key path, where the value came from and why (gateway/config/schema.py has the keys)."""
from __future__ import annotations

import os
import re
import tomllib
import typing
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from gateway.config.schema import ENV_PREFIX, Config, ConfigError


# -- loading -------------------------------------------------------------------------------------
def _struct_type(tp: object) -> type[msgspec.Struct] | None:
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp if isinstance(tp, type) and issubclass(tp, msgspec.Struct) else None


def _json_valued(tp: object) -> bool:
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return typing.get_origin(tp) in (list, dict) or _struct_type(tp) is not None


def _env_overrides(environ: Mapping[str, str], origin: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    out: dict[str, Any] = {}
    errors: list[str] = []
    hints = typing.get_type_hints(Config, include_extras=True)
    for name in Config.__struct_fields__:
        var = ENV_PREFIX + name.upper()
        raw = environ.get(var)
        if raw is not None:
            origin[name] = var
            if _json_valued(hints[name]):
                try:
                    out[name] = msgspec.json.decode(raw)
                except msgspec.DecodeError as exc:
                    errors.append(f"{name} (from {var}): not JSON: {exc}")
            else:
                out[name] = raw
    return out, errors


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def _format_error(exc: msgspec.ValidationError, origin: Mapping[str, str]) -> tuple[str | None, list[str]]:
    """(top-level key or None, messages) from a msgspec error, each message prefixed with the
    key path and its source."""
    m = _AT.match(str(exc))
    assert m is not None
    msg, path = m.group("msg"), (m.group("path") or "").lstrip(".")
    unknown = re.match(r"Object contains unknown field `([^`]*)`", msg)
    if unknown:
        path = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
        msg = "unknown key (see `hftgw config reference` for the keys)"
    top = re.split(r"[.\[]", path, maxsplit=1)[0] if path else None
    if msg.startswith("Invalid enum value") and top in Config.__struct_fields__:
        tp = typing.get_type_hints(Config, include_extras=True)[top]
        choices = typing.get_args(typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp)
        msg = f"{msg}, expected one of: {', '.join(map(str, choices))}"
    lines = []
    for line in msg.split("\n"):
        key, sep, rest = line.partition(": ")
        if path:
            full, text = path, line
        elif sep and re.fullmatch(r"[a-z_]+(\[\d+\])?(\.[a-z_]+)?", key):
            full, text = key, rest  # a __post_init__ problem naming its own key
        else:
            full, text = "(config)", line
        head = full.split(".")[0].split("[")[0]
        src = origin.get(full) or origin.get(head)
        text = text[0].lower() + text[1:] if text[:1].isupper() and text[1:2].islower() else text
        if src and src.startswith(ENV_PREFIX):
            lines.append(f"{full} (from {src}): {text}")
        elif src:
            lines.append(f"{src}: {full}: {text}")
        else:
            lines.append(f"{full}: {text}")
    return top, lines


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the effective config: embedded defaults < TOML file at ``path`` < environment
    (``os.environ`` when ``environ`` is None).

    Raises ConfigError listing every problem found, each with the key path, the source (file
    or variable) and the reason; a file that cannot be read or parsed is one such problem.
    """
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        origin.update({k: path for k in data})
    env, errors = _env_overrides(os.environ if environ is None else environ, origin)
    data.update(env)
    # One msgspec error at a time: report it, drop its key and try again, so that one run
    # lists every broken key (semantic checks in __post_init__ run once the types are right).
    for _ in range(len(data) + 1):
        try:
            # strict=False lets environment strings convert to ints/floats
            cfg = msgspec.convert(data, Config, strict=False)
        except msgspec.ValidationError as exc:
            top, lines = _format_error(exc, origin)
            errors.extend(lines)
            if top is None or top not in data:
                break
            del data[top]
        else:
            if errors:
                break
            return cfg
    raise ConfigError(errors)
