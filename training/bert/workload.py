"""The bert workload: BERT-family text classification with Ray Train's TorchTrainer.

config -> text data checked (bad data fails before a cluster exists) -> model source resolved
(local dir, object-store URI, hub name; or a new model from config) -> tracking store -> Ray
(fail fast) -> Ray Data: read, labels -> ids, train/validation split -> tokenizer (the model's,
or WordPiece trained on the training text) -> TorchTrainer (DDP on cluster.num_workers) ->
MLflow: params, loss/lr per logged step, evaluation per epoch, loss curve, transformers model,
registered last -> summary.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import mlflow

from training.bert import model, source, worker
from training.bert.config import BertWorkloadConfig
from training.config import Config
from training.data import text
from training.errors import TrainingError, UserError
from training.runtime import cluster, report, tracking, workers
from training.runtime.run import Run
from training.settings import ClusterMode

log = logging.getLogger(__name__)


# What the registered model needs to load and serve: the pipeline's libraries, pandas for the
# scoring server's frames, and MLflow's pyfunc flavour without its tracking server.
MODEL_REQUIREMENTS = ("transformers", "torch", "tokenizers", "pandas", "mlflow-skinny")


class BertTrainingError(TrainingError):
    """Training failed after Ray Train's retries; the message names the cause."""


@dataclass
class BertResult:
    run_id: str
    run_name: str
    tracking_uri: str
    metrics: Dict[str, float]                  # the last epoch's evaluation
    classes: List[str]
    evals: List[Dict[str, float]]              # one per epoch
    history: List[Dict[str, float]]            # {"step", "loss", "lr"} per logged step
    model_uri: Optional[str] = None            # models:/<name>/<version> when registered
    logged_model_uri: Optional[str] = None
    timings: Dict[str, float] = field(default_factory=dict)


def learning_rate(w: BertWorkloadConfig) -> float:
    if w.learning_rate is not None:
        return w.learning_rate
    return 5e-5 if w.model.path else 5e-4


def run(cfg: Config) -> BertResult:
    w: BertWorkloadConfig = cfg.workload
    run = Run(cfg)
    log.info("run %s: workload=%s, %s", run.name, w.name, f"model {w.model.path}" if w.model.path else
             "new model from config")
    with tempfile.TemporaryDirectory(prefix="bert-driver-") as work:
        resolved: Dict[str, Optional[str]] = {}

        def check() -> None:  # bad data or a bad model source fails here, before a cluster or a run exists
            cluster.require_before_start(cfg.cluster)
            text.check(cfg.data)
            resolved["source"] = source.resolve_source(w.model.path, work) if w.model.path else None
            _check_seq_length(w, resolved["source"])

        run.start(check)
        model_source = resolved["source"]
        cluster.require(cfg.cluster)
        model.quiet_transformers()
        with run.observed():
            with run.phase("data_s"):
                data = text.load(cfg.data, min_rows_per_split=cfg.cluster.num_workers)
                tokenizer_dir = model_source or _train_tokenizer(w, data, work)
            log.info("data: %d train / %d validation rows, %d classes %s", data.train_rows, data.valid_rows,
                     len(data.classes), data.classes[:10])
            with run.parent(metrics={"train_rows": data.train_rows, "valid_rows": data.valid_rows},
                            params={"classes": json.dumps(data.classes),
                                    "resolved_learning_rate": learning_rate(w)}) as parent:
                with run.phase("train_s"):
                    loop = dict(loop_config(cfg, data, tokenizer_dir, model_source is not None),
                                tracking_uri=run.tracking_uri, mlflow_run_id=parent.info.run_id)
                    checkpoint = fit(loop, cfg, run.name)
                with run.phase("tracking_s"):
                    result = _track(cfg, checkpoint, data, parent.info.run_id, run.name, run.tracking_uri, work)
                if w.register:
                    run.register_when_finished(result.logged_model_uri, w.registered_model_name)
                result.timings = run.timings
        result.model_uri = run.model_uri
    run.finish(summary(cfg, result) + (f"\n{run.usage()}" if run.usage() else ""))
    return result


