"""An asyncio order-entry client: login, send, receive decoded messages, heartbeats.

Used by ``hftgw client``, ``hftgw replay-lobster``, the tests and the benchmarks; a reference for
client developers (the wire format is in docs/protocol.md).
"""
from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Callable

from protocol import codec
from protocol.messages import Heartbeat, Login, LoginAccepted, LoginRejected, Logout, Message

DEFAULT_CONNECT = "127.0.0.1:7001"


class LoginError(Exception):
    """The server refused the login; ``reason`` is the LoginRejectReason."""

    def __init__(self, reason: int) -> None:
        super().__init__(f"login rejected, reason {reason}")
        self.reason = reason


class MessageInbox(abc.ABC):
    """The receiving side shared by the TCP and WebSocket order clients: decoded messages
    queued in ``messages`` in arrival order (or handed to ``on_message`` once it is set);
    ``closed`` is set when the connection ends, with ``close_reason``."""

    def __init__(self) -> None:
        self.session_id = 0
        self.next_seq_num = 0
        self.heartbeat_ms = 1000
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self.on_message: Callable[[Message], None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @abc.abstractmethod
    async def _close_transport(self) -> None:
        """Close the connection (the read and heartbeat tasks are cancelled already)."""

    @abc.abstractmethod
    async def _heartbeat_loop(self) -> None:
        """Send a Heartbeat every ``heartbeat_ms`` while the connection is open."""

    async def _logged_in(self, first: Message) -> None:
        """Take the server's answer to the Login: LoginAccepted sets the session's id, next
        seqNum and heartbeat interval and starts the heartbeats.  Raises LoginError (the
        LoginRejectReason) for LoginRejected, ConnectionError for anything else; both close."""
        if isinstance(first, LoginRejected):
            await self.close()
            raise LoginError(int(first.reason))
        if not isinstance(first, LoginAccepted):
            await self.close()
            raise ConnectionError(f"unexpected first message {first!r}")
        self.session_id = first.session_id
        self.next_seq_num = first.next_seq_num
        self.heartbeat_ms = first.heartbeat_interval_ms
        self._tasks.append(asyncio.create_task(self._heartbeat_loop()))

    def _deliver(self, msgs: list[Message]) -> None:
        """Queue (or hand to ``on_message``) decoded messages; heartbeats are dropped, a Logout
        sets ``close_reason``."""
        for m in msgs:
            if isinstance(m, Heartbeat):
                continue
            if isinstance(m, Logout):
                self.close_reason = f"logout reason {m.reason}"
            if self.on_message is not None:
                self.on_message(m)
            else:
                self.messages.put_nowait(m)

    async def close(self) -> None:
        """End the connection (without a Logout: ``logout`` sends one first) and its tasks."""
        for t in self._tasks:
            t.cancel()
        await self._close_transport()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.closed.set()

    async def recv(self, timeout: float = 5.0) -> Message:
        """The next message.  Raises asyncio.TimeoutError; ConnectionError once closed and empty."""
        if self.messages.empty() and self.closed.is_set():
            raise ConnectionError(self.close_reason or "closed")
        get = asyncio.ensure_future(self.messages.get())
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            done, _ = await asyncio.wait({get, closed}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if get in done:
            return get.result()
        get.cancel()
        if closed in done and self.messages.empty():
            raise ConnectionError(self.close_reason or "closed")
        if not done:
            raise TimeoutError()
        return await self.messages.get()

    async def recv_until(self, pred: Callable[[Message], bool], timeout: float = 5.0) -> list[Message]:
        """Messages up to and including the first for which ``pred`` is true."""
        out: list[Message] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            m = await self.recv(max(0.0, deadline - loop.time()))
            out.append(m)
            if pred(m):
                return out


class OrderClient(MessageInbox):
    """A logged-in session.  Create with ``await OrderClient.connect(...)``.

    Received business and session messages are queued in arrival order; ``recv`` takes the
    next one.  Heartbeats are answered automatically and not queued.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, token: str, *, next_expected_seq_num: int = 0,
                      heartbeat_ms: int = 1000, cancel_on_disconnect: bool = False,
                      default_stp_mode: int = 0, timeout: float = 5.0) -> OrderClient:
        """Open a TCP connection and log in.  default_stp_mode: the StpMode the server applies
        to this session's NewOrders sent with stp_mode 0.  Raises LoginError when refused,
        OSError when the connection fails, asyncio.TimeoutError when no answer comes in
        ``timeout`` seconds."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        self = cls(reader, writer)
        writer.write(codec.encode(Login(heartbeat_interval_ms=heartbeat_ms,
                                        next_expected_seq_num=next_expected_seq_num,
                                        cancel_on_disconnect=int(cancel_on_disconnect),
                                        default_stp_mode=default_stp_mode, token=token)))
        self._tasks.append(asyncio.create_task(self._read_loop()))
        await self._logged_in(await asyncio.wait_for(self.messages.get(), timeout))
        return self

    async def _read_loop(self) -> None:
        buf = bytearray()
        try:
            while True:
                data = await self.reader.read(1 << 16)
                if not data:
                    self.close_reason = self.close_reason or "server closed the connection"
                    # close our side too: the server lingers until we do (gateway/transport/tcp.py)
                    self.writer.close()
                    break
                buf += data
                msgs, used = codec.decode_frames(buf)
                del buf[:used]
                self._deliver(msgs)
        except (ConnectionError, codec.ProtocolError) as exc:
            self.close_reason = f"{type(exc).__name__}: {exc}"
        finally:
            self.closed.set()

    async def _heartbeat_loop(self) -> None:
        hb = codec.encode(Heartbeat())
        while not self.closed.is_set():
            await asyncio.sleep(self.heartbeat_ms / 1000 / 2)
            if not self.writer.is_closing():
                self.writer.write(hb)

    def send(self, *msgs: Message) -> None:
        """Encode and send messages (no waiting)."""
        self.writer.write(b"".join(codec.encode(m) for m in msgs))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def logout(self) -> None:
        if not self.writer.is_closing():
            self.writer.write(codec.encode(Logout(reason=0)))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.closed.wait(), 2.0)
        await self.close()

    async def _close_transport(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
