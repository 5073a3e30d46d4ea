"""The market-data encoders: each message is encoded ONCE per encoding, as a ready WebSocket
frame that is then written to every subscriber of that encoding (binary: SBE templates 40-43
without the SOFH prefix; JSON: protocol/mdjson.py)."""
from __future__ import annotations

from typing import cast

from websockets.frames import Frame, Opcode

from gateway.marketdata.topics import Levels, Topic
from protocol import codec
from protocol.mdjson import JsonBbo, JsonDepthSnapshot, JsonDepthUpdate, encoder
from protocol.messages import Bbo, BookLevel, DepthSnapshot, DepthUpdate

LogEntry = tuple[bytes | None, bytes | None]  # (json frame, binary frame), None: nobody took it


def ws_frame(payload: bytes, text: bool) -> bytes:
    """One unmasked (server) WebSocket frame carrying ``payload`` as a text or binary message."""
    return Frame(Opcode.TEXT if text else Opcode.BINARY, payload).serialize(mask=False)


def _group(levels: Levels) -> list[BookLevel]:
    # codec.encode takes a repeating group's entries as tuples as well as BookLevel structs
    # (codec.pyx, encode): the levels go to the encoder as they came from the core, without a
    # struct per level
    return cast("list[BookLevel]", levels)


def trade_entry(topic: Topic, sbe: bytes, js: bytes) -> LogEntry:
    """The log entry of one symbol's trades of one pump: ``sbe`` the encoded TradeMessages,
    ``js`` the JSON array entries (both from protocol.mdfeed.encode_trades)."""
    want_json, want_binary = topic.encodings()
    return (ws_frame(topic.feed.json_prefix + js + b"]}", True) if want_json else None,
            ws_frame(sbe, False) if want_binary else None)


def depth_update_entry(topic: Topic, ts: int, first: int, bids: Levels, asks: Levels) -> LogEntry:
    """The log entry of one DepthUpdate of a depth stream whose state is already the new one:
    book sequence numbers ``first`` .. the stream's ``last_seq``, ``ts`` ns since the epoch,
    ``bids``/``asks`` the changed levels (diff_levels)."""
    f = topic.feed
    want_json, want_binary = topic.encodings()
    js = bs = None
    if want_json:
        js = ws_frame(encoder.encode(JsonDepthUpdate(f.name, ts, first, topic.last_seq, topic.levels,
                                                     bids, asks)), True)
    if want_binary:
        msg = DepthUpdate(f.name, ts, first, topic.last_seq, topic.levels, _group(bids), _group(asks))
        bs = ws_frame(codec.encode(msg, sofh=False), False)
    return js, bs


def bbo_frame(topic: Topic, binary: bool) -> bytes:
    """The BBO topic's newest state as a frame, built on the first call for each version."""
    fr = topic.frames[binary]
    if fr is None:
        f = topic.feed
        bp, bs, ap, asz = f.bbo
        if binary:
            fr = ws_frame(codec.encode(Bbo(f.name, f.ts, f.book_seq, bp, bs, ap, asz), sofh=False), False)
        else:
            fr = ws_frame(encoder.encode(JsonBbo(f.name, f.ts, f.book_seq, bp, bs, ap, asz)), True)
        topic.frames[binary] = fr
    return fr


def snapshot_frame(topic: Topic, binary: bool) -> bytes:
    """A DepthSnapshot of the depth stream's state at its ``last_seq``."""
    f = topic.feed
    if binary:
        msg = DepthSnapshot(f.name, f.ts, topic.last_seq, topic.levels,
                            _group(topic.bids), _group(topic.asks))
        return ws_frame(codec.encode(msg, sofh=False), False)
    return ws_frame(encoder.encode(JsonDepthSnapshot(f.name, f.ts, topic.last_seq, topic.levels,
                                                     topic.bids, topic.asks)), True)
