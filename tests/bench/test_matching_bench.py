"""bench/matching_bench.py end to end on a small shared stream: the array_book ceiling is built
and run on the same dump, the ratios come from measured runs, and --json holds the figures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_matching_bench_json_with_ceiling(tmp_path: Path) -> None:
    out = tmp_path / "mb.json"
    dump = tmp_path / "stream.bin"
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "matching_bench.py"), "--streams", "0", "--ops", "20000",
         "--stream", str(dump), "--repeat", "2", "--peers", "none", "--memory-orders", "20000",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "matches the reference" in res.stdout
    assert "core / ceiling: thread CPU" in res.stdout, res.stdout
    fig = json.loads(out.read_text())
    s0 = fig["streams"]["0"]
    assert s0["ops"] == 20000 and s0["cpu_ops_per_s"] > 0 and s0["p99_ns"] >= s0["p50_ns"] > 0
    assert len(s0["ceiling_ops_per_s_runs"]) == len(s0["cpu_ops_per_s_runs"]) == 2
    assert all(r > 0 for r in s0["cpu_ratio_to_ceiling_runs"])
    assert abs(s0["cpu_ratio_to_ceiling"] * s0["ceiling_cpu_ops_per_s"] - s0["cpu_ops_per_s"]) \
        < 0.5 * s0["cpu_ops_per_s"]       # the ratio is of the measured figures, not a constant
    assert 16 < fig["bytes_per_order"] < 1000 and fig["resting_orders"] == 20000
