"""SIGHUP reload: re-read the config and apply what can change while the gateway runs.

Which keys are live is declared in gateway/config/schema.py (``Meta(extra={"live": True})``); the
server registers one ``Applier`` per live key, and ``Reloader`` checks at start that the two
sets agree, so a key cannot be declared live without an implementation.  A reload is all or
nothing for the live keys:

1. the file (plus the same ``HFTGW_*`` environment, which still wins) is loaded and validated
   like at start; any error refuses the whole reload with one log line per problem, and the
   running config stays;
2. every changed live key's ``check`` runs (e.g. the directory file must parse and agree with
   this partition); a failure refuses the reload the same way;
3. every changed live key is applied and written into the running ``Config``; a changed key
   that is not live is logged as needing a restart and keeps its running value.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway.config.load import load_config
from gateway.config.reference import live_keys
from gateway.config.schema import Config, ConfigError, changed_keys

log = logging.getLogger("hftgw.reload")


@dataclass(slots=True)
class Applier:
    """How one live key changes in the running gateway.

    apply(new): make the running gateway use ``new``'s value of the key; returns a short note
    for the log.  check(new): raise ConfigError (or ValueError) to refuse the reload before
    anything is applied.  always: run on every reload, changed or not (the key names an
    external file whose content may have changed).
    """

    apply: Callable[[Config], str]
    check: Callable[[Config], None] | None = None
    always: bool = False


@dataclass(slots=True)
class ReloadResult:
    ok: bool
    applied: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Reloader:
    """Reloads ``cfg`` (the running Config, changed in place) from ``path``.

    appliers: one per live key.  Raises ValueError at construction when they do not match
    the live keys of the config.  Counters (``reloads_ok``, ``reloads_refused``,
    ``last_ok``, ``last_reload_ts``) feed the metrics.
    """

    def __init__(self, cfg: Config, path: str | None, appliers: Mapping[str, Applier],
                 environ: Mapping[str, str] | None = None) -> None:
        declared = live_keys()
        if set(appliers) != declared:
            raise ValueError(f"live keys without an applier: {sorted(declared - set(appliers))}, "
                             f"appliers for keys not declared live: {sorted(set(appliers) - declared)}")
        self.cfg = cfg
        self.path = path
        self.appliers = dict(appliers)
        self.environ = environ
        self.reloads_ok = 0
        self.reloads_refused = 0
        self.last_ok = True
        self.last_reload_ts = 0.0

    def reload(self) -> ReloadResult:
        """Load, check and apply; never raises for a bad file (the result says why)."""
        self.last_reload_ts = time.time()
        source = self.path or "the environment"
        try:
            new = load_config(self.path, self.environ)
            changed = changed_keys(self.cfg, new)
            live = [k for k in self.appliers
                    if k in changed or self.appliers[k].always]
            for k in live:
                check = self.appliers[k].check
                if check is not None:
                    check(new)
        except (ConfigError, ValueError, OSError) as exc:
            errors = exc.errors if isinstance(exc, ConfigError) else [str(exc)]
            self.reloads_refused += 1
            self.last_ok = False
            for line in errors:
                log.error("config reload refused, the running config stays: %s", line,
                          extra={"event": "config.reload_refused", "source": source, "error": line})
            return ReloadResult(False, errors=errors)
        result = ReloadResult(True)
        for k in live:
            try:
                note = self.appliers[k].apply(new)
            except Exception as exc:  # e.g. the journal cannot be written: say so, keep serving
                log.exception("config reload: applying %s failed", k,
                              extra={"event": "config.reload_failed", "key": k})
                result.ok = False
                result.errors.append(f"{k}: {exc}")
                continue
            setattr(self.cfg, k, getattr(new, k))
            if k in changed:
                result.applied.append(k)
            if note:
                log.info("config reload: %s: %s", k, note,
                         extra={"event": "config.reload_applied", "key": k, "note": note})
        for k in changed:
            if k not in self.appliers:
                result.needs_restart.append(k)
                log.warning("config reload: %s changed but only takes effect at the next restart",
                            k, extra={"event": "config.reload_needs_restart", "key": k})
        if not result.ok:
            self.reloads_refused += 1
            self.last_ok = False
            return result
        self.reloads_ok += 1
        self.last_ok = True
        log.info("config reloaded from %s: %s", source,
                 ", ".join(result.applied) or "no live key changed",
                 extra={"event": "config.reloaded", "source": source, "applied": result.applied,
                        "needs_restart": result.needs_restart})
        return result
