"""Journal: framing, CRC32C, replay, torn-tail recovery, corruption detection (real files)."""
from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.journal_records import cmd, cmds

from matching.records import COMMAND_RECORD_SIZE, unpack_command
from matching.ring import SpscRing
from persistence.journal import (
    FRAME_SIZE,
    SEGMENT_NAME,
    Journal,
    JournalCorrupt,
    crc32c,
    crc32c_backend,
    crc32c_table,
)

ROOT = Path(__file__).resolve().parents[2]


def frame(payload: bytes) -> bytes:
    return struct.pack("<II", COMMAND_RECORD_SIZE, crc32c(payload)) + payload


# -- CRC32C -----------------------------------------------------------------------------------

def test_crc32c_vectors() -> None:
    # RFC 3720 §B.4 and the classic check value
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
    assert crc32c(b"") == 0
    for f in (crc32c, crc32c_table):
        assert f(b"123456789") == 0xE3069283
        assert f(bytes(32)) == 0x8A9136AA
    assert crc32c_backend() in ("sse4.2", "table")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 299), st.integers(0, 2**32 - 1))
def test_crc32c_implementations_agree_and_chain(data: bytes, cut: int, seed: int) -> None:
    cut = min(cut, len(data))
    whole = crc32c(data, seed)
    assert crc32c_table(data, seed) == whole
    # unaligned starts go through the byte-wise head loop
    assert crc32c(memoryview(data)[cut:]) == crc32c_table(data[cut:])
    assert crc32c(data[cut:], crc32c(data[:cut], seed)) == whole


# -- append / replay --------------------------------------------------------------------------

def test_empty_journal(tmp_path: Path) -> None:
    d = tmp_path / "j" / "nested"
    with Journal(str(d)) as j:
        assert j.path == str(d / SEGMENT_NAME)
        assert (j.records, j.last_seq, j.bytes_written, j.size) == (0, 0, 0, 0)
        assert list(j.replay()) == []
        assert j.durability == "os"
    assert os.path.getsize(d / SEGMENT_NAME) == 0


