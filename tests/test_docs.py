"""The docs stand alone: every relative link in README.md, docs/ and bench/ resolves inside the
repository, to a heading that exists when it names one."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "RESULTS.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+\s+(.+?)\s*$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_resolves_inside_the_repository():
    broken = []
    for page in PAGES:
        for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(REPO)}: ({target})"
            if not file.is_relative_to(REPO):
                broken.append(f"{where} points outside the repository")
            elif not file.exists():
                broken.append(f"{where} does not exist")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{where} names no heading of {file.name}")
    assert not broken, "\n".join(broken)


def test_the_anchor_rule_matches_a_known_heading():
    # Guards the checker itself: a heading with a comma and one with a number.
    assert "what-leaves-the-machine-and-what-never-does" in anchors(REPO / "docs/threat-model.md")
    assert "known-pitfalls" in anchors(REPO / "docs/model.md")


def test_nothing_points_to_the_design_notes_outside_the_repository():
    """The model, protocol and pitfalls live in docs/model.md; a clone has no ../shared/docs."""
    outside = "shared" + "/docs/"
    roots = ["engine", "streamer", "plugins", "luvnet", "bench", "docs"]
    files = [REPO / "README.md", REPO / "pyproject.toml"]
    files += [f for r in roots for f in (REPO / r).rglob("*") if f.suffix in (".py", ".md")]
    hits = [str(f.relative_to(REPO)) for f in files if outside in f.read_text(encoding="utf-8")]
    assert not hits, hits
