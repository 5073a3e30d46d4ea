"""``hftgw serve``: assemble the engine, the TCP listener, the side port and the PostgreSQL sink."""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from gateway import logs
from gateway.admin import AdminApi
from gateway.config.directory import Directory, DirectoryError, PartitionEntry, load_directory, with_entry
from gateway.config.reload import Applier, Reloader
from gateway.config.schema import Config, parse_hostport, warnings_for
from gateway.engine import Engine
from gateway.marketdata.fanout import MarketData
from gateway.transport.tcp import LINGER_NS, OrderEntryProtocol
from gateway.transport.ws import WsGateway
from monitoring.book_page import BookPages
from monitoring.collector import GatewayCollector, reason_totals
from monitoring.http import SidePortServer
from monitoring.loop_lag import LoopLagMonitor
from monitoring.md_collector import MarketDataCollector
from protocol.session import SessionCounters

if TYPE_CHECKING:
    from persistence.pg_sink import EventSink

log = logging.getLogger("hftgw.server")

TICK_S = 0.1  # heartbeat timer resolution
LINGER_S = LINGER_NS / 1e9  # at shutdown: how long a peer has to close after its Logout


class Gateway:
    """One gateway process's servers.  ``start`` returns once the journal is replayed and every
    listener is up (ready); ``serve_until_stopped`` runs until SIGTERM/SIGINT or ``stop`` and
    reloads the config on SIGHUP (``config_path``: the file to re-read; the environment is
    read again too).  Raises gateway.directory.DirectoryError from ``start`` when
    ``directory_file`` is unreadable or gives this partition's symbols to another."""

    def __init__(self, cfg: Config, config_path: str | None = None) -> None:
        self.cfg = cfg
        self.engine = Engine(cfg)
        self.session_counters = SessionCounters()
        self.connections: set[OrderEntryProtocol] = set()
        self.summaries = logs.Summaries(self.reject_counts, cfg.log_summary_interval_s)
        self.reloader = Reloader(cfg, config_path, self._appliers())
        self.directory_base: Directory | None = None  # directory_file as last loaded
        self.registry = CollectorRegistry()
        # monitoring reads the engine through its one read-only stats object only
        self.registry.register(GatewayCollector(self.engine.stats, self.session_counters,
                                                logs.LIMITER, self.reloader))
        self.loop_lag = LoopLagMonitor(self.registry)
        self.md = MarketData(self.engine)
        self.ws: WsGateway | None = None  # the WebSocket port, when ws_listen is set
        self.registry.register(MarketDataCollector(
            self.md, lambda: len(self.ws.order_sessions) if self.ws is not None else 0))
        self.side: SidePortServer | None = None
        self.server: asyncio.Server | None = None
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()  # a second stop signal: cut the shutdown drain short
        self._tasks: list[asyncio.Task[None]] = []
        self._bound_port = 0  # order entry's port once listening (own_entry runs on the side port's thread)

    # -- live configuration (SIGHUP) -----------------------------------------------------------
    def _appliers(self) -> dict[str, Applier]:
        def apply_logging(new: Config) -> str:
            logs.configure(new.log_level, new.log_format, new.log_event_burst,
                           new.log_summary_interval_s)
            self.summaries.interval_s = new.log_summary_interval_s
            return (f"level {new.log_level}, format {new.log_format}, burst "
                    f"{new.log_event_burst} per {new.log_summary_interval_s:g} s")

        def apply_symbols(new: Config) -> str:
            ch = self.engine.apply_symbols(new.symbols)
            risk = self.engine.apply_symbol_risk(self.cfg.symbols, new.symbols)
            return (f"added {ch.added or 'none'}, redefined {ch.updated or 'none'}"
                    + (f", risk settings of {risk}" if risk else "")
                    + (f"; not in the file but still served (ids are permanent): {ch.unlisted}"
                       if ch.unlisted else ""))

        def apply_throttle(new: Config) -> str:
            n = self.engine.apply_throttles(new.throttle)
            return f"roles {sorted(new.throttle) or 'none'}; {n} logged-in sessions updated"

        def apply_risk(new: Config) -> str:
            # the engine reads self.cfg.risk (updated by the reloader after this) when it
            # first sees an account; accounts already known keep their limits, which admin
            # actions may have changed (journaled, so they hold across restarts too)
            return f"{len(new.risk.accounts)} account overrides; for accounts seen from now on"

        def check_directory(new: Config) -> None:
            # against the symbols this partition will serve after the reload
            self._load_directory(new.directory_file, dry_run=True,
                                 extra_symbols=[s.name for s in new.symbols])

        def apply_directory(new: Config) -> str:
            self._load_directory(new.directory_file)
            if not new.directory_file:
                return ""
            return f"{new.directory_file}: {len(self.directory().partitions)} partitions"

        logging_applier = Applier(apply_logging)
        return {"log_level": logging_applier, "log_format": logging_applier,
                "log_event_burst": logging_applier, "log_summary_interval_s": logging_applier,
                "symbols": Applier(apply_symbols),
                "throttle": Applier(apply_throttle), "risk": Applier(apply_risk),
                "directory_file": Applier(apply_directory, check_directory, always=True)}

    def reload(self) -> None:
        """SIGHUP: re-read the config file and apply the live keys (gateway/config/reload.py)."""
        self.reloader.reload()

    # -- directory -----------------------------------------------------------------------------
    def _load_directory(self, path: str, dry_run: bool = False,
                        extra_symbols: list[str] | None = None) -> None:
        base = load_directory(path) if path else None
        own = self.own_entry()
        own.symbols += [s for s in extra_symbols or [] if s not in own.symbols]
        with_entry(base, own)  # raises DirectoryError on a conflict
        if not dry_run:
            self.directory_base = base

    def own_entry(self) -> PartitionEntry:
        """This partition as the directory lists it: advertised host, bound ports, live symbols."""
        cfg = self.cfg
        host, port = parse_hostport(cfg.listen, "listen")
        mhost, mport = parse_hostport(cfg.metrics_listen, "metrics_listen")
        port = self._bound_port or port
        if self.side is not None:
            mport = self.side.port
        adv = cfg.advertise_host
        if not adv:
            adv = host if host not in ("0.0.0.0", "::", "") else socket.getfqdn()
        madv = cfg.advertise_host or (mhost if mhost not in ("0.0.0.0", "::", "") else socket.getfqdn())
        return PartitionEntry(cfg.partition, f"{adv}:{port}", list(self.engine.symbol_names),
                              f"{madv}:{mport}")

    def directory(self) -> Directory:
        """The directory served on /directory: the file's partitions, this one kept live."""
        return with_entry(self.directory_base, self.own_entry())

    # -- metrics helpers -----------------------------------------------------------------------
    def reject_counts(self) -> dict[str, int]:
        """Cumulative rejects by reason name for the log's summaries: order and cancel rejects
        (C counters), session-level rejects, refused logins as ``login_<reason>``."""
        return reason_totals(self.engine.stats, self.session_counters, with_logins=True)

    # -- probes ------------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, object]]:
        sink = self.engine.sink
        details: dict[str, object] = {"sessions": self.engine.sessions_connected(),
                                      "md_subscribers": len(self.md.conns)}
        if sink is None:
            details["sink"] = "off"
        else:
            # 200 all the same: order entry is fine, and /health is the liveness probe (a restart
            # would not bring PostgreSQL back)
            details["sink"] = ("diverged" if sink.diverged else
                               "degraded" if sink.degraded else "ok")
            details["sink_lag_events"] = sink.lag_events
            details["sink_last_event_no"] = sink.last_event_no
            if sink.diverged:
                details["sink_error"] = sink.diverged
            elif sink.degraded and sink.last_error:
                details["sink_error"] = sink.last_error
        return True, details

    def ready(self) -> tuple[bool, dict[str, object]]:
        return self.engine.ready, {"last_seq": self.engine.sequencer.next_seq - 1}

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        for w in warnings_for(cfg):
            log.warning("config: %s", w, extra={"event": "config.warning"})
        if cfg.directory_file:  # fail before binding anything when the file is unusable
            self.directory_base = load_directory(cfg.directory_file)
        mhost, mport = parse_hostport(cfg.metrics_listen, "metrics_listen")
        self.admin = AdminApi(self, asyncio.get_running_loop())
        self.side = SidePortServer(mhost, mport, self.registry, self.health, self.ready,
                                   routes={"/directory": lambda: self.directory().encode()},
                                   pages=BookPages(self.engine.symbol_names, parse_hostport(
                                       cfg.ws_listen, "ws_listen")[1] if cfg.ws_listen else 0),
                                   apps={"/admin": self.admin})
        self.side.start()
        if not cfg.pg_dsn:
            log.info("PostgreSQL sink is off; set HFTGW_PG_DSN (or pg_dsn in the config), "
                     "e.g. HFTGW_PG_DSN=postgresql://postgres@127.0.0.1:5432/postgres")
        try:
            stats = self.engine.recover()
        except BaseException:
            self.side.stop()
            raise
        log.info("journal %s replayed: %d commands, %d sessions, %d symbol definitions in %.3f s, "
                 "from %s", self.engine.journal.path, stats.commands, stats.sessions, stats.symbols,
                 stats.elapsed_s,
                 f"snapshot {stats.snapshot_path} (seq {stats.snapshot_seq})" if stats.snapshot_path
                 else "the start (no snapshot)",
                 extra={"event": "gateway.recovered", "snapshot_seq": stats.snapshot_seq,
                        "snapshot_path": stats.snapshot_path, "commands": stats.commands,
                        "elapsed_s": stats.elapsed_s})
        try:
            self.directory()
        except DirectoryError:
            self.engine.close()
            self.side.stop()
            raise
        if cfg.pg_dsn:
            self._start_sink()
        host, port = parse_hostport(cfg.listen, "listen")
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: OrderEntryProtocol(self.engine, self.connections, self.session_counters),
            host, port, reuse_address=True, backlog=1024)
        self._bound_port = int(self.server.sockets[0].getsockname()[1])
        if cfg.ws_listen:
            self.ws = WsGateway(self.engine, self.md, self.session_counters)
            await self.ws.start()
            self.engine.post_pump.append(self.md.on_pump)
        self._tasks.append(asyncio.create_task(self._ticker(), name="hftgw-ticker"))
        self.loop_lag.start(loop)
        self._tasks.append(asyncio.create_task(self.summaries.run(), name="hftgw-log-summaries"))
        # everything built so far lives as long as the process: move it out of the collector's
        # generations so a full collection does not rescan it in the middle of the order flow
        gc.collect()
        gc.freeze()
        self.engine.ready = True
        log.info("partition %s ready: order entry on %s, metrics on %s:%d, WebSocket %s, symbols %s",
                 cfg.partition, cfg.listen, mhost, self.side.port,
                 f"on {cfg.ws_listen} (/md, /orders)" if self.ws else "off",
                 " ".join(self.engine.symbol_names),
                 extra={"event": "gateway.ready", "partition": cfg.partition})

    def _start_sink(self) -> None:
        # never waits for PostgreSQL: the sink connects (and retries) in its own task and reads
        # the event log from its checkpoint, so order entry starts at once
        from persistence.pg_sink import EventSink

        events = self.engine.event_log
        assert events is not None
        sink = EventSink(self.cfg.pg_dsn, self.cfg.partition, events, self.engine.symbol_names,
                         self.engine.account,
                         journal_point=self.engine.journal_point)
        self.engine.sink = sink
        self._tasks.append(asyncio.create_task(sink.run(), name="hftgw-sink"))
        log.info("PostgreSQL sink on, partition %r; event log %s holds events %d..%d",
                 self.cfg.partition, events.directory, events.start_no, events.end_no)

    async def _ticker(self) -> None:
        prune_at = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            now = time.time_ns()
            for conn in list(self.connections):
                conn.tick(now)
            if self.ws is not None:
                self.ws.tick(now)
            mono = time.monotonic()
            if mono >= prune_at:
                self.engine.addresses.prune(mono)
                prune_at = mono + 10.0

    def stop(self) -> None:
        """End serving: ``serve_until_stopped`` runs the graceful shutdown (``close``).  A second
        call while that runs cuts the waiting parts of it short (see ``close``)."""
        if self._stop.is_set():
            if not self._hurry.is_set():
                log.warning("second stop signal: ending the shutdown drain now",
                            extra={"event": "gateway.stop_hurried"})
            self._hurry.set()
        self._stop.set()

    async def serve_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self._stop.wait()
        await self.close()

    async def close(self) -> None:
        """Graceful shutdown (SIGTERM, SIGINT), bounded by ``drain_timeout_s`` in all:

        1. /ready turns false and the TCP and WebSocket listeners close (no new connections);
        2. final pump: every command decoded into the ring is sequenced, journaled, matched and
           answered, so whatever a client saw acknowledged is in the journal;
        3. every session gets Logout(SERVER_SHUTDOWN) after those answers (cancel-on-disconnect
           sessions then have their orders canceled, journaled, as on any disconnect);
        4. the journal and the message store are fsynced: from here on nothing acknowledged
           can be lost, even by a power cut;
        5. the PostgreSQL sink gets what is left of the budget to commit, while the TCP connections
           linger until their peers close (so the Logout is read, not destroyed by a reset);
        6. whatever did not finish in time is logged (the sink resumes from its checkpoint at
           the next start: nothing is lost, only later in PostgreSQL).

        A second signal during 5 ends it at once; steps 1-4 are synchronous, so they are always
        complete by then and the process still exits 0.  Never raises for a sink or peer fault."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        deadline = t0 + self.cfg.drain_timeout_s
        log.info("shutting down (grace period %.1f s)", self.cfg.drain_timeout_s,
                 extra={"event": "gateway.stopping"})
        self.loop_lag.stop()  # the shutdown's own synchronous steps are not the loop's lag
        commands, sessions, ws_close = self._log_everyone_out()
        for t in self._tasks:
            if t.get_name() != "hftgw-sink":
                t.cancel()
        sink = self.engine.sink
        sink_close = await self._drain(deadline, sink, ws_close)
        left = await self._release(sink, sink_close)
        elapsed = loop.time() - t0
        done_part = (f"{commands} commands answered in the final pump, {sessions} sessions "
                     "logged out, journal synced")
        if left or self._hurry.is_set():
            log.warning("stopped in %.2f s%s: %s; left: %s", elapsed,
                        " (second signal)" if self._hurry.is_set() else "", done_part,
                        "; ".join(left) or "nothing",
                        extra={"event": "gateway.stopped", "elapsed_s": elapsed, "clean": False})
        else:
            log.info("stopped in %.2f s: %s%s", elapsed, done_part,
                     ", sink drained" if sink is not None else "",
                     extra={"event": "gateway.stopped", "elapsed_s": elapsed, "clean": True})

    def _log_everyone_out(self) -> tuple[int, int, asyncio.Future[None] | None]:
        # close steps 1-4 (synchronous): stop accepting, final pump, Logout to every session,
        # the cancel-on-disconnect pump, the shutdown snapshot, journal sync; returns the
        # commands pumped, the sessions logged out and the WebSocket port's closing
        engine = self.engine
        engine.ready = False
        if self.server is not None:
            self.server.close()
        if self.ws is not None:
            self.ws.stop_accepting()
        commands = engine.pump() if engine.journal.is_open else 0
        sessions = len(self.connections) + (len(self.ws.order_sessions) if self.ws else 0)
        for conn in list(self.connections):
            conn.shutdown()
        if self.ws is not None:
            for ws_session in list(self.ws.order_sessions):
                ws_session.shutdown()
        ws_close = asyncio.ensure_future(self.ws.close()) if self.ws is not None else None
        if engine.journal.is_open:
            # the cancel-on-disconnect mass cancels queued by the logouts above
            commands += engine.pump()
            # the shutdown snapshot: the next start loads it instead of replaying the journal
            engine.write_snapshot(background=False)
            self._sync_journal()
        return commands, sessions, ws_close

    async def _drain(self, deadline: float, sink: EventSink | None,
                     ws_close: asyncio.Future[None] | None) -> asyncio.Future[None] | None:
        # close step 5: wait (until the deadline or a second signal) for the peers to close,
        # the WebSocket port and the sink's flush; returns the sink's closing
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[None]] = [asyncio.ensure_future(self._peers_gone(deadline))]
        if ws_close is not None:
            waits.append(ws_close)
        sink_close: asyncio.Future[None] | None = None
        if sink is not None:
            sink_close = asyncio.ensure_future(sink.close(flush_timeout=max(0.0, deadline - loop.time())))
            waits.append(sink_close)
        hurry = asyncio.ensure_future(self._hurry.wait())
        pending = set(waits)
        while pending and not self._hurry.is_set():
            budget = deadline - loop.time() + 0.5  # the sink's own timeout ends first
            if budget <= 0:
                break
            watched: set[asyncio.Future[Any]] = {*pending, hurry}
            done, _ = await asyncio.wait(watched, timeout=budget,
                                         return_when=asyncio.FIRST_COMPLETED)
            pending -= done
        hurry.cancel()
        for f in pending:
            f.cancel()
        if pending:
            await asyncio.wait(pending)
        return sink_close

    async def _release(self, sink: EventSink | None,
                       sink_close: asyncio.Future[None] | None) -> list[str]:
        # after the drain: stop what is left, close the engine's files and the side port;
        # returns what was left undone
        left = []
        if sink is not None and sink_close is not None and sink_close.cancelled():
            await sink.close(flush_timeout=0.0)  # cut short: stop its task and connection now
        if sink is not None and sink.lag_events:
            left.append(f"{sink.lag_events} events (fills, order events) not yet in PostgreSQL "
                        "(the sink resumes from its checkpoint in the event log at the next start)")
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self.connections:
            left.append(f"{len(self.connections)} connections not closed by their peers")
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 0.5)
        self.engine.close()  # journal, message store, event log
        if self.side is not None:
            self.side.stop()
        self.engine.audit.close()
        return left

    def _sync_journal(self) -> None:
        # in "os" mode the last groups (and segments closed since the last sync) may still be
        # only in the page cache: a clean stop leaves a journal that survives a power cut too
        journal = self.engine.journal
        try:
            journal.sync()
        except OSError as exc:
            log.error("journal %s: sync at shutdown failed: %s", journal.path, exc,
                      extra={"event": "journal.sync_failed"})
        # the message store too (re-login replays from it); the journal could regenerate it
        try:
            self.engine.store.sync()
        except OSError as exc:
            log.error("message store: sync at shutdown failed: %s", exc,
                      extra={"event": "message_store.sync_failed"})

    async def _peers_gone(self, deadline: float) -> None:
        # lingering close (gateway/transport/tcp.py): each peer reads its Logout, then closes; a peer
        # that does not is aborted after LINGER_S or at the deadline
        loop = asyncio.get_running_loop()
        end = min(deadline, loop.time() + LINGER_S)
        while self.connections and loop.time() < end:
            await asyncio.sleep(0.01)


async def serve(cfg: Config, config_path: str | None = None) -> None:
    gw = Gateway(cfg, config_path)
    await gw.start()
    await gw.serve_until_stopped()