def _check_seq_length(w: BertWorkloadConfig, model_dir: Optional[str]) -> None:
    limit = source.max_positions(model_dir) if model_dir else w.model.from_config.max_position_embeddings
    if w.max_seq_length > limit:
        where = f"max_position_embeddings of {w.model.path}" if model_dir else "workload.model.from_config." \
                                                                               "max_position_embeddings"
        raise UserError(f"workload.max_seq_length={w.max_seq_length} exceeds the model's maximum of {limit} "
                        f"({where})")


def _train_tokenizer(w: BertWorkloadConfig, data: text.TextData, work: str) -> str:
    out = str(Path(work) / "tokenizer")
    t0 = time.perf_counter()
    tok = text.train_wordpiece(data.train, w.model.from_config.vocab_size, w.max_seq_length, out,
                               w.model.from_config.tokenizer_sample_rows)
    log.info("WordPiece tokenizer: %d tokens trained on the training text in %.1fs", len(tok),
             time.perf_counter() - t0)
    return out


def loop_config(cfg: Config, data: text.TextData, model_dir: str, pretrained: bool) -> Dict[str, Any]:
    """What every worker needs: hyperparameters, labels, and the model/tokenizer files as one object ref."""
    import ray

    w, c = cfg.workload, cfg.cluster
    a = w.model.from_config
    vocab = len(json.loads(Path(model_dir, "tokenizer.json").read_text())["model"]["vocab"]) \
        if not pretrained else None
    return {"seed": cfg.seed, "classes": data.classes, "pretrained": pretrained,
            "bundle": ray.put(source.pack(model_dir)), "vocab_size": vocab,
            "architecture": {k: getattr(a, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                         "intermediate_size", "max_position_embeddings")},
            "max_seq_length": w.max_seq_length, "epochs": w.epochs, "batch_size": w.batch_size,
            "grad_accum_steps": w.grad_accum_steps, "learning_rate": learning_rate(w),
            "weight_decay": w.weight_decay, "warmup_fraction": w.warmup_fraction, "max_grad_norm": w.max_grad_norm,
            "precision": w.precision.value, "log_every_steps": w.log_every_steps,
            "total_steps": w.epochs * model.steps_per_epoch(data.train_rows, c.num_workers, w.batch_size,
                                                                 w.grad_accum_steps),
            "threads": c.cpus_per_worker, "kill_worker_at_step": w.kill_worker_at_step,
            "shards": {"train": data.train.split(c.num_workers, equal=True),
                       "valid": data.valid.split(c.num_workers, equal=True)}}


def fit(loop: Dict[str, Any], cfg: Config, run_name: str):
    """Run the TorchTrainer; the same run name and storage path resume from the latest checkpoint."""
    from training.bert.trainer import BertTrainer

    c = cfg.cluster
    trainer = BertTrainer(worker.train_fn, train_loop_config=loop, scaling_config=workers.scaling_config(c),
                          run_config=workers.run_config(c, run_name),
                          # The driver owns an in-process Ray: see runtime/lean_trainer.py.
                          placement_group_cleaner=c.mode is not ClusterMode.local, interrupt_raises=True)
    try:
        result = trainer.fit()
    except KeyboardInterrupt:  # Ctrl-C: the run stops here, registers nothing, and can be resumed
        trainer.abort()
        raise
    except Exception as exc:  # TrainingFailedError wraps the worker's exception
        cause = exc.__cause__ or exc
        last = str(cause).strip().splitlines()[-1] if str(cause).strip() else ""
        raise BertTrainingError(f"bert training failed after {c.max_failures} retries: "
                                f"{type(cause).__name__}: {last}") from None
    if result.checkpoint is None:
        raise BertTrainingError("bert training finished without a checkpoint")
    return result.checkpoint


