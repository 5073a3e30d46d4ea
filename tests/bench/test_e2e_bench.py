"""bench/e2e_bench.py end to end, briefly: real gateway processes and the echo server, a small
throughput run, a two-rate latency profile and the snapshot run; --json holds the figures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RATES = (2000, 5000)


def test_e2e_bench_profile_json(tmp_path: Path) -> None:
    out = tmp_path / "e2e.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "e2e_bench.py"), "--requests", "20000", "--sessions",
         "2", "--rates", ",".join(map(str, RATES)), "--latency-seconds", "0.5", "--rounds", "2",
         "--snapshot-book", "20000", "--snapshot-rate", "5000", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "echo server (ceiling)" in res.stdout and "latency profile, us" in res.stdout
    fig = json.loads(out.read_text())
    assert fig["gateway_requests_per_s"] > 0 and fig["echo_requests_per_s"] > 0
    assert [row["rate"] for row in fig["latency"]] == list(RATES)
    for row in fig["latency"]:
        for t in ("gateway", "echo"):
            assert row[f"{t}_requests"] == row[f"{t}_answered"] == row["rate"] // 2, row
            assert row["rounds"] == 2
            assert row[f"{t}_sent_per_s"] > 0 and row[f"{t}_achieved_per_s"] > 0
            if row[f"{t}_client_kept_up"]:
                p = [row[f"{t}_{k}_us"] for k in ("p50", "p99", "p999", "max")]
                assert 0 < p[0] <= p[1] <= p[2] <= p[3], row
            else:  # a client that fell behind prints why, never a figure
                assert row[f"{t}_client_problems"] and row[f"{t}_p99_us"] is None, row
                assert "NO latency figure" in res.stdout
    # at these rates the client keeps up unless the machine starves it outright
    assert any(row[f"{t}_client_kept_up"] for row in fig["latency"] for t in ("gateway", "echo"))
    snap = fig["snapshot"]
    assert snap["resting_orders"] == 20000 and snap["snapshots_written"] == 1, snap
    assert snap["gateway_answered"] == snap["gateway_requests"] == 2500 and snap["capture_ms"] > 0
