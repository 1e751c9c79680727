"""The promotion gate against a real MLflow registry (SQLite in a temp dir) with real models.

Fast tests register small real pyfunc models and score them on a held-out parquet file
(promote.data_path); the slow test trains real XGBoost workloads on Ray with the gate on
(the hook at the end of training.gbdt.workload.run) and re-runs the CLI on the same split.
"""

from __future__ import annotations

import os
import signal
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from training.ops import promote
from tests.conftest import SMALL, load_config, small_rounds

MODEL = "demand"


class Linear(mlflow.pyfunc.PythonModel):
    """y = a*x + b: a real pyfunc, as good or bad as its coefficients."""

    def __init__(self, a: float, b: float):
        self.a, self.b = a, b

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return pd.Series(self.a * model_input["x"].to_numpy() + self.b, name="prediction")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A local MLflow store, a held-out parquet file (y = 2x + 1 + noise) and the CLI's overrides."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 500)
    rows = pd.DataFrame({"x": x, "store": rng.integers(0, 5, 500), "y": 2 * x + 1 + rng.normal(0, 0.5, 500)})
    rows.to_parquet(tmp_path / "holdout.parquet")
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("promote-test")
    overrides = [f"tracking.local_dir={tmp_path}/mlruns", "tracking.experiment=promote-test",
                 f"promote.data_path={tmp_path}/holdout.parquet", "data.target=y"]
    yield MlflowClient(uri), overrides, rows
    mlflow.set_tracking_uri(None)


def register(a: float, b: float, rows: pd.DataFrame) -> str:
    example = rows[["x", "store"]].head(3)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Linear(a, b), input_example=example,
                                       signature=infer_signature(example, Linear(a, b).predict(None, example)))
    return str(mlflow.register_model(info.model_uri, MODEL).version)


def gate(capsys, overrides, *argv):
    capsys.readouterr()  # drop MLflow's registration messages
    code = promote.main([*argv, "--model", MODEL, *overrides])
    out, err = capsys.readouterr()
    return code, out + err


def tags(client, version):
    return client.get_model_version(MODEL, version).tags


def champion(client):
    return str(client.get_model_version_by_alias(MODEL, "champion").version)


def test_first_version_becomes_champion(store, capsys):
    client, overrides, rows = store
    v1 = register(1.8, 1.5, rows)
    code, out = gate(capsys, overrides, "--version", v1)
    assert code == promote.EXIT_PROMOTED, out
    assert champion(client) == v1
    t = tags(client, v1)
    assert t["promotion.decision"] == "promoted" and t["promotion.champion_version"] == "none"
    assert t["promotion.metric"] == "rmse" and "holdout.parquet (500 rows)" in t["promotion.evaluated_on"]
    assert f"{MODEL} v{v1} promoted: no 'champion' yet" in out


def test_a_worse_model_is_kept_out_and_both_versions_are_tagged(store, capsys):
    client, overrides, rows = store
    v1 = register(2.0, 1.0, rows)                      # the truth
    assert gate(capsys, overrides, "--version", v1)[0] == promote.EXIT_PROMOTED
    v2 = register(1.5, 3.0, rows)                      # clearly worse
    code, out = gate(capsys, overrides)                # default: the newest version
    assert code == promote.EXIT_KEPT, out
    assert champion(client) == v1
    mine, theirs = tags(client, v2), tags(client, v1)
    assert mine["promotion.decision"] == "kept" and mine["promotion.champion_version"] == v1
    assert float(mine["promotion.score"]) > float(mine["promotion.champion_score"])   # RMSE: higher is worse
    assert theirs["promotion.last_challenge.result"] == "defended"
    assert theirs["promotion.last_challenge.challenger_version"] == v2
    assert float(theirs["promotion.last_challenge.score"]) == pytest.approx(float(mine["promotion.champion_score"]))


