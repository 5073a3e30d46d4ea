"""The package layering, checked on every module's imports (issue 11).

    matching ← protocol ← persistence ← gateway          monitoring ← gateway

- ``matching`` imports none of our other packages;
- ``protocol`` of ours only ``matching``;
- ``persistence`` only ``matching`` and ``protocol``;
- ``monitoring`` only ``matching`` and ``protocol`` (enum and record tables such as
  matching.records and protocol.mdjson); never ``gateway`` or ``persistence``: the gateway
  passes it read-only views (monitoring/sources.py), so there is no package cycle;
- ``gateway`` may import anything.

Every import counts, including those under ``if TYPE_CHECKING:`` and inside functions:
``.py``/``.pyi`` files are parsed with ``ast``; ``.pyx``/``.pxd``/``.pxi`` lines are matched
for ``cimport``, ``from X cimport`` and ``import``.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("matching", "protocol", "persistence", "gateway", "monitoring")
#: package -> the packages of ours it may import (besides itself)
ALLOWED: dict[str, frozenset[str]] = {
    "matching": frozenset(),
    "protocol": frozenset({"matching"}),
    "persistence": frozenset({"matching", "protocol"}),
    "monitoring": frozenset({"matching", "protocol"}),
    "gateway": frozenset(OURS),
}
PY_SUFFIXES = (".py", ".pyi")
CYTHON_SUFFIXES = (".pyx", ".pxd", ".pxi")

# "from a.b cimport x", "from a.b import x", "cimport a.b, c", "import a.b as c, d"
_FROM = re.compile(r"^\s*from\s+([\w.]+)\s+c?import\b")
_IMPORT = re.compile(r"^\s*c?import\s+([\w.]+(?:\s+as\s+\w+)?(?:\s*,\s*[\w.]+(?:\s+as\s+\w+)?)*)")


def module_name(path: Path, root: Path = ROOT) -> str:
    """``gateway/engine/facade.py`` -> ``gateway.engine.facade`` (a package's ``__init__``
    is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, level: int, importer: str, is_package: bool) -> str:
    # a relative import ("from . import x", "from ..a import b") against the importer's package
    if level == 0:
        return module
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def python_imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, imported module) of every import statement of a .py or .pyi file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    importer, is_package = module_name(path, root), path.stem == "__init__"
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, importer, is_package)
            out.append((node.lineno, base))
            if not node.module:   # "from . import x": x may be a module
                out.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return out


def cython_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every ``cimport``/``import`` line of a Cython file."""
    out: list[tuple[int, str]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        code = line.split("#", 1)[0]
        m = _FROM.match(code)
        if m:
            out.append((lineno, m.group(1)))
            continue
        m = _IMPORT.match(code)
        if m:
            out.extend((lineno, name.split()[0]) for name in m.group(1).split(","))
    return out


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, imported module) of every import of a source file under ``root``."""
    return python_imports(path, root) if path.suffix in PY_SUFFIXES else cython_imports(path)


def violations(root: Path = ROOT) -> list[str]:
    """"file:line: package module imports forbidden module" for every import that breaks the
    layering, over every source file of our packages under ``root``."""
    found: list[str] = []
    for package in OURS:
        for path in sorted((root / package).rglob("*")):
            if path.suffix not in PY_SUFFIXES + CYTHON_SUFFIXES or not path.is_file():
                continue
            for lineno, imported in imports_of(path, root):
                top = imported.split(".")[0]
                if top in OURS and top != package and top not in ALLOWED[package]:
                    found.append(f"{path.relative_to(root)}:{lineno}: {module_name(path, root)} "
                                 f"imports {imported} ({package} may import "
                                 f"{sorted(ALLOWED[package]) or 'none of our packages'})")
    return found


def test_every_package_respects_the_layering() -> None:
    found = violations()
    assert not found, "layering violations:\n" + "\n".join(found)


def test_the_scan_sees_the_imports_it_checks() -> None:
    # the scan must find the imports that are allowed too, or it could pass by seeing nothing
    seen = {imported for _, imported in imports_of(ROOT / "gateway" / "server.py")}
    assert {"monitoring.collector", "gateway.engine", "protocol.session"} <= seen
    pyx = {imported for _, imported in imports_of(ROOT / "persistence" / "journal.pyx")}
    assert any(name.startswith("matching") for name in pyx), pyx
    assert len(list((ROOT / "monitoring").glob("*.py"))) >= 4


@pytest.mark.parametrize(("package", "source", "suffix", "offender"), [
    ("monitoring", "from gateway.engine import Engine\n", ".py", "gateway.engine"),
    ("monitoring", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                   "    from gateway.config.reload import Reloader\n", ".py", "gateway.config.reload"),
    ("matching", "from persistence cimport journal\n", ".pyx", "persistence"),
    ("matching", "cimport protocol.codec\n", ".pxd", "protocol.codec"),
    ("protocol", "import persistence.journal as j, os\n", ".pyx", "persistence.journal"),
    ("persistence", "def f() -> None:\n    import monitoring.http\n", ".pyi", "monitoring.http"),
    ("persistence", "from ..gateway import server\n", ".py", "gateway"),
])
def test_a_violation_fails_and_names_the_import(tmp_path: Path, package: str, source: str,
                                                suffix: str, offender: str) -> None:
    for p in OURS:
        (tmp_path / p).mkdir()
    bad = tmp_path / package / f"bad{suffix}"
    bad.write_text(source, encoding="utf-8")
    (tmp_path / package / "fine.py").write_text("import matching.records\nimport os\n",
                                               encoding="utf-8")
    found = violations(tmp_path)
    assert len(found) == 1, found
    assert found[0].startswith(f"{package}/bad{suffix}:") and f"imports {offender} " in found[0]
