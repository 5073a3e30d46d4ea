"""SegmentLog: framing, round trip, roll, torn tails, corruption detection (real files)."""
from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import pytest

from persistence.journal import crc32c
from persistence.segment_log import HEADER_SIZE, FrameInfo, SegmentLog, SegmentLogCorrupt


def opened(d: Path, segment_bytes: int = 1 << 20, prefix: str = "t") -> tuple[SegmentLog, list[FrameInfo]]:
    log = SegmentLog(str(d), prefix, segment_bytes)
    return log, list(log.open())


def payload(i: int) -> bytes:
    return bytes((i * 7 + k) & 0xFF for k in range(i % 50 + 1)) * 3 + bytes(40)


def test_frame_format_on_disk(tmp_path: Path) -> None:
    log, frames = opened(tmp_path)
    assert frames == [] and log.segments() == [1]
    assert log.append(2**64 - 1, 7, 3, b"hello") == (1, 0)
    log.close()
    raw = (tmp_path / "t-00000001.log").read_bytes()
    plen, crc, key, tag, count = struct.unpack_from("<IIQII", raw)
    assert (plen, key, tag, count) == (5, 2**64 - 1, 7, 3)
    assert crc == crc32c(raw[8:24] + b"hello")
    assert raw[24:] == b"hello" and len(raw) == HEADER_SIZE + 5


def test_round_trip_reopen_and_read(tmp_path: Path) -> None:
    log, _ = opened(tmp_path)
    where = []
    for i in range(200):
        # a list of buffers goes out as one frame
        body = payload(i)
        parts = [body[:3], bytearray(body[3:10]), memoryview(body)[10:]] if i % 2 else body
        where.append(log.append(i * 10, i % 5, i, parts))
    for i, (seg, off) in enumerate(where):
        info, data = log.read(seg, off)
        assert data == payload(i) and (info.key, info.tag, info.count) == (i * 10, i % 5, i)
    log.close()

    log, frames = opened(tmp_path)
    assert [(f.segment_no, f.offset) for f in frames] == where
    assert [(f.key, f.tag, f.count, f.payload_len) for f in frames] == \
        [(i * 10, i % 5, i, len(payload(i))) for i in range(200)]
    # appends continue after the last frame
    seg, off = log.append(1, 1, 1, b"x")
    assert (seg, off) == (1, where[-1][1] + HEADER_SIZE + len(payload(199)))
    assert log.read(seg, off)[1] == b"x"
    assert log.total_bytes == os.path.getsize(log.path(1))
    log.close()


def test_roll_remove_and_sync(tmp_path: Path) -> None:
    log, _ = opened(tmp_path, segment_bytes=200)
    where = [log.append(i, 0, 1, bytes(60)) for i in range(10)]
    # two 84-byte frames per 200-byte segment
    assert [s for s, _ in where] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert log.segments() == [1, 2, 3, 4, 5] and log.active_segment == 5
    # a frame larger than a segment gets a segment of its own
    assert log.append(99, 0, 1, bytes(500)) == (6, 0)
    assert log.append(100, 0, 1, b"") == (7, 0)
    log.sync()
    assert log.remove_before(3) == [1, 2]
    assert log.remove_segments(lambda n: n >= 5) == [5, 6]     # 7 is active: never removed
    assert log.segments() == [3, 4, 7]
    with pytest.raises(KeyError):
        log.read(1, 0)
    assert log.read(4, HEADER_SIZE + 60)[0].key == 7
    log.close()
    assert sorted(p.name for p in tmp_path.glob("t-*.log")) == \
        ["t-00000003.log", "t-00000004.log", "t-00000007.log"]
    log, frames = opened(tmp_path, segment_bytes=200)
    assert [f.key for f in frames] == [4, 5, 6, 7, 100]
    assert log.append(5, 5, 5, bytes(100)) == (7, HEADER_SIZE)
    log.close()


def test_exclusive_and_append_before_scan(tmp_path: Path) -> None:
    log = SegmentLog(str(tmp_path), "t", 4096)
    scan = log.open()
    with pytest.raises(RuntimeError):
        log.append(1, 1, 1, b"a")
    with pytest.raises(BlockingIOError):
        other = SegmentLog(str(tmp_path), "t", 4096)
        other.open()
    assert list(scan) == []
    with pytest.raises(ValueError):
        log.append(-1, 0, 0, b"")
    log.close()
    assert not log.is_open