def test_a_better_model_is_promoted_only_beyond_the_margin(store, capsys):
    client, overrides, rows = store
    v1 = register(2.0, 1.6, rows)                      # biased by 0.6
    assert gate(capsys, overrides, "--version", v1)[0] == promote.EXIT_PROMOTED
    v2 = register(2.0, 1.0, rows)                      # unbiased: RMSE ~0.5 vs ~0.78, about 36% better
    code, out = gate(capsys, [*overrides, "promote.margin=0.5"], "--version", v2)
    assert code == promote.EXIT_KEPT and champion(client) == v1, out
    assert "<= margin 50%" in out
    code, out = gate(capsys, [*overrides, "promote.margin=0.2"], "--version", v2)
    assert code == promote.EXIT_PROMOTED and champion(client) == v2, out
    assert tags(client, v2)["promotion.decision"] == "promoted"
    assert tags(client, v1)["promotion.last_challenge.result"] == "replaced"
    # An absolute margin in metric units, and a metric where higher is better.
    v3 = register(2.0, 1.05, rows)
    code, out = gate(capsys, [*overrides, "promote.metric=r2", "promote.relative=false", "promote.margin=0.0"],
                     "--version", v3)
    assert code == promote.EXIT_KEPT and champion(client) == v2, out


def test_rows_without_a_label_are_left_out_of_the_scores(store, capsys, tmp_path):
    """Held-out rows missing their target (training leaves such rows out too): the scores come
    from the labelled rows, so a better challenger still wins; with no labelled row, one line."""
    client, overrides, rows = store
    holes = rows.copy()
    holes.loc[::10, "y"] = np.nan
    holes.to_parquet(tmp_path / "holdout.parquet")
    v1 = register(2.0, 1.6, rows)
    assert gate(capsys, overrides, "--version", v1)[0] == promote.EXIT_PROMOTED
    v2 = register(2.0, 1.0, rows)
    code, out = gate(capsys, overrides, "--version", v2)
    assert code == promote.EXIT_PROMOTED and champion(client) == v2, out
    mine = tags(client, v2)
    assert np.isfinite(float(mine["promotion.score"])) and "(450 rows)" in mine["promotion.evaluated_on"]
    rows.assign(y=np.nan).to_parquet(tmp_path / "holdout.parquet")
    code, out = gate(capsys, overrides, "--version", v2)
    assert code == 2 and out.startswith("error: ") and "has no rows with a value in target 'y'" in out, out


def test_a_decimal_target_is_scored_as_numbers(store, capsys, tmp_path):
    """Money columns are often parquet decimals: training reads them as numbers, so must the gate."""
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    client, overrides, rows = store
    cents = [decimal.Decimal(f"{v:.2f}") for v in rows["y"]]
    pq.write_table(pa.table({"x": rows["x"], "store": rows["store"], "y": pa.array(cents, pa.decimal128(10, 2))}),
                   tmp_path / "holdout.parquet")
    v1 = register(2.0, 1.0, rows)
    code, out = gate(capsys, overrides, "--version", v1)
    assert code == promote.EXIT_PROMOTED and champion(client) == v1, out
    assert float(tags(client, v1)["promotion.score"]) < 1.0  # y = 2x + 1 + noise(0.5): a good fit


def test_the_champion_against_itself_is_kept(store, capsys):
    client, overrides, rows = store
    v1 = register(2.0, 1.0, rows)
    assert gate(capsys, overrides)[0] == promote.EXIT_PROMOTED
    why = tags(client, v1)
    code, out = gate(capsys, overrides)
    assert code == promote.EXIT_KEPT and "already 'champion'" in out
    assert tags(client, v1) == why and why["promotion.decision"] == "promoted"  # its record stays


def test_a_registry_that_fails_to_answer_for_the_alias_promotes_nothing(store, capsys, monkeypatch):
    """A server error while the champion is looked up is an error, not "no champion yet"."""
    from mlflow.exceptions import MlflowException

    client, overrides, rows = store
    v1 = register(2.0, 1.0, rows)
    assert gate(capsys, overrides, "--version", v1)[0] == promote.EXIT_PROMOTED
    v2 = register(2.0, 3.0, rows)  # worse

    def unavailable_to_the_gate(method):
        """The registry fails when the gate asks it who is champion (MLflow's own reads, for the
        model's files, still work)."""
        def call(self, *args, **kwargs):
            if sys._getframe(1).f_globals.get("__name__") == promote.__name__:
                raise MlflowException("503 Service Unavailable", error_code="TEMPORARILY_UNAVAILABLE")
            return method(self, *args, **kwargs)
        return call

    for name in ("get_registered_model", "get_model_version_by_alias"):
        monkeypatch.setattr(MlflowClient, name, unavailable_to_the_gate(getattr(MlflowClient, name)))
    code, out = gate(capsys, overrides, "--version", v2)
    monkeypatch.undo()
    assert code == 1 and "503 Service Unavailable" in out, out
    assert champion(client) == v1 and "promotion.decision" not in tags(client, v2)


