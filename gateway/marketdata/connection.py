"""One market-data WebSocket connection (``MdConnection``): its subscriptions and cursors, the
control frames it is owed, its control-message rate limit and its close; and the parsing of
the control messages it sends (``parse_control``)."""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, NamedTuple

import msgspec
from websockets.protocol import State

from gateway.marketdata.topics import Cursor, Topic
from protocol.mdjson import Request, request_decoder

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from gateway.marketdata.fanout import MarketData

MAX_CONTROL_BYTES = 4096
CLOSE_GRACE_S = 2.0        # a closing subscriber that does not finish the handshake is aborted


class MdConnection:
    """One market-data WebSocket connection: its subscriptions with their cursors, the control
    frames to send, and the depth streams it owes a fresh snapshot (after conflation)."""

    __slots__ = ("md", "ws", "transport", "peer", "subs", "topics", "control", "resync", "tokens",
                 "refill_at", "strikes", "closing")

    def __init__(self, md: MarketData, ws: ServerConnection) -> None:
        self.md = md
        self.ws = ws
        self.transport: asyncio.Transport = ws.transport
        peer = ws.remote_address
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.subs: dict[tuple[str, int], tuple[bool, int]] = {}  # (channel, sid) -> (binary, levels)
        self.topics: dict[Topic, Cursor] = {}
        self.control: list[bytes] = []
        self.resync: set[Topic] = set()
        self.tokens = float(md.cfg.md_max_control_per_s)
        self.refill_at = time.monotonic()
        self.strikes = 0   # control messages refused in a row for the rate
        self.closing = False

    def admit(self, rate: int, now: float) -> bool:
        """Take a token for one control message (a bucket of ``rate`` tokens refilled at
        ``rate`` a second; ``now``: time.monotonic()).  False when there is none: the refusal
        counts in ``strikes`` (reset by the next admitted message)."""
        self.tokens = min(float(rate), self.tokens + (now - self.refill_at) * rate)
        self.refill_at = now
        if self.tokens < 1.0:
            self.strikes += 1
            return False
        self.tokens -= 1.0
        self.strikes = 0
        return True

    def close(self, code: int, reason: str) -> None:
        """Close with a WebSocket close code and reason; aborted if the peer does not answer in
        CLOSE_GRACE_S (a slow reader may never get to the close frame)."""
        if self.closing:
            return
        self.closing = True
        self.control = []
        self.resync = set()
        self.md.congested.discard(self)
        self.md.spawn(self.ws.close(code, reason))
        asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self._abort)

    def _abort(self) -> None:
        if self.ws.protocol.state is not State.CLOSED:
            self.transport.abort()


class BadRequest(NamedTuple):
    """A control message that is not a request: ``rid`` its ``id`` when it has one (for the
    error reply), ``message`` why."""

    rid: int | None
    message: str


def parse_control(msg: str | bytes) -> Request | BadRequest:
    """Decode one control message (a JSON text frame of at most MAX_CONTROL_BYTES characters)."""
    if isinstance(msg, bytes):
        return BadRequest(None, "control messages are JSON text frames")
    if len(msg) > MAX_CONTROL_BYTES:
        return BadRequest(None, f"control message over {MAX_CONTROL_BYTES} bytes")
    try:
        req: Request = request_decoder.decode(msg)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return BadRequest(_request_id(msg), str(exc))
    return req


def _request_id(text: str) -> int | None:
    """The integer ``id`` of a control message that is JSON but not a valid request, for the
    error reply; None when there is none."""
    try:
        doc = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
    rid = doc.get("id") if isinstance(doc, dict) else None
    return rid if isinstance(rid, int) and not isinstance(rid, bool) else None
