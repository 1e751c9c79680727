"""The seconds each test module takes, from a pytest run's `--durations=0` report, into
tests/module_seconds.txt (conftest.py hands the longest modules to the pytest workers first).

    PYTEST_ADDOPTS="--durations=0 --durations-min=0.5" make test > test.log 2>&1
    python tests/module_seconds.py test.log

Only the order matters: with modules sorted longest first, the run ends with short modules on
both workers instead of one long module on one worker while the other waits. A module missing
from the file (a new one) runs after the listed ones; nothing fails."""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict

OUT = Path(__file__).with_name("module_seconds.txt")
DURATION = re.compile(r"^([\d.]+)s (?:setup|call|teardown)\s+(tests/\S+?\.py)::")


def module_seconds(report: str) -> Dict[str, float]:
    """Setup, call and teardown of every test, summed per module."""
    totals: Dict[str, float] = defaultdict(float)
    for line in report.splitlines():
        match = DURATION.match(line)
        if match:
            totals[match.group(2)] += float(match.group(1))
    return dict(totals)


def load(path: Path = OUT) -> Dict[str, float]:
    if not path.exists():
        return {}
    pairs = (line.split() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {module: float(seconds) for seconds, module in pairs}


def main(argv: list) -> int:
    if len(argv) != 2:
        print("usage: python tests/module_seconds.py PYTEST_LOG", file=sys.stderr)
        return 2
    totals = module_seconds(Path(argv[1]).read_text())
    if not totals:
        print(f"error: no `--durations=0` lines in {argv[1]}", file=sys.stderr)
        return 1
    lines = [f"{seconds:.0f} {module}" for module, seconds in sorted(totals.items(), key=lambda kv: -kv[1])]
    OUT.write_text("# seconds per test module under `make test`; written by tests/module_seconds.py\n"
                   + "\n".join(lines) + "\n")
    print(f"{len(lines)} modules into {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
