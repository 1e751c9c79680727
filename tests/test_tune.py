"""workload=tune: bad input (one line, exit 2), a small search end to end on the session's Ray
(2 CPUs), MLflow parent + children, the registered best model, resume after an interruption,
distributed trials, and the retrain fallback for a best trial without a checkpoint."""

import os
import re
import signal
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from ray import tune as ray_tune

from training.errors import UserError
from tests.conftest import SMALL, load_config, registered_versions, run_cli
from tests.local_cluster import wait_until

# 6 trials, 2 at a time, 20-80 rounds reported every 10: ASHA rungs at 10, 20, 40, 80 rounds.
SEARCH_FIFO = [*SMALL, "workload=tune", "workload.num_samples=6", "workload.max_concurrent_trials=2",
               "workload.space.num_boost_round={type: int, low: 20, high: 80}", "workload.search.startup_trials=3",
               "cluster.cpus_per_worker=1", "workload.scheduler.type=fifo"]
SEARCH = [*SEARCH_FIFO, "workload.scheduler.type=asha", "workload.scheduler.grace_period=10",
          "workload.scheduler.reduction_factor=2"]
NO_SPACE = [f"~workload.space.{p}" for p in
            ("num_boost_round", "max_depth", "learning_rate", "subsample", "colsample_bytree")]


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (NO_SPACE, "workload.space is empty"),
    (["+workload.space.num_leaves={type: int, low: 8, high: 64}"],
     "workload.space.num_leaves: unknown xgboost parameter (num_leaves is a lightgbm parameter"),
    (["workload.kind=lightgbm", "+workload.space.gamma={type: uniform, low: 0, high: 1}"],
     "workload.space.gamma: unknown lightgbm parameter"),
    (["workload.num_samples=0"], "workload.num_samples must be >= 1, got 0"),
    (["workload.max_concurrent_trials=0"], "workload.max_concurrent_trials must be >= 1"),
    (["workload.space.max_depth.low=12"], "workload.space.max_depth: low must be < high"),
    (["workload.space.learning_rate.low=0"], "loguniform needs low > 0"),
    (["workload.space.max_depth.type=normal"], "expected one of int, uniform, loguniform, choice"),
    (["workload.scheduler.reduction_factor=1"], "workload.scheduler.reduction_factor must be > 1"),
    # Options of a strategy the search does not use.
    (["workload.scheduler.type=fifo", "workload.scheduler.grace_period=50"],
     "workload.scheduler.grace_period applies to ASHA only"),
    (["workload.scheduler.type=fifo", "workload.scheduler.max_t=400"], "workload.scheduler.max_t applies to ASHA only"),
    (["workload.search.algorithm=random", "workload.search.startup_trials=4"],
     "workload.search.startup_trials applies to TPE only"),
    (["workload.trial.mode=local", "workload.trial.local_max_rows=10"],
     "workload.trial.local_max_rows applies to workload.trial.mode=auto only, not local"),
    (["workload.num_boost_round=100"], "workload.num_boost_round is not used while workload.space searches it"),
    # ASHA settings under which it would stop no trial early.
    (["~workload.space.num_boost_round", "workload.num_boost_round=200"],
     "workload.scheduler.grace_period=200 is not below the longest trial (200 rounds): ASHA would stop no trial"),
    (["workload.checkpoint_every=1000"],
     "workload.checkpoint_every=1000 is not below the longest trial (1000 rounds): trials would report only"),
])
def test_bad_config_is_one_clear_error(overrides, message):
    with pytest.raises(UserError) as err:
        load_config("workload=tune", *overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_bad_search_exits_2_with_one_line(tmp_path):
    proc = run_cli(["workload=tune", "+workload.space.num_leaves={type: int, low: 8, high: 64}"], tmp_path,
                   timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: workload.space.num_leaves: unknown xgboost parameter")
    proc = run_cli(["workload=tune", *NO_SPACE], tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: workload.space is empty"), proc.stderr


@pytest.mark.parametrize("overrides, message", [
    (["workload.max_concurrent_trials=3"], "workload.max_concurrent_trials=3 but the cluster (1 node(s), 2 CPUs, "
                                           "0 GPUs) holds at most 2 trial(s)"),
    (["workload.trial.mode=distributed", "cluster.num_workers=3"], "one distributed trial needs 3 worker(s)"),
])
def test_more_trials_than_the_cluster_holds(ray_session, workdir, overrides, message):
    from training.tune import workload as tune

    cfg = load_config(*SEARCH, *overrides)
    with pytest.raises(UserError) as err:
        tune.run(cfg)
    assert message in str(err.value)
    assert not (workdir / "ray_results").exists()  # failed before any trial or data step


# --- a small search end to end -----------------------------------------------------------------

class WatchTrialRuns(ray_tune.Callback):
    """While the search runs, reads a trial's child run from MLflow at each of its reports from
    round 20 on (as `mlflow ui` would), and writes what it saw to `journal`: the run's status
    and the curve's steps so far."""

    def __init__(self, journal: str):
        self.journal = journal

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("round", 0) < 20:
            return
        client = MlflowClient()
        exp = client.get_experiment_by_name("ray-training")
        [run] = client.search_runs([exp.experiment_id], f"tags.trial_id = '{trial.trial_id}'")
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "valid_rmse_curve"))
        with open(self.journal, "a") as f:
            f.write(f"{trial.trial_id} {result['round']} {run.info.status} {','.join(map(str, steps))}\n")


CTRL_C_HANDLERS = {}  # SIGINT's handler before and after the search below


@pytest.fixture(scope="module")
def search(ray_session, tmp_path_factory):
    import signal

    from training.tune import workload as tune

    d = tmp_path_factory.mktemp("tune")
    CTRL_C_HANDLERS["before"] = signal.getsignal(signal.SIGINT)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        result = tune.run(load_config(*SEARCH, "run_name=search-1"), callbacks=[WatchTrialRuns(str(d / "seen"))])
    CTRL_C_HANDLERS["after"] = signal.getsignal(signal.SIGINT)
    return d, result


@pytest.mark.slow
def test_ctrl_c_after_the_search_is_the_programs_again(search):
    """Ray Tune leaves its own SIGINT handler installed when a search ends; after `tune.run`
    (the best model's retraining and registration, a notebook's next cell), Ctrl-C must stop
    the program, not be taken for the finished search's."""
    assert CTRL_C_HANDLERS["after"] is CTRL_C_HANDLERS["before"]


@pytest.mark.slow
def test_search_finishes_and_asha_stops_trials_early(search):
    _, result = search
    assert len(result.trials) == 6 and result.concurrency == 2 and result.mode == "local"
    assert all(t.status in ("finished", "stopped") for t in result.trials)
    stopped = [t for t in result.trials if t.status == "stopped"]
    assert stopped, "ASHA stopped no trial"
    assert all(t.rounds_done < t.rounds and t.rounds_done % 10 == 0 for t in stopped)
    finished = [t for t in result.trials if t.status == "finished"]
    assert all(t.rounds_done == t.rounds for t in finished)
    values = [t.value for t in result.trials]
    assert values == sorted(values) and result.best is result.trials[0]
    assert 20 <= result.best_rounds <= 80 and set(result.best_params) >= {"max_depth", "learning_rate"}


@pytest.mark.slow
def test_mlflow_has_the_parent_and_every_trial(search):
    _, result = search
    client = MlflowClient(tracking_uri=result.tracking_uri)
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "search-1"
    assert parent.data.params["workload.name"] == "tune" and parent.data.metrics["trials"] == 6
    assert parent.data.metrics["best_valid_rmse"] == pytest.approx(result.best.value)
    assert parent.data.metrics["trials_stopped_early"] == sum(t.stopped_early for t in result.trials)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")
    by_trial = {c.data.tags["trial_id"]: c for c in children}
    assert len(children) == 6 and set(by_trial) == {t.trial_id for t in result.trials}
    for t in result.trials:
        child = by_trial[t.trial_id]
        assert child.data.tags["stopped_early"] == str(t.stopped_early).lower()
        assert child.data.params["num_boost_round"] == str(t.rounds)
        assert child.data.metrics["valid_rmse"] == pytest.approx(t.value)
        curve = sorted(client.get_metric_history(child.info.run_id, "valid_rmse_curve"), key=lambda m: m.step)
        assert [m.step for m in curve] == list(range(1, t.rounds_done + 1))  # every round once
        assert curve[-1].value == pytest.approx(t.value)


@pytest.mark.slow
def test_trial_runs_show_their_reports_while_the_search_runs(search):
    d, _ = search
    seen = [line.split(" ") for line in (d / "seen").read_text().splitlines()]
    assert seen, "no trial reached round 20"
    for trial_id, round_, status, steps in seen:
        # Mid-search the trial's run is RUNNING and holds its earlier reports (every 10 rounds).
        assert status == "RUNNING", (trial_id, round_, status)
        reports = set(range(10, int(round_) + 1, 10)) | {int(round_)}  # every 10 rounds, and the last
        assert {10} <= {int(s) for s in steps.split(",") if s} <= reports


@pytest.mark.slow
def test_best_model_is_registered_and_predicts_raw_rows(search):
    d, result = search
    assert result.model_uri == "models:/retail-demand-tuned/1"
    # Taken from the best trial's checkpoint: the same model, so the same validation RMSE.
    assert result.metrics["rmse"] == pytest.approx(result.best.value, rel=1e-4)
    mlflow.set_tracking_uri(result.tracking_uri)
    model = mlflow.pyfunc.load_model(result.model_uri)
    raw = pd.read_parquet(d / "data/synthetic/retail").head(50)
    pred = model.predict(raw.drop(columns=["spend_next_30d"]))
    assert len(pred) == 50 and np.isfinite(pred).all()
    assert np.corrcoef(pred, raw["spend_next_30d"])[0, 1] > 0.5


@pytest.mark.slow
def test_best_config_seeds_the_ensemble(search):
    _, result = search
    written = Path(result.experiment_path, "ensemble_override.txt").read_text().strip()
    assert written == result.ensemble_override
    cfg = load_config("workload=ensemble", written)
    names = [m.name for m in cfg.workload.members]
    assert names == ["xgb_deep", "xgb_shallow", "lgbm", "tuned_xgboost"]
    tuned = cfg.workload.members[-1]
    assert tuned.num_boost_round == result.best_rounds
    assert tuned.params["max_depth"] == result.best_params["max_depth"]
    assert tuned.params["learning_rate"] == pytest.approx(result.best_params["learning_rate"], rel=1e-5)


# --- resume ------------------------------------------------------------------------------------

class InterruptAfter(ray_tune.Callback):
    """Ctrl-C after `n` trials ended, once (a marker file); logs every trial start to `journal`.

    Tune pickles callbacks with the experiment, so the resumed search runs this one again:
    the marker keeps it from interrupting twice and the journal shows which trials started."""

    def __init__(self, n: int, marker: str, journal: str):
        self.n, self.marker, self.journal, self.ended = n, marker, journal, 0

    def on_trial_start(self, iteration, trials, trial, **info):
        with open(self.journal, "a") as f:
            f.write(f"start {trial.trial_id}\n")

    def on_trial_complete(self, iteration, trials, trial, **info):
        with open(self.journal, "a") as f:
            f.write(f"end {trial.trial_id}\n")
        self.ended += 1
        if self.ended >= self.n and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_interrupted_search_resumes_without_rerunning_finished_trials(ray_session, workdir):
    from training.tune import results, workload as tune

    overrides = [*SEARCH_FIFO, "workload.num_samples=5", "run_name=resume-1"]
    journal = workdir / "journal.txt"
    with pytest.raises(results.SearchInterrupted) as stopped:
        tune.run(load_config(*overrides), callbacks=[InterruptAfter(2, str(workdir / "marker"), str(journal))])
    # The line the CLI prints after "error: interrupted; " says how to go on.
    assert re.fullmatch(r"search resume-1 stopped after \d/5 trials; rerun with run_name=resume-1 to resume it",
                        str(stopped.value)), str(stopped.value)
    first = journal.read_text().split()
    ended_first = {first[i + 1] for i in range(0, len(first), 2) if first[i] == "end"}
    assert len(ended_first) >= 2 and registered_versions(workdir) == []
    # The trials cut short by the interruption end KILLED in MLflow, not RUNNING for ever.
    store = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlruns/mlflow.db")
    interrupted = [r.info.status for r in store.search_runs([store.get_experiment_by_name("ray-training").experiment_id])
                   if "trial_id" in r.data.tags]
    assert "RUNNING" not in interrupted and "KILLED" in interrupted, interrupted

    result = tune.run(load_config(*overrides))
    assert result.resumed and len(result.trials) == 5
    assert all(t.status == "finished" for t in result.trials)
    lines = journal.read_text().split()
    starts = [lines[i + 1] for i in range(0, len(lines), 2) if lines[i] == "start"]
    for trial_id in ended_first:
        assert starts.count(trial_id) == 1, f"finished trial {trial_id} ran again"
    # One parent run (the interrupted one, resumed) and one child per trial, none twice.
    client = MlflowClient(tracking_uri=result.tracking_uri)
    parents = client.search_runs([client.get_experiment_by_name("ray-training").experiment_id],
                                 filter_string="attributes.run_name = 'resume-1'")
    assert [p.info.run_id for p in parents] == [result.run_id] and parents[0].info.status == "FINISHED"
    children = client.search_runs([parents[0].info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert sorted(c.data.tags["trial_id"] for c in children) == sorted(t.trial_id for t in result.trials)
    # Those resumed and finished: their runs were opened again and ended with their results.
    assert {c.info.status for c in children} == {"FINISHED"}, [(c.data.tags["trial_id"], c.info.status) for c in children]
    assert all("valid_rmse" in c.data.metrics for c in children)
    assert [v.name for v in registered_versions(workdir)] == ["retail-demand-tuned"]
    # The search's time is both attempts', and its rate is over that time.
    attempts = [m.value for m in client.get_metric_history(result.run_id, "search_attempt_s")]
    logged = client.get_run(result.run_id).data.metrics
    assert len(attempts) == 2 and logged["tune_s"] == pytest.approx(sum(attempts))
    assert logged["trials_per_hour"] == pytest.approx(5 / sum(attempts) * 3600)
    assert "over 2 attempts" in results.summary(load_config(*overrides), result)
    # Utilisation: the second attempt's samples follow the first's (each step once), and the
    # hours are both attempts' (more than the first's plus the second's search alone).
    steps = [m.step for m in client.get_metric_history(result.run_id, "cluster_nodes")]
    assert len(steps) == len(set(steps)) > 1, steps
    walls = [m.value for m in client.get_metric_history(result.run_id, "usage_wall_s")]
    assert len(walls) == 2 and walls[-1] > walls[0] + attempts[1], walls


@pytest.mark.slow
def test_lightgbm_search_with_its_own_parameters(ray_session, workdir):
    from training.tune import workload as tune

    cfg = load_config(*SEARCH_FIFO, "workload.kind=lightgbm", "workload.num_samples=2",
                      "+workload.space.num_leaves={type: int, low: 7, high: 31}", "workload.register=false")
    result = tune.run(cfg)
    assert [t.status for t in result.trials] == ["finished", "finished"] and result.model_uri is None
    assert 7 <= result.best_params["num_leaves"] <= 31
    assert result.best_params["bagging_freq"] == 1  # else LightGBM ignores subsample
    assert result.metrics["rmse"] == pytest.approx(result.best.value, rel=1e-4)
    assert "tuned_lightgbm" in result.ensemble_override


# --- distributed trials, retrain fallback --------------------------------------------------------

@pytest.mark.slow
def test_distributed_trials_run_ray_train_and_register_from_its_checkpoint(ray_session, workdir):
    from training.tune import workload as tune

    cfg = load_config(*SEARCH_FIFO, "workload.num_samples=2", "workload.trial.mode=distributed",
                      "cluster.num_workers=1",
                      "workload.space.num_boost_round={type: int, low: 20, high: 30}", "run_name=dist-1")
    result = tune.run(cfg)
    assert result.mode == "distributed" and result.concurrency == 2
    assert [t.status for t in result.trials] == ["finished", "finished"]
    assert "dist-1-train" in result.best.checkpoint.path  # the Train run's own checkpoint
    assert result.metrics["rmse"] == pytest.approx(result.best.value, rel=1e-4)
    assert result.model_uri == "models:/retail-demand-tuned/1"


@pytest.mark.slow
@pytest.mark.timeout(300)  # a search that hangs fails here, not at the session's 900 s
def test_asha_stops_distributed_trials_and_the_search_goes_on(ray_session, workdir):
    """A distributed trial that ASHA stops is still in its Train run's fit(), so Tune must not reuse
    its process (a trial placed there fails), and its Train run's CPUs must come back for the
    trials after it (Ray Train's cleaner frees them)."""
    from training.tune import workload as tune

    cfg = load_config(*SEARCH, "workload.num_samples=4", "workload.trial.mode=distributed",
                      "cluster.num_workers=1", "workload.space.num_boost_round={type: int, low: 20, high: 30}",
                      "run_name=dist-asha")
    result = tune.run(cfg)
    statuses = [t.status for t in result.trials]
    assert len(statuses) == 4 and "error" not in statuses, statuses
    assert "stopped" in statuses and "finished" in statuses, statuses
    assert result.model_uri == "models:/retail-demand-tuned/1"
    # Every trial's Train run gives its CPUs back (a placement group left behind holds them until
    # the session's Ray ends: the search's next stage, or the next test, would wait for them).
    ray = ray_session
    wait_until(lambda: ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"], 60,
               "the trials' CPUs to come back", workdir)


@pytest.mark.slow
def test_best_trial_without_checkpoint_is_retrained(ray_session, workdir):
    from training.tune.config import TrialMode
    from training.data import sources
    from training.data.prepare import prepare
    from training.tune.records import TrialRecord
    from training.tune import results

    cfg = load_config(*SEARCH, "cluster.num_workers=1")
    sources.check(cfg.data)  # writes the synthetic data
    data = prepare(cfg.data)
    best = TrialRecord("t1", {"num_boost_round": 30, "max_depth": 4, "learning_rate": 0.2}, 30, 20, 12.0, 1.0,
                       "stopped", checkpoint=None)
    member = results.best_member(best, cfg.workload, cfg, data, TrialMode.local, "retrain-1")
    assert member.name == "tuned_xgboost" and member.rounds == 20  # as far as the trial got
    assert member.params["max_depth"] == 4 and len(member.history) == 20