def test_a_refused_write_of_the_decision_leaves_the_alias_where_it_was(store, capsys, monkeypatch):
    """The alias is the decision's last write: a registry that refuses a tag leaves serving on
    the champion, and the line says so."""
    from mlflow.exceptions import MlflowException

    client, overrides, rows = store
    v1 = register(2.0, 1.6, rows)
    assert gate(capsys, overrides, "--version", v1)[0] == promote.EXIT_PROMOTED
    v2 = register(2.0, 1.0, rows)  # better

    def refused(self, *args, **kwargs):
        raise MlflowException("403 Forbidden: no permission to edit the model version")

    monkeypatch.setattr(MlflowClient, "set_model_version_tag", refused)
    code, out = gate(capsys, overrides, "--version", v2)
    monkeypatch.undo()
    assert code == 1 and "403 Forbidden" in out and "the alias 'champion' did not move" in out, out
    assert champion(client) == v1


class MovesTheAliasWhileScored(Linear):
    """Another gate promotes a version while this one is being scored."""

    def __init__(self, a: float, b: float, to: str):
        super().__init__(a, b)
        self.to = to

    def predict(self, context, model_input: pd.DataFrame, params=None):
        MlflowClient().set_registered_model_alias(MODEL, "champion", self.to)
        return super().predict(context, model_input, params)


def test_an_alias_moved_by_another_gate_meanwhile_is_not_overwritten(store, capsys):
    client, overrides, rows = store
    v1 = register(2.0, 1.6, rows)
    assert gate(capsys, overrides, "--version", v1)[0] == promote.EXIT_PROMOTED
    v2 = register(2.0, 1.3, rows)
    example = rows[["x", "store"]].head(3)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=MovesTheAliasWhileScored(2.0, 1.0, v2),
                                       signature=infer_signature(example, Linear(2.0, 1.0).predict(None, example)))
    v3 = str(mlflow.register_model(info.model_uri, MODEL).version)  # the best, but judged against v1
    code, out = gate(capsys, overrides, "--version", v3)
    assert code == 1 and f"the alias 'champion' moved to v{v2} while the gate scored v{v3} against v{v1}" in out, out
    assert champion(client) == v2 and "promotion.decision" not in tags(client, v3)


class InterruptedWhileScoring(Linear):
    """Ctrl-C as a terminal sends it (SIGINT), arriving while the gate scores this version."""

    def predict(self, context, model_input: pd.DataFrame, params=None):
        os.kill(os.getpid(), signal.SIGINT)
        return super().predict(context, model_input, params)


