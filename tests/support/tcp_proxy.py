"""A TCP forwarder on 127.0.0.1 for network-cut tests (PostgreSQL behind it)."""
from __future__ import annotations

import asyncio


class TcpProxy:
    """A real TCP forwarder on 127.0.0.1 that can be switched off, cutting every connection."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self.server: asyncio.Server | None = None
        self.links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection(*self.target)
        self.links.append((w, uw))

        async def pipe(a: asyncio.StreamReader, b: asyncio.StreamWriter) -> None:
            try:
                while data := await a.read(1 << 16):
                    b.write(data)
                    await b.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                b.transport.abort()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w, uw in self.links:
            w.transport.abort()
            uw.transport.abort()
        self.links.clear()
        await self.server.wait_closed()
