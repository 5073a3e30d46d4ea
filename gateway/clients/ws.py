"""Order entry over WebSocket: the same session and messages as ``gateway.client.OrderClient``
on TCP, for clients that can only speak WebSocket (``ws://host:7002/orders``).

Each binary WebSocket message carries one or more SBE messages back to back, without SOFH: the
frame delimits them (docs/protocol.md, "Framing").  A reference for client developers, used by
the tests.
"""
from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.clients.tcp import MessageInbox
from protocol import codec
from protocol.messages import Heartbeat, Login, Logout, Message

DEFAULT_ORDERS_URL = "ws://127.0.0.1:7002/orders"


class WsOrderClient(MessageInbox):
    """A logged-in session over WebSocket.  Create with ``await WsOrderClient.connect(...)``;
    the rest is as OrderClient: ``send``, ``recv``, ``recv_until``, ``logout``, ``on_message``."""

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__()
        self.ws = ws

    @classmethod
    async def connect(cls, url: str, token: str, *, next_expected_seq_num: int = 0,
                      heartbeat_ms: int = 1000, cancel_on_disconnect: bool = False,
                      timeout: float = 5.0) -> WsOrderClient:
        """Open the WebSocket and log in.  Raises LoginError when refused, OSError or
        websockets.exceptions.InvalidHandshake when the connection fails, TimeoutError."""
        ws = await asyncio.wait_for(connect(url, compression=None, max_size=None), timeout)
        self = cls(ws)
        await ws.send(codec.encode(Login(heartbeat_interval_ms=heartbeat_ms,
                                         next_expected_seq_num=next_expected_seq_num,
                                         cancel_on_disconnect=int(cancel_on_disconnect),
                                         token=token), sofh=False))
        self._tasks.append(asyncio.create_task(self._read_loop()))
        await self._logged_in(await self.recv(timeout))
        return self

    async def _read_loop(self) -> None:
        try:
            async for data in self.ws:
                if isinstance(data, str):
                    raise codec.ProtocolError(1, 0)
                msgs, used = codec.decode_frames(data, sofh=False)
                if used != len(data):
                    raise codec.ProtocolError(1, used)
                self._deliver(msgs)
            self.close_reason = self.close_reason or "server closed the connection"
        except (ConnectionClosed, codec.ProtocolError) as exc:
            self.close_reason = self.close_reason or f"{type(exc).__name__}: {exc}"
        finally:
            self.closed.set()

    async def _heartbeat_loop(self) -> None:
        hb = codec.encode(Heartbeat(), sofh=False)
        with contextlib.suppress(ConnectionClosed):
            while not self.closed.is_set():
                await asyncio.sleep(self.heartbeat_ms / 1000 / 2)
                await self.ws.send(hb)

    def send(self, *msgs: Message) -> None:
        """Encode ``msgs`` into ONE binary WebSocket message and send it (no waiting)."""
        self.send_raw(b"".join(codec.encode(m, sofh=False) for m in msgs))

    def send_raw(self, data: bytes | str) -> None:
        t = asyncio.ensure_future(self.ws.send(data))
        t.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def logout(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(codec.encode(Logout(reason=0), sofh=False))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.closed.wait(), 2.0)
        await self.close()

    async def _close_transport(self) -> None:
        await self.ws.close()
