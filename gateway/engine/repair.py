"""``hftgw repair``: bring a partition's files back in line with its journal after a loss.

A start refuses (one line, exit 2) when the journal explains less than what was derived from
it: the journal ends before the newest snapshot (``JournalBehindSnapshot``), or the message
store or event log hold messages and events past it (persistence.reconcile.JournalBehind), or,
found by the sink once connected, PostgreSQL holds events past it.  Each means acknowledged
commands are gone from the journal (a power loss under ``durability = "os"``, an older journal
restored).  Going on would reissue session sequence numbers, event numbers and trade ids with
other content; so the operator decides, and this module carries the decision out:

1. journal behind the snapshot: the journal's segments are moved aside (the snapshot holds
   their effect) and the start continues from the snapshot;
2. store or event log ahead: their frames from the first one past the journal are moved aside
   (the replay writes again the part the journal still explains);
3. PostgreSQL ahead: in one transaction, the ``fills`` and ``order_events`` rows past the
   journal move to ``fills_lost`` / ``order_events_lost`` (with ``lost_at``), and the sink's
   checkpoint goes back to the journal's last event and trade id.

Nothing is deleted: files go to ``<journal_dir>/lost-<UTC time>/`` and rows to the ``*_lost``
tables, for reconciling with the clients who saw them.  ``plan`` only looks (the gateway must be
stopped: the files are locked while it runs); ``apply`` does it and ends with a clean start.
"""
from __future__ import annotations

import asyncio
import glob
import os
from dataclasses import dataclass, field

import asyncpg

from gateway.config.schema import Config
from gateway.engine.errors import JournalBehindSnapshot
from gateway.engine.facade import Engine
from persistence.pg_sink import DIVERGED_FILE, read_divergence
from persistence.reconcile import (
    JournalBehind,
    cut_event_log,
    cut_message_store,
    quarantine_dir,
)

#: SQL run in one transaction by ``move_lost_rows``: $1 partition, $2 last event number and $3
#: last trade id the journal explains.  The *_lost tables have no key: rows of the same trade id
#: may be moved by two repairs.
_LOST_TABLES_SQL = """
CREATE TABLE IF NOT EXISTS fills_lost (LIKE fills, lost_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS order_events_lost (LIKE order_events,
                                              lost_at timestamptz NOT NULL DEFAULT now());
"""


@dataclass(slots=True)
class RepairReport:
    """What ``plan`` found or ``apply`` did; ``lines()`` for the terminal."""

    problems: list[str] = field(default_factory=list)   # one line each, what does not fit
    actions: list[str] = field(default_factory=list)    # one line each, what was (or would be) done
    quarantine: str = ""                                # folder the files went to ("" none)
    pg_rows_moved: tuple[int, int] = (0, 0)             # (fills, order events)

    def lines(self) -> list[str]:
        head = [] if self.problems else ["nothing to repair: the journal explains every file "
                                         "derived from it"]
        return [*head, *(f"found: {p}" for p in self.problems),
                *(f"repair: {a}" for a in self.actions)]


def _journal_segments(cfg: Config) -> list[str]:
    # persistence/journal.pyx names them journal-NNNNNNNN.log
    return sorted(glob.glob(os.path.join(glob.escape(cfg.journal_dir), "journal-[0-9]*.log")))


async def pg_excess(cfg: Config, event_no: int) -> tuple[int, int] | None:
    """(checkpoint's last event number, its last trade id) when PostgreSQL holds events of this
    partition past ``event_no``; None when it does not or has no sink tables yet.  Raises
    OSError / asyncpg errors when it cannot be reached."""
    conn = await asyncpg.connect(cfg.pg_dsn, timeout=10)
    try:
        if await conn.fetchval("SELECT to_regclass('sink_checkpoint')") is None:
            return None
        row = await conn.fetchrow("SELECT last_event_no, last_trade_id FROM sink_checkpoint "
                                  "WHERE partition = $1", cfg.partition)
    finally:
        await conn.close()
    if row is None or int(row[0]) <= event_no:
        return None
    return int(row[0]), int(row[1])


async def move_lost_rows(cfg: Config, event_no: int, trade_id: int) -> tuple[int, int]:
    """Move this partition's rows past the journal (order events numbered > event_no, fills
    with trade id > trade_id) to the *_lost tables and set the sink checkpoint to
    (event_no, trade_id), in one transaction.  Returns (fills moved, order events moved)."""
    conn = await asyncpg.connect(cfg.pg_dsn, timeout=10)
    try:
        async with conn.transaction():
            await conn.fetchrow("SELECT 1 FROM sink_checkpoint WHERE partition = $1 FOR UPDATE",
                                cfg.partition)
            await conn.execute(_LOST_TABLES_SQL)
            fills = await conn.fetchval(
                "WITH moved AS (DELETE FROM fills WHERE partition = $1 AND trade_id > $2 "
                "RETURNING *) , ins AS (INSERT INTO fills_lost SELECT *, now() FROM moved "
                "RETURNING 1) SELECT count(*) FROM ins", cfg.partition, trade_id)
            events = await conn.fetchval(
                "WITH moved AS (DELETE FROM order_events WHERE partition = $1 AND event_no > $2 "
                "RETURNING *), ins AS (INSERT INTO order_events_lost SELECT *, now() FROM moved "
                "RETURNING 1) SELECT count(*) FROM ins", cfg.partition, event_no)
            await conn.execute(
                "UPDATE sink_checkpoint SET last_event_no = $2, last_trade_id = $3, last_seq = "
                "coalesce((SELECT seq FROM fills WHERE partition = $1 AND trade_id = $3), 0), "
                "updated_at = now() WHERE partition = $1", cfg.partition, event_no, trade_id)
    finally:
        await conn.close()
    return int(fills), int(events)


