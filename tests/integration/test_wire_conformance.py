"""Issue 14's conformance findings, checked over real sockets with hand-written bytes: what goes
on the wire is built here with ``struct`` from docs/protocol.md's tables and what comes back is
compared byte for byte (or read at the documented offsets), so the project's own codec is not
the only judge of what the docs promise."""
from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path

from support.gateway_harness import make_config, metric_value, running_gateway, scrape

from gateway.config.schema import Config

SOFH = struct.Struct(">IH")          # messageLength (frame, SOFH included), encodingType
HEADER = struct.Struct("<HHHH")      # blockLength, templateId, schemaId, version
ENCODING = 0xEB50


def frame(template: int, block: bytes, version: int = 2, tail: bytes = b"") -> bytes:
    """A TCP frame: SOFH, message header with blockLength = len(block), root block, tail."""
    body = HEADER.pack(len(block), template, 1, version) + block + tail
    return SOFH.pack(SOFH.size + len(body), ENCODING) + body


def split_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """(templateId, version, root block) of each whole SOFH frame in ``data``, read by hand."""
    out = []
    pos = 0
    while pos + SOFH.size <= len(data):
        length, enc = SOFH.unpack_from(data, pos)
        assert enc == ENCODING and pos + length <= len(data), data[pos:pos + 16].hex()
        block_length, template, schema, version = HEADER.unpack_from(data, pos + SOFH.size)
        assert schema == 1
        start = pos + SOFH.size + HEADER.size
        out.append((template, version, data[start:start + block_length]))
        pos += length
    assert pos == len(data), "a partial frame at the end"
    return out


async def read_until_close(cfg: Config, send: bytes, timeout: float = 5.0) -> tuple[bytes, float]:
    """Everything the server writes on a new order-entry connection after ``send`` (may be
    empty), until it closes; and how long that took."""
    host, port = cfg.listen.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    t0 = time.monotonic()
    writer.write(send)
    buf = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), timeout):
            buf += chunk
    finally:
        writer.close()
    return buf, time.monotonic() - t0


# -- findings 1 and 2: the login timeout, no heartbeats before login ------------------------------
#: Logout reason 7 (LOGIN_TIMEOUT), TCP framed: 16 bytes
LOGOUT_LOGIN_TIMEOUT = bytes.fromhex("00000010eb50" "0200" "0500" "0100" "0200" "0700")


async def test_a_silent_connection_gets_no_heartbeat_then_logout_login_timeout(tmp_path: Path) -> None:
    """A connection that sends nothing: with a 100 ms heartbeat interval (which used to give
    heartbeats and a HEARTBEAT_TIMEOUT logout at ~300 ms) the only bytes it ever receives are
    one Logout reason 7, after login_timeout_ms, counted by hftgw_login_timeouts_total."""
    cfg = make_config(tmp_path, login_timeout_ms=800, heartbeat_interval_ms=100)
    async with running_gateway(cfg):
        data, took = await read_until_close(cfg, b"")
        assert data == LOGOUT_LOGIN_TIMEOUT
        assert 0.75 < took < 3.0
        # heartbeats do not keep a connection alive before login either, nor make it get any
        beats = frame(4, b"") * 5
        data, took = await read_until_close(cfg, beats)
        assert data == LOGOUT_LOGIN_TIMEOUT and 0.75 < took < 3.0
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_login_timeouts_total") == 2
        assert metric_value(text, "hftgw_heartbeat_timeouts_total") == 0
