"""The JSON side of the market-data WebSocket feed (docs/protocol.md, "Market data feed").

Control messages are JSON text both ways: the client sends ``Request`` objects, the server answers
each with a ``Response`` or an ``ErrorReply`` carrying the request's ``id``.  Market data in JSON
(``encoding: "json"``) has the same content as the binary SBE templates 40-43, with the schema's
camelCase field names and a ``type`` tag; trades come batched per symbol per server tick
(``Trades``).  Units as on the binary wire: prices int64 in 1e-4 currency units, sizes in lots,
``transactTime`` ns since the Unix epoch (beyond 2**53: JavaScript reads it rounded).

All of it is encoded and decoded with msgspec, except the entries of the ``trades`` array, which
the server writes in C (``protocol/mdfeed.pyx``) to avoid a Python object per fill.
"""
from __future__ import annotations

import enum
from typing import Literal

import msgspec

from protocol.messages import Bbo

CHANNELS = ("bbo", "trades", "depth")
ENCODINGS = ("json", "binary")
DEPTH_LEVELS = (5, 10, 20)
MAX_DEPTH_LEVELS = 20


class MdError(enum.IntEnum):
    """``code`` of an ``ErrorReply``; the reply's ``error`` is the name."""

    BAD_REQUEST = 1            # not a JSON object of the request shape, too long, or binary
    UNKNOWN_OP = 2
    UNKNOWN_CHANNEL = 3
    UNKNOWN_SYMBOL = 4
    BAD_ENCODING = 5
    BAD_LEVELS = 6
    TOO_MANY_SUBSCRIPTIONS = 7
    RATE_LIMITED = 8


# -- client -> server -------------------------------------------------------------------------------
class Request(msgspec.Struct, forbid_unknown_fields=True):
    """A control message.  op: "subscribe" | "unsubscribe" | "list" | "ping"; id: echoed in the
    reply (any integer); channels: subset of CHANNELS; symbols: symbol names; encoding: "json" or
    "binary" (subscribe); levels: 5, 10 or 20 levels per side for ``depth`` (subscribe)."""

    op: str
    id: int | None = None
    channels: list[str] = msgspec.field(default_factory=list)
    symbols: list[str] = msgspec.field(default_factory=list)
    encoding: str = "json"
    levels: int = 10


# -- server -> client: replies ----------------------------------------------------------------------
class Subscription(msgspec.Struct, rename="camel"):
    channel: str
    symbol: str
    encoding: str
    levels: int = 0


class Response(msgspec.Struct, tag_field="type", tag="response", rename="camel"):
    """The answer to a valid request: result "subscribed" | "unsubscribed" | "list" | "pong";
    subscriptions: the connection's subscriptions after the request."""

    id: int | None
    result: str
    subscriptions: list[Subscription] = msgspec.field(default_factory=list)


class ErrorReply(msgspec.Struct, tag_field="type", tag="error", rename="camel"):
    """The answer to a refused request (nothing of it was applied).  code: an MdError value."""

    id: int | None
    code: int
    error: str
    message: str


# -- server -> client: market data ------------------------------------------------------------------
class JsonBbo(Bbo, tag_field="type", tag="bbo"):
    """Template 40 in JSON: the fields of ``protocol.messages.Bbo`` (camelCase there already).  A
    side without orders has price 0 and size 0."""


class JsonTrade(msgspec.Struct, rename="camel"):
    """One entry of ``JsonTrades.trades`` (template 41 without the symbol)."""

    trade_id: int
    price: int
    qty: int
    aggressor_side: Literal["BUY", "SELL"]
    transact_time: int


class JsonTrades(msgspec.Struct, tag_field="type", tag="trades", rename="camel"):
    """The trades of one symbol in one server tick, in trade order."""

    symbol: str
    trades: list[JsonTrade]


Level = tuple[int, int, int]  # (price, size in lots, order count)


class JsonDepthSnapshot(msgspec.Struct, tag_field="type", tag="depthSnapshot", rename="camel"):
    """Template 42 in JSON: bids and asks best first, each level [price, size, orderCount]."""

    symbol: str
    transact_time: int
    last_seq: int
    levels: int
    bids: list[Level]
    asks: list[Level]


class JsonDepthUpdate(msgspec.Struct, tag_field="type", tag="depthUpdate", rename="camel"):
    """Template 43 in JSON: the changed levels over book sequence numbers firstSeq..lastSeq; a
    level with size 0 is removed."""

    symbol: str
    transact_time: int
    first_seq: int
    last_seq: int
    levels: int
    bids: list[Level]
    asks: list[Level]


ServerMessage = (Response | ErrorReply | JsonBbo | JsonTrades | JsonDepthSnapshot
                 | JsonDepthUpdate)

#: decodes any JSON text frame the server sends
server_decoder = msgspec.json.Decoder(ServerMessage)
#: decodes a control message (raises msgspec.DecodeError / ValidationError)
request_decoder = msgspec.json.Decoder(Request)
encoder = msgspec.json.Encoder()


def trades_prefix(symbol: str) -> bytes:
    """The bytes of a JSON ``trades`` message before its entries (the symbol escaped by msgspec);
    the message is prefix + entries (protocol.mdfeed) + b"]}"."""
    return b'{"type":"trades","symbol":' + encoder.encode(symbol) + b',"trades":['
