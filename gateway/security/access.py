"""Connection and login limits per source address, and the audit log.

* ``AddressLimits``: at most ``max_connections`` open connections in all and
  ``max_connections_per_address`` from one IP address; login attempts per address through a
  token bucket (``login_rate_per_address`` per second, burst ``login_burst_per_address``).
* ``AuditLog``: one JSON line per login attempt and per admin action (time, address, account,
  outcome, reason, ...).  Tokens are never written: the fields are built by the callers from
  verified identities or, for a refused login, from the claimed ``sub`` only.

Everything here runs on the event-loop thread, except ``AuditLog.write`` which takes a lock so
that the admin API's thread may also call it.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import IO

import msgspec

log = logging.getLogger("hftgw.access")


@dataclass(slots=True)
class AccessCounters:
    """Outcomes counted for metrics (rare events, plain ints)."""

    connections_refused: dict[str, int] = field(default_factory=dict)  # reason -> count
    login_rate_limited: int = 0
    read_pauses: int = 0            # times a connection's reading was paused (unread output)


@dataclass(slots=True)
class _Address:
    connections: int = 0
    tokens: float = 0.0
    last: float = 0.0


class AddressLimits:
    """Open connections and login attempts per IP address.  ``now`` arguments are seconds
    (any monotonic clock)."""

    def __init__(self, max_connections: int, max_per_address: int, login_rate: float,
                 login_burst: float, counters: AccessCounters | None = None) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.login_rate = login_rate
        self.login_burst = max(1.0, login_burst)
        self.counters = counters if counters is not None else AccessCounters()
        self.total = 0
        self._by_addr: dict[str, _Address] = {}
        self._logged_at = -1e9

    def may_log(self, now: float) -> bool:
        """True at most once a second: for log lines about refusals, which a flood repeats."""
        if now - self._logged_at < 1.0:
            return False
        self._logged_at = now
        return True

    def connect(self, address: str, now: float) -> str:
        """Count a new connection from ``address``; returns '' when allowed, else the reason
        it is refused ("total" or "per_address"), counted, and NOT counted as open."""
        a = self._by_addr.get(address)
        reason = ""
        if self.total >= self.max_connections:
            reason = "total"
        elif a is not None and a.connections >= self.max_per_address:
            reason = "per_address"
        if reason:
            self.counters.connections_refused[reason] = self.counters.connections_refused.get(reason, 0) + 1
            return reason
        if a is None:
            a = self._by_addr[address] = _Address(tokens=self.login_burst, last=now)
        a.connections += 1
        self.total += 1
        return ""

    def disconnect(self, address: str) -> None:
        a = self._by_addr.get(address)
        if a is None or a.connections == 0:
            return
        a.connections -= 1
        self.total -= 1

    def login_attempt(self, address: str, now: float) -> bool:
        """Take one login token for ``address``; False (counted) when it has none left."""
        if self.login_rate <= 0:
            return True
        a = self._by_addr.get(address)
        if a is None:
            a = self._by_addr[address] = _Address(tokens=self.login_burst, last=now)
        if now > a.last:
            a.tokens = min(self.login_burst, a.tokens + (now - a.last) * self.login_rate)
            a.last = now
        if a.tokens >= 1.0:
            a.tokens -= 1.0
            return True
        self.counters.login_rate_limited += 1
        return False

    def prune(self, now: float) -> None:
        """Forget addresses with no connection whose login bucket has refilled."""
        full_after = self.login_burst / self.login_rate if self.login_rate > 0 else 0.0
        for addr in [k for k, a in self._by_addr.items()
                     if a.connections == 0 and now - a.last >= full_after]:
            del self._by_addr[addr]

    def open_from(self, address: str) -> int:
        a = self._by_addr.get(address)
        return a.connections if a is not None else 0


def peer_host(peer: str) -> str:
    """'1.2.3.4:5678' -> '1.2.3.4'; '[::1]:5678' -> '::1'."""
    host, _, _ = peer.rpartition(":")
    return host.strip("[]") or peer


class AuditLog:
    """Append-only JSON lines at ``path`` (the directory is created).  Each line: ``time``
    (ISO 8601 UTC, ms), ``event`` and the caller's fields.  ``path`` '' = off."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines = 0
        self._lock = threading.Lock()
        self._f: IO[bytes] | None = None
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._f = open(path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the server

    def write(self, event: str, **fields: object) -> None:
        """Append one line.  Never raises for an I/O error (logged instead): the audit log must
        not take order entry down."""
        if self._f is None:
            return
        rec = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
               "event": event, **fields}
        line = msgspec.json.encode(rec) + b"\n"
        with self._lock:
            try:
                self._f.write(line)
                self.lines += 1
            except OSError as exc:
                log.error("audit log %s: %s", self.path, exc)

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None
