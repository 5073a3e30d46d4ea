"""The in-run ceiling of the matching benches: ``../shared/bench/array_book.c``, built here with gcc.

array_book is a bare price-time book over a dense price array with no events, no validation and
no order-id hash (the stream's ids index its arrays): what a matching loop costs with nothing
else to do.  ``bench/matching_bench.py`` runs it on the same dumped stream as the core,
alternating with the core's runs, and prints the core's ratio to it (issue 12: a comparison is
measured in the same run, or not printed).

Raises ``CeilingUnavailable`` (with the reason) when the source or a C compiler is missing, or
when the run fails or does not reproduce the stream header's totals.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "bench" / "array_book.c"
#: the flags hftgw's extensions are built with (setup.py), so that neither side gets a better compiler
CFLAGS = ("-O3", "-fno-strict-aliasing")
_RUN = re.compile(rb"array_book run \d+: (\d+) ops/s(?P<bad> MISMATCH)?")


class CeilingUnavailable(RuntimeError):
    """array_book could not be built or run; the message says why."""


def build(source: Path = SOURCE, clock: str = "CLOCK_MONOTONIC") -> Path:
    """Compile array_book.c (cached by source mtime and clock under the temp dir); returns the
    binary.  ``clock``: the clock_gettime clock its loop is timed with; CLOCK_THREAD_CPUTIME_ID
    gives the thread-CPU figure to set beside the core's thread CPU time (the shared file times
    wall time; the copy compiled here differs from it in that one word)."""
    if not source.is_file():
        raise CeilingUnavailable(f"{source} is missing")
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise CeilingUnavailable("no C compiler (gcc) on PATH")
    text = source.read_text()
    if clock != "CLOCK_MONOTONIC":
        if text.count("CLOCK_MONOTONIC") != 2:
            raise CeilingUnavailable(f"{source}: expected two CLOCK_MONOTONIC calls to retime")
        text = text.replace("CLOCK_MONOTONIC", clock)
    out = Path(tempfile.gettempdir()) / f"hftgw-array_book-{int(source.stat().st_mtime)}-{clock}"
    if not out.exists():
        src = out.with_suffix(f".{os.getpid()}.c")
        src.write_text(text)
        tmp = out.with_suffix(f".{os.getpid()}")
        res = subprocess.run([cc, *CFLAGS, "-o", str(tmp), str(src)], capture_output=True)
        src.unlink()
        if res.returncode != 0:
            raise CeilingUnavailable(f"{cc} failed: {res.stderr.decode(errors='replace')[-500:]}")
        os.replace(tmp, out)
    return out


def run(binary: Path, stream: str, repeat: int = 1) -> list[float]:
    """ops/s of each of ``repeat`` runs of array_book over the dumped ``stream`` (OBS1 file)."""
    res = subprocess.run([str(binary), stream, str(repeat)], capture_output=True, timeout=600)
    rates = []
    for m in _RUN.finditer(res.stdout):
        if m.group("bad"):
            raise CeilingUnavailable(f"array_book does not reproduce the header of {stream}")
        rates.append(float(m.group(1)))
    if res.returncode != 0 or len(rates) != repeat:
        raise CeilingUnavailable(f"array_book exited {res.returncode}: {res.stderr.decode(errors='replace')}")
    return rates
