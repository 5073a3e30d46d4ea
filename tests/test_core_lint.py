"""cython-lint (configured in pyproject.toml's [tool.cython-lint]) is clean on the Cython
sources of matching/ (its .pxi parts included) and persistence/."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _sources() -> list[str]:
    files = [p for ext in ("pyx", "pxd", "pxi") for p in (ROOT / "matching").rglob(f"*.{ext}")]
    files += (ROOT / "persistence").glob("*.pyx")
    return sorted(str(p.relative_to(ROOT)) for p in files)


def test_cython_lint_clean() -> None:
    sources = _sources()
    assert "matching/core_match.pxi" in sources and "persistence/journal.pyx" in sources
    proc = subprocess.run([sys.executable, "-m", "cython_lint.cython_lint", *sources], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

