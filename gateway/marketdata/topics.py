"""What the market-data publisher publishes: each symbol's book state (``SymbolFeed``), its
streams (``Topic``: trades, BBO, depth at 5/10/20 levels) and a subscriber's place in one
(``Cursor``).  Data only: publishing and fan-out are in fanout.py."""
from __future__ import annotations

from typing import TYPE_CHECKING

from protocol.mdjson import trades_prefix

if TYPE_CHECKING:
    from gateway.marketdata.connection import MdConnection

TRADES, BBO, DEPTH = 0, 1, 2
KINDS = {"trades": TRADES, "bbo": BBO, "depth": DEPTH}

Levels = list[tuple[int, int, int]]  # (price in 1e-4 units, size in lots, order count), best first


def diff_levels(old: Levels, new: Levels) -> Levels:
    """The entries that turn ``old`` into ``new``: changed or new levels with their new state,
    removed levels with size 0 and order count 0 (order: new levels best first, then removals)."""
    if old == new:
        return []
    before = {p: (q, c) for p, q, c in old}
    out = [(p, q, c) for p, q, c in new if before.get(p) != (q, c)]
    if len(old):
        now = {p for p, _, _ in new}
        out.extend((p, 0, 0) for p, _, _ in old if p not in now)
    return out


class Topic:
    """One published stream of one symbol, in both encodings, and its subscribers.

    BBO: ``version`` of the newest state (the feed's ``bbo``), its frames built on demand.
    TRADES, DEPTH: ``log`` of (json frame, binary frame) entries, the first at absolute index
    ``base``; a frame is None when nobody took that encoding when it was published.  DEPTH also
    holds the stream's state after its last update (``levels``, ``last_seq``, ``bids``, ``asks``).
    """

    __slots__ = ("kind", "feed", "levels", "subs", "n_binary", "version", "frames", "log", "base",
                 "mark", "last_seq", "bids", "asks")

    def __init__(self, kind: int, feed: SymbolFeed, levels: int = 0) -> None:
        self.kind = kind
        self.feed = feed
        self.levels = levels
        self.subs: dict[MdConnection, bool] = {}   # connection -> binary
        self.n_binary = 0
        self.version = 0
        self.frames: list[bytes | None] = [None, None]
        self.log: list[tuple[bytes | None, bytes | None]] = []
        self.base = 0
        self.mark = 0
        self.last_seq = feed.book_seq
        self.bids: Levels = feed.bids[:levels]
        self.asks: Levels = feed.asks[:levels]

    @property
    def end(self) -> int:
        return self.base + len(self.log)

    def encodings(self) -> tuple[bool, bool]:
        """(somebody takes JSON, somebody takes binary)."""
        return len(self.subs) > self.n_binary, self.n_binary > 0


class SymbolFeed:
    """One symbol's published book state and topics: ``book_seq`` counts the changes of its top
    20 levels a side, ``ts`` (ns since the epoch) is the time of the last one, ``bbo`` is
    (bid price, bid size, ask price, ask size) with 0, 0 for an empty side."""

    __slots__ = ("sid", "name", "json_prefix", "book_seq", "ts", "bids", "asks", "bbo",
                 "bbo_topic", "trades", "streams")

    def __init__(self, sid: int, name: str) -> None:
        self.sid = sid
        self.name = name
        self.json_prefix = trades_prefix(name)
        self.book_seq = 0
        self.ts = 0
        self.bids: Levels = []
        self.asks: Levels = []
        self.bbo = (0, 0, 0, 0)
        self.bbo_topic: Topic | None = None
        self.trades: Topic | None = None
        self.streams: dict[int, Topic] = {}  # depth topics by levels


class Cursor:
    """One connection's place in one topic: the encoding it takes (``binary``) and ``at``: for
    BBO the version it was sent last (-1: none yet), else the absolute index of the next log
    entry it is due."""

    __slots__ = ("binary", "at")

    def __init__(self, binary: bool, at: int) -> None:
        self.binary = binary
        self.at = at
