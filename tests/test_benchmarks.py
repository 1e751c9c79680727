"""The benchmarks as `make bench` runs them: a real benchmark at its smoke size end to end, the results
JSON (machine record included), the goals table and the PNG plots. No assertion on timings: the
machine is shared, only the shape and the bookkeeping are checked."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
MACHINE_KEYS = {"cpus", "memory_gib", "cpu_model", "gpu", "python", "ray", "xgboost", "lightgbm",
                "load_avg_start", "load_avg_end", "git_commit", "duration_s", "fresh_memory_s_per_gib"}
STATUSES = {"met", "missed", "info", "not run", "no GPU"}


def _run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["benchmarks/scale.py", "--repeats", "0"], "error: argument --repeats: must be >= 1, got 0 (see scale.py --help)"),
    (["benchmarks/data_pipeline.py", "--rows", "50"],
     "error: argument --rows: must be >= 100, got 50 (see data_pipeline.py --help)"),
    (["benchmarks/tune_asha.py", "--order", "asha"],
     "error: argument --order: must name fifo and asha once each (fifo,asha or asha,fifo), got 'asha' "
     "(see tune_asha.py --help)"),
], ids=["no repeats", "too few rows", "one scheduler"])
def test_a_bad_benchmark_argument_is_one_line_before_any_work(argv, message):
    """A count of 0 used to fall back to the default silently, and --order asha failed after a
    whole search: each is refused as the script starts."""
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == message, proc.stderr[-3000:]


def test_report_over_the_published_results_writes_the_table_summary_and_plots(tmp_path):
    for f in BENCH.glob("results/*.json"):
        if f.name != "summary.json":
            shutil.copy(f, tmp_path)
    proc = _run(str(BENCH / "report.py"), "--results", str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {r["status"] for r in summary["goals"]} <= STATUSES
    assert "Ray Train overhead, XGBoost (Ray time / plain time)" in proc.stdout
    for row in summary["goals"]:
        assert row["what"] in proc.stdout
        assert (row["measured"] is None) == (row["status"] in ("not run", "no GPU"))
    for name in summary["plots"]:
        png = tmp_path / name
        assert _is_png(png) and png.stat().st_size < 150_000
    published = {f.stem for f in BENCH.glob("results/*.json")}
    if "scaling" in published:
        assert {"scaling.png", "scaling_phases.png"} <= set(summary["plots"])


def test_a_missing_result_is_reported_as_not_run(tmp_path):
    proc = _run(str(BENCH / "report.py"), "--results", str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {r["status"] for r in summary["goals"]} <= {"not run", "no GPU"}
    assert summary["plots"] == []
    assert "not run" in proc.stdout


def test_a_result_taken_while_fresh_memory_was_slow_is_flagged_by_the_report(tmp_path):
    """A VM whose host hands freed memory back slowly stalls the side that allocates more; the
    machine record keeps the probe (benchmarks/_common.py) and the report names such results."""
    doc = json.loads((BENCH / "results" / "scale.json").read_text())
    for probe, flagged in (([0.1, 0.2], False), ([0.1, 6.5], True)):
        doc["machine"]["fresh_memory_s_per_gib"] = probe
        (tmp_path / "scale.json").write_text(json.dumps(doc))
        proc = _run(str(BENCH / "report.py"), "--results", str(tmp_path))
        assert ("slow fresh memory while these ran (scale)" in proc.stdout) is flagged, proc.stdout[-1500:]
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["sources"]["scale"]["fresh_memory_s_per_gib"] == probe


def test_scaling_model_recovers_compute_serial_and_communication_per_round():
    sys.path.insert(0, str(BENCH))
    import scaling

    # Per round: 0.02 s serial, 0.4 s compute that splits, 0.05 s (1 node) / 0.09 s (2 nodes) all-reduce.
    per_round = {"1w": 0.42, "1w_half": 0.22, "2w": 0.02 + 0.2 + 0.05, "2w_2nodes": 0.02 + 0.2 + 0.09}
    med = {k: {"per_round_s": v, "load_s": 2.0, "build_s": 1.0, "startup_s": 8.0} for k, v in per_round.items()}
    model = scaling.fit_model(med, rounds=100)
    assert model["compute_per_round_s"] == pytest.approx(0.4)
    assert model["serial_per_round_s"] == pytest.approx(0.02)
    assert model["allreduce_per_doubling_s_two_nodes"] == pytest.approx(0.09)
    p2 = scaling.project(model, 2)
    assert p2["per_round_s"] == pytest.approx(per_round["2w_2nodes"])
    assert p2["fit_s"] == pytest.approx(8.0 + 3.0 / 2 + 100 * per_round["2w_2nodes"])
    # Past some size the all-reduce outgrows the compute saved: the curve flattens, then rises.
    times = [scaling.project(model, n)["per_round_s"] for n in (1, 2, 4, 8, 16, 32)]
    assert times[1] < times[0] and times[-1] > min(times)


@pytest.mark.slow
def test_data_pipeline_quick_end_to_end_then_report(tmp_path):
    out = tmp_path / "data_pipeline.json"
    _run(str(BENCH / "data_pipeline.py"), "--quick", "--out", str(out))
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "data_pipeline" and doc["quick"] is True
    assert MACHINE_KEYS <= set(doc["machine"])
    assert len(doc["machine"]["load_avg_start"]) == 3
    assert len(doc["machine"]["fresh_memory_s_per_gib"]) == 2 and min(doc["machine"]["fresh_memory_s_per_gib"]) > 0
    for side in ("pandas", "ray_1cpu", "ray_2cpu"):
        runs = doc["runs"][side]
        assert len(runs) == 1 and runs[0]["rows"] == 20_000
        assert doc["median"][side]["rows_per_s"] > 0
    # Both pipelines apply the same split and transforms to the same rows.
    assert {r["train_rows"] for side in doc["runs"].values() for r in side} == {doc["runs"]["pandas"][0]["train_rows"]}
    assert set(doc["ratio_vs_pandas"]) == {"ray_1cpu", "ray_2cpu"}
    proc = _run(str(BENCH / "report.py"), "--results", str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = {r["what"]: r for r in summary["goals"]}
    assert rows["Ray Data preprocessing, 1 CPU / pandas on 1 core (rows/s)"]["status"] in ("met", "missed")
    assert summary["sources"]["data_pipeline"]["quick"] is True
    assert "quick smoke sizes" in proc.stdout
    assert _is_png(tmp_path / "data_pipeline.png")


def test_scale_counts_the_memory_of_the_whole_process_tree(tmp_path):
    """benchmarks/scale.py's peak memory includes grandchildren (Ray's raylet, workers): a
    grandchild holding 300 MB must show, and the parent's small footprint alone must not pass."""
    sys.path.insert(0, str(BENCH))
    import scale

    grandchild = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}])"
    r = scale.measured([sys.executable, "-c", parent], tmp_path)
    assert r["exit"] == 0
    assert 0.29 < r["peak_pss_gb"] < 1.0, r


