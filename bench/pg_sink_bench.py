"""Fills into PostgreSQL: EventSink (event log -> binary COPY built in C) against asyncpg's tuple COPY.

Creates a scratch database on the server at --dsn (user postgres by default), then, on the same
data set of N synthetic EVT_FILL records (matching/records.pxd):

1. EventSink: the records are appended to an event log (persistence/event_log.py, in a temp
   directory) in gateway-sized appends (--chunk rows) as fast as the loop allows, the sink
   reading the log from its checkpoint; time until the last event is committed; also samples
   event-loop lateness every 1 ms during the run (HDR histogram), which is what order entry
   would feel.
2. raw COPY: fills_to_copy() + copy_to_table(format="binary") per batch, no sink machinery
   (no event log, worker thread, checkpoint lock or update).
3. baseline: Python tuples -> asyncpg copy_records_to_table per batch (tuple building timed
   separately), each batch with the same checkpoint UPDATE in its transaction.

Each phase writes into its own empty table with the same schema.  Prints rows/s; DESIGN §3
asks for 100 k rows/s (first bar) and 500 k rows/s (goal).  Drops the database at the end.

    python bench/pg_sink_bench.py --rows 1000000 --batch 50000
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from hdrh.histogram import HdrHistogram

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from matching.records import EVENT_STRUCT, EventType  # noqa: E402
from persistence.copy_binary import FILL_COLUMNS, fills_to_copy  # noqa: E402
from persistence.event_log import EventLog  # noqa: E402
from persistence.pg_sink import SCHEMA_SQL, CopyChunks, EventSink  # noqa: E402

SYMBOLS = [f"SYM{i:03d}" for i in range(64)]
N_SESSIONS = 200
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = 1_700_000_000_000_000_000


def account_of(sid: int) -> str:
    return f"account-{sid:05d}"


def make_fills(n: int) -> bytes:
    pack = EVENT_STRUCT.pack
    fill = int(EventType.EVT_FILL)
    out = bytearray()
    for t in range(1, n + 1):
        # seq ts session symbol type side reason contra_session cl_ord_id order_id price qty leaves
        # ref contra_cl_ord_id contra_order_id contra_leaves count count2 ord_type tif flags pad0
        # pad1 recv_ts
        out += pack(t // 2 + 1, T0 + 1_000 * t, 1 + t % N_SESSIONS, t % len(SYMBOLS), fill,
                    1 + t % 2, 0, 1 + (t * 7) % N_SESSIONS, t, 2 * t, 1_000_000 + 100 * (t % 50),
                    1 + t % 100, 0, t, t + 1, 2 * t + 1, 0, 0, 0, 1, 1, 0, 0, 0, T0)
    return bytes(out)


# a fills row, in FILL_COLUMNS order: partition, trade_id, seq, symbol, price, qty, maker order id
# and account, taker order id and account, aggressor side, ts, ts_ns
FillRow = tuple[str, int, int, str, int, int, int, str, int, str, str, datetime, int]


def tuples_of(data: bytes, partition: str) -> list[FillRow]:
    rows: list[FillRow] = []
    for (seq, ts, sid, sym, _typ, side, _r, csid, _c, oid, price, qty, _l, ref, _cc, coid,
         *_rest) in EVENT_STRUCT.iter_unpack(data):
        rows.append((partition, ref, seq, SYMBOLS[sym], price, qty, coid, account_of(csid), oid,
                     account_of(sid), "B" if side == 1 else "S",
                     EPOCH + timedelta(microseconds=ts // 1000), ts))
    return rows


async def admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fresh_table(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(f"DROP TABLE IF EXISTS {name}")
    await conn.execute(f"CREATE TABLE {name} (LIKE fills INCLUDING ALL)")
    await conn.execute("CHECKPOINT")


async def bench_sink(dsn: str, data: bytes, batch: int, chunk: int) -> dict[str, float]:
    n = len(data) // 128
    conn = await asyncpg.connect(dsn)
    await conn.execute("DROP TABLE IF EXISTS fills, order_events, sink_checkpoint")
    await conn.execute("CHECKPOINT")
    await conn.close()
    tmp = tempfile.mkdtemp(prefix="hftgw-event-log-")
    events = EventLog(tmp)
    events.open()
    sink = EventSink(dsn, "bench", events, SYMBOLS, account_of, batch_rows=batch)
    assert await sink.start() == 0
    lateness = HdrHistogram(1, 10_000_000, 3)          # µs
    stop = False

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not stop:
            t = loop.time()
            await asyncio.sleep(0.001)
            lateness.record_value(max(1, int((loop.time() - t - 0.001) * 1e6)))

    step = chunk * 128
    pieces = [data[pos:pos + step] for pos in range(0, len(data), step)]
    tick = asyncio.create_task(ticker())
    task = asyncio.create_task(sink.run())
    t0 = time.perf_counter()
    append_s = 0.0
    no = 1
    for k, piece in enumerate(pieces):
        s = time.perf_counter()
        events.append(no, piece)
        sink.notify()
        append_s += time.perf_counter() - s
        no += len(piece) // 128
        if k % 8 == 7:
            await asyncio.sleep(0)          # a gateway yields to the loop between batches
    while sink.last_event_no < n:
        await asyncio.sleep(0.002)
    dt = time.perf_counter() - t0
    stop = True
    await tick
    await sink.close()
    events.close()
    shutil.rmtree(tmp, ignore_errors=True)
    assert task.done() and sink.rows_written == n and sink.errors == 0, sink.last_error
    return {"rows_s": n / dt, "secs": dt, "batches": sink.batches_written,
            "submit_us_per_1k": append_s / (n / 1000) * 1e6,
            "lat_p50": lateness.get_value_at_percentile(50), "lat_p99": lateness.get_value_at_percentile(99),
            "lat_max": lateness.get_max_value()}


async def bench_raw_copy(dsn: str, data: bytes, batch: int) -> float:
    conn = await asyncpg.connect(dsn)
    await fresh_table(conn, "fills_raw")
    accounts = {s: account_of(s) for s in range(N_SESSIONS + 1)}
    step = batch * 128
    t0 = time.perf_counter()
    for pos in range(0, len(data), step):
        payload = fills_to_copy(data[pos:pos + step], SYMBOLS, accounts, "bench")
        async with conn.transaction():
            await conn.copy_to_table("fills_raw", source=CopyChunks(payload), columns=list(FILL_COLUMNS),
                                     format="binary")
    dt = time.perf_counter() - t0
    await conn.close()
    return (len(data) // 128) / dt


async def bench_baseline(dsn: str, data: bytes, batch: int) -> tuple[float, float]:
    conn = await asyncpg.connect(dsn)
    await fresh_table(conn, "fills_tuples")
    n = len(data) // 128
    t0 = time.perf_counter()
    rows = tuples_of(data, "bench")
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        part = rows[i:i + batch]
        async with conn.transaction():
            await conn.copy_records_to_table("fills_tuples", records=part, columns=list(FILL_COLUMNS))
            await conn.execute("UPDATE sink_checkpoint SET last_trade_id = $2, last_seq = $3 "
                               "WHERE partition = $1", "bench", part[-1][1], part[-1][2])
    copy_s = time.perf_counter() - t0
    await conn.close()
    return n / copy_s, n / (copy_s + build_s)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=50_000, help="rows per COPY transaction")
    ap.add_argument("--chunk", type=int, default=1_000, help="rows per submit() call")
    ap.add_argument("--dsn", default=os.environ.get("HFTGW_TEST_PG_DSN",
                                                    "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--repeat", type=int, default=3, help="runs of every phase; medians printed")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()

    t = time.perf_counter()
    data = make_fills(args.rows)
    print(f"generated {args.rows:,} fill records in {time.perf_counter() - t:.1f}s")
    name = "hftgw_bench_" + uuid.uuid4().hex[:10]
    await admin(args.dsn, f'CREATE DATABASE "{name}"')
    dsn = args.dsn.rpartition("/")[0] + "/" + name
    try:
        conn = await asyncpg.connect(dsn)
        version = await conn.fetchval("SHOW server_version")
        sync = await conn.fetchval("SHOW synchronous_commit")
        await conn.execute(SCHEMA_SQL)
        await conn.close()
        print(f"PostgreSQL {version}, synchronous_commit={sync}, batch {args.batch:,} rows, "
              f"submit chunk {args.chunk:,} rows, {os.cpu_count()} cores")
        # untimed warm-up: PostgreSQL's caches, shared buffers and WAL segments, so that the first
        # timed phase does not pay for them alone
        await bench_raw_copy(dsn, data[:min(args.rows, 300_000) * 128], args.batch)
        results: dict[str, list[float]] = {"sink": [], "raw": [], "copy": [], "tuples": []}
        lat: list[dict[str, float]] = []
        for rep in range(args.repeat):
            r = await bench_sink(dsn, data, args.batch, args.chunk)
            lat.append(r)
            results["sink"].append(r["rows_s"])
            results["raw"].append(await bench_raw_copy(dsn, data, args.batch))
            if not args.no_baseline:
                copy_only, with_build = await bench_baseline(dsn, data, args.batch)
                results["copy"].append(copy_only)
                results["tuples"].append(with_build)
            print(f"  run {rep + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in results.items() if v))
        med = {k: statistics.median(v) for k, v in results.items() if v}
        r = lat[results["sink"].index(sorted(results["sink"])[(len(results["sink"]) - 1) // 2])]
        print(f"median of {args.repeat} run(s):")
        print(f"EventSink (event log, C payload)   : {med['sink']:>10,.0f} rows/s  "
              f"({r['batches']:.0f} batches; log append {r['submit_us_per_1k']:.1f} µs per 1k rows; "
              f"event-loop lateness p50 {r['lat_p50']} µs p99 {r['lat_p99']} µs max {r['lat_max']} µs)")
        print(f"raw binary COPY, no sink           : {med['raw']:>10,.0f} rows/s")
        if not args.no_baseline:
            print(f"baseline copy_records_to_table     : {med['copy']:>10,.0f} rows/s  "
                  f"(incl. building the tuples: {med['tuples']:,.0f} rows/s)")
            print(f"EventSink / baseline               : {med['sink'] / med['copy']:.2f}x  "
                  f"(/ baseline incl. tuples: {med['sink'] / med['tuples']:.2f}x; "
                  f"/ raw COPY: {med['sink'] / med['raw']:.2f}x)")
        bar = "goal met" if med["sink"] >= 500_000 else (
            "first bar met" if med["sink"] >= 100_000 else "BELOW first bar")
        print(f"DESIGN §3: first bar 100,000 rows/s, goal 500,000 rows/s -> {bar}")
    finally:
        await admin(args.dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
