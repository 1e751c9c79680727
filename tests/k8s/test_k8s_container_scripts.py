"""containers/*.sh: the hard rlimits they pass to every build and run come through one helper
(containers/limits.sh), which maps `unlimited` to the cap: arithmetic on the word itself under
`set -u` dies with "unlimited: unbound variable"."""

from __future__ import annotations

import re
import subprocess

import pytest

import k8s_support as k

CONTAINERS = k.REPO_ROOT / "containers"
SCRIPTS = ("build_image.sh", "base/build.sh", "tools.sh")


def cap_limit(value: str, cap: int) -> subprocess.CompletedProcess:
    """The helper as the scripts call it: sourced, under their `set -euo pipefail`."""
    return subprocess.run(["bash", "-c", 'set -euo pipefail; source "$0"; cap_limit "$1" "$2"',
                           str(CONTAINERS / "limits.sh"), value, str(cap)], capture_output=True, text=True)


@pytest.mark.parametrize("value, cap, expected", [
    ("unlimited", 32768, "32768"), ("4096", 32768, "4096"), ("32768", 32768, "32768"),
    ("1048576", 32768, "32768"), ("unlimited", 1048576, "1048576"),
])
def test_cap_limit(value, cap, expected):
    proc = cap_limit(value, cap)
    assert proc.returncode == 0 and proc.stdout == expected + "\n", proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_hard_limit_goes_through_the_helper(script):
    text = (CONTAINERS / script).read_text()
    assert re.search(r'(?m)^source .*limits\.sh"?$', text), f"{script} does not source containers/limits.sh"
    reads = re.findall(r'(.{0,12})\$\(ulimit -H', text)
    assert reads and all(before.endswith('cap_limit "') for before in reads), (script, reads)