def ctrl_c_gate(capsys, overrides, *argv):
    """`gate()` with Python's own Ctrl-C handler, as the CLI's process has it (a run of Ray in
    this pytest worker may have left its own): a Ctrl-C that gets through fails the test."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return gate(capsys, overrides, *argv)
    except KeyboardInterrupt:
        pytest.fail("the gate let Ctrl-C through (a traceback for the user)")
    finally:
        signal.signal(signal.SIGINT, before)


def register_interrupted_while_scoring(rows: pd.DataFrame) -> str:
    example = rows[["x", "store"]].head(3)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=InterruptedWhileScoring(2.0, 1.0),
                                       signature=infer_signature(example, Linear(2.0, 1.0).predict(None, example)))
    return str(mlflow.register_model(info.model_uri, MODEL).version)


def test_ctrl_c_while_scoring_records_nothing(store, capsys):
    client, overrides, rows = store
    v1 = register(2.0, 1.6, rows)
    assert gate(capsys, overrides, "--version", v1)[0] == promote.EXIT_PROMOTED
    v2 = register_interrupted_while_scoring(rows)
    code, out = ctrl_c_gate(capsys, overrides, "--version", v2)
    assert code == 130, out
    assert out.strip() == "error: interrupted; nothing was recorded and the alias did not move", out
    assert champion(client) == v1
    assert not [k for k in tags(client, v2) if k.startswith("promotion.")]
    assert not [k for k in tags(client, v1) if k.startswith("promotion.last_challenge")]


def test_ctrl_c_in_a_training_runs_gate_says_the_model_is_registered_and_how_to_gate_it(store, capsys):
    """The gate at the end of a run (promote.enabled): the run is complete and its version
    registered, so the run's usual hint (rerun to resume) would register another version."""
    from training import errors

    client, overrides, rows = store
    v1 = register(2.0, 1.6, rows)
    assert gate(capsys, overrides, "--version", v1)[0] == promote.EXIT_PROMOTED
    v2 = register_interrupted_while_scoring(rows)
    cfg = load_config(*overrides, "promote.enabled=true")
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            promote.after_run(cfg, f"models:/{MODEL}/{v2}")
    finally:
        signal.signal(signal.SIGINT, before)
    capsys.readouterr()
    # What the training CLI does with it (training/__main__.py).
    code = errors.show(caught.value, "rerun with the same run_name=... to resume from the last checkpoints")
    assert code == 130 and capsys.readouterr().err.strip() == (
        f"error: interrupted; models:/{MODEL}/{v2} is registered; the promotion gate stopped before it recorded "
        f"anything (python -m training.ops.promote --model {MODEL} --version {v2} with the run's overrides gates it)")
    assert champion(client) == v1


def test_a_finished_runs_rerun_gates_its_version_only_if_never_gated(store, capsys):
    """A rerun of a run that registered its version and then stopped before its gate (a RayJob
    retried after the gate failed) trains nothing: the gate judges the version it registered, once."""
    client, overrides, rows = store
    v1 = register(2.0, 1.0, rows)
    cfg = load_config(*overrides, "promote.enabled=true")
    decision = promote.after_finished_run(cfg, f"models:/{MODEL}/{v1}")
    assert decision is not None and decision.promoted and champion(client) == v1
    judged_at = tags(client, v1)["promotion.time"]
    assert promote.after_finished_run(cfg, f"models:/{MODEL}/{v1}") is None   # judged: not again
    assert tags(client, v1)["promotion.time"] == judged_at
    assert promote.after_finished_run(load_config(*overrides), f"models:/{MODEL}/{v1}") is None  # gate off


def interrupt_at_first_tag(monkeypatch, times: int) -> None:
    """Ctrl-C pressed `times` times just after the gate wrote its first tag: between the writes
    that make one decision (the alias has moved by then)."""
    write, sent = MlflowClient.set_model_version_tag, []

    def tag_then_ctrl_c(self, *args, **kwargs):
        write(self, *args, **kwargs)
        while len(sent) < times:
            sent.append(os.kill(os.getpid(), signal.SIGINT))

    monkeypatch.setattr(MlflowClient, "set_model_version_tag", tag_then_ctrl_c)


def test_ctrl_c_while_the_decision_is_written_lets_it_finish(store, capsys, monkeypatch):
    """The alias and the tags that say why are written whole: the decision prints, then exit 130."""
    client, overrides, rows = store
    v1 = register(2.0, 1.6, rows)
    assert gate(capsys, overrides, "--version", v1)[0] == promote.EXIT_PROMOTED
    v2 = register(2.0, 1.0, rows)
    expected = {**tags(client, v2)}
    interrupt_at_first_tag(monkeypatch, times=1)
    code, out = ctrl_c_gate(capsys, overrides, "--version", v2)
    assert code == 130, out
    assert f"{MODEL} v{v2} promoted" in out
    assert out.strip().splitlines()[-1] == "error: interrupted; the decision above was recorded in full first", out
    assert champion(client) == v2
    mine, theirs = tags(client, v2), tags(client, v1)
    assert mine["promotion.decision"] == "promoted" and mine["promotion.time"] and expected.keys() <= mine.keys()
    assert theirs["promotion.last_challenge.result"] == "replaced" and theirs["promotion.last_challenge.time"]


