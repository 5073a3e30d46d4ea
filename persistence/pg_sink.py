"""Fills -> PostgreSQL, exactly once, without ever making order entry wait (DESIGN §1).

The gateway hands raw 128-byte EVT_FILL Event records (matching/records.pxd) to
``FillSink.submit`` and moves on.  A background task (``FillSink.run``) takes up to
``batch_rows`` queued fills, turns them into a binary COPY payload in C
(``persistence.copy_binary.fills_to_copy``) on a worker thread, mostly without the GIL, and
writes them with::

    BEGIN;
    SELECT last_trade_id, last_seq FROM sink_checkpoint WHERE partition = $1 FOR UPDATE;
    COPY fills (...) FROM STDIN (FORMAT binary);          -- only trade ids > that checkpoint
    UPDATE sink_checkpoint SET last_trade_id = .., last_seq = .. WHERE partition = $1;
    COMMIT;

The checkpoint row is locked and moved in the same transaction as the rows, so a batch is
either entirely in with its checkpoint or not at all.  On any error the sink logs, backs off
(exponential, capped), reconnects and retries the same batch, skipping whatever the checkpoint
says is already in: nothing is dropped and nothing is written twice (the primary key
(partition, trade_id) would refuse a duplicate anyway).  After a restart the gateway replays
its journal, which regenerates every fill; it feeds the sink only those after ``start()``'s
checkpoint, and the sink skips older ones again by itself.

With a backlog of at least a full batch, the next batch is built while PostgreSQL takes the
current one.  Fills queue in memory (128 bytes each, unbounded) while PostgreSQL is away; they
are not lost if the process dies, because the journal regenerates them.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import asyncpg

from persistence.copy_binary import (
    FILL_COLUMNS,
    fill_batch_info,
    fills_to_copy,
    first_after,
    join_records,
    session_ids,
)

log = logging.getLogger(__name__)

EVENT_SIZE = 128
#: bytes per CopyData message (asyncpg's own copy_records_to_table uses 512 KiB)
COPY_CHUNK = 256 * 1024
# submits smaller than this are copied into a shared tail chunk, queued when it reaches _TAIL_BYTES
_COALESCE_BYTES = 32 * 1024
_TAIL_BYTES = 1024 * 1024

#: Idempotent schema, applied under an advisory lock so that partitions starting together do not
#: race on CREATE.  Prices are 1e-4 currency units, quantities lots (DESIGN §2); ts is the
#: command time stamp (microsecond precision), ts_ns the same instant in ns since the Unix epoch.
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
CREATE TABLE IF NOT EXISTS sink_checkpoint (
    partition       text        PRIMARY KEY,
    last_trade_id   bigint      NOT NULL,
    last_seq        bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
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


class FillSink:
    """Writes fill Event records to the ``fills`` table of one partition, exactly once.

    dsn: asyncpg/libpq DSN.  partition: this gateway's partition name (part of the primary
    key and the checkpoint key).  symbols: symbol names indexed by symbol_id (kept by reference,
    so the owner may append symbols added at run time).  account_of:
    session_id -> account name (or None), called on the event loop thread when a session is
    first seen by ``submit``.  batch_rows: most rows per COPY transaction.  retry_initial_s,
    retry_max_s: reconnect back-off, doubling from the first to the second.
    connect_timeout_s: per connection attempt; op_timeout_s: per COPY / statement.

    Use from one event loop thread: ``await start()`` (optional), a task running ``run()``,
    ``submit()`` any time, ``await close()`` at the end.
    """

    def __init__(self, dsn: str, partition: str, symbols: list[str],
                 account_of: Callable[[int], str | None], batch_rows: int = 50000,
                 retry_initial_s: float = 0.2, retry_max_s: float = 5.0, *,
                 connect_timeout_s: float = 5.0, op_timeout_s: float = 60.0) -> None:
        if batch_rows <= 0:
            raise ValueError("batch_rows must be positive")
        self._dsn = dsn
        self._partition = partition
        self._symbols = symbols  # not a copy: symbols the gateway adds at run time show up here
        self._account_of = account_of
        self._batch_rows = batch_rows
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self._connect_timeout = connect_timeout_s
        self._op_timeout = op_timeout_s

        self._accounts: dict[int, str | None] = {}
        self._queue: deque[memoryview] = deque()
        self._tail = bytearray()                   # small submits, coalesced before the queue
        self._queued_rows = 0                      # rows in _queue and _tail
        # the batch in flight: taken from the queue as chunks, joined into _batch, committed
        self._taken: list[memoryview] | None = None
        self._batch: bytes | None = None
        self._batch_info = (0, 0, 0, 0)            # fill_batch_info(_batch)
        self._batch_rows_n = 0
        self._payload: bytes | None = None         # COPY payload of _batch without its first
        self._payload_skip = 0                     # _payload_skip rows (<= the checkpoint)
        # the next batch, taken and being built while the current one is written
        self._next_taken: list[memoryview] | None = None
        self._next_rows = 0
        self._next_fut: asyncio.Future[tuple[bytes, tuple[int, int, int, int], int, bytes]] | None = None
        self._last_submitted = 0                   # highest trade id accepted by submit()

        self._conn: asyncpg.Connection | None = None
        self._schema_ready = False
        self._checkpoint = 0
        self._checkpoint_seq = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

        #: rows whose COMMIT this sink saw succeed (a batch committed while the reply was lost
        #: is found in by the checkpoint after reconnecting and counted in rows_skipped)
        self.rows_written = 0
        self.batches_written = 0
        self.errors = 0
        self.rows_skipped = 0
        self.last_error: str | None = None
        self.last_commit_monotonic = 0.0

    # -- stats --------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while a connection to PostgreSQL is open."""
        return self._conn is not None and not self._conn.is_closed()

    @property
    def last_trade_id(self) -> int:
        """Trade id of the newest committed fill of this partition (the checkpoint)."""
        return self._checkpoint

    @property
    def last_seq(self) -> int:
        """Command seq of that fill."""
        return self._checkpoint_seq

    @property
    def pending_rows(self) -> int:
        """Fills accepted by submit() and not yet committed (queued + the batch in flight)."""
        in_flight = self._batch is not None or self._taken is not None
        return (self._queued_rows + (self._batch_rows_n if in_flight else 0)
                + (self._next_rows if self._next_taken is not None else 0))

    @property
    def lag_rows(self) -> int:
        """Trade ids between the newest submitted fill and the newest committed one."""
        return max(0, self._last_submitted - self._checkpoint)

    def stats(self) -> dict[str, int | float | bool | str | None]:
        """Every figure above in one dict, for metrics and admin endpoints."""
        return {"connected": self.connected, "last_trade_id": self._checkpoint,
                "last_seq": self._checkpoint_seq, "pending_rows": self.pending_rows,
                "lag_rows": self.lag_rows, "rows_written": self.rows_written,
                "batches_written": self.batches_written, "rows_skipped": self.rows_skipped,
                "errors": self.errors, "last_error": self.last_error,
                "last_commit_monotonic": self.last_commit_monotonic}

    # -- feeding ------------------------------------------------------------------------------
    def submit(self, records: bytes | bytearray | memoryview) -> None:
        """Queue concatenated 128-byte EVT_FILL records, in increasing trade id order.

        Never waits: no I/O, O(len) C work plus account_of() for sessions not seen before.
        Fills whose trade id is not above both the last submitted one and the committed
        checkpoint are skipped (counted in rows_skipped).  Raises ValueError for records that
        are not fills of a known symbol in increasing trade id order (a caller bug: nothing of
        that call is queued); RuntimeError after close().
        """
        if self._closing:
            raise RuntimeError("FillSink is closed")
        mv = memoryview(records).cast("B")
        n, _first, last, _seq = fill_batch_info(mv, len(self._symbols))
        if n == 0:
            return
        start = first_after(mv, max(self._last_submitted, self._checkpoint))
        if start:
            self.rows_skipped += start
            if start == n:
                return
            mv = mv[start * EVENT_SIZE:]
        for sid in session_ids(mv):
            if sid not in self._accounts:
                self._accounts[sid] = self._resolve_account(sid)
        if len(mv) < _COALESCE_BYTES:
            # the gateway submits a few fills per loop tick: gather them into one chunk
            self._tail += mv
            if len(self._tail) >= _TAIL_BYTES:
                self._flush_tail()
        else:
            self._flush_tail()
            if type(records) is not bytes:
                # the caller may reuse a mutable buffer (a bytearray, a ring slot) right away
                mv = memoryview(bytes(mv))
            self._queue.append(mv)
        self._queued_rows += n - start
        self._last_submitted = last
        self._wake.set()

    def _resolve_account(self, sid: int) -> str | None:
        try:
            return self._account_of(sid)
        except Exception:
            log.exception("fill sink: account_of(%d) failed; its fills get a NULL account", sid)
            return None

    def _flush_tail(self) -> None:
        if self._tail:
            self._queue.append(memoryview(self._tail))
            self._tail = bytearray()

    def _take(self) -> list[memoryview]:
        self._flush_tail()
        chunks: list[memoryview] = []
        room = self._batch_rows
        while self._queue and room:
            mv = self._queue[0]
            rows = len(mv) // EVENT_SIZE
            if rows <= room:
                self._queue.popleft()
            else:
                self._queue[0] = mv[room * EVENT_SIZE:]
                mv = mv[:room * EVENT_SIZE]
                rows = room
            chunks.append(mv)
            room -= rows
        self._queued_rows -= self._batch_rows - room
        return chunks

    def _build(self, src: list[memoryview] | bytes, after: int
               ) -> tuple[bytes, tuple[int, int, int, int], int, bytes]:
        """Runs on the sink's worker thread (the C parts without the GIL): join the batch,
        build the COPY payload of its rows after trade id ``after``."""
        batch = src if isinstance(src, bytes) else join_records(src)
        info = fill_batch_info(batch, len(self._symbols))
        payload = fills_to_copy(batch, self._symbols, self._accounts, self._partition, after)
        return batch, info, first_after(batch, after), payload

    async def _ensure_payload(self) -> None:
        assert self._batch is not None and self._executor is not None
        if self._payload is None or first_after(self._batch, self._checkpoint) != self._payload_skip:
            _, _, self._payload_skip, self._payload = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._build, self._batch, self._checkpoint)

    # -- PostgreSQL ---------------------------------------------------------------------------
    async def start(self, timeout: float = 10.0) -> int:
        """Connect (retrying with back-off for up to ``timeout`` s), create the schema, read the
        checkpoint.  Returns the partition's last committed trade id (0 when none).  Raises
        TimeoutError (with the last connection error as its cause) when PostgreSQL could not
        be reached in time; run() keeps trying on its own after that.
        """
        deadline = time.monotonic() + timeout
        backoff = self._retry_initial
        while True:
            try:
                await self._connect()
                return self._checkpoint
            except Exception as exc:
                self.errors += 1
                self.last_error = repr(exc)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fill sink: PostgreSQL not reachable: {exc!r}") from exc
                log.warning("fill sink: connect failed (%r), retrying in %.2fs", exc, backoff)
                await asyncio.sleep(min(backoff, left))
                backoff = min(backoff * 2, self._retry_max)

    async def _connect(self) -> None:
        if self.connected:
            return
        conn = await asyncpg.connect(
            self._dsn, timeout=self._connect_timeout, command_timeout=self._op_timeout,
            server_settings={
                "application_name": f"hftgw-fill-sink:{self._partition}"[:63],
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
                "INSERT INTO sink_checkpoint (partition, last_trade_id, last_seq) VALUES ($1, 0, 0) "
                "ON CONFLICT (partition) DO NOTHING", self._partition)
            row = await conn.fetchrow(
                "SELECT last_trade_id, last_seq FROM sink_checkpoint WHERE partition = $1",
                self._partition)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self._checkpoint, self._checkpoint_seq = int(row[0]), int(row[1])
        log.info("fill sink: connected, partition %r checkpoint trade id %d",
                 self._partition, self._checkpoint)

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _write_batch(self) -> None:
        """Commit self._batch's rows after the checkpoint, and the new checkpoint, in one
        transaction that holds the checkpoint row locked."""
        assert self._batch is not None and self._conn is not None
        _n, _first, last_tid, last_seq = self._batch_info
        if last_tid > self._checkpoint:
            await self._ensure_payload()
            conn = self._conn
            async with conn.transaction():
                row = await conn.fetchrow(
                    "SELECT last_trade_id, last_seq FROM sink_checkpoint WHERE partition = $1 "
                    "FOR UPDATE", self._partition)
                if row[0] != self._checkpoint:
                    # another writer, or a commit of ours whose reply was lost
                    log.warning("fill sink: checkpoint of %r is %d, expected %d; re-filtering",
                                self._partition, row[0], self._checkpoint)
                    self._checkpoint, self._checkpoint_seq = int(row[0]), int(row[1])
                    if last_tid <= self._checkpoint:
                        self.rows_skipped += self._batch_rows_n
                        return
                    await self._ensure_payload()
                assert self._payload is not None
                await conn.copy_to_table("fills", source=CopyChunks(self._payload),
                                         columns=list(FILL_COLUMNS), format="binary",
                                         timeout=self._op_timeout)
                await conn.execute(
                    "UPDATE sink_checkpoint SET last_trade_id = $2, last_seq = $3, updated_at = now() "
                    "WHERE partition = $1", self._partition, last_tid, last_seq)
            self.rows_written += self._batch_rows_n - self._payload_skip
            self.rows_skipped += self._payload_skip
            self.batches_written += 1
            self._checkpoint, self._checkpoint_seq = last_tid, last_seq
            self.last_commit_monotonic = time.monotonic()
        else:
            self.rows_skipped += self._batch_rows_n

    async def run(self) -> None:
        """The background task: write queued fills until close().  Never raises (errors are
        logged, counted in ``errors`` and retried with back-off); cancelling it stops it and
        leaves uncommitted fills for the journal replay of the next start.  One run() at a
        time (RuntimeError otherwise)."""
        me = asyncio.current_task()
        if self._task is not None and not self._task.done() and self._task is not me:
            raise RuntimeError("FillSink.run() is already running")
        self._task = me
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="fill-sink")
        loop = asyncio.get_running_loop()
        backoff = self._retry_initial
        try:
            while True:
                try:
                    if self._batch is None:
                        fut = None
                        if self._taken is None:
                            if self._next_taken is not None:
                                self._taken, self._batch_rows_n = self._next_taken, self._next_rows
                                fut, self._next_taken, self._next_fut = self._next_fut, None, None
                            elif self._queue or self._tail:
                                self._taken = self._take()
                                self._batch_rows_n = sum(len(c) for c in self._taken) // EVENT_SIZE
                            elif self._closing:
                                return
                            else:
                                self._wake.clear()
                                await self._wake.wait()
                                continue
                        if fut is None:
                            fut = loop.run_in_executor(self._executor, self._build, self._taken,
                                                       self._checkpoint)
                        self._batch, self._batch_info, self._payload_skip, self._payload = await fut
                        self._taken = None
                    if self._next_taken is None and self._queued_rows >= self._batch_rows:
                        # a backlog: build the next full batch while PostgreSQL takes this one
                        # (its rows all follow this batch, so the checkpoint does not change it)
                        self._next_taken = self._take()
                        self._next_rows = sum(len(c) for c in self._next_taken) // EVENT_SIZE
                        self._next_fut = loop.run_in_executor(self._executor, self._build,
                                                              self._next_taken, self._checkpoint)
                    await self._connect()
                    await self._write_batch()
                    self._batch = self._payload = None
                    self._batch_rows_n = 0
                    backoff = self._retry_initial
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.errors += 1
                    self.last_error = repr(exc)
                    log.warning("fill sink: %r; %d rows pending, retrying in %.2fs",
                                exc, self.pending_rows, backoff)
                    self._drop_connection()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._retry_max)
        finally:
            self._drop_connection()

    async def close(self, flush_timeout: float = 5.0) -> None:
        """Flush what can be committed within ``flush_timeout`` s, then stop run() and
        disconnect.  Starts a run() task itself if none is running and fills are pending.
        Fills still pending afterwards are left to the journal replay of the next start."""
        self._closing = True
        self._wake.set()
        task = self._task
        if (task is None or task.done()) and self.pending_rows:
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
        if self.pending_rows:
            log.warning("fill sink: closed with %d rows not committed (the journal has them)",
                        self.pending_rows)
        self._drop_connection()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
