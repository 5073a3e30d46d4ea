"""Every relative link of README.md and docs/*.md resolves: `](path)` names a file or folder of
the repository, and `](path#anchor)` / `](#anchor)` a heading of that Markdown page (GitHub's
anchor rule: lower case, punctuation dropped, spaces to hyphens, -1, -2 ... for repeats)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def prose(text: str) -> str:
    """The page without fenced code blocks (links and headings inside them are not real)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(prose(page.read_text())):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    text = CODE_SPAN.sub("", prose(page.read_text()))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_slug_follows_github() -> None:
    assert slug("Login token (JWT)") == "login-token-jwt"
    assert slug("What `durability` promises") == "what-durability-promises"
    assert slug("1. Data flow (one process, one partition)") == "1-data-flow-one-process-one-partition"
    assert slug("Deploy on Kubernetes") == "deploy-on-kubernetes"
    assert slug("Set-up on a fresh machine (Python 3.11, gcc)") == "set-up-on-a-fresh-machine-python-311-gcc"


def test_pages_have_links_to_check() -> None:
    assert len(PAGES) >= 10
    total = sum(len(links(p)) for p in PAGES)
    assert total >= 40, total
    # the README links every page of docs/
    readme = set(links(ROOT / "README.md"))
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme, page.name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
            continue
        if not dest.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif anchor:
            if dest.suffix != ".md":
                broken.append(f"{target}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(dest):
                broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_design_reference_in_the_code_resolves() -> None:
    """Code comments cite docs/design.md as "DESIGN §n" (and §n, §m): each n is a section of it,
    and a quoted name after it ("Scale-out") is in that section."""
    design = prose((ROOT / "docs" / "design.md").read_text())
    sections = {m.group(1): m.start() for m in re.finditer(r"^## (\d+)\. ", design, re.M)}
    bounds = sorted(sections.values()) + [len(design)]
    body = {n: design[start:bounds[bounds.index(start) + 1]] for n, start in sections.items()}
    cited = 0
    for folder in ("bench", "gateway", "matching", "monitoring", "persistence", "protocol", "tools"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in (".py", ".pyx", ".pxd", ".pxi", ".pyi", ".h") or not path.is_file():
                continue
            for m in re.finditer(r'DESIGN §(\d+)((?:, §\d+)*)(?: "([^"]+)")?', path.read_text()):
                numbers = [m.group(1), *re.findall(r"§(\d+)", m.group(2))]
                for n in numbers:
                    assert n in body, f"{path.relative_to(ROOT)} cites DESIGN §{n}: not in design.md"
                    cited += 1
                if m.group(3):
                    assert m.group(3) in body[numbers[0]], f"{path.relative_to(ROOT)}: {m.group(0)}"
    assert cited >= 20, cited