def test_a_second_ctrl_c_stops_the_writes_and_says_what_to_check(store, capsys, monkeypatch):
    """A registry that hangs must not trap the user: the second Ctrl-C stops the gate at once."""
    client, overrides, rows = store
    v1 = register(2.0, 1.6, rows)
    assert gate(capsys, overrides, "--version", v1)[0] == promote.EXIT_PROMOTED
    v2 = register(2.0, 1.0, rows)
    interrupt_at_first_tag(monkeypatch, times=2)
    code, out = ctrl_c_gate(capsys, overrides, "--version", v2)
    assert code == 130, out
    assert out.strip() == ("error: interrupted; the decision may be half recorded: check the alias 'champion' "
                           "and the promotion.* tags of both versions"), out
    assert "promotion.time" not in tags(client, v2)


@pytest.mark.parametrize("argv, extra, message", [
    (["--version", "7"], [], f"model version {MODEL}/7 does not exist"),
    ([], ["data.target=price"], "held-out data has no target column 'price'"),
    ([], ["promote.metric=auc"], "promote.metric must be one of rmse, mae, r2"),
    ([], ["promote.data_path=/nonexistent/rows.parquet"], "does not exist"),
])
def test_bad_input_is_exit_2_with_one_line(store, capsys, argv, extra, message):
    client, overrides, rows = store
    register(2.0, 1.0, rows)
    code, out = gate(capsys, [*overrides, *extra], *argv)
    assert code == 2 and message in out and out.startswith("error: "), out


def test_held_out_rows_without_the_models_columns_are_exit_2(store, capsys, tmp_path):
    client, overrides, rows = store
    v1 = register(2.0, 1.0, rows)
    rows.drop(columns=["x"]).to_parquet(tmp_path / "holdout.parquet")
    code, out = gate(capsys, overrides, "--version", v1)
    assert code == 2 and out.strip() == f"error: held-out data lacks columns models:/{MODEL}/{v1} takes: x", out
    assert "champion" not in client.get_registered_model(MODEL).aliases


def test_a_model_with_no_versions_is_exit_2(store, capsys):
    client, overrides, rows = store
    code, out = gate(capsys, overrides)
    assert code == 2 and f"registered model '{MODEL}' has no versions" in out


def test_improvement_direction():
    assert promote.improvement(1.0, 0.9, "rmse", True) == pytest.approx(0.1)
    assert promote.improvement(0.8, 0.9, "r2", False) == pytest.approx(0.1)
    assert promote.improvement(1.0, 1.2, "mae", False) == pytest.approx(-0.2)


@pytest.mark.slow
def test_retraining_with_the_gate_on(ray_session, workdir, capsys):
    """Real XGBoost runs on Ray with promote.enabled: the first becomes champion, a much weaker
    one is kept out; the CLI on the same data config scores the same held-out rows."""
    base = [*SMALL, "cluster.num_workers=1", "promote.enabled=true"]
    from training.gbdt import workload as gbdt

    first = gbdt.run(load_config(*base, *small_rounds("xgboost", 40)))
    weak = gbdt.run(load_config(*base, *small_rounds("xgboost", 2)))
    client = MlflowClient(first.tracking_uri)
    name = "retail-demand-xgboost"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    v2 = client.get_model_version(name, "2").tags
    assert v2["promotion.decision"] == "kept" and v2["promotion.champion_version"] == "1"
    assert "validation split (fraction 0.2, seed 0)" in v2["promotion.evaluated_on"]
    # The hook's RMSE is the run's own validation RMSE: the same held-out rows.
    assert float(v2["promotion.score"]) == pytest.approx(weak.metrics["xgboost"]["rmse"], rel=1e-6)
    assert float(v2["promotion.champion_score"]) == pytest.approx(first.metrics["xgboost"]["rmse"], rel=1e-6)
    capsys.readouterr()
    code = promote.main([*SMALL, "workload=xgboost", "--version", "2"])
    assert code == promote.EXIT_KEPT, capsys.readouterr()
    assert float(client.get_model_version(name, "2").tags["promotion.score"]) == pytest.approx(
        float(v2["promotion.score"]), rel=1e-9)
