"""A bare uvloop TCP server that echoes every byte back: the physical ceiling the gateway is
compared against in bench/e2e_bench.py (DESIGN §3).  No decoding, no journal, no matching.

    python bench/echo_server.py --listen 127.0.0.1:7901
"""
from __future__ import annotations

import argparse
import asyncio
import socket
from typing import cast

import uvloop


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, host, port, reuse_address=True)
    print(f"echo on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:7901")
    a = ap.parse_args()
    h, _, p = a.listen.rpartition(":")
    uvloop.run(main(h, int(p)))
