"""The per-worker GBDT training function in real Ray Train workers.

(Ray Train's in-process mode, num_workers=0, keeps checkpoints in a temporary directory
that is gone after fit(), so checkpoint and resume need a real worker.)
"""

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest

from training.gbdt import checkpoint, worker as gbdt

# Every test here is a real Ray Train fit (or two): seconds of start-up each. The quick loop
# (make test-fast) leaves them to CI.
pytestmark = pytest.mark.slow


def _data(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n).astype("float32"), "c": rng.integers(0, 4, n).astype("float32")})
    df["y"] = (2 * df.a + df.c + rng.normal(0, 0.1, n)).astype("float32")
    return df


def _fit(ray_session, tmp_path, kind, rounds, name="run", every=5, borrow=False):
    import ray.data
    from ray.train import RunConfig, ScalingConfig

    from training.gbdt.trainer import SlotTrainer

    train, valid = ray.data.from_pandas(_data()), ray.data.from_pandas(_data(600, 1))
    cfg = {"member": "m", "kind": kind, "params": {"max_depth": 3}, "num_boost_round": rounds,
           "checkpoint_every": every, "features": ["a", "c"], "categorical": ["c"], "label": "y",
           "threads": 1, "use_gpu": False, "seed": 0, "metric": "rmse", "borrow_idle_cpus": borrow,
           "shards": {"train": [train.materialize()], "valid": [valid.materialize()]}}
    # The trainer a slot of the in-process Ray uses (gbdt/slots.py), for either kind.
    trainer = SlotTrainer(gbdt.train_fn, train_loop_config=cfg, placement_group_cleaner=False,
                          scaling_config=ScalingConfig(num_workers=1),
                          run_config=RunConfig(name=name, storage_path=str(tmp_path)))
    return trainer.fit()


def _state(result):
    with result.checkpoint.as_directory() as d:
        return json.loads(open(os.path.join(d, checkpoint.STATE_FILE)).read()), sorted(os.listdir(d))


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm"])
def test_reports_every_n_rounds_checkpoints_and_a_rerun_boosts_only_the_remaining_rounds(ray_session, tmp_path,
                                                                                       kind, capfd):
    result = _fit(ray_session, tmp_path, kind, rounds=12, name="same")
    state, files = _state(result)
    assert state["rounds"] == 12 and len(state["history"]) == 12
    assert files == sorted([checkpoint.model_file(kind), checkpoint.STATE_FILE])
    assert state["history"][-1] < state["history"][0]  # it learned
    # Rounds 5, 10 and the last one (12): three reports, not twelve.
    assert len(result.best_checkpoints) == 3
    assert [m["round"] for _, m in result.best_checkpoints] == [5, 10, 12]
    # The last report carries the phase timings and peak memory that benchmarks/scaling.py reads.
    final = result.metrics
    assert all(final[k] >= 0 for k in ("load_s", "build_s", "boost_s"))
    assert final["peak_rss_mb"] > 50  # a Ray worker with xgboost/lightgbm loaded is well above this
    assert "boost_s" not in result.best_checkpoints[0][1]  # only the last report has them

    # The same run name with more rounds: resumed from the last checkpoint, not trained again.
    capfd.readouterr()
    rerun = _fit(ray_session, tmp_path, kind, rounds=20, name="same")
    resumed, _ = _state(rerun)
    assert resumed["rounds"] == 20 and resumed["history"][:12] == state["history"]
    assert state["validation"] == pytest.approx(_scored(_booster_of(result, kind), kind), rel=1e-5)
    assert "resuming from checkpoint at round 12" in capfd.readouterr().out
    with rerun.checkpoint.as_directory() as d:
        booster = checkpoint.load_booster(kind, os.path.join(d, checkpoint.model_file(kind)))
    assert (booster.num_boosted_rounds() if kind == "xgboost" else booster.current_iteration()) == 20
    # The workers' own scores of the final model: the resumed model's, not the first run's.
    assert resumed["validation"] == pytest.approx(_scored(booster, kind), rel=1e-5)
    assert resumed["validation"]["rmse"] < state["validation"]["rmse"]