def test_ring_round_trip_with_wraparound(tmp_path: Path) -> None:
    ring = SpscRing(8, COMMAND_RECORD_SIZE)
    j = Journal(str(tmp_path))
    j.open()
    expected = []
    seq = 1
    # groups of 1..7 records through an 8-slot ring: positions wrap many times
    for g in [3, 5, 7, 1, 6, 4, 7, 2, 5, 7, 3]:
        group = cmds(seq, g)
        seq += g
        assert ring.push(group) == g
        written = j.append_ring(ring, g)
        assert written == g * FRAME_SIZE
        # not consumed: the core consumes afterwards, and sees exactly what was journaled
        assert len(ring) == g
        assert ring.pop() == group
        expected.append(group)
    assert ring.head > 8 * 5
    assert j.records == seq - 1 and j.last_seq == seq - 1
    assert j.bytes_written == (seq - 1) * FRAME_SIZE
    j.close()

    raw = (tmp_path / SEGMENT_NAME).read_bytes()
    assert raw == b"".join(frame(cmd(s)) for s in range(1, seq))

    j2 = Journal(str(tmp_path))
    j2.open()
    assert (j2.records, j2.last_seq, j2.bytes_written) == (seq - 1, seq - 1, 0)
    chunks = list(j2.replay(batch_records=4))
    assert all(len(c) == 4 * COMMAND_RECORD_SIZE for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= 4 * COMMAND_RECORD_SIZE
    assert b"".join(chunks) == b"".join(expected)
    assert unpack_command(chunks[0])["cl_ord_id"] == 10
    j2.close()


def test_append_ring_partial_and_errors(tmp_path: Path) -> None:
    ring = SpscRing(4, COMMAND_RECORD_SIZE)
    ring.push(cmds(1, 3))
    with Journal(str(tmp_path)) as j:
        assert j.append_ring(ring, 0) == 0
        assert j.append_ring(ring, 2) == 2 * FRAME_SIZE   # only the first 2 of 3
        with pytest.raises(ValueError):
            j.append_ring(ring, 4)
        with pytest.raises(ValueError):
            j.append_ring(SpscRing(4, 128), 0)
        with pytest.raises(ValueError):
            j.append(b"x" * 65)
        assert list(j.replay()) == [cmds(1, 2)]
    with pytest.raises(RuntimeError):
        j.append(cmd(9))
    with pytest.raises(ValueError):
        Journal(str(tmp_path), durability="sometimes")


def test_single_writer_lock(tmp_path: Path) -> None:
    with Journal(str(tmp_path)):
        with pytest.raises(BlockingIOError):
            Journal(str(tmp_path)).open()
    with Journal(str(tmp_path)) as j2:   # released on close
        assert j2.is_open


def test_large_group_grows_scratch(tmp_path: Path) -> None:
    data = cmds(1, 10_000)   # more than the initial scratch
    with Journal(str(tmp_path)) as j:
        assert j.append(data) == 10_000 * FRAME_SIZE
        assert j.append(memoryview(bytearray(cmd(10_001)))) == FRAME_SIZE
    with Journal(str(tmp_path)) as j:
        assert j.records == 10_001 and j.last_seq == 10_001
        assert b"".join(j.replay()) == data + cmd(10_001)


def test_fsync_mode(tmp_path: Path) -> None:
    with Journal(str(tmp_path), durability="fsync") as j:
        assert j.durability == "fsync"
        for s in range(1, 6):
            j.append(cmd(s))
        ring = SpscRing(8, COMMAND_RECORD_SIZE)
        ring.push(cmds(6, 3))
        j.append_ring(ring, 3)
        assert j.last_seq == 8
    with Journal(str(tmp_path), durability="fsync") as j:
        assert j.records == 8
        assert b"".join(j.replay()) == cmds(1, 8)


# -- recovery ---------------------------------------------------------------------------------

def test_truncation_at_every_offset_of_last_record(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    with Journal(str(src)) as j:
        j.append(cmds(1, 4))
        j.append(cmd(5))
    full = (src / SEGMENT_NAME).read_bytes()
    last = 4 * FRAME_SIZE
    for cut in range(last, len(full)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / SEGMENT_NAME).write_bytes(full[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="persistence.journal"):
            j = Journal(str(d))
            j.open()
        assert (j.records, j.last_seq, j.size) == (4, 4, last)
        if cut > last:
            assert any(str(d / SEGMENT_NAME) in r.getMessage() and f"offset {last}" in r.getMessage()
                       for r in caplog.records)
        else:
            assert not caplog.records
        assert os.path.getsize(d / SEGMENT_NAME) == last
        j.append(cmd(50))
        j.close()
        with Journal(str(d)) as j:
            assert j.records == 5 and j.last_seq == 50
            assert b"".join(j.replay()) == cmds(1, 4) + cmd(50)
        shutil.rmtree(d)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=6), st.floats(0, 1))
def test_any_cut_keeps_whole_frames(tmp_path_factory: pytest.TempPathFactory, groups: list[int],
                                    where: float) -> None:
    d = tmp_path_factory.mktemp("cut")
    seq = 1
    with Journal(str(d)) as j:
        for g in groups:
            j.append(cmds(seq, g))
            seq += g
    p = d / SEGMENT_NAME
    cut = int(where * os.path.getsize(p))
    os.truncate(p, cut)
    with Journal(str(d)) as j:
        kept = cut // FRAME_SIZE
        assert j.records == kept and j.last_seq == kept
        assert b"".join(j.replay()) == cmds(1, kept)


@pytest.mark.parametrize("pos", [0, 3, 4, 7, 8, 30, 71])
def test_flipped_byte_in_middle_record_raises(tmp_path: Path, pos: int) -> None:
    with Journal(str(tmp_path)) as j:
        j.append(cmds(1, 10))
    p = tmp_path / SEGMENT_NAME
    raw = bytearray(p.read_bytes())
    bad = 6 * FRAME_SIZE
    raw[bad + pos] ^= 0x20
    p.write_bytes(raw)
    with pytest.raises(JournalCorrupt) as ei:
        Journal(str(tmp_path)).open()
    assert ei.value.offset == bad and ei.value.path == str(p)
    assert p.read_bytes() == raw   # never "repaired" by dropping acknowledged data
    # the lock was released by the failed open
    raw[bad + pos] ^= 0x20
    p.write_bytes(raw)
    with Journal(str(tmp_path)) as j:
        assert j.records == 10


def test_bad_record_followed_by_unaligned_good_one_raises(tmp_path: Path) -> None:
    # garbage of odd length then a valid frame: framing is lost, data is not
    p = tmp_path / SEGMENT_NAME
    p.write_bytes(frame(cmd(1)) + b"\x07" * 13 + frame(cmd(2)))
    with pytest.raises(JournalCorrupt) as ei:
        Journal(str(tmp_path)).open()
    assert ei.value.offset == FRAME_SIZE


def test_corrupt_tail_without_good_records_is_truncated(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / SEGMENT_NAME
    good = frame(cmd(1)) + frame(cmd(2))
    bad1 = bytearray(frame(cmd(3)))
    bad1[40] ^= 1
    p.write_bytes(good + bytes(bad1) + bytes(FRAME_SIZE) + b"\xff" * 100)
    with caplog.at_level(logging.WARNING, logger="persistence.journal"):
        with Journal(str(tmp_path)) as j:
            assert j.records == 2 and j.last_seq == 2
    assert any(f"offset {2 * FRAME_SIZE}" in r.getMessage() for r in caplog.records)
    assert p.read_bytes() == good


def test_write_error_raises_and_cuts_back(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes write(2) fail with EFBIG part-way through a group, in a child process
    code = f"""
import os, resource, signal, sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]
from persistence.journal import Journal
from support.journal_records import cmds
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
j = Journal({str(tmp_path)!r})
j.open()
j.append(cmds(1, 10))
resource.setrlimit(resource.RLIMIT_FSIZE, ({10 * FRAME_SIZE} + 100, resource.RLIM_INFINITY))
try:
    j.append(cmds(11, 5))
except OSError as e:
    print("OSError", e.errno, j.records, j.size, os.path.getsize(j.path))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         cwd=ROOT)
    import errno
    assert out.stdout.split() == ["OSError", str(errno.EFBIG), "10", str(10 * FRAME_SIZE),
                                 str(10 * FRAME_SIZE)], out.stderr
    with Journal(str(tmp_path)) as j:
        assert j.records == 10


def test_crc32c_of_large_buffers_outside_the_gil_agrees() -> None:
    data = bytes(range(256)) * 4096 + b"tail"                      # > 64 KiB: the nogil path
    assert crc32c(data) == crc32c_table(data)
    assert crc32c(memoryview(data)[3:], 77) == crc32c_table(data[3:], 77)
    assert crc32c(data[100_000:], crc32c(data[:100_000])) == crc32c(data)
