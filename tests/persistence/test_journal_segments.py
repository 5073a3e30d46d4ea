"""Journal segments: rolling at segment_bytes, replay after a seq across segments, torn tails and
damage in closed segments, removal of what no snapshot needs, and a gateway restart on many
segments (real files; the framing and CRC32C tests are in test_journal.py)."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.journal_records import cmd, cmds

from matching.records import COMMAND_RECORD_SIZE, Side
from matching.ring import SpscRing
from persistence.journal import (
    FRAME_SIZE,
    LOCK_NAME,
    Journal,
    JournalCorrupt,
    segment_name,
)

ROOT = Path(__file__).resolve().parents[2]


# -- segments ---------------------------------------------------------------------------------

SEG = 5 * FRAME_SIZE   # small segments: a roll every few records


def seg_path(d: Path, index: int) -> Path:
    return d / segment_name(index)


def write_groups(d: Path, groups: list[int], segment_bytes: int = SEG,
                 durability: str = "os") -> int:
    """Journal groups of consecutive commands from seq 1; returns the last seq."""
    seq = 0
    with Journal(str(d), durability, segment_bytes) as j:
        for g in groups:
            j.append(cmds(seq + 1, g))
            seq += g
    return seq


def expected_segments(groups: list[int], segment_bytes: int = SEG) -> list[tuple[int, int]]:
    """(first_seq, last_seq) per segment: a segment is closed after the group that makes it
    reach segment_bytes, and an empty active segment follows a closed one."""
    out: list[tuple[int, int]] = []
    first, seq, nbytes = 1, 0, 0
    for g in groups:
        seq += g
        nbytes += g * FRAME_SIZE
        if nbytes >= segment_bytes:
            out.append((first, seq))
            first, nbytes = seq + 1, 0
    out.append((first, seq) if nbytes else (0, 0))
    return out


def test_rolls_at_segment_bytes_and_groups_never_span(tmp_path: Path) -> None:
    groups = [3, 3, 1, 7, 2, 2, 1, 12, 4]
    last = write_groups(tmp_path, groups)
    exp = expected_segments(groups)
    assert exp == [(1, 6), (7, 14), (15, 19), (20, 31), (32, 35)]
    with Journal(str(tmp_path), segment_bytes=SEG) as j:
        segs = j.segments()
        assert [(f, lst) for _, f, lst, _ in segs] == exp
        assert [p for p, *_ in segs] == [str(seg_path(tmp_path, i)) for i in range(1, 6)]
        assert j.path == str(seg_path(tmp_path, 5))
        for p, f, lst, n in segs:
            assert n == (lst - f + 1) * FRAME_SIZE == os.path.getsize(p)
        # each file holds whole groups, the 12-record group in one file above segment_bytes
        assert segs[3][3] == 12 * FRAME_SIZE
        assert (j.records, j.last_seq, j.first_seq, j.size) == (last, last, 1, last * FRAME_SIZE)
        assert b"".join(j.replay()) == cmds(1, last)
        assert sorted(os.listdir(tmp_path)) == sorted([LOCK_NAME] + [segment_name(i)
                                                                     for i in range(1, 6)])
        # the next group goes to the active segment, which then reaches the size and rolls
        j.append(cmd(36))
        assert j.path == str(seg_path(tmp_path, 6)) and j.segments()[-1] == (j.path, 0, 0, 0)
        assert j.segments()[-2][1:] == (32, 36, 5 * FRAME_SIZE)
        j.append(cmds(37, 2))
        assert j.segments()[-1] == (j.path, 37, 38, 2 * FRAME_SIZE)
    with Journal(str(tmp_path), segment_bytes=SEG) as j:
        assert len(j.segments()) == 6 and j.last_seq == 38
        assert b"".join(j.replay(batch_records=7)) == cmds(1, 38)
    with pytest.raises(ValueError):
        Journal(str(tmp_path), segment_bytes=FRAME_SIZE - 1)


def test_ring_groups_roll_too(tmp_path: Path) -> None:
    ring = SpscRing(16, COMMAND_RECORD_SIZE)
    seq = 1
    with Journal(str(tmp_path), segment_bytes=SEG) as j:
        for g in [4, 9, 1, 1, 5, 16, 2]:
            ring.push(cmds(seq, g))
            assert j.append_ring(ring, g) == g * FRAME_SIZE
            ring.pop()
            seq += g
        assert [(f, lst) for _, f, lst, _ in j.segments()] == expected_segments(
            [4, 9, 1, 1, 5, 16, 2])
        assert b"".join(j.replay()) == cmds(1, seq - 1)


def replay_after(d: Path, after: int, batch: int, segment_bytes: int = SEG) -> bytes:
    with Journal(str(d), segment_bytes=segment_bytes) as j:
        return b"".join(j.replay(after_seq=after, batch_records=batch))


def test_replay_after_seq_every_boundary(tmp_path: Path) -> None:
    groups = [2, 4, 1, 6, 3, 3, 2]
    last = write_groups(tmp_path, groups)
    with Journal(str(tmp_path), segment_bytes=SEG) as j:
        for after in range(0, last + 3):
            for batch in (1, 3, 100):
                chunks = list(j.replay(after, batch))
                assert b"".join(chunks) == cmds(after + 1, max(0, last - after)), (after, batch)
                assert all(0 < len(c) <= batch * COMMAND_RECORD_SIZE for c in chunks)
        with pytest.raises(ValueError):
            j.replay(-1)
        with pytest.raises(ValueError):
            j.replay(0, 0)


def test_replay_after_seq_does_not_read_what_it_skips(tmp_path: Path) -> None:
    groups = [3, 3, 4, 5, 2]
    last = write_groups(tmp_path, groups)
    for after in range(0, last + 1):
        d = tmp_path / f"a{after}"
        shutil.copytree(tmp_path, d, ignore=shutil.ignore_patterns("a*"))
        with Journal(str(d), segment_bytes=SEG) as j:
            # after open(): overwrite every frame the replay must skip with garbage; reading
            # any of them would raise JournalCorrupt ("changed since open")
            for p, f, lst, _ in j.segments():
                raw = bytearray(Path(p).read_bytes())
                for s in range(f, min(lst, after) + 1):
                    o = (s - f) * FRAME_SIZE
                    raw[o:o + FRAME_SIZE] = b"\xee" * FRAME_SIZE
                Path(p).write_bytes(raw)
            assert b"".join(j.replay(after, 2)) == cmds(after + 1, last - after)
            if 0 < after < last:
                with pytest.raises(JournalCorrupt, match="changed since open"):
                    list(j.replay(0))
        shutil.rmtree(d)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=8), st.integers(1, 12),
       st.integers(0, 80), st.integers(1, 9))
def test_replay_after_seq_property(tmp_path_factory: pytest.TempPathFactory, groups: list[int],
                                   seg_records: int, after: int, batch: int) -> None:
    d = tmp_path_factory.mktemp("r")
    sb = seg_records * FRAME_SIZE
    last = write_groups(d, groups, sb)
    with Journal(str(d), segment_bytes=sb) as j:
        assert [(f, lst) for _, f, lst, _ in j.segments()] == expected_segments(groups, sb)
        assert b"".join(j.replay(after, batch)) == cmds(after + 1, max(0, last - after))


@pytest.mark.parametrize("last_records", [1, 3])
def test_torn_tail_of_last_segment_at_every_offset(tmp_path: Path, last_records: int,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    last = write_groups(src, [5, 5, 5, last_records])
    closed = {i: seg_path(src, i).read_bytes() for i in (1, 2, 3)}
    full = seg_path(src, 4).read_bytes()
    keep = (last_records - 1) * FRAME_SIZE
    for cut in range(keep, len(full)):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(src, d)
        victim = seg_path(d, 4)
        os.truncate(victim, cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="persistence.journal"):
            j = Journal(str(d), segment_bytes=SEG)
            j.open()
        assert (j.records, j.last_seq) == (last - 1, last - 1)
        assert j.segments()[-1][3] == keep == os.path.getsize(victim)
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        if cut > keep:
            assert len(warned) == 1 and str(victim) in warned[0]
            assert f"offset {keep}" in warned[0] and f"{cut - keep} bytes" in warned[0]
        else:
            assert warned == []
        for i, raw in closed.items():
            assert seg_path(d, i).read_bytes() == raw
        assert b"".join(j.replay()) == cmds(1, last - 1)
        j.append(cmd(last))          # the sequence continues where the good records end
        j.close()
        with Journal(str(d), segment_bytes=SEG) as j:
            assert j.last_seq == last and b"".join(j.replay()) == cmds(1, last)
        shutil.rmtree(d)


@pytest.mark.parametrize("where", ["middle", "last_frame", "partial_frame"])
def test_damage_in_a_closed_segment_raises(tmp_path: Path, where: str) -> None:
    write_groups(tmp_path, [5, 5, 5, 2])
    p = seg_path(tmp_path, 2)
    raw = bytearray(p.read_bytes())
    if where == "middle":
        bad = 2 * FRAME_SIZE
        raw[bad + 50] ^= 0x01
    elif where == "last_frame":
        bad = 4 * FRAME_SIZE
        raw[bad + 4] ^= 0x80    # its CRC
    else:
        bad = 4 * FRAME_SIZE
        del raw[bad + 60:]      # a segment torn before the next one was started
    good = p.read_bytes()
    p.write_bytes(raw)
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    with pytest.raises(JournalCorrupt) as ei:
        Journal(str(tmp_path), segment_bytes=SEG).open()
    assert (ei.value.path, ei.value.offset) == (str(p), bad)
    assert str(p) in str(ei.value) and f"offset {bad}" in str(ei.value)
    assert {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)} == before
    # the lock was released by the failed open
    p.write_bytes(good)
    with Journal(str(tmp_path), segment_bytes=SEG) as j:
        assert j.records == 17


def test_damage_mid_last_segment_raises(tmp_path: Path) -> None:
    write_groups(tmp_path, [5, 5, 4])
    p = seg_path(tmp_path, 3)
    raw = bytearray(p.read_bytes())
    raw[FRAME_SIZE + 20] ^= 0x10
    p.write_bytes(raw)
    with pytest.raises(JournalCorrupt) as ei:
        Journal(str(tmp_path), segment_bytes=SEG).open()
    assert (ei.value.path, ei.value.offset) == (str(p), FRAME_SIZE)
    assert p.read_bytes() == raw


def test_missing_segment_is_a_seq_gap(tmp_path: Path) -> None:
    write_groups(tmp_path, [5, 5, 5, 2])
    os.unlink(seg_path(tmp_path, 2))
    with pytest.raises(JournalCorrupt) as ei:
        Journal(str(tmp_path), segment_bytes=SEG).open()
    assert (ei.value.path, ei.value.offset) == (str(seg_path(tmp_path, 3)), 0)
    assert "first seq 11 does not follow seq 5" in str(ei.value)
    assert str(seg_path(tmp_path, 1)) in str(ei.value)


def test_other_files_in_the_directory_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "audit.log").write_text("{}\n")
    (tmp_path / "journal-1.log").write_bytes(b"junk")       # not 8 digits
    (tmp_path / "journal-00000009.log.tmp").write_bytes(b"junk")
    last = write_groups(tmp_path, [6, 6])
    with Journal(str(tmp_path), segment_bytes=SEG) as j:
        assert len(j.segments()) == 3 and b"".join(j.replay()) == cmds(1, last)


def test_remove_through(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_groups(tmp_path, [5] * 4 + [3])      # 1-5 6-10 11-15 16-20 | 21-23 active
    with Journal(str(tmp_path), segment_bytes=SEG) as j:
        assert j.remove_through(0) == [] and j.remove_through(4) == []
        with caplog.at_level(logging.INFO, logger="persistence.journal"):
            assert j.remove_through(7) == [str(seg_path(tmp_path, 1))]
        assert any(str(seg_path(tmp_path, 1)) in r.getMessage() and "removed" in r.getMessage()
                   for r in caplog.records)
        assert not seg_path(tmp_path, 1).exists()
        assert (j.first_seq, j.last_seq, j.records, j.size) == (6, 23, 18, 18 * FRAME_SIZE)
        assert b"".join(j.replay()) == cmds(6, 18)
        assert b"".join(j.replay(after_seq=12)) == cmds(13, 11)
        # everything: every closed segment goes, the active one stays
        assert j.remove_through(10**9) == [str(seg_path(tmp_path, i)) for i in (2, 3, 4)]
        assert [p for p, *_ in j.segments()] == [j.path] == [str(seg_path(tmp_path, 5))]
        assert (j.first_seq, j.records, j.segments_removed) == (21, 3, 4)
        j.append(cmds(24, 2))                    # reaches SEG: rolls to segment 6
        assert j.path == str(seg_path(tmp_path, 6))
        # the active segment is empty: the newest segment with records stays (last_seq)
        assert j.remove_through(10**9) == []
        j.append(cmd(26))
        assert j.remove_through(25) == [str(seg_path(tmp_path, 5))]
        assert j.first_seq == 26
    with Journal(str(tmp_path), segment_bytes=SEG) as j:   # reopen after removal
        assert (j.first_seq, j.last_seq, j.records) == (26, 26, 1)
        assert b"".join(j.replay()) == cmd(26)
        j.append(cmds(27, 9))                    # the sequence continues, across a roll
        assert len(j.segments()) == 2
    with Journal(str(tmp_path), segment_bytes=SEG) as j:
        assert b"".join(j.replay()) == cmds(26, 10) and j.last_seq == 35
        with pytest.raises(JournalCorrupt):      # replay checks the CRC of every frame it reads
            (seg_path(tmp_path, 6)).write_bytes(b"x" * j.segments()[0][3])
            list(j.replay())


def test_remove_through_stops_at_first_needed(tmp_path: Path) -> None:
    write_groups(tmp_path, [5, 5, 5, 1])
    with Journal(str(tmp_path), segment_bytes=SEG) as j:
        assert j.remove_through(9) == [str(seg_path(tmp_path, 1))]   # 6-10 still needed
        assert j.first_seq == 6 and len(j.segments()) == 3
    assert set(os.listdir(tmp_path)) == {LOCK_NAME} | {segment_name(i) for i in (2, 3, 4)}


@pytest.mark.parametrize("durability", ["os", "fsync"])
def test_sync_and_durability_modes_across_rolls(tmp_path: Path, durability: str) -> None:
    with Journal(str(tmp_path), durability, SEG) as j:
        for s in range(1, 24, 2):
            j.append(cmds(s, 2))
            if s % 6 == 1:
                j.sync()
        assert len(j.segments()) == 5
        j.sync()
        j.append(cmds(25, 4))
        # "os" mode keeps closed segments open until sync(); removing one drops it
        assert j.remove_through(12) == [str(seg_path(tmp_path, i)) for i in (1, 2)]
        j.sync()
    with Journal(str(tmp_path), durability, SEG) as j:
        assert j.first_seq == 13 and j.last_seq == 28
        assert b"".join(j.replay()) == cmds(13, 16)
    with pytest.raises(RuntimeError):
        j.sync()
    with pytest.raises(RuntimeError):
        j.remove_through(1)


def test_failed_roll_writes_nothing_and_is_retried(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    blocker = seg_path(tmp_path, 2)
    with Journal(str(tmp_path), segment_bytes=SEG) as j:
        blocker.mkdir()               # the next segment's name is taken by a directory
        with caplog.at_level(logging.WARNING, logger="persistence.journal"):
            j.append(cmds(1, 5))      # written; the roll after it fails and is logged
        assert any("cannot start a new segment" in r.getMessage() for r in caplog.records)
        assert j.last_seq == 5 and j.path == str(seg_path(tmp_path, 1))
        with pytest.raises(OSError):
            j.append(cmd(6))          # the roll is retried first: nothing is written
        assert (j.records, j.last_seq, os.path.getsize(j.path)) == (5, 5, 5 * FRAME_SIZE)
        blocker.rmdir()
        j.append(cmd(6))
        assert j.path == str(blocker) and j.segments()[-1][1:] == (6, 6, FRAME_SIZE)
    with Journal(str(tmp_path), segment_bytes=SEG) as j:
        assert b"".join(j.replay()) == cmds(1, 6)


def test_lock_is_on_the_directory(tmp_path: Path) -> None:
    with Journal(str(tmp_path), segment_bytes=SEG) as j:
        j.append(cmds(1, 12))          # the active segment is no longer the first one
        with pytest.raises(BlockingIOError):
            Journal(str(tmp_path), segment_bytes=SEG).open()
        assert (tmp_path / LOCK_NAME).exists()


# -- in the gateway ---------------------------------------------------------------------------

async def test_gateway_restarts_on_a_journal_of_many_segments(tmp_path: Path) -> None:
    from support.gateway_harness import login, make_config, metric_value, running_gateway, scrape

    from matching.records import OrdType, TimeInForce
    from protocol.messages import BookQuery, BookSnapshot, NewOrder, OrderAccepted

    def sell(cl: int) -> NewOrder:
        return NewOrder(cl_ord_id=cl, price=1_000_000 + 100 * (cl % 7), order_qty=cl, symbol="AAPL",
                        side=Side.SIDE_SELL, ord_type=OrdType.ORD_LIMIT,
                        time_in_force=TimeInForce.TIF_GTC, stp_mode=0)

    cfg = make_config(tmp_path, journal_segment_bytes=4096)   # 39 frames a segment
    async with running_gateway(cfg) as gw:
        # the shutdown snapshot would let old segments go: a retention hook that releases
        # nothing keeps the journal whole, and the restart ignores the snapshot (full replay)
        gw.engine.journal_retention.append(lambda: 0)
        a = await login(cfg, "alice")
        for first in range(1, 121, 10):        # groups of about 10 commands
            for cl in range(first, first + 10):
                a.send(sell(cl))
            await a.recv_until(lambda x, c=first + 9: isinstance(x, OrderAccepted) and x.cl_ord_id == c)
        a.send(BookQuery(request_id=1, symbol="AAPL", depth=10))
        before = (await a.recv_until(lambda x: isinstance(x, BookSnapshot)))[-1]
        await a.logout()
        segs = gw.engine.journal.segments()
        assert len(segs) >= 4 and all(n < 4096 + 16 * FRAME_SIZE for *_, n in segs)
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_journal_segments") == len(segs)
        assert metric_value(text, "hftgw_journal_segments_removed_total") == 0
        last = gw.engine.journal.last_seq
    async with running_gateway(msgspec.structs.replace(cfg, snapshot_dir=str(tmp_path / "none"))) as gw:
        assert gw.engine.journal.segments()[:len(segs)] == segs
        assert gw.engine.sequencer.next_seq > last
        a = await login(cfg, "alice")
        a.send(BookQuery(request_id=2, symbol="AAPL", depth=10))
        after = await a.recv()
        assert isinstance(after, BookSnapshot)
        assert after.bids == before.bids and after.asks == before.asks and len(after.asks) == 7
        await a.logout()


def test_journal_sync_plan_forgets_only_what_it_covered(tmp_path: Path) -> None:
    with Journal(str(tmp_path), segment_bytes=20 * 104) as j:
        base = len(os.listdir("/proc/self/fd"))
        for k in range(5):
            j.append(cmds(1 + 20 * k, 20))   # a segment each
        kept = len(os.listdir("/proc/self/fd")) - base
        assert kept == 5                     # a full group rolls at once: the active one is empty
        plan = j.sync_plan()
        assert len(plan.fds) == kept + 1 and plan.dirs == [str(tmp_path)]
        j.append(cmds(101, 20))              # another roll after the plan: not covered
        plan.run()
        plan.close()
        plan.on_synced()
        assert len(os.listdir("/proc/self/fd")) - base == 1     # the roll's segment, still unsynced
        j.sync()
        assert len(os.listdir("/proc/self/fd")) - base == 0
        assert [r for r in j.replay(0)] and j.last_seq == 120
