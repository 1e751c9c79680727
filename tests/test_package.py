"""The package outside this repository: `pip install .` into a fresh virtual environment, then
`ray-training` from a directory that has no config tree, with the user's own config directory.

The environment is built with uv (pip's resolution, without pip's minutes of unpacking); it holds
the package as a wheel would install it (not editable), so only what the wheel ships is there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

USER_DATA_OPTION = """\
# A data option of the user's own, beside the packaged ones.
defaults:
  - data_schema
  - _self_

source: synthetic
path: data/shop
target: spend_next_30d
exclude: [transaction_id]
synthetic:
  rows: 3000
  partitions: 2
  users: 300
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the package installed from this checkout (not editable); its bin/."""
    root = tmp_path_factory.mktemp("installed")
    uv = Path(sys.executable).parent / "uv"
    subprocess.run([str(uv), "venv", "--quiet", "--python", sys.executable, str(root / "venv")], check=True)
    links = [arg for link in os.environ.get("PIP_FIND_LINKS", "").split() for arg in ("--find-links", link)]
    proc = subprocess.run([str(uv), "pip", "install", "--quiet", "--python", str(root / "venv" / "bin" / "python"),
                           *links, str(REPO)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "venv" / "bin"


def _run(bin_dir: Path, args, cwd: Path, timeout=600) -> subprocess.CompletedProcess:
    # Bytecode is cached as on a user's machine: where PYTHONDONTWRITEBYTECODE is set (CI machines),
    # every process of the run (the CLI, each Ray worker) would compile Ray, MLflow and pandas again.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return subprocess.run([str(bin_dir / "ray-training"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_installed_package_carries_its_config_and_takes_the_users(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "my-conf" / "data").mkdir(parents=True)
    (elsewhere / "my-conf" / "data" / "shop.yaml").write_text(USER_DATA_OPTION)
    # Nothing of the checkout is imported: the installed copy answers, with its packaged configs.
    where = subprocess.run([str(installed / "python"), "-c", "import training; print(training.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout.strip()
    assert not where.startswith(str(REPO)) and "site-packages" in where, where

    helped = _run(installed, ["--help", "--config-dir", "my-conf"], elsewhere)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "  data       csv, jsonl, parquet, shop, synthetic (default), text_synthetic" in helped.stdout, helped.stdout

    proc = _run(installed, ["--config-dir", "my-conf", "data=shop", "workload=xgboost",
                            "workload.members.0.num_boost_round=20", "cluster.num_cpus=2", "cluster.num_workers=1"],
                elsewhere)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[training] data: 3,000 rows" in proc.stdout and "Model version: models:/" in proc.stdout, proc.stdout[-3000:]
    assert (elsewhere / "data" / "shop").is_dir() and (elsewhere / "mlruns" / "mlflow.db").is_file()
