"""Every relative link of README.md and docs/*.md reaches a file, and its #anchor a heading."""

import re
from pathlib import Path

from ..conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text(encoding="utf-8")), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        missing_anchor = bool(anchor) and linked.suffix == ".md" and linked.exists() \
            and anchor not in anchors(linked)
        if not linked.exists() or missing_anchor:
            broken.append(target)
    return broken


def test_anchor_rule():
    page = REPO / "docs" / "benchmarks.md"
    assert "the-demo-make-demo-seqkd-demo" in anchors(page)


def test_every_relative_link_resolves():
    assert {str(p.relative_to(REPO)): broken_links(p) for p in PAGES if broken_links(p)} == {}


def test_broken_links_are_found(tmp_path):
    (tmp_path / "other.md").write_text("# A page\n\n## Its part: `x`\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#its-part-x) [file](missing.md) [anchor](other.md#nope) "
                    "[web](https://example.org/x) [self](#nothing)\n\n```\n[code](gone.md)\n```\n")
    assert broken_links(page) == ["missing.md", "other.md#nope", "#nothing"]
