"""The README and docs/ point at things that exist: every relative link reaches its file and,
with `#anchor`, a heading there (GitHub's anchor rules); every repository path they quote in
backticks (`training/...`, `tests/...`, ...) is in the tree. A rename that leaves a doc behind
fails here, not in a reader's browser."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Set

from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
QUOTED_PATH = re.compile(r"`((?:training|tests|benchmarks|charts|manifests|containers|docs|scripts)/[^`\s]*)`")


def _prose(path: Path) -> str:
    """The document without its code blocks (sample output and commands, not references)."""
    return re.sub(r"```.*?```", "", path.read_text(), flags=re.S)


def anchors(path: Path) -> Set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated heading numbered."""
    out: Set[str] = set()
    seen: dict = {}
    for line in path.read_text().splitlines():
        heading = re.match(r"^#{1,6}\s+(.*)$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return out


def test_every_relative_link_reaches_its_file_and_heading():
    broken: List[str] = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(doc)):
            if re.match(r"^[a-z]+:", target):
                continue  # https://, mailto:
            file, _, anchor = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            if not dest.exists():
                broken.append(f"{doc.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{doc.name}: {target} (no such heading)")
    assert not broken, broken


def test_every_quoted_repository_path_exists():
    missing: List[str] = []
    for doc in DOCS:
        for quoted in QUOTED_PATH.findall(_prose(doc)):
            path = quoted.split("::")[0].split("#")[0].rstrip("/.,")
            if any(c in path for c in "<>*{}"):
                continue  # a pattern, not a path
            if path.startswith("benchmarks/results/") and (REPO / "benchmarks" / f"{Path(path).stem}.py").exists():
                continue  # a benchmark's output, written when it runs
            if not (REPO / path).exists():
                missing.append(f"{doc.name}: {quoted}")
    assert not missing, missing