def _booster_of(result, kind, member=None):
    with result.checkpoint.as_directory() as d:
        return checkpoint.load_booster(kind, os.path.join(d, *([member] if member else []), checkpoint.model_file(kind)))


def _scored(booster, kind) -> dict:
    """The driver's metrics of a booster on the whole validation split (training/gbdt/scoring.py)."""
    from training.gbdt.ensemble import Member
    from training.gbdt.metrics import regression_metrics

    valid = _data(600, 1)
    return regression_metrics(valid["y"].to_numpy(np.float64), Member("m", kind, booster).predict(valid[["a", "c"]]))


def _predictions(result, kind):
    from training.gbdt.ensemble import Member

    with result.checkpoint.as_directory() as d:
        booster = checkpoint.load_booster(kind, os.path.join(d, checkpoint.model_file(kind)))
    return Member("m", kind, booster).predict(_data(600, 1)[["a", "c"]])


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm"])
def test_a_member_borrows_the_cpu_ray_holds_idle_and_trains_the_same_model(ray_session, tmp_path, kind):
    """The session's Ray has 2 CPUs and this one worker takes 1: with borrow_idle_cpus the member
    boosts on 2 threads. The model must not depend on it."""
    own = _fit(ray_session, tmp_path, kind, rounds=60, name="own", every=50)
    borrowed = _fit(ray_session, tmp_path, kind, rounds=60, name="borrowed", every=50, borrow=True)
    assert own.metrics["max_threads"] == 1
    assert borrowed.metrics["max_threads"] == 2
    np.testing.assert_array_equal(_predictions(own, kind), _predictions(borrowed, kind))


def _fit_group(tmp_path, members, workers, name="group", max_failures=0, train_fn=gbdt.train_fn):
    """Several members in turn in one worker group, as an ensemble slot trains them."""
    import ray.data
    from ray.train import FailureConfig, RunConfig, ScalingConfig

    from training.gbdt.trainer import SlotTrainer

    train, valid = ray.data.from_pandas(_data()).materialize(), ray.data.from_pandas(_data(600, 1)).materialize()
    # A member: (name, kind, rounds) or (name, kind, rounds, {its other loop-config keys}).
    cfg = {"members": [{"member": m[0], "kind": m[1], "params": {"max_depth": 3}, "num_boost_round": m[2],
                        **(m[3] if len(m) > 3 else {})} for m in members],
           "checkpoint_every": 5, "features": ["a", "c"], "categorical": ["c"], "label": "y",
           "threads": 1, "use_gpu": False, "seed": 0, "metric": "rmse",
           "shards": {"train": train.split(workers, equal=True), "valid": valid.split(workers, equal=True)}}
    trainer = SlotTrainer(train_fn, train_loop_config=cfg, placement_group_cleaner=False,
                          scaling_config=ScalingConfig(num_workers=workers),
                          run_config=RunConfig(name=name, storage_path=str(tmp_path),
                                               failure_config=FailureConfig(max_failures=max_failures)))
    return trainer.fit()


def _group_states(result):
    with result.checkpoint.as_directory() as d:
        return {m: json.loads(open(os.path.join(d, m, checkpoint.STATE_FILE)).read()) for m in sorted(os.listdir(d))}


