"""Fixtures for the offline Kubernetes checks (chart, manifests, image, skaffold)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import k8s_support as k  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def shared_schemas() -> Path:
    """Every check here depends on ../shared/schemas; fail loudly, never skip."""
    try:
        k.require_shared()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    return k.SHARED_DIR / "schemas"


@pytest.fixture(scope="session")
def scenario_renders() -> dict[str, list[dict]]:
    """Every preset and ci/*-values.yaml scenario, rendered once."""
    return {f.name: k.render_objects(k.load_values(f)) for f in k.scenario_files()}
