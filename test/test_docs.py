"""The README and docs/: every relative link points at a file of the repository (and a heading of it, for
``#anchor`` links), so a newcomer following them never lands nowhere."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path):
    return {_slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def test_every_relative_link_resolves():
    pages = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    assert len(pages) >= 7
    checked = 0
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            file_part, _, anchor = target.partition("#")
            path = (page.parent / file_part).resolve() if file_part else page
            assert path.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
            assert ROOT in path.parents or path == ROOT, f"{page.relative_to(ROOT)} links outside the repository"
            if anchor:
                assert anchor in _anchors(path), f"{page.relative_to(ROOT)}: #{anchor} is not a heading of {path.name}"
            checked += 1
    assert checked >= 10


def test_readme_is_short_and_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    blocks = re.findall(r"```bash\n(.*?)\n```", text, re.S)
    assert blocks[0].startswith("python3 -m venv .venv") and blocks[0].endswith("space-clip-demo")
    assert blocks[1].endswith("python -m pytest")