def _write_frames(d: Path, n: int, segment_bytes: int = 1 << 20) -> list[tuple[int, int]]:
    log, _ = opened(d, segment_bytes)
    where = [log.append(i, 1, 1, payload(i)) for i in range(n)]
    log.close()
    return where


def test_torn_tail_at_every_offset_of_last_frame(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    where = _write_frames(src, 6, segment_bytes=300)
    last_seg, last_off = where[-1]
    assert last_seg > 1          # the torn frame is in the last of several segments
    seg_path = src / f"t-{last_seg:08d}.log"
    full = seg_path.read_bytes()
    for cut in range(last_off, len(full)):
        d = tmp_path / f"c{cut}"
        d.mkdir()
        for p in src.glob("t-*.log"):
            (d / p.name).write_bytes(p.read_bytes())
        (d / seg_path.name).write_bytes(full[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="persistence.segment_log"):
            log, frames = opened(d, 300)
        assert [f.key for f in frames] == list(range(5))
        if cut > last_off:
            assert f"t-{last_seg:08d}.log: torn or corrupt tail at byte offset {last_off}" in caplog.text
        assert os.path.getsize(d / seg_path.name) == last_off
        # appending goes on where the good frames end
        assert log.append(5, 1, 1, payload(5)) == (last_seg, last_off)
        log.close()
        assert [f.key for f in opened(d, 300)[1]] == list(range(6))


def test_garbage_tail_is_cut(tmp_path: Path) -> None:
    where = _write_frames(tmp_path, 5)
    p = tmp_path / "t-00000001.log"
    good = p.stat().st_size
    with open(p, "ab") as f:
        f.write(bytes(1000) + os.urandom(300))
    log, frames = opened(tmp_path)
    assert [(f.segment_no, f.offset) for f in frames] == where
    assert p.stat().st_size == good
    log.close()


def test_corruption_in_the_middle_is_an_error(tmp_path: Path) -> None:
    where = _write_frames(tmp_path, 20)
    p = tmp_path / "t-00000001.log"
    raw = bytearray(p.read_bytes())
    off = where[7][1]
    raw[off + HEADER_SIZE + 1] ^= 0x40          # one payload bit of frame 7
    p.write_bytes(bytes(raw))
    log = SegmentLog(str(tmp_path), "t", 1 << 20)
    seen: list[int] = []
    with pytest.raises(SegmentLogCorrupt) as e:
        for f in log.open():
            seen.append(f.key)
    assert e.value.path == str(p) and e.value.offset == off
    assert f"{p}: corrupt at byte offset {off}" in str(e.value)
    assert seen == list(range(7))
    assert p.read_bytes() == bytes(raw)         # untouched
    assert not log.is_open


def test_damage_in_a_closed_segment_is_an_error(tmp_path: Path) -> None:
    where = _write_frames(tmp_path, 8, segment_bytes=300)
    assert where[-1][0] >= 3
    p = tmp_path / "t-00000001.log"
    size = p.stat().st_size
    p.write_bytes(p.read_bytes()[:size - 3])    # a torn tail is only legal in the last segment
    with pytest.raises(SegmentLogCorrupt) as e:
        list(SegmentLog(str(tmp_path), "t", 300).open())
    assert e.value.path == str(p)


def test_read_detects_corruption(tmp_path: Path) -> None:
    log, _ = opened(tmp_path)
    seg, off = log.append(1, 2, 3, b"payload-bytes")
    with open(log.path(seg), "r+b") as f:
        f.seek(off + HEADER_SIZE)
        f.write(b"P")
    with pytest.raises(SegmentLogCorrupt):
        log.read(seg, off)
    with pytest.raises(SegmentLogCorrupt):
        log.read(seg, off + 5000)
    log.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_sync_plan_runs_elsewhere_and_forgets_what_it_synced(tmp_path: Path) -> None:
    log, _ = opened(tmp_path, segment_bytes=200)
    base = _open_fds()
    for i in range(10):                       # rolls: closed segments kept open until synced
        log.append(i, 0, 1, bytes(60))
    kept = _open_fds() - base
    assert kept == 4                          # segments 1-4; 5 is the active one
    plan = log.sync_plan()
    assert len(plan.fds) == kept + 1 and plan.dirs == [str(tmp_path)]   # and the active one
    log.append(10, 0, 1, bytes(60))           # the log goes on meanwhile: 5 is closed, 6 opened
    plan.run()
    plan.close()
    assert _open_fds() - base == 5
    plan.on_synced()                          # the covered segments are closed, not the newer
    assert _open_fds() - base == 1
    log.sync()
    assert _open_fds() - base == 0
    log.close()
