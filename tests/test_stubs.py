"""Every Cython extension's hand-written .pyi matches the compiled module (mypy's stubtest
imports each one and compares names, signatures and kinds), and cython-lint (configured in
pyproject.toml's [tool.cython-lint]) is clean on every Cython source (.pyx, .pxd, .pxi)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("matching", "protocol", "persistence", "gateway", "monitoring")


def _extensions() -> list[str]:
    """Dotted names of the modules setup.py compiles (every .pyx of the packages)."""
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
                  for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.pyx"))


def test_every_extension_has_a_stub() -> None:
    missing = [m for m in _extensions() if not (ROOT / (m.replace(".", "/") + ".pyi")).exists()]
    assert not missing, f"no .pyi for {missing}"


def test_stubs_match_compiled_modules() -> None:
    modules = _extensions()
    assert {"matching.core", "protocol.codec", "gateway.risk.pretrade"} <= set(modules)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--mypy-config-file", str(ROOT / "pyproject.toml"),
         "--allowlist", str(ROOT / "tools" / "stubtest-allowlist.txt"), *modules],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Success: no issues found in {len(modules)} modules" in proc.stdout, proc.stdout


def test_cython_lint_clean() -> None:
    sources = sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for ext in ("pyx", "pxd", "pxi")
                     for p in (ROOT / pkg).rglob(f"*.{ext}"))
    assert "matching/core_match.pxi" in sources and "protocol/codec.pyx" in sources
    proc = subprocess.run([sys.executable, "-m", "cython_lint.cython_lint", *sources], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
