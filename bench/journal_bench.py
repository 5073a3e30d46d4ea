"""Command journal on its own (persistence/journal.pyx): append throughput per durability and the
recovery read path (open() scan + replay()) for a large journal.

    python bench/journal_bench.py                          # 10 M records, 3 s per append mode
    python bench/journal_bench.py --records 2000000 --seconds 1 --dir /var/tmp

1. Append: one call = one group of ``--group`` (256) 96-byte Commands, as the engine's pump
   does; "os" (write(2) per group) and "fsync" (write + fdatasync per group) each for
   ``--seconds``.  Prints records/s, groups/s and the p50/p99/max time of one call.
2. Recovery: ``--records`` Commands written with large appends into default 256 MiB segments,
   then a fresh Journal's open() (scan: CRC32C of every frame) and a full replay() (read, CRC
   again, copy out the payloads), first with the files in the page cache ("warm", a process
   restart), then after evicting them with posix_fadvise(DONTNEED) ("cold", a machine restart:
   read from the disk).  Also replay(after_seq) of the last 100 k records, which skips whole
   segments and the head of the first needed one by offset.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from matching.records import COMMAND_RECORD_SIZE, CommandType, Side, pack_command  # noqa: E402
from persistence.journal import FRAME_SIZE, Journal, crc32c_backend  # noqa: E402

WORDS = COMMAND_RECORD_SIZE // 8   # seq is the first u64 of each 96-byte Command


def block(first_seq: int, n: int) -> bytearray:
    """n consecutive NEW orders from first_seq, built once and re-stamped with ``restamp``."""
    one = pack_command(seq=0, ts=1_700_000_000_000_000_000, session_id=1, symbol_id=0,
                       type=CommandType.CMD_NEW, side=Side.SIDE_BUY, ord_type=1, tif=1,
                       cl_ord_id=1, price=1_000_000, qty=10)
    buf = bytearray(one * n)
    restamp(buf, first_seq)
    return buf


def restamp(buf: bytearray, first_seq: int) -> None:
    words = memoryview(buf).cast("Q")
    n = len(buf) // COMMAND_RECORD_SIZE
    words[0::WORDS] = array("Q", range(first_seq, first_seq + n))


def bench_append(directory: str, durability: str, group: int, seconds: float) -> None:
    d = os.path.join(directory, f"append-{durability}")
    data = block(1, group)
    lat: list[float] = []
    with Journal(d, durability) as j:
        seq = 1
        end = time.perf_counter() + seconds
        t_start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            j.append(data)
            t1 = time.perf_counter()
            lat.append(t1 - t0)
            seq += group
            if t1 >= end:
                break
            restamp(data, seq)   # outside the timed call: the engine stamps in the sequencer
        elapsed = time.perf_counter() - t_start
        records = j.records
    lat.sort()
    n = len(lat)
    print(f"append {durability:5s}  {records / elapsed:>13,.0f} records/s  {n / elapsed:>9,.0f} "
          f"groups/s of {group}   per call p50 {lat[n // 2] * 1e6:8.1f} us  "
          f"p99 {lat[int(n * 0.99)] * 1e6:8.1f} us  max {lat[-1] * 1e6:8.1f} us")
    shutil.rmtree(d)


def evict(directory: str) -> None:
    for name in os.listdir(directory):
        if name.startswith("journal-"):
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)   # dirty pages cannot be dropped
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def bench_recovery(directory: str, records: int) -> None:
    d = os.path.join(directory, "recovery")
    chunk = 65536
    t0 = time.perf_counter()
    with Journal(d) as j:
        data = block(1, chunk)
        seq = 1
        while seq <= records:
            n = min(chunk, records - seq + 1)
            if n < chunk:
                data = block(seq, n)
            j.append(data)
            seq += n
            restamp(data, seq)
        nseg = len(j.segments())
    gb = records * FRAME_SIZE / 1e9
    print(f"wrote {records:,} records ({gb:.2f} GB, {nseg} segments) in "
          f"{time.perf_counter() - t0:.1f} s")
    for mode in ("warm", "cold"):
        if mode == "cold":
            evict(d)
        j = Journal(d)
        t0 = time.perf_counter()
        j.open()
        t1 = time.perf_counter()
        total = 0
        for c in j.replay():
            total += len(c)
        t2 = time.perf_counter()
        assert total == records * COMMAND_RECORD_SIZE and j.last_seq == records
        print(f"{mode}: open() {t1 - t0:6.2f} s ({records / (t1 - t0) / 1e6:5.1f} M records/s, "
              f"{gb / (t1 - t0):4.1f} GB/s)   replay() {t2 - t1:6.2f} s "
              f"({records / (t2 - t1) / 1e6:5.1f} M records/s)   together {t2 - t0:6.2f} s")
        if mode == "warm":
            tail = min(100_000, records)
            t3 = time.perf_counter()
            got = sum(len(c) for c in j.replay(after_seq=records - tail))
            t4 = time.perf_counter()
            assert got == tail * COMMAND_RECORD_SIZE
            print(f"warm: replay(after_seq={records - tail:,}) of the last {tail:,} records "
                  f"{(t4 - t3) * 1e3:6.1f} ms")
        j.close()
    shutil.rmtree(d)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=10_000_000, help="records in the recovery run")
    ap.add_argument("--group", type=int, default=256, help="records per append call")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each append run")
    ap.add_argument("--dir", default=None, help="parent of the scratch directory (default: TMPDIR)")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="journal-bench-", dir=args.dir)
    print(f"journal bench in {root} (CRC32C: {crc32c_backend()}, {FRAME_SIZE}-byte frames)")
    try:
        for durability in ("os", "fsync"):
            bench_append(root, durability, args.group, args.seconds)
        bench_recovery(root, args.records)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
