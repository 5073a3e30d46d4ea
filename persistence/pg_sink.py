"""Order events and fills -> PostgreSQL, exactly once, without ever making order entry wait.

The engine appends every order event and fill, numbered by a global event number, to the event
log (persistence/event_log.py) once per pump and calls ``EventSink.notify``.  The sink's task
(``EventSink.run``) reads the log from its checkpoint in batches of up to ``batch_rows`` events,
builds two binary COPY payloads in C on a worker thread, mostly without the GIL
(``persistence.copy_binary.fills_to_copy`` / ``order_events_to_copy``), and writes them with::

    BEGIN;
    SELECT last_event_no, last_trade_id, last_seq FROM sink_checkpoint WHERE partition = $1 FOR UPDATE;
    COPY fills (...) FROM STDIN (FORMAT binary);          -- the batch's fills
    COPY order_events (...) FROM STDIN (FORMAT binary);   -- its other order events
    UPDATE sink_checkpoint SET last_event_no = .., last_trade_id = .., last_seq = .. WHERE partition = $1;
    COMMIT;

The checkpoint row is locked and moved in the same transaction as the rows, so a batch is
either entirely in with its checkpoint or not at all.  If the locked checkpoint is not the one
the batch was read after (a commit of ours whose reply was lost, another writer), the batch is
read again from the checkpoint found.  On any error the sink logs, backs off (exponential,
capped), reconnects and retries: nothing is dropped and nothing is written twice (the primary
keys (partition, trade_id) and (partition, event_no) would refuse a duplicate anyway).  Fills
with a trade id <= the checkpoint's last_trade_id are left out, so a table written by the older
fills-only sink (its events were not numbered) gets no duplicates either.

Memory is bounded (one batch being written, the next being read and built); the backlog while
PostgreSQL is away is on disk in the event log.  Segments of the log whose events are all
committed are deleted after each commit.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import asyncpg

from persistence.copy_binary import (
    FILL_COLUMNS,
    ORDER_EVENT_COLUMNS,
    events_info,
    fills_to_copy,
    order_events_to_copy,
)
from persistence.event_log import EventLog
from persistence.files import fsync_dir

log = logging.getLogger(__name__)

EVENT_SIZE = 128
#: bytes per CopyData message (asyncpg's own copy_records_to_table uses 512 KiB)
COPY_CHUNK = 256 * 1024
_EMPTY_COPY = 21   # header + trailer of a binary COPY payload without rows

#: Idempotent schema, applied under an advisory lock so that partitions starting together do not
#: race on CREATE.  Prices are 1e-4 currency units, quantities lots (DESIGN §2); ts is the
#: command time stamp (microsecond precision), ts_ns the same instant in ns since the Unix epoch.
#: order_events.type: accepted, rejected, canceled (any reason: request, IOC remainder, mass
#: cancel, cancel on disconnect, self-trade prevention, expiry; ``reason`` says which),
#: replaced, triggered; reason is the RejectReason / CancelReason value (0 = none).
SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS fills (
    partition       text        NOT NULL,
    trade_id        bigint      NOT NULL,
    seq             bigint      NOT NULL,
    symbol          text        NOT NULL,
    price           bigint      NOT NULL,
    qty             bigint      NOT NULL,
    maker_order_id  bigint      NOT NULL,
    maker_account   text,
    taker_order_id  bigint      NOT NULL,
    taker_account   text,
    aggressor_side  char(1)     NOT NULL CHECK (aggressor_side IN ('B', 'S')),
    ts              timestamptz NOT NULL,
    ts_ns           bigint      NOT NULL,
    PRIMARY KEY (partition, trade_id)
);
CREATE TABLE IF NOT EXISTS order_events (
    partition       text        NOT NULL,
    event_no        bigint      NOT NULL,
    seq             bigint      NOT NULL,
    type            text        NOT NULL,
    account         text,
    order_id        bigint,
    cl_ord_id       bigint      NOT NULL,
    orig_cl_ord_id  bigint,
    symbol          text,
    side            char(1)     CHECK (side IN ('B', 'S')),
    ord_type        smallint    NOT NULL,
    time_in_force   smallint    NOT NULL,
    price           bigint      NOT NULL,
    qty             bigint      NOT NULL,
    leaves_qty      bigint      NOT NULL,
    stop_px         bigint,
    reason          smallint    NOT NULL,
    ts              timestamptz NOT NULL,
    ts_ns           bigint      NOT NULL,
    PRIMARY KEY (partition, event_no)
);
CREATE TABLE IF NOT EXISTS sink_checkpoint (
    partition       text        PRIMARY KEY,
    last_trade_id   bigint      NOT NULL,
    last_seq        bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE sink_checkpoint ADD COLUMN IF NOT EXISTS last_event_no bigint NOT NULL DEFAULT 0;
"""
_SCHEMA_LOCK_KEY = 0x68667467770001   # "hftgw" + 1: pg_advisory_xact_lock key for SCHEMA_SQL