def test_scale_takes_times_from_the_unsampled_runs_and_peak_memory_from_the_sampled_ones(tmp_path):
    """The memory sampler competes for the cores, so benchmarks/scale.py times runs it does not
    sample: the reported times are those runs' medians, the peak is the sampled runs' (also when
    every timed run failed, e.g. out of memory: the peak then shows how far the side got)."""
    sys.path.insert(0, str(BENCH))
    import scale

    unsampled = scale.measured([sys.executable, "-c", "pass"], tmp_path, sample_memory=False)
    assert unsampled["exit"] == 0 and "peak_pss_gb" not in unsampled
    timed = [{"wall_s": w, "data_s": 1.0, "train_s": w / 2, "rmse": 2.0} for w in (10.0, 30.0, 20.0)]
    sampled = [{"wall_s": 99.0, "data_s": 9.0, "train_s": 90.0, "rmse": 2.0, "peak_pss_gb": 3.5}]
    med = scale.medians(timed, sampled)
    assert (med["wall_s"], med["train_s"], med["peak_pss_gb"]) == (20.0, 10.0, 3.5)
    failed = scale.medians([{"wall_s": 5.0, "exit": -9, "failed": "Killed"}],
                           [{"wall_s": 6.0, "exit": -9, "failed": "Killed", "peak_pss_gb": 22.0}])
    assert failed["failed"] == "Killed" and failed["peak_pss_gb"] == 22.0
