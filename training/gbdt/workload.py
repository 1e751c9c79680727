"""The xgboost, lightgbm and ensemble workloads: one pipeline, one to many GBDT members.

config (each member's params judged by its library) -> Ray and MLflow (fail fast on impossible
requests) -> data + features -> members on Ray Train -> validation metrics and ensemble weights
-> MLflow runs, plots, registered model -> summary. A single-model workload is an ensemble of
one, so every GBDT workload registers the same kind of artifact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional

from training.config import Config
from training.data import sources
from training.runtime import report
from training.runtime.run import Run

if TYPE_CHECKING:
    from training.gbdt.slots import TrainedMember

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


def run(cfg: Config) -> RunResult:
    w = cfg.workload
    run = Run(cfg)
    log.info("run %s: workload=%s, %d member(s)", run.name, w.name, len(w.members))

    def check() -> None:  # an impossible request or bad data fails here, before a cluster or a run exists
        from training.runtime import cluster

        from training.ops.held_out import check_held_out

        cluster.require_before_start(cfg.cluster, streaming=not cfg.data.materialize)
        sources.check(cfg.data)
        check_held_out(cfg)

    def warm() -> None:
        from training.gbdt import artifact

        artifact.warm_imports()

    run.start(check, warm)
    # Imported after the checks (a bad input costs no Ray import) and mostly already by
    # start-up's thread while Ray started (MLflow, Ray Data, pandas, SciPy).
    import mlflow

    from training.data.prepare import prepare
    from training.gbdt import artifact
    from training.gbdt.scoring import ValidationScorer
    from training.gbdt.slots import check_rows, train_all
    from training.runtime import cluster, tracking

    concurrent = cluster.require(cfg.cluster, streaming=not cfg.data.materialize)
    with run.observed():
        data = prepare(cfg.data)
        check_rows(data, cfg.cluster.num_workers)
        run.timings["data_s"] = data.seconds
        with run.parent(metrics={"data_rows": data.rows, "train_rows": data.train_rows,
                                 "valid_rows": data.valid_rows}) as parent:
            scorer = ValidationScorer(data, len(w.members))
            children = artifact.start_children(w.members)
            with tracking.failing_children(children.values()):
                with run.phase("train_s"):
                    trained = train_all(w, cfg.cluster, data, run.name, concurrent, cfg.seed, on_finished=scorer.add,
                                        live=(run.tracking_uri, children))
                with run.phase("tracking_s"):
                    model, metrics = scorer.evaluate(trained)
                    weights = {m.name: float(wt) for m, wt in zip(model.members, model.weights)}
                    artifact.finish_children(children, trained, metrics, weights)
                    mlflow.log_metrics({f"{k}_{name}": v for name, ms in metrics.items() for k, v in ms.items()})
                    mlflow.log_metrics({f"weight_{k}": v for k, v in weights.items()})
                    logged = artifact.log_model(model, data, trained, w.name)
                    if w.register:
                        run.register_when_finished(logged, w.registered_model_name)
    result = RunResult(parent.info.run_id, run.name, run.tracking_uri, metrics, weights, run.model_uri, run.timings,
                       run.usage())
    run.finish(summary(cfg, trained, result), run.model_uri, data.valid_raw)
    return result


def summary(cfg: Config, trained: List[TrainedMember], result: RunResult) -> str:
    rows = []
    for t in trained:
        m = result.metrics[t.name]
        rounds = f"{t.rounds} of {t.boosted}" if t.boosted > t.rounds else t.rounds  # early stopping kept t.rounds
        rows.append([t.name, t.kind, rounds, f"{t.seconds:.1f}", m["rmse"], m["mae"], m["r2"],
                     result.weights[t.name]])
    if "ensemble" in result.metrics:
        m = result.metrics["ensemble"]
        rows.append(["ensemble", "weighted", "", f"{result.timings['train_s']:.1f}", m["rmse"], m["mae"],
                     m["r2"], sum(result.weights.values())])
    t = result.timings
    out = ["", f"Run {result.run_name} finished in {t['total_s']:.1f}s (cluster {t['cluster_s']:.1f}s, "
               f"data {t['data_s']:.1f}s, training {t['train_s']:.1f}s, tracking {t['tracking_s']:.1f}s)",
           report.table(["member", "kind", "rounds", "seconds", "valid RMSE", "MAE", "R2", "weight"], rows), "",
           *([result.usage] if result.usage else []),
           f"MLflow run:    {result.run_id} (experiment '{cfg.tracking.experiment}' at {result.tracking_uri})"]
    out.append(f"Model version: {result.model_uri}" if result.model_uri else "Model version: not registered "
               "(workload.register=false)")
    if cfg.tracking.backend.value == "local":
        out.append(f"Browse:        mlflow ui --backend-store-uri {result.tracking_uri}")
    return "\n".join(out)