class CopyChunks:
    """The COPY payload as an async iterable of COPY_CHUNK-byte views.

    asyncpg sends a bytes-like source as one CopyData message (copied whole on the event loop,
    and PostgreSQL reads a message whole before parsing it); chunks keep each loop step short
    and let the server parse while the rest is in flight.  (Plain bytes would also be taken
    for a file name by asyncpg: os.fspath accepts bytes.)
    """

    def __init__(self, payload: bytes) -> None:
        self._mv = memoryview(payload)
        self._pos = 0

    def __aiter__(self) -> CopyChunks:
        return self

    async def __anext__(self) -> memoryview:
        pos = self._pos
        if pos >= len(self._mv):
            raise StopAsyncIteration
        self._pos = pos + COPY_CHUNK
        return self._mv[pos:pos + COPY_CHUNK]


@dataclass(slots=True)
class _Batch:
    """Events first_no .. first_no+count-1 of the log, as COPY payloads."""

    first_no: int
    count: int
    fills: int                 # fill rows in fills_copy
    order_events: int          # rows in events_copy
    last_trade_id: int         # of the batch's last fill (0 without fills)
    last_fill_seq: int
    after_trade_id: int        # fills at or below this trade id were left out
    fills_copy: bytes
    events_copy: bytes

    @property
    def last_no(self) -> int:
        return self.first_no + self.count - 1


class _Accounts:
    """session id -> account for the C builders (the mapping protocol they read with [])."""

    def __init__(self, account_of: Callable[[int], str | None]) -> None:
        self._account_of = account_of

    def __getitem__(self, sid: int) -> str | None:
        try:
            return self._account_of(sid) or None
        except Exception:
            log.exception("event sink: account_of(%d) failed; its rows get a NULL account", sid)
            return None


#: file beside the event log that records a divergence found by the sink (JSON: partition,
#: event_no and trade_id the journal explained, pg_event_no, reason)
DIVERGED_FILE = "sink-diverged.json"


def read_divergence(directory: str) -> dict[str, Any] | None:
    """The divergence recorded in ``directory`` (see DIVERGED_FILE), None when there is none."""
    try:
        with open(os.path.join(directory, DIVERGED_FILE), "rb") as f:
            found: dict[str, Any] = json.loads(f.read())
    except FileNotFoundError:
        return None
    return found


