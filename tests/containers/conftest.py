"""Fixtures for the container tests: the engine (make container-tools), the stand-in base image and
the project image (both built here, cached), the chart's helpers (tests/k8s/k8s_support.py).

Without podman these tests are skipped with one reason, as `make container-tools` said; with
CI=true they fail instead (nothing is skipped in CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "k8s"))


@pytest.fixture(scope="session")
def engine() -> str:
    if shutil.which("podman") is None:
        msg = "podman is not installed (make container-tools installs it; needs root and apt-get)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + "; CI=true runs every test", pytrace=False)
        pytest.skip(msg)
    return "podman"


@pytest.fixture(scope="session")
def image(engine) -> str:
    """The project image (CPU variant) on the stand-in base, as containers/build_image.sh builds it."""
    proc = subprocess.run([str(REPO / "containers" / "build_image.sh")], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"image build failed:\n{proc.stderr[-4000:]}", pytrace=False)
    return proc.stdout.strip().splitlines()[-1]
