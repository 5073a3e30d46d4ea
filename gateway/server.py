"""``hftgw serve``: assemble the engine, the TCP listener, the side port and the fills sink."""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time

from prometheus_client import CollectorRegistry

from gateway.config import Config, parse_hostport
from gateway.engine import Engine
from gateway.marketdata import MarketData
from gateway.tcp import OrderEntryProtocol
from gateway.ws import WsGateway
from monitoring.book_page import BookPages
from monitoring.collector import GatewayCollector
from monitoring.http import SidePortServer
from monitoring.md_collector import MarketDataCollector
from protocol.session import SessionCounters

log = logging.getLogger("hftgw.server")

TICK_S = 0.1  # heartbeat timer resolution


class Gateway:
    """One gateway process's servers.  ``start`` returns once the journal is replayed and every
    listener is up (ready); ``serve_until_stopped`` runs until SIGTERM/SIGINT or ``stop``."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.engine = Engine(cfg)
        self.session_counters = SessionCounters()
        self.connections: set[OrderEntryProtocol] = set()
        self.registry = CollectorRegistry()
        self.registry.register(GatewayCollector(self.engine, self.session_counters))
        self.md = MarketData(self.engine)
        self.ws: WsGateway | None = None  # the WebSocket port, when ws_listen is set
        self.registry.register(MarketDataCollector(
            self.md, lambda: len(self.ws.order_sessions) if self.ws is not None else 0))
        self.side: SidePortServer | None = None
        self.server: asyncio.Server | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- probes ------------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, object]]:
        sink = self.engine.sink
        details: dict[str, object] = {"sessions": self.engine.sessions_connected(),
                                      "md_subscribers": len(self.md.conns)}
        if sink is None:
            details["sink"] = "off"
        else:
            details["sink"] = "ok" if sink.connected else "degraded"
            details["sink_lag_rows"] = sink.lag_rows
        return True, details

    def ready(self) -> tuple[bool, dict[str, object]]:
        return self.engine.ready, {"last_seq": self.engine.sequencer.next_seq - 1}

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        mhost, mport = parse_hostport(cfg.metrics_listen, "metrics_listen")
        self.side = SidePortServer(mhost, mport, self.registry, self.health, self.ready,
                                   pages=BookPages(self.engine.symbol_names, cfg.ws_listen))
        self.side.start()
        if cfg.pg_dsn:
            await self._start_sink()
        else:
            log.info("PostgreSQL fills sink is off; set HFTGW_PG_DSN (or pg_dsn in the config), "
                     "e.g. HFTGW_PG_DSN=postgresql://postgres@127.0.0.1:5432/postgres")
        stats = self.engine.recover()
        log.info("journal %s replayed: %d commands, %d sessions in %.3f s",
                 self.engine.journal.path, stats.commands, stats.sessions, stats.elapsed_s)
        if self.engine.sink is not None:
            self.engine._flush()  # hand the sink what the replay found past its checkpoint
        host, port = parse_hostport(cfg.listen, "listen")
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: OrderEntryProtocol(self.engine, self.connections, self.session_counters),
            host, port, reuse_address=True, backlog=1024)
        if cfg.ws_listen:
            self.ws = WsGateway(self.engine, self.md, self.session_counters)
            await self.ws.start()
            self.engine.post_pump.append(self.md.on_pump)
        self._tasks.append(asyncio.create_task(self._ticker(), name="hftgw-ticker"))
        # everything built so far lives as long as the process: move it out of the collector's
        # generations so a full collection does not rescan it in the middle of the order flow
        gc.collect()
        gc.freeze()
        self.engine.ready = True
        log.info("order entry on %s, metrics on %s:%d, WebSocket %s", cfg.listen, mhost,
                 self.side.port, f"on {cfg.ws_listen} (/md, /orders)" if self.ws else "off")

    async def _start_sink(self) -> None:
        from persistence.pg_sink import FillSink

        sink = FillSink(self.cfg.pg_dsn, self.cfg.partition, self.engine.symbol_names,
                        self.engine.account)
        try:
            after = await asyncio.wait_for(sink.start(), timeout=5.0)
        except (TimeoutError, OSError) as exc:
            # order entry must not wait for PostgreSQL: capture every fill of the replay and
            # let the sink drop what its checkpoint already has once it connects
            log.warning("PostgreSQL not reachable yet (%s); the sink will keep retrying", exc)
            after = 0
        self.engine.sink = sink
        self.engine.outbound.capture_fills(after)
        self._tasks.append(asyncio.create_task(sink.run(), name="hftgw-sink"))
        log.info("PostgreSQL fills sink on, partition %r, resuming after trade %d",
                 self.cfg.partition, after)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.time_ns()
            for conn in list(self.connections):
                conn.tick(now)
            if self.ws is not None:
                self.ws.tick(now)

    def stop(self) -> None:
        self._stop.set()

    async def serve_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        await self._stop.wait()
        await self.close()

    async def close(self) -> None:
        """Stop accepting, answer what is queued, log every session out, flush the sink."""
        log.info("shutting down")
        if self.server is not None:
            self.server.close()
        self.engine.pump()
        for conn in list(self.connections):
            conn.shutdown()
        if self.ws is not None:
            await self.ws.close()
        for t in self._tasks:
            if t.get_name() != "hftgw-sink":
                t.cancel()
        sink = self.engine.sink
        if sink is not None:
            await sink.close(flush_timeout=5.0)
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)
        self.engine.journal.close()
        if self.side is not None:
            self.side.stop()


async def serve(cfg: Config) -> None:
    gw = Gateway(cfg)
    await gw.start()
    await gw.serve_until_stopped()