def write_divergence(directory: str, record: dict[str, Any]) -> None:
    """Record a divergence durably (temp file, fsync, rename, directory fsync)."""
    path = os.path.join(directory, DIVERGED_FILE)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(json.dumps(record).encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(directory)


class SinkDiverged(Exception):
    """PostgreSQL holds events of this partition that the journal does not explain: the sink
    stops writing (``EventSink.diverged`` says why) until ``hftgw repair`` has moved them."""


class _CheckpointMoved(Exception):
    pass


class EventSink:
    """Copies the event log of one partition into ``fills`` and ``order_events``, exactly once.

    dsn: asyncpg/libpq DSN.  partition: this gateway's partition name (part of the primary keys
    and the checkpoint key).  events: the open EventLog.  symbols: symbol names indexed by
    symbol_id (kept by reference, so the owner may append symbols added at run time).
    account_of: session_id -> account name (or None / "" for NULL), called on the sink's worker
    thread, once per distinct session of a batch.  batch_rows: most events per COPY
    transaction.  retry_initial_s, retry_max_s: reconnect back-off, doubling from the first to
    the second.  connect_timeout_s: per connection attempt; op_timeout_s: per COPY / statement.
    poll_s: the sink looks at the log this often even without ``notify``.  remove_committed:
    delete event-log segments whose events are all committed.  journal_point: (last event
    number, last trade id) the journal explained at the start (Engine.journal_point); a first
    checkpoint past it means PostgreSQL holds events of a history the journal lost, and the
    sink then writes nothing (``diverged``) rather than rows that reuse their numbers with
    other content.  It records that in ``DIVERGED_FILE`` beside the event log, so later starts
    stay stopped (their own start point has moved on) until ``hftgw repair`` has moved the rows
    past that point and removed the file.

    Use from one event loop thread: a task running ``run()``, ``notify()`` after appending to
    the log, ``await close()`` at the end.
    """

    def __init__(self, dsn: str, partition: str, events: EventLog, symbols: list[str],
                 account_of: Callable[[int], str | None], batch_rows: int = 50000,
                 retry_initial_s: float = 0.2, retry_max_s: float = 5.0, *,
                 connect_timeout_s: float = 5.0, op_timeout_s: float = 60.0, poll_s: float = 1.0,
                 remove_committed: bool = True,
                 journal_point: tuple[int, int] | None = None) -> None:
        if batch_rows <= 0:
            raise ValueError("batch_rows must be positive")
        self._dsn = dsn
        self._partition = partition
        self._events = events
        self._symbols = symbols  # not a copy: symbols the gateway adds at run time show up here
        self._accounts = _Accounts(account_of)
        self._batch_rows = batch_rows
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self._connect_timeout = connect_timeout_s
        self._op_timeout = op_timeout_s
        self._poll_s = poll_s
        self._remove_committed = remove_committed
        self._journal_point = journal_point
        #: why the sink stopped for good (PostgreSQL ahead of the journal), None while it runs
        self.diverged: str | None = None
        found = read_divergence(events.directory)
        if found is not None:
            self.diverged = found["reason"]

        self._conn: asyncpg.Connection | None = None
        self._schema_ready = False
        self._known = False                # the checkpoint was read from PostgreSQL
        self._checkpoint = 0               # last_event_no
        self._trade_checkpoint = 0         # last_trade_id
        self._seq_checkpoint = 0           # last_seq (of that fill)
        self._next: asyncio.Future[_Batch] | None = None   # the next batch, read while writing
        self._next_from = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

        #: fill rows whose COMMIT this sink saw succeed (a batch committed while the reply was
        #: lost is found in by the checkpoint after reconnecting and not counted)
        self.rows_written = 0
        self.order_events_written = 0
        self.batches_written = 0
        self.errors = 0
        self.events_missing = 0            # events below the log's start the checkpoint wanted
        self.last_error: str | None = None
        self.last_commit_monotonic = 0.0

    # -- stats --------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while a connection to PostgreSQL is open."""
        return self._conn is not None and not self._conn.is_closed()

    @property
    def degraded(self) -> bool:
        """PostgreSQL is not reachable, the last attempt failed, or the sink has diverged (the
        backlog grows)."""
        return self.diverged is not None or not self.connected

    @property
    def last_event_no(self) -> int:
        """Number of the newest committed event of this partition (the checkpoint); until the
        first connection, the event log's start - 1."""
        return self._checkpoint if self._known else max(0, self._events.start_no - 1)

    @property
    def last_trade_id(self) -> int:
        """Trade id of the newest committed fill of this partition."""
        return self._trade_checkpoint

    @property
    def lag_events(self) -> int:
        """Events in the log not yet committed (end of the log - checkpoint)."""
        return max(0, self._events.end_no - self.last_event_no)

    def stats(self) -> dict[str, int | float | bool | str | None]:
        """Every figure above in one dict, for metrics and admin endpoints."""
        return {"connected": self.connected, "last_event_no": self.last_event_no,
                "last_trade_id": self._trade_checkpoint, "lag_events": self.lag_events,
                "rows_written": self.rows_written, "order_events_written": self.order_events_written,
                "batches_written": self.batches_written, "errors": self.errors,
                "events_missing": self.events_missing, "last_error": self.last_error,
                "last_commit_monotonic": self.last_commit_monotonic, "diverged": self.diverged}

    def notify(self) -> None:
        """The engine appended to the event log: look at it now (cheap; no I/O)."""
        self._wake.set()

    # -- reading the log ----------------------------------------------------------------------
    def _prepare(self, from_no: int, after_trade_id: int) -> _Batch:
        """Runs on the sink's worker thread: read a batch from event from_no on and build its
        COPY payloads (the C parts without the GIL)."""
        first, data = self._events.read(from_no, self._batch_rows)
        n, nall, nf, tid, fseq = events_info(data, after_trade_id)
        fills = (fills_to_copy(data, self._symbols, self._accounts, self._partition,
                               after_trade_id, True) if nf else b"")
        oe = (order_events_to_copy(data, first, self._symbols, self._accounts, self._partition)
              if n > nall else b"")
        return _Batch(first, n, nf, n - nall, tid, fseq, after_trade_id, fills, oe)

    async def _batch(self, from_no: int) -> _Batch:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        fut, self._next = self._next, None
        if fut is not None and self._next_from == from_no:
            try:
                b = await fut
                if b.after_trade_id == self._trade_checkpoint:
                    return b
            except Exception:
                pass  # read again below; a persistent fault shows there
        elif fut is not None:
            fut.cancel()
        return await loop.run_in_executor(self._executor, self._prepare, from_no,
                                          self._trade_checkpoint)

    # -- PostgreSQL ---------------------------------------------------------------------------
    async def start(self, timeout: float = 10.0) -> int:
        """Connect (retrying with back-off for up to ``timeout`` s), create or migrate the
        schema, read the checkpoint.  Returns the partition's last committed event number (0
        when none).  Raises TimeoutError (with the last connection error as its cause) when
        PostgreSQL could not be reached in time; run() keeps trying on its own after that.
        Optional: run() connects by itself."""
        deadline = time.monotonic() + timeout
        backoff = self._retry_initial
        while True:
            try:
                await self._connect()
                return self._checkpoint
            except SinkDiverged:
                raise
            except Exception as exc:
                self.errors += 1
                self.last_error = repr(exc)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"event sink: PostgreSQL not reachable: {exc!r}") from exc
                log.warning("event sink: connect failed (%r), retrying in %.2fs", exc, backoff)
                await asyncio.sleep(min(backoff, left))
                backoff = min(backoff * 2, self._retry_max)

    async def _connect(self) -> None:
        if self.diverged is not None:
            raise SinkDiverged(self.diverged)
        if self.connected:
            return
        conn = await asyncpg.connect(
            self._dsn, timeout=self._connect_timeout, command_timeout=self._op_timeout,
            server_settings={
                "application_name": f"hftgw-sink:{self._partition}"[:63],
                # a backend whose client vanished without a FIN (a partition, a dead host) must
                # not keep the checkpoint row locked for the 2 h of default TCP keepalive
                "idle_in_transaction_session_timeout": str(int(self._op_timeout * 1000)),
                "tcp_keepalives_idle": "10",
                "tcp_keepalives_interval": "5",
                "tcp_keepalives_count": "3",
            })
        try:
            if not self._schema_ready:
                async with conn.transaction():
                    await conn.execute(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_KEY})")
                    await conn.execute(SCHEMA_SQL)
                self._schema_ready = True
            await conn.execute(
                "INSERT INTO sink_checkpoint (partition, last_trade_id, last_seq, last_event_no) "
                "VALUES ($1, 0, 0, 0) ON CONFLICT (partition) DO NOTHING", self._partition)
            row = await conn.fetchrow(
                "SELECT last_event_no, last_trade_id, last_seq FROM sink_checkpoint "
                "WHERE partition = $1", self._partition)
        except BaseException:
            conn.terminate()
            raise
        # the first checkpoint read only: later ones include what this process committed
        point = self._journal_point
        if not self._known and point is not None and int(row[0]) > point[0]:
            conn.terminate()
            self.diverged = (
                f"PostgreSQL holds events {point[0] + 1}..{int(row[0])} of partition "
                f"{self._partition!r} that the journal does not explain (acknowledged commands "
                "lost from the journal); nothing more is written: stop the gateway and run "
                "`hftgw repair`")
            write_divergence(self._events.directory, {
                "partition": self._partition, "event_no": point[0], "trade_id": point[1],
                "pg_event_no": int(row[0]), "reason": self.diverged})
            raise SinkDiverged(self.diverged)
        self._conn = conn
        self._set_checkpoint(row)
        log.info("event sink: connected, partition %r checkpoint event %d (trade id %d)",
                 self._partition, self._checkpoint, self._trade_checkpoint)

    def _set_checkpoint(self, row: asyncpg.Record) -> None:
        self._checkpoint, self._trade_checkpoint, self._seq_checkpoint = (
            int(row[0]), int(row[1]), int(row[2]))
        self._known = True

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _write(self, b: _Batch) -> None:
        """Commit the batch's rows and the new checkpoint in one transaction that holds the
        checkpoint row locked.  Raises _CheckpointMoved when the row is not where the batch
        starts (nothing written then)."""
        conn = self._conn
        assert conn is not None
        async with conn.transaction():
            row = await conn.fetchrow(
                "SELECT last_event_no, last_trade_id, last_seq FROM sink_checkpoint "
                "WHERE partition = $1 FOR UPDATE", self._partition)
            if (int(row[0]), int(row[1])) != (self._checkpoint, self._trade_checkpoint):
                log.warning("event sink: checkpoint of %r is event %d, expected %d; reading again",
                            self._partition, row[0], self._checkpoint)
                self._set_checkpoint(row)
                raise _CheckpointMoved
            if len(b.fills_copy) > _EMPTY_COPY:
                await conn.copy_to_table("fills", source=CopyChunks(b.fills_copy),
                                         columns=list(FILL_COLUMNS), format="binary",
                                         timeout=self._op_timeout)
            if len(b.events_copy) > _EMPTY_COPY:
                await conn.copy_to_table("order_events", source=CopyChunks(b.events_copy),
                                         columns=list(ORDER_EVENT_COLUMNS), format="binary",
                                         timeout=self._op_timeout)
            tid, fseq = ((b.last_trade_id, b.last_fill_seq)
                         if b.last_trade_id > self._trade_checkpoint
                         else (self._trade_checkpoint, self._seq_checkpoint))
            await conn.execute(
                "UPDATE sink_checkpoint SET last_event_no = $2, last_trade_id = $3, last_seq = $4, "
                "updated_at = now() WHERE partition = $1", self._partition, b.last_no, tid, fseq)
        self.rows_written += b.fills
        self.order_events_written += b.order_events
        self.batches_written += 1
        self._checkpoint, self._trade_checkpoint, self._seq_checkpoint = b.last_no, tid, fseq
        self.last_commit_monotonic = time.monotonic()

    async def _step(self) -> bool:
        """One batch: True when one was committed (or re-read), False when the log holds
        nothing after the checkpoint."""
        await self._connect()
        start = self._checkpoint + 1
        if self._events.end_no < start:
            return False
        b = await self._batch(start)
        if b.count == 0:
            return False
        if b.first_no != start:
            # removed from the log before this checkpoint saw them, or never logged (the log
            # was created after these events): they cannot be written any more
            self.events_missing += b.first_no - start
            log.error("event sink: events %d..%d are not in the event log %s; continuing at %d",
                      start, b.first_no - 1, self._events.directory, b.first_no)
        if self._events.end_no > b.last_no and self._executor is not None:
            self._next_from = b.last_no + 1
            self._next = asyncio.get_running_loop().run_in_executor(
                self._executor, self._prepare, self._next_from, max(self._trade_checkpoint,
                                                                    b.last_trade_id))
        try:
            await self._write(b)
        except _CheckpointMoved:
            if self._next is not None:
                self._next.cancel()
                self._next = None
            return True
        if self._remove_committed:
            self._events.remove_through(self._checkpoint)
        return True

    async def run(self) -> None:
        """The background task: copy the log into PostgreSQL until close().  Never raises
        (errors are logged, counted in ``errors`` and retried with back-off); cancelling it
        stops it (whatever is not committed stays in the log for the next start).  One run() at
        a time (RuntimeError otherwise)."""
        me = asyncio.current_task()
        if self._task is not None and not self._task.done() and self._task is not me:
            raise RuntimeError("EventSink.run() is already running")
        self._task = me
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="event-sink")
        backoff = self._retry_initial
        try:
            while True:
                try:
                    self._wake.clear()
                    if await self._step():
                        backoff = self._retry_initial
                        continue
                    if self._closing:
                        return
                    try:
                        await asyncio.wait_for(self._wake.wait(), self._poll_s)
                    except TimeoutError:
                        pass
                except asyncio.CancelledError:
                    raise
                except SinkDiverged:
                    log.error("event sink: %s", self.diverged)
                    return
                except Exception as exc:
                    self.errors += 1
                    self.last_error = repr(exc)
                    if self._next is not None:
                        self._next.cancel()
                        self._next = None
                    log.warning("event sink: %r; %d events pending, retrying in %.2fs",
                                exc, self.lag_events, backoff)
                    self._drop_connection()
                    if self._closing and not self._known:
                        return
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._retry_max)
        finally:
            self._drop_connection()

    async def close(self, flush_timeout: float = 5.0) -> None:
        """Commit what can be committed within ``flush_timeout`` s, then stop run() and
        disconnect.  Starts a run() task itself if none is running and events are pending.
        Events still pending afterwards stay in the event log for the next start."""
        self._closing = True
        self._wake.set()
        task = self._task
        if (task is None or task.done()) and self.lag_events:
            task = asyncio.ensure_future(self.run())
            await asyncio.sleep(0)
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=flush_timeout)
            if not done:
                task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self.lag_events:
            log.warning("event sink: closed with %d events not committed (the event log has them)",
                        self.lag_events)
        self._drop_connection()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