def _journal_aside(cfg: Config, exc: JournalBehindSnapshot, report: RepairReport,
                   apply: bool) -> None:
    report.problems.append(str(exc).split(";")[0])
    segs = _journal_segments(cfg)
    report.actions.append(f"move the journal's {len(segs)} segments (records through seq "
                          f"{exc.journal_last_seq}) aside; start from the snapshot at seq "
                          f"{exc.snapshot_seq}")
    if apply:
        report.quarantine = report.quarantine or quarantine_dir(cfg.journal_dir)
        for path in segs:
            os.rename(path, os.path.join(report.quarantine, os.path.basename(path)))


def _derived_aside(cfg: Config, exc: JournalBehind, report: RepairReport, apply: bool) -> None:
    div = exc.divergence
    report.problems.append(div.describe())
    journal_end = {sid: j for sid, (_, j) in div.sessions.items()}
    if journal_end:
        report.actions.append("move the message store's frames from the first one past the "
                              "journal aside")
    if exc.events_dir and div.events:
        report.actions.append(f"move the event log's frames from event {div.events[1] + 1} on "
                              "aside")
    if not apply:
        return
    report.quarantine = report.quarantine or quarantine_dir(cfg.journal_dir)
    cuts = []
    if journal_end:
        # a session that is not ahead never passes the cut test
        cuts.append(cut_message_store(exc.store_dir, lambda sid: journal_end.get(sid, 1 << 63),
                                      report.quarantine))
    if exc.events_dir and div.events:
        cuts.append(cut_event_log(exc.events_dir, div.events[1], report.quarantine))
    for cut in cuts:
        if cut is not None:
            report.actions.append(f"moved {cut.frames} frames ({cut.bytes} bytes) of {cut.path} "
                                  f"from offset {cut.offset}")


def _postgres(cfg: Config, event_no: int, trade_id: int, report: RepairReport,
              apply: bool) -> None:
    # a divergence the sink recorded names the point the journal explained then (the journal
    # has grown since); otherwise PostgreSQL is compared with the journal as it is now
    events_dir = cfg.event_log_dir or cfg.journal_dir
    recorded = read_divergence(events_dir)
    if recorded is not None:
        event_no, trade_id = int(recorded["event_no"]), int(recorded["trade_id"])
        report.problems.append(f"the sink found PostgreSQL ahead of the journal: {recorded['reason']}")
    else:
        excess = asyncio.run(pg_excess(cfg, event_no))
        if excess is None:
            return
        report.problems.append(f"PostgreSQL holds events {event_no + 1}..{excess[0]} and trade ids "
                               f"{trade_id + 1}..{excess[1]} of partition {cfg.partition!r} that "
                               "the journal does not explain")
    report.actions.append(f"move the rows past event {event_no} and trade id {trade_id} to "
                          "fills_lost / order_events_lost and set the sink checkpoint there")
    if apply:
        report.pg_rows_moved = asyncio.run(move_lost_rows(cfg, event_no, trade_id))
        report.actions.append(f"moved {report.pg_rows_moved[0]} fills and "
                              f"{report.pg_rows_moved[1]} order events")
        if recorded is not None:
            os.unlink(os.path.join(events_dir, DIVERGED_FILE))


def run(cfg: Config, apply: bool) -> RepairReport:
    """Check the partition's files (and PostgreSQL when ``pg_dsn`` is set) against its journal;
    with ``apply``, move aside what the journal does not explain, then start once to check.
    Raises BlockingIOError while the gateway runs, the start's other errors
    (JournalCorrupt, SnapshotError, ...) unchanged, and PostgreSQL's connection errors."""
    report = RepairReport()
    # at most: journal behind the snapshot, then derived logs ahead, then a clean start
    for _ in range(3):
        try:
            engine = Engine(cfg)
            engine.recover()
        except JournalBehindSnapshot as exc:
            _journal_aside(cfg, exc, report, apply)
        except JournalBehind as exc:
            _derived_aside(cfg, exc, report, apply)
        else:
            event_no, trade_id = engine.journal_point
            engine.close()
            break
        if not apply:
            return report
    else:  # pragma: no cover - each pass removes one cause
        raise RuntimeError("repair did not converge")
    if cfg.pg_dsn:
        _postgres(cfg, event_no, trade_id, report, apply)
    if report.quarantine:
        report.actions.append(f"moved files are in {report.quarantine}")
    return report
