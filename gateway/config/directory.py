"""The partition directory: which endpoint serves which symbol (DESIGN §1 "Scale-out").

One gateway process owns one partition of the symbols.  The directory lists every partition
with its order-entry and side-port endpoints and its symbols, as JSON::

    {"version": 1, "partitions": [
        {"name": "p0", "order_entry": "hftgw-0.hftgw:7001", "metrics": "hftgw-0.hftgw:9090",
         "symbols": ["AAPL", "AMZN"]},
        {"name": "p1", "order_entry": "hftgw-1.hftgw:7001", "metrics": "hftgw-1.hftgw:9090",
         "symbols": ["GOOG", "MSFT"]}]}

Operators keep it as a file (a ConfigMap in Kubernetes, ``directory_file`` in the config).  Each
gateway serves it on ``GET /directory`` of its side port with its own entry replaced by the live
one (its symbols as they are now, after reloads), so a client can start from any partition's
side port.  Clients (``hftgw client --directory``, ``hftgw replay-lobster --directory``) load it
from a file or an ``http(s)://`` URL and route each request by its symbol.
"""
from __future__ import annotations

import urllib.error
import urllib.request

import msgspec

from gateway.config.schema import ConfigError, parse_hostport


class DirectoryError(ValueError):
    """The directory cannot be loaded, does not parse, or contradicts itself or this partition."""


class PartitionEntry(msgspec.Struct, forbid_unknown_fields=True):
    """One partition: ``order_entry`` and ``metrics`` are host:port; ``symbols`` its names."""

    name: str
    order_entry: str
    symbols: list[str]
    metrics: str = ""


class Directory(msgspec.Struct, forbid_unknown_fields=True):
    """Every partition; a symbol is served by exactly one of them."""

    partitions: list[PartitionEntry]
    version: int = 1

    def __post_init__(self) -> None:
        names: set[str] = set()
        owner: dict[str, str] = {}
        for i, p in enumerate(self.partitions):
            if p.name in names:
                raise ValueError(f"partitions[{i}].name: duplicate partition {p.name!r}")
            names.add(p.name)
            for key in ("order_entry", "metrics"):
                value = getattr(p, key)
                if value or key == "order_entry":
                    try:
                        parse_hostport(value, f"partitions[{i}].{key}")
                    except ConfigError as exc:
                        raise ValueError(str(exc)) from None
            for s in p.symbols:
                if s in owner:
                    raise ValueError(f"partitions[{i}].symbols: {s!r} is also served by "
                                     f"partition {owner[s]!r}")
                owner[s] = p.name

    def route(self, symbol: str) -> PartitionEntry:
        """The partition serving ``symbol``.  Raises KeyError saying so when none does."""
        for p in self.partitions:
            if symbol in p.symbols:
                return p
        raise KeyError(f"no partition of the directory serves {symbol!r} "
                       f"(partitions: {', '.join(p.name for p in self.partitions) or 'none'})")

    def encode(self) -> bytes:
        return msgspec.json.encode(self)


def parse_directory(data: bytes, source: str = "directory") -> Directory:
    """Decode directory JSON.  Raises DirectoryError naming ``source``, the path and the reason."""
    try:
        return msgspec.json.decode(data, type=Directory)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DirectoryError(f"{source}: {exc}") from None


def load_directory(source: str, timeout: float = 5.0) -> Directory:
    """Load a directory from a file path or an ``http://`` / ``https://`` URL (e.g. a gateway's
    ``http://host:9090/directory``).  Raises DirectoryError."""
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=timeout) as r:  # noqa: S310 - operator's URL
                data = r.read()
        else:
            with open(source, "rb") as f:
                data = f.read()
    except (OSError, urllib.error.URLError) as exc:
        raise DirectoryError(f"{source}: cannot read the directory: {exc}") from None
    return parse_directory(data, source)


def with_entry(base: Directory | None, own: PartitionEntry) -> Directory:
    """``base`` with this partition's entry replaced by ``own`` (appended when absent).
    Raises DirectoryError when another partition of ``base`` claims one of ``own``'s symbols."""
    entries = list(base.partitions) if base else []
    for p in entries:
        taken = [s for s in own.symbols if p.name != own.name and s in p.symbols]
        if taken:
            raise DirectoryError(f"partition {own.name!r} serves {', '.join(map(repr, taken))}, which "
                                 f"the directory gives to partition {p.name!r}")
    names = [p.name for p in entries]
    if own.name in names:
        entries[names.index(own.name)] = own
    else:
        entries.append(own)
    try:
        return Directory(entries, base.version if base else 1)
    except ValueError as exc:
        raise DirectoryError(f"partition {own.name!r} and the directory disagree: {exc}") from None
