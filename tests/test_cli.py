"""`python -m training` as a user runs it: help, bad input (one line, exit 2, nothing registered), a real run."""

import pandas as pd
import pytest

from tests.conftest import registered_versions, run_cli


def _error_line(proc):
    """The CLI's own error: the last stderr line (Ray may log warnings above it)."""
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


def test_help_lists_the_config_groups(tmp_path):
    """Every option file under conf/ shows up in --help, the default marked."""
    from tests.conftest import REPO

    proc = run_cli(["--help"], tmp_path)
    assert proc.returncode == 0
    defaults = {"workload": "ensemble", "data": "synthetic", "cluster": "local", "tracking": "local"}
    for group, default in defaults.items():
        options = sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))
        shown = ", ".join(f"{o} (default)" if o == default else o for o in options)
        assert f"  {group:<10} {shown}" in proc.stdout, proc.stdout


def test_cfg_prints_the_composed_config(tmp_path):
    proc = run_cli(["--cfg", "workload=lightgbm", "cluster.num_workers=3"], tmp_path)
    assert proc.returncode == 0
    assert "num_workers: 3" in proc.stdout and "name: lightgbm" in proc.stdout


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    pd.DataFrame({"a": pd.Series([], dtype=float), "y": pd.Series([], dtype=float)}).to_parquet(d / "empty.parquet")
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": ["x", "y", "z"]}).to_parquet(d / "text_target.parquet")
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.0]}).to_csv(d / "ok.csv", index=False)
    (d / "no_files").mkdir()
    return d


CASES = {
    "unknown key": (["data.colour=red"], "error: bad config: Could not override 'data.colour'.; "
                                        "Key 'colour' not in 'DataConfig'; full_key: data.colour"),
    "unknown workload": (["workload=catboost"], "error: bad config: In 'config': Could not find 'workload/catboost'; "
                                              "Available options in 'workload': bert; ensemble; lightgbm; tune; xgboost"),
    "wrong type": (["cluster.num_workers=two"], "error: bad config: Error merging override cluster.num_workers=two; "
                                              "Value 'two' of type 'str' could not be converted to Integer; "
                                              "full_key: cluster.num_workers"),
    "unknown flag": (["--fast"], "error: unknown option --fast (options: --help, --cfg; everything else is KEY=VALUE)"),
    "missing path": (["data=parquet", "data.path={d}/nope", "data.target=y"],
                     "error: data.path does not exist: {d}/nope"),
    "empty dataset": (["data=parquet", "data.path={d}/empty.parquet", "data.target=y"],
                      "error: dataset at {d}/empty.parquet is empty (no rows)"),
    "no files": (["data=parquet", "data.path={d}/no_files", "data.target=y"],
                 "error: no parquet files at data.path {d}/no_files"),
    "missing target": (["data=csv", "data.path={d}/ok.csv", "data.target=price"],
                       "error: data.target 'price' is not a column of {d}/ok.csv (columns: a, y)"),
    "non-numeric target": (["data=parquet", "data.path={d}/text_target.parquet", "data.target=y"],
                           "error: data.target 'y' has type string; a numeric column is required"),
    "impossible cluster": (["cluster.num_cpus=2", "cluster.num_workers=8", "cluster.cpus_per_worker=4",
                            "data.synthetic.rows=1000"],
                           "error: training needs 8 workers x (4 CPU) but the cluster (1 node(s), 2 CPUs, 0 GPUs) "
                           "can hold only 0; not enough CPU: lower cluster.num_workers / cluster.cpus_per_worker / "
                           "cluster.gpus_per_worker"),
    "impossible gpu": (["cluster.num_cpus=2", "cluster.num_workers=2", "cluster.gpus_per_worker=1",
                        "data.synthetic.rows=1000"],
                       "error: training needs 2 workers x (1 CPU + 1 GPU) but the cluster (1 node(s), 2 CPUs, 0 GPUs) "
                       "can hold only 0; not enough GPU"),
    "tracking server down": (["tracking=server", "tracking.uri=http://127.0.0.1:9", "data.synthetic.rows=1000"],
                             "error: cannot use MLflow tracking at http://127.0.0.1:9"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_registers_nothing(case, bad_data, tmp_path):
    args, message = CASES[case]
    proc = run_cli([a.format(d=bad_data) for a in args], tmp_path, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert _error_line(proc).startswith(message.format(d=bad_data)), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert registered_versions(tmp_path) == []


@pytest.mark.slow
def test_a_run_prints_progress_and_the_summary(tmp_path):
    proc = run_cli(["workload=xgboost", "data.synthetic.rows=4000", "workload.members.0.num_boost_round=30",
                    "workload.checkpoint_every=10", "cluster.num_workers=2"], tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for expected in ("[training] data: 4,000 rows", "[training] ray: 1 node(s)", "[xgboost] round 30/30",
                     "member  | kind    | rounds | seconds | valid RMSE", "Model version: models:/retail-demand-xgboost/1"):
        assert expected in out, out[-3000:]
    assert [int(v.version) for v in registered_versions(tmp_path)] == [1]
