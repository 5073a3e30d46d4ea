"""The hand-written .pyi stubs of the matching and persistence extensions match the compiled
modules (mypy's stubtest imports each module and compares names, signatures and kinds)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["matching.records", "matching.ring", "matching.sequencer", "matching.core",
           "persistence.journal", "persistence.copy_binary"]


def test_stubs_match_compiled_modules() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--allowlist", str(ROOT / "stubtest-allowlist.txt"),
         *MODULES],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found in 6 modules" in proc.stdout