def _track(cfg: Config, checkpoint, data: text.TextData, run_id: str, run_name: str, uri: str,
           work: str) -> BertResult:
    """Loss/lr per logged step and evaluation per epoch into the parent run, the plot, the model (registered last)."""
    w = cfg.workload
    final = Path(work) / "final"
    with checkpoint.as_directory() as d:
        import shutil
        shutil.copytree(d, final)
    state = worker.read_state(str(final))
    # Rank 0 logged these as it trained; a resumed run's earlier steps come from the checkpoint.
    series = {"train_loss_step": [(h["step"], h["loss"]) for h in state["history"]],
              "learning_rate": [(h["step"], h["lr"]) for h in state["history"]]}
    for e in state["evals"]:
        for k, v in e.items():
            if k not in ("epoch", "step"):
                series.setdefault(k, []).append((int(e["epoch"]), float(v)))
    tracking.log_missing(run_id, series)
    last = state["evals"][-1]
    mlflow.log_metrics({f"final_{k}": v for k, v in last.items() if k.startswith("eval_")})
    plot = loss_plot(state["history"], state["evals"], str(Path(work) / "loss_curve.png"))
    mlflow.log_artifact(plot, "plots")
    logged = _log_model(str(final), data, w.max_seq_length)
    return BertResult(run_id, run_name, uri, {k: v for k, v in last.items()}, data.classes, state["evals"],
                      state["history"], None, logged)


def _log_model(model_dir: str, data: text.TextData, max_seq_length: int) -> str:
    """Model + tokenizer as an MLflow transformers model (text-classification pipeline), label names included."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # The final checkpoint, a local directory (B615 is about hub downloads).
    classifier = AutoModelForSequenceClassification.from_pretrained(model_dir)  # nosec B615
    tokenizer = AutoTokenizer.from_pretrained(model_dir)  # nosec B615
    example = [str(t) for t in data.valid.limit(2).to_pandas()["text"]]
    info = mlflow.transformers.log_model(
        transformers_model={"model": classifier, "tokenizer": tokenizer}, name="model", task="text-classification",
        # Texts are cut where training cut them: scored as trained on, and none longer than the
        # encoder's positions fails the request.
        model_config={"truncation": True, "max_length": max_seq_length},
        input_example=example, pip_requirements=tracking.pinned(MODEL_REQUIREMENTS))
    mlflow.log_artifact(str(Path(model_dir) / worker.LABELS_FILE), "model_extra")
    return info.model_uri


def loss_plot(history: List[Dict[str, float]], evals: List[Dict[str, float]], path: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if history:
        ax.plot([h["step"] for h in history], [h["loss"] for h in history], label="training loss (logged steps)")
    if evals:
        ax.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="validation loss (epoch end)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary(cfg: Config, r: BertResult) -> str:
    rows = [[int(e["epoch"]), int(e["step"]), e["train_loss"], e["eval_loss"], e["eval_accuracy"], e["eval_macro_f1"],
             f"{e['samples_per_s']:.1f}"] for e in r.evals]
    t = r.timings
    out = ["", f"Run {r.run_name} finished in {t['total_s']:.1f}s (cluster {t['cluster_s']:.1f}s, data "
               f"{t['data_s']:.1f}s, training {t['train_s']:.1f}s, tracking {t['tracking_s']:.1f}s)",
           report.table(["epoch", "step", "train loss", "eval loss", "accuracy", "macro-F1", "samples/s"], rows), "",
           f"Classes:       {', '.join(r.classes[:20])}{' ...' if len(r.classes) > 20 else ''}",
           f"MLflow run:    {r.run_id} (experiment '{cfg.tracking.experiment}' at {r.tracking_uri})"]
    out.append(f"Model version: {r.model_uri}" if r.model_uri else "Model version: not registered "
               "(workload.register=false)")
    return "\n".join(out)