def test_one_worker_group_trains_xgboost_and_lightgbm_members_in_turn_across_two_workers(ray_session, tmp_path):
    """Both frameworks' distributed set-up in one group of two workers. Later LightGBM members
    (l2, and l3 right after it) open LightGBM's network again: on the ports Ray chose for l1 this
    failed in CI with "Binding port ... failed" (sockets in TIME_WAIT)."""
    result = _fit_group(tmp_path, [("l1", "lightgbm", 8), ("x", "xgboost", 8), ("l2", "lightgbm", 6),
                                   ("l3", "lightgbm", 4)], workers=2)
    states = _group_states(result)
    assert {m: s["rounds"] for m, s in states.items()} == {"l1": 8, "l2": 6, "l3": 4, "x": 8}
    for name, s in states.items():
        assert s["history"][-1] < s["history"][0]  # each learned
        # Scored by two workers on their halves of the validation split, as the driver scores the whole.
        kind = "xgboost" if name == "x" else "lightgbm"
        assert s["validation"] == pytest.approx(_scored(_booster_of(result, kind, name), kind), rel=1e-5), name
    # Members ran one after another in the group, in config order.
    assert states["l1"]["finished_at"] <= states["x"]["started_at"] <= states["x"]["finished_at"] \
        <= states["l2"]["started_at"]
    with result.checkpoint.as_directory() as d:
        assert sorted(os.listdir(os.path.join(d, "x"))) == sorted([checkpoint.model_file("xgboost"), checkpoint.STATE_FILE])


def test_a_rerun_group_skips_finished_members_and_resumes_the_unfinished_one(ray_session, tmp_path, capfd):
    first = _group_states(_fit_group(tmp_path, [("x", "xgboost", 10), ("l", "lightgbm", 10)], workers=1,
                                     name="again"))
    result = _fit_group(tmp_path, [("x", "xgboost", 10), ("l", "lightgbm", 20)], workers=1, name="again")
    states = _group_states(result)
    assert states["l"]["rounds"] == 20 and len(states["l"]["history"]) == 20
    assert states["l"]["history"][:10] == first["l"]["history"]
    assert states["x"] == first["x"]  # finished: carried over, not trained again (same times)
    assert "[l] resuming from checkpoint at round 10" in capfd.readouterr().out


def _saved_booster(result, member, kind):
    with result.checkpoint.as_directory() as d:
        return checkpoint.load_booster(kind, os.path.join(d, member, checkpoint.model_file(kind)))


def _rmse(booster, kind) -> float:
    from training.gbdt.ensemble import Member

    valid = _data(600, 1)
    return float(np.sqrt(np.mean((Member("m", kind, booster).predict(valid[["a", "c"]]) - valid["y"]) ** 2)))


# Deep trees at learning rate 1 overfit these 3,000 rows within a few rounds.
OVERFIT = {"params": {"max_depth": 6, "learning_rate": 1.0}, "early_stopping_rounds": 4}


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm"])
def test_early_stopping_keeps_the_best_round_and_a_rerun_trains_nothing_more(ray_session, tmp_path, kind):
    result = _fit_group(tmp_path, [("m", kind, 300, OVERFIT)], workers=1, name="stop")
    state = _group_states(result)["m"]
    history = state["history"]
    assert state["kept_best"] and state["boosted"] == len(history) < 300  # stopped well before the last round
    best = int(np.argmin(history)) + 1
    assert state["rounds"] == best and state["boosted"] == best + 4
    booster = _saved_booster(result, "m", kind)
    assert (booster.num_boosted_rounds() if kind == "xgboost" else booster.current_iteration()) == best
    assert _rmse(booster, kind) == pytest.approx(history[best - 1], rel=1e-4)
    assert state["validation"] == pytest.approx(_scored(booster, kind), rel=1e-5)  # the kept model's
    rerun = _group_states(_fit_group(tmp_path, [("m", kind, 300, OVERFIT)], workers=1, name="stop"))
    assert rerun["m"] == state  # finished: not resumed from its best round


