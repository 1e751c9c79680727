"""`python -m training` as a user runs it: help, bad input in a real process, a real run."""

import re

import pytest

from tests.conftest import registered_versions, run_cli


def _error_line(proc):
    """The CLI's own error: the last stderr line (Ray may log warnings above it)."""
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


def test_help_lists_the_config_groups(tmp_path):
    """Every option file under training/conf/ shows up in --help, the default marked."""
    from tests.conftest import REPO

    proc = run_cli(["--help"], tmp_path)
    assert proc.returncode == 0
    defaults = {"workload": "ensemble", "data": "synthetic", "cluster": "local", "tracking": "local"}
    for group, default in defaults.items():
        options = sorted(p.stem for p in (REPO / "training" / "conf" / group).glob("*.yaml"))
        shown = ", ".join(f"{o} (default)" if o == default else o for o in options)
        assert f"  {group:<10} {shown}" in proc.stdout, proc.stdout


def test_cfg_prints_the_composed_config(tmp_path):
    proc = run_cli(["--cfg", "workload=lightgbm", "cluster.num_workers=3"], tmp_path)
    assert proc.returncode == 0
    assert "num_workers: 3" in proc.stdout and "name: lightgbm" in proc.stdout


# The catalogue of bad input (config, data, resources, chart values): tests/test_bad_input.py.
# Here, two of its cases through a real `python -m training` process: the exit code and the
# last stderr line the shell sees.
@pytest.mark.parametrize("args, message", [
    (["data.colour=red"], "error: bad config: Could not override 'data.colour'.; Key 'colour' not in 'DataConfig'; "
                          "full_key: data.colour"),
    (["data=parquet", "data.path=/nonexistent/tx", "data.target=y"], "error: data.path does not exist: /nonexistent/tx"),
], ids=["unknown key", "missing path"])
def test_bad_input_in_a_real_process_is_one_line_exit_2(args, message, tmp_path):
    proc = run_cli(args, tmp_path, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert _error_line(proc) == message
    assert "Traceback" not in proc.stderr
    assert registered_versions(tmp_path) == []


@pytest.mark.slow
def test_ctrl_c_stops_a_run_and_the_same_run_name_resumes_it(tmp_path):
    """Ctrl-C in a terminal: SIGINT to the whole foreground process group, i.e. the driver and
    the in-process Ray it started (its dashboard included). The run stops its slots, says how to
    resume, registers nothing, and its exit is not held up by retries against the dashboard that
    the same Ctrl-C stopped (observability falls back to this node's metrics and files). Then the
    hint, followed: the same command and run_name resume each member from its checkpoint and
    register one version."""
    from tests.conftest import checkpoint_registered, ctrl_c_cli

    members = ("xgb_deep", "xgb_shallow", "lgbm")
    # The interrupt follows the first registered checkpoint (round 20 of a slot's first member),
    # and every worker gets it at once: 240 rounds leave each member most of its rounds to run
    # then, and to resume.
    every, boost_rounds = 20, 240
    args = ["workload=ensemble", "data.synthetic.rows=6000", f"workload.checkpoint_every={every}", "run_name=ctrl-c",
            *[f"workload.members.{i}.num_boost_round={boost_rounds}" for i in range(3)]]
    # Interrupted once Ray Train has registered a checkpoint of some slot: there is something to resume.
    code, out = ctrl_c_cli(args, tmp_path, lambda: any(
        checkpoint_registered(d) for d in (tmp_path / "ray_results").glob("ctrl-c-*")))
    assert code == 130, f"exit {code}:\n{out[-3000:]}"
    assert "error: interrupted; rerun with the same run_name=... to resume from the last checkpoints" in out
    assert "Failed to make request" not in out, out[-3000:]   # no waiting out the state API's retries
    assert registered_versions(tmp_path) == []

    rerun = run_cli(args, tmp_path, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = dict(re.findall(r"\[(\w+)\] resuming from checkpoint at round (\d+)", rerun.stdout))
    assert resumed, rerun.stdout[-3000:]
    for member, rounds in resumed.items():
        assert int(rounds) >= every and f"[{member}] round {every}/{boost_rounds} " not in rerun.stdout, (member, rounds)
    rows = {line.split("|")[0].strip(): [cell.strip() for cell in line.split("|")[1:]]
            for line in rerun.stdout.splitlines() if line.split("|")[0].strip() in members}
    assert {m: rows[m][1] for m in members} == {m: str(boost_rounds) for m in members}, rerun.stdout[-3000:]
    assert "Model version: models:/retail-demand-ensemble/1" in rerun.stdout
    assert [int(v.version) for v in registered_versions(tmp_path)] == [1]


STOP_TWICE = r'''
import json, psutil, ray
from ray._private import node as ray_node
from training.runtime.cluster import local_defaults, start_local
from training.runtime.ray_lifetime import shutdown

# Which of its processes Ray still had to stop itself (each of those gets up to a second).
found_alive = {}
kill = ray_node.Node._kill_process_type
def recording(self, process_type, *args, **kwargs):
    found_alive[process_type] = any(i.process.poll() is None for i in self.all_processes.get(process_type, []))
    return kill(self, process_type, *args, **kwargs)
ray_node.Node._kill_process_type = recording

local_defaults(1)
pids, results = set(), []
for attempt in range(2):  # a notebook stops its Ray and starts another
    start_local(num_cpus=1, include_dashboard=False, logging_level="WARNING")
    results.append(ray.get(ray.remote(lambda: attempt + 1).remote()))
    node = ray._private.worker._global_node
    started = {i.process.pid for infos in node.all_processes.values() for i in infos}
    pids |= started | {c.pid for p in started for c in psutil.Process(p).children(recursive=True)}
    shutdown()
alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
print(json.dumps({"results": results, "alive": alive, "found_alive": found_alive}))
'''


def test_stopping_its_ray_leaves_no_process_and_does_not_wait_out_the_monitor(tmp_path):
    """What a CLI run does on its way out (`ray_lifetime.shutdown`), twice in one fresh process:
    every process of that Ray is gone, a second Ray starts and works after it, and Ray found the
    autoscaler's monitor already stopped (Ray 2.60 stops the GCS first, and then waits a second
    for the monitor, which tries to report to it, before it kills it: every run's exit held up)."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run([sys.executable, "-c", STOP_TWICE], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["results"] == [1, 2] and out["alive"] == [], out
    assert out["found_alive"]["gcs_server"] and not out["found_alive"]["monitor"], out
