"""The market-data control protocol: a subscriber's JSON requests (subscribe, unsubscribe,
list, ping; docs/protocol.md, "Market data feed") checked, applied and answered.  Every
request gets exactly one reply (a Response or an ErrorReply); a refused request changes
nothing."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway.marketdata.connection import BadRequest, MdConnection, parse_control
from gateway.marketdata.frames import ws_frame
from protocol.mdjson import (
    CHANNELS,
    DEPTH_LEVELS,
    ENCODINGS,
    ErrorReply,
    MdError,
    Request,
    Response,
    Subscription,
    encoder,
)

if TYPE_CHECKING:
    from gateway.marketdata.fanout import MarketData

Key = tuple[str, int]  # (channel, symbol id)


class ControlHandler:
    """Handles the control messages of ``md``'s connections; the subscriptions themselves are
    kept by the publisher (``MarketData.add_subscription``/``remove_subscription``)."""

    def __init__(self, md: MarketData) -> None:
        self.md = md

    def handle(self, conn: MdConnection, msg: str | bytes) -> None:
        """Handle one message from a subscriber; a connection over its rate more than
        ``md_max_control_per_s`` times in a row is closed (1008)."""
        if conn.closing:
            return
        rate = self.md.cfg.md_max_control_per_s
        if not conn.admit(rate, time.monotonic()):
            if conn.strikes > rate:
                self._error(conn, None, MdError.RATE_LIMITED, "too many control messages: closing")
                self.md.visit(conn)
                conn.close(1008, "too many control messages")
                return
            self._error(conn, None, MdError.RATE_LIMITED, f"more than {rate} control messages per second")
            self.md.visit(conn)
            return
        req = parse_control(msg)
        if isinstance(req, BadRequest):
            self._error(conn, req.rid, MdError.BAD_REQUEST, req.message)
        else:
            self._request(conn, req)
        self.md.visit(conn)  # the reply (and a new subscription's first data) right away

    def _reply(self, conn: MdConnection, msg: Response | ErrorReply) -> None:
        conn.control.append(ws_frame(encoder.encode(msg), True))

    def _error(self, conn: MdConnection, rid: int | None, code: MdError, message: str) -> None:
        errors = self.md.counters.control_errors
        errors[code] = errors.get(code, 0) + 1
        self._reply(conn, ErrorReply(rid, int(code), code.name, message))

    def _subscriptions(self, conn: MdConnection) -> list[Subscription]:
        feeds = self.md.feeds
        return [Subscription(ch, feeds[sid].name, "binary" if binary else "json", levels)
                for (ch, sid), (binary, levels) in sorted(conn.subs.items())]

    def _request(self, conn: MdConnection, req: Request) -> None:
        if req.op == "ping":
            self._reply(conn, Response(req.id, "pong"))
        elif req.op == "list":
            self._reply(conn, Response(req.id, "list", self._subscriptions(conn)))
        elif req.op in ("subscribe", "unsubscribe"):
            keys = self._validate(conn, req)
            if keys is None:
                return
            if req.op == "subscribe":
                self._subscribe(conn, req, keys)
            else:
                for key in keys:
                    if key in conn.subs:
                        self.md.remove_subscription(conn, key)
                self.md.update_tap()
                self._reply(conn, Response(req.id, "unsubscribed", self._subscriptions(conn)))
        else:
            self._error(conn, req.id, MdError.UNKNOWN_OP,
                        f"unknown op {req.op!r}: subscribe, unsubscribe, list or ping")

    def _validate(self, conn: MdConnection, req: Request) -> list[Key] | None:
        """The (channel, symbol id) pairs a (un)subscribe names, or None after an error reply."""
        if not req.channels or not req.symbols:
            self._error(conn, req.id, MdError.BAD_REQUEST, "channels and symbols must not be empty")
            return None
        for ch in req.channels:
            if ch not in CHANNELS:
                self._error(conn, req.id, MdError.UNKNOWN_CHANNEL,
                            f"unknown channel {ch!r}: {', '.join(CHANNELS)}")
                return None
        sids = []
        md = self.md
        md.sync_symbols()
        for name in req.symbols:
            sid = md.sid_by_name.get(name)
            if sid is None:
                self._error(conn, req.id, MdError.UNKNOWN_SYMBOL, f"unknown symbol {name!r}")
                return None
            sids.append(sid)
        if req.op == "subscribe":
            if req.encoding not in ENCODINGS:
                self._error(conn, req.id, MdError.BAD_ENCODING,
                            f"unknown encoding {req.encoding!r}: json or binary")
                return None
            if "depth" in req.channels and req.levels not in DEPTH_LEVELS:
                self._error(conn, req.id, MdError.BAD_LEVELS,
                            f"depth levels must be one of {DEPTH_LEVELS}, got {req.levels}")
                return None
        keys = list(dict.fromkeys((ch, sid) for ch in req.channels for sid in sids))
        if req.op == "subscribe":
            new = sum(1 for k in keys if k not in conn.subs)
            limit = md.cfg.md_max_subscriptions
            if len(conn.subs) + new > limit:
                self._error(conn, req.id, MdError.TOO_MANY_SUBSCRIPTIONS,
                            f"at most {limit} subscriptions per connection")
                return None
        return keys

    def _subscribe(self, conn: MdConnection, req: Request, keys: list[Key]) -> None:
        md = self.md
        binary = req.encoding == "binary"
        for key in keys:
            if key in conn.subs:
                md.remove_subscription(conn, key)  # a repeated subscription re-sends the initial state
        # bring each book up to date first: a change found now goes to the existing subscribers
        now = time.time_ns()
        for sid in dict.fromkeys(sid for ch, sid in keys if ch != "trades"):
            md.refresh(md.feeds[sid], now)
        snapshots = md.add_subscriptions(conn, keys, binary, req.levels)
        md.update_tap()
        self._reply(conn, Response(req.id, "subscribed", self._subscriptions(conn)))
        conn.control.extend(snapshots)  # the reply, then each depth stream's snapshot
