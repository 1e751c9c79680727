"""The xgboost, lightgbm and ensemble workloads: one pipeline, one to many GBDT members.

config -> tracking store -> Ray (fail fast on impossible requests) -> data + features ->
members on Ray Train -> validation metrics and ensemble weights -> MLflow runs, plots,
registered model -> summary. A single-model workload is an ensemble of one, so every GBDT
workload registers the same kind of artifact.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

import numpy as np

from training import cluster, config, report, startup
from training.config import Config
from training.data import sources
from training.workloads.members import METRIC, TrainedMember, train_all

if TYPE_CHECKING:
    from training.data.prepare import PreparedData
    from training.models.ensemble import EnsembleModel

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_id: str
    run_name: str
    tracking_uri: str
    metrics: Dict[str, Dict[str, float]]      # member name (and "ensemble") -> rmse/mae/r2
    weights: Dict[str, float]
    model_uri: Optional[str] = None             # models:/<name>/<version> when registered
    timings: Dict[str, float] = field(default_factory=dict)
    usage: str = ""                              # resource hours and estimated cost (observability)


def make_run_name(workload: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{workload}-{stamp}-{secrets.token_hex(2)}"


def run(cfg: Config) -> RunResult:
    w = cfg.workload
    t0 = time.perf_counter()
    run_name = cfg.run_name or make_run_name(w.name)
    log.info("run %s: workload=%s, %d member(s)", run_name, w.name, len(w.members))
    sources.check(cfg.data)  # bad data fails here, before a cluster or a run exists
    uri = startup.tracking_and_cluster(cfg.tracking, cfg.cluster)
    # Imported by startup's thread while Ray started (MLflow ~2 s, Ray Data ~0.8 s, pandas, SciPy).
    import mlflow

    from training import observability, tracking
    from training.data.prepare import prepare
    concurrent = cluster.require(cfg.cluster)
    # Sampling starts with the cluster: its hours (and cost) start there too.
    with observability.observe(cfg.observability) as obs:
        t_cluster = time.perf_counter()
        data = prepare(cfg.data)
        timings = {"cluster_s": t_cluster - t0, "data_s": data.seconds}

        # Every log, sample and the cost land in the run, also when training fails.
        with tracking.parent_run(run_name, {"workload": w.name}) as parent, obs.recording():
            tracking.log_params(config.flatten(cfg))
            mlflow.log_text(config.to_yaml(cfg), "config.yaml")
            mlflow.log_metrics({"data_rows": data.rows, "train_rows": data.train_rows,
                                "valid_rows": data.valid_rows})
            t_train = time.perf_counter()
            scorer = ValidationScorer(data)
            trained = train_all(w, cfg.cluster, data, run_name, concurrent, cfg.seed, on_finished=scorer.add)
            timings["train_s"] = time.perf_counter() - t_train
            t_track = time.perf_counter()
            model, metrics = scorer.evaluate(trained)
            weights = {m.name: float(wt) for m, wt in zip(model.members, model.weights)}
            _log_children(trained, metrics, weights)
            mlflow.log_metrics({f"{k}_{name}": v for name, ms in metrics.items() for k, v in ms.items()})
            mlflow.log_metrics({f"weight_{k}": v for k, v in weights.items()})
            model_uri = _log_model(cfg, model, data, parent.info.run_id, trained)
            timings["tracking_s"] = time.perf_counter() - t_track
            timings["total_s"] = time.perf_counter() - t0
            mlflow.log_metrics(timings)
    result = RunResult(parent.info.run_id, run_name, uri, metrics, weights, model_uri, timings,
                       obs.summary_line())
    print(summary(cfg, trained, result))
    if cfg.promote.enabled:  # champion/challenger gate on this run's held-out rows
        from training import promote

        promote.after_run(cfg, model_uri, data.valid_raw)
    return result


class ValidationScorer:
    """Each member's validation predictions, computed as soon as the member finishes.

    Slots rarely finish together (on 2 cores the default ensemble's first slot ends ~10 s before
    the other), and the driver only waits meanwhile: loading a member's booster and predicting
    there takes the finished slot's core instead of adding ~3 s of tracking after the last one.
    The first member also warms up the imports the tracking phase needs (~2 s)."""

    def __init__(self, data: PreparedData):
        self.data = data
        self.valid = None
        self.scored: Dict[str, tuple] = {}   # member name -> (Member, validation predictions)

    def add(self, t: TrainedMember) -> None:
        if self.valid is None:
            self.valid = self.data.valid.to_pandas()
            _warm_tracking_imports()
        from training.models.ensemble import Member

        member = Member(t.name, t.kind, t.booster())
        x = self.valid[self.data.pipeline.output_features]
        self.scored[t.name] = (member, member.predict(x))

    def evaluate(self, trained: List[TrainedMember]):
        """Member and ensemble metrics on the validation split; ensemble weights fitted there too."""
        for t in trained:
            if t.name not in self.scored:
                self.add(t)
        from training.models.ensemble import EnsembleModel, fit_weights, regression_metrics

        y = self.valid[self.data.pipeline.target].to_numpy(np.float64)
        model = EnsembleModel(self.data.pipeline, [self.scored[t.name][0] for t in trained], np.ones(len(trained)))
        preds = np.column_stack([self.scored[t.name][1] for t in trained])
        model.weights = fit_weights(preds, y)
        metrics = {t.name: regression_metrics(y, preds[:, i]) for i, t in enumerate(trained)}
        if len(trained) > 1:
            metrics["ensemble"] = regression_metrics(y, preds @ model.weights)
        return model, metrics


def evaluate(data: PreparedData, trained: List[TrainedMember]):
    """Member and ensemble metrics on the validation split; ensemble weights fitted there too."""
    return ValidationScorer(data).evaluate(trained)


def _warm_tracking_imports() -> None:
    """What the model logging imports (matplotlib, MLflow's pyfunc flavour and signatures), and
    the map of installed packages that MLflow's requirement check builds on first use (~0.8 s
    of scanning the environment's metadata; later checks take ~0.04 s)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import mlflow.pyfunc  # noqa: F401
    from mlflow.models import infer_signature  # noqa: F401
    from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

    warn_dependency_requirement_mismatches(_requirements())  # the check log_model runs again


def _log_children(trained: List[TrainedMember], metrics, weights) -> None:
    from training import tracking

    for t in trained:
        params = {"kind": t.kind, "num_boost_round": t.rounds, **t.params}
        final = {f"valid_{k}": v for k, v in metrics[t.name].items()}
        final.update(train_seconds=t.seconds, ensemble_weight=weights[t.name], started_at=t.started_at,
                     finished_at=t.finished_at)
        tracking.log_child(t.name, params, f"valid_{METRIC}_curve", t.history, final, tags={"kind": t.kind})


def _log_model(cfg: Config, model: EnsembleModel, data: PreparedData, run_id: str,
               trained: List[TrainedMember]) -> Optional[str]:
    import mlflow
    from mlflow.models import infer_signature

    from training import tracking
    from training.models import pyfunc

    w = cfg.workload
    with tempfile.TemporaryDirectory() as d:
        report.importance_plot(model.importance(), f"{d}/feature_importance.png",
                               f"{w.name}: feature importance (gain)")
        report.curves_plot({t.name: t.history for t in trained}, METRIC, f"{d}/validation_curves.png")
        mlflow.log_artifact(f"{d}/feature_importance.png", "plots")
        mlflow.log_artifact(f"{d}/validation_curves.png", "plots")
        model_dir = model.save(Path(d) / "ensemble")
        example = _input_example(data)
        with warnings.catch_warnings():  # MLflow's hint about integer columns: the raw schema is what it is
            warnings.simplefilter("ignore", UserWarning)
            signature = infer_signature(example, model.predict(example))
        package = Path(__file__).resolve().parents[1]
        info = mlflow.pyfunc.log_model(name="model", python_model=pyfunc.__file__,
                                       artifacts={"ensemble": str(model_dir)}, code_paths=[str(package)],
                                       signature=signature, input_example=example,
                                       pip_requirements=_requirements())
    if not w.register:
        return None
    # Registration is the last step: a failure anywhere above leaves nothing registered.
    version = tracking.register(info.model_uri, w.registered_model_name)
    return f"models:/{w.registered_model_name}/{version}"


def _input_example(data: PreparedData):
    """A few raw validation rows, restricted to the columns the model reads (ids and target excluded)."""
    return data.valid_raw.limit(5).to_pandas()[data.pipeline.cols.features]


def _requirements() -> List[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("xgboost", "lightgbm", "pandas", "numpy", "scipy", "mlflow")]


def summary(cfg: Config, trained: List[TrainedMember], result: RunResult) -> str:
    rows = []
    for t in trained:
        m = result.metrics[t.name]
        rows.append([t.name, t.kind, t.rounds, f"{t.seconds:.1f}", m["rmse"], m["mae"], m["r2"],
                     result.weights[t.name]])
    if "ensemble" in result.metrics:
        m = result.metrics["ensemble"]
        rows.append(["ensemble", "weighted", "", f"{result.timings['train_s']:.1f}", m["rmse"], m["mae"],
                     m["r2"], sum(result.weights.values())])
    out = ["", f"Run {result.run_name} finished in {result.timings['total_s']:.1f}s "
               f"(cluster {result.timings['cluster_s']:.1f}s, data {result.timings['data_s']:.1f}s, "
               f"training {result.timings['train_s']:.1f}s, tracking {result.timings['tracking_s']:.1f}s)",
           report.table(["member", "kind", "rounds", "seconds", "valid RMSE", "MAE", "R2", "weight"], rows), "",
           *([result.usage] if result.usage else []),
           f"MLflow run:    {result.run_id} (experiment '{cfg.tracking.experiment}' at {result.tracking_uri})"]
    out.append(f"Model version: {result.model_uri}" if result.model_uri else "Model version: not registered "
               "(workload.register=false)")
    if cfg.tracking.backend.value == "local":
        out.append(f"Browse:        mlflow ui --backend-store-uri {result.tracking_uri}")
    return "\n".join(out)