def test_two_workers_judge_early_stopping_on_the_whole_validation_split(ray_session, tmp_path):
    """LightGBM scores each worker's validation shard on its own; the workers must still stop at
    the same round (or the group hangs) and judge the RMSE of the whole split, as XGBoost does."""
    members = [("l", "lightgbm", 300, OVERFIT), ("x", "xgboost", 300, OVERFIT)]
    result = _fit_group(tmp_path, members, workers=2, name="stop2")
    states = _group_states(result)
    for name, kind in (("l", "lightgbm"), ("x", "xgboost")):
        s = states[name]
        assert s["kept_best"] and s["rounds"] < s["boosted"] < 300, (name, s)
        assert _rmse(_saved_booster(result, name, kind), kind) == pytest.approx(s["history"][s["rounds"] - 1],
                                                                               rel=1e-4)
        assert s["validation"] == pytest.approx(_scored(_saved_booster(result, name, kind), kind), rel=1e-5)


def test_a_member_killed_before_it_stops_resumes_to_the_same_best_round(ray_session, tmp_path, capfd):
    """The resumed worker restores the curve so far with its checkpoint, so early stopping counts
    from the same best round: the same rounds, best round and curve as a run never interrupted."""
    whole = _group_states(_fit_group(tmp_path, [("m", "xgboost", 300, OVERFIT)], workers=1, name="whole"))["m"]
    assert whole["boosted"] > 6, whole  # the drill below kills the worker before the member stops
    drill = {**OVERFIT, "kill_worker_at_round": 6}
    killed = _group_states(_fit_group(tmp_path, [("m", "xgboost", 300, drill)], workers=1, name="killed",
                                      max_failures=1))["m"]
    assert "[m] resuming from checkpoint at round 5" in capfd.readouterr().out
    assert (killed["rounds"], killed["boosted"], killed["history"]) == \
        (whole["rounds"], whole["boosted"], whole["history"])


def _train_fn_polled_at_the_worst_moment(cfg):
    """The GBDT train function in a worker whose Ray Train status poll reads the result queue a
    moment before the training thread puts a report, and asks whether the thread still runs
    only after it has had time to end (Ray 2.60's `RayTrainWorker.poll_status` does the two
    one after the other; on a busy machine a thread switch can fall between them). Each report
    comes half a second after the last, as after rounds of real size, so the poll finds the
    queue empty before the last one."""
    import queue
    import threading
    import time

    import ray.train
    from ray.train.v2._internal.execution.context import get_train_context

    execution = get_train_context().execution_context
    results, training_thread = execution.result_queue, threading.current_thread()
    take = results.get_nowait

    def read_before_the_put():
        try:
            return take()
        except queue.Empty:
            deadline = time.monotonic() + 2
            while results.empty() and training_thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            if not results.empty():  # a report put meanwhile: the thread may end before the poll asks
                training_thread.join(timeout=2)
            raise

    results.get_nowait = read_before_the_put
    report = ray.train.report

    def report_after_a_while(*args, **kwargs):
        time.sleep(0.5)
        report(*args, **kwargs)

    ray.train.report = report_after_a_while
    gbdt.train_fn(cfg)


def test_the_last_report_is_registered_even_when_the_poll_reads_just_before_it(ray_session, tmp_path):
    """Every worker loop waits for Ray Train's controller to take its reports before it ends
    (training/runtime/lean_trainer.py): without that, this run ends on round 10's checkpoint and
    the driver would register a model short of its last 2 rounds."""
    from ray import cloudpickle

    this_module = sys.modules[__name__]  # not importable in Ray's workers: sent by value
    cloudpickle.register_pickle_by_value(this_module)
    try:
        result = _fit_group(tmp_path, [("m", "xgboost", 12)], workers=2, name="late-poll",
                            train_fn=_train_fn_polled_at_the_worst_moment)
    finally:
        cloudpickle.unregister_pickle_by_value(this_module)
    assert [m["round"] for _, m in result.best_checkpoints] == [5, 10, 12]
    state = _group_states(result)["m"]
    assert (state["rounds"], len(state["history"])) == (12, 12)
    assert state["validation"]["rmse"] > 0  # only the last report scores the final model
