"""A market-data client for the WebSocket feed, and the reference implementation of the
depth-stream sequence rule (docs/protocol.md, "Market data feed").

Used by ``hftgw md``, the tests and the benchmark; client developers in other languages can read
``DepthBook.apply`` as the rule in code.
"""
from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from protocol import codec
from protocol.mdjson import (
    ErrorReply,
    JsonDepthSnapshot,
    JsonDepthUpdate,
    Request,
    Response,
    ServerMessage,
    encoder,
    server_decoder,
)
from protocol.messages import BookLevel, DepthSnapshot, DepthUpdate, Message

DEFAULT_MD_URL = "ws://127.0.0.1:7002/md"

Level = tuple[int, int, int]
#: what ``MdClient.recv`` returns: a JSON text frame's message or one message of a binary frame
MdMessage = ServerMessage | Message
DepthMessage = DepthSnapshot | DepthUpdate | JsonDepthSnapshot | JsonDepthUpdate


class GapError(Exception):
    """A depth update does not follow the book's last sequence number: resubscribe."""

    def __init__(self, symbol: str, last_seq: int, first_seq: int) -> None:
        super().__init__(f"{symbol}: gap after book seq {last_seq}, next update starts at {first_seq}")
        self.symbol = symbol
        self.last_seq = last_seq
        self.first_seq = first_seq


class DepthBook:
    """A client's copy of one depth stream (the top ``levels`` levels a side of a symbol).

    Feed it every DepthSnapshot / DepthUpdate of the stream, JSON or binary, with ``apply``:

    1. a snapshot replaces the book; its ``lastSeq`` becomes the book's;
    2. an update whose ``lastSeq`` <= the book's is old: ignored;
    3. otherwise its ``firstSeq`` must be <= the book's ``lastSeq`` + 1, else GapError (the copy
       is stale: subscribe again for a fresh snapshot); its levels are applied (size 0 removes
       the price level, any other size sets it) and its ``lastSeq`` becomes the book's.

    Before the first snapshot, updates are ignored.  Prices in 1e-4 units, sizes in lots.
    """

    def __init__(self, symbol: str = "") -> None:
        self.symbol = symbol
        self.last_seq: int | None = None
        self.bids: dict[int, tuple[int, int]] = {}
        self.asks: dict[int, tuple[int, int]] = {}

    def apply(self, msg: DepthMessage) -> bool:
        """Apply one depth message; True when it changed the copy.  Raises GapError."""
        if isinstance(msg, (DepthSnapshot, JsonDepthSnapshot)):
            self.bids = {}
            self.asks = {}
            self._levels(self.bids, msg.bids)
            self._levels(self.asks, msg.asks)
            self.last_seq = msg.last_seq
            return True
        if not isinstance(msg, (DepthUpdate, JsonDepthUpdate)):
            raise TypeError(f"not a depth message: {type(msg).__name__}")
        if self.last_seq is None or msg.last_seq <= self.last_seq:
            return False
        if msg.first_seq > self.last_seq + 1:
            raise GapError(self.symbol or msg.symbol, self.last_seq, msg.first_seq)
        self._levels(self.bids, msg.bids)
        self._levels(self.asks, msg.asks)
        self.last_seq = msg.last_seq
        return True

    @staticmethod
    def _levels(side: dict[int, tuple[int, int]], levels: list[BookLevel] | list[Level]) -> None:
        for lv in levels:
            price, size, count = (lv.price, lv.size, lv.order_count) if isinstance(lv, BookLevel) else lv
            if size:
                side[price] = (size, count)
            else:
                side.pop(price, None)

    def top(self, side: int, depth: int = 1_000) -> list[Level]:
        """Levels of side 1 (bids, highest first) or 2 (asks, lowest first), as the core's
        ``book_levels`` gives them: ``[(price, size, order_count), ...]``."""
        book = self.bids if side == 1 else self.asks
        prices = sorted(book, reverse=(side == 1))[:depth]
        return [(p, *book[p]) for p in prices]


class MdClient:
    """One market-data WebSocket connection.  ``await MdClient.connect(url)``, then
    ``subscribe`` and ``recv`` decoded messages: JSON ones as ``protocol.mdjson`` structs, binary
    ones as ``protocol.messages`` structs (one binary WebSocket message may hold several)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = 0
        self._pending: list[MdMessage] = []

    @classmethod
    async def connect(cls, url: str = DEFAULT_MD_URL, token: str | None = None,
                      **kw: Any) -> MdClient:
        """Open the connection (``token``: a JWT of role md, for servers that require one).
        Raises websockets.exceptions.InvalidStatus when the handshake is refused, OSError."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        ws = await connect(url, additional_headers=headers, compression=None,
                           max_size=None, **kw)
        return cls(ws)

    def send_request(self, op: str, channels: list[str] | None = None,
                     symbols: list[str] | None = None, encoding: str = "json",
                     levels: int = 10) -> int:
        """Send one control message without waiting; returns its id."""
        self._ids += 1
        req = Request(op=op, id=self._ids, channels=channels or [], symbols=symbols or [],
                      encoding=encoding, levels=levels)
        asyncio.ensure_future(self.ws.send(encoder.encode(req).decode()))
        return self._ids

    async def request(self, op: str, channels: list[str] | None = None,
                      symbols: list[str] | None = None, encoding: str = "json", levels: int = 10,
                      timeout: float = 5.0) -> Response | ErrorReply:
        """Send a control message and wait for its reply; market data that arrives first is
        kept for ``recv``."""
        rid = self.send_request(op, channels, symbols, encoding, levels)
        held: list[MdMessage] = []
        try:
            while True:
                m = await asyncio.wait_for(self._recv_one(), timeout)
                if isinstance(m, (Response, ErrorReply)) and m.id == rid:
                    return m
                held.append(m)
        finally:
            self._pending[:0] = held

    async def subscribe(self, channels: list[str], symbols: list[str], encoding: str = "json",
                        levels: int = 10, timeout: float = 5.0) -> Response:
        """Subscribe; raises RuntimeError with the server's error when refused."""
        r = await self.request("subscribe", channels, symbols, encoding, levels, timeout)
        if isinstance(r, ErrorReply):
            raise RuntimeError(f"subscribe refused: {r.error} ({r.code}): {r.message}")
        return r

    async def _recv_one(self) -> MdMessage:
        if self._pending:
            return self._pending.pop(0)
        data = await self.ws.recv()
        if isinstance(data, str):
            return server_decoder.decode(data)
        msgs, used = codec.decode_frames(data, sofh=False)
        if used != len(data):
            raise codec.ProtocolError(1, used)
        self._pending.extend(msgs[1:])
        return msgs[0]

    async def recv(self, timeout: float | None = 5.0) -> MdMessage:
        """The next market-data message or reply.  Raises TimeoutError,
        websockets.exceptions.ConnectionClosed."""
        return await asyncio.wait_for(self._recv_one(), timeout)

    async def close(self) -> None:
        await self.ws.close()
