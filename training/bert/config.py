"""The schema of the bert workload (conf/workload/bert.yaml): the model, the optimisation, precision."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING

from training.data.schema import DataSource
from training.errors import UserError
from training.settings import changed_fields


class Precision(str, Enum):
    auto = "auto"  # bf16 on GPUs that support it, else fp16 + grad scaler; fp32 on CPU
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


@dataclass
class BertArchitectureConfig:
    """Sizes of a randomly initialised BERT (used when workload.model.path is null)."""
    # The WordPiece vocabulary trained on the training text has at most this many tokens.
    vocab_size: int = 8000
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    max_position_embeddings: int = 512
    # Rows of training text the tokenizer is trained on (null = all).
    tokenizer_sample_rows: Optional[int] = 200_000


@dataclass
class BertModelConfig:
    # A local directory (shared by the workers or not: the files travel through Ray's object
    # store), an s3:// / gs:// URI (copied locally first) or a hub name where a hub is reachable.
    # null = a new model from `from_config` with a WordPiece tokenizer trained on the training text.
    path: Optional[str] = None
    from_config: BertArchitectureConfig = field(default_factory=BertArchitectureConfig)


@dataclass
class BertWorkloadConfig:
    name: str = MISSING
    model: BertModelConfig = field(default_factory=BertModelConfig)
    # Longer texts are truncated; batches are padded to their longest text (dynamic padding).
    max_seq_length: int = 128
    epochs: int = 3
    # Per worker and per forward pass; the global batch is batch_size x grad_accum_steps x num_workers.
    batch_size: int = 32
    grad_accum_steps: int = 1
    # Peak AdamW learning rate; null = 5e-5 when fine-tuning model.path, 5e-4 for a new model.
    learning_rate: Optional[float] = None
    weight_decay: float = 0.01
    # Linear warm-up over this fraction of the optimizer steps, then linear decay to 0.
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    precision: Precision = Precision.auto
    # Training loss and learning rate are recorded every N optimizer steps (MLflow, progress lines).
    # Ray Train hears from the workers once per epoch (metrics + checkpoint), never per step.
    log_every_steps: int = 20
    register: bool = True
    registered_model_name: str = "text-classifier"
    # Fault drill: SIGKILL the last Ray Train worker once when it reaches this optimizer step (null = off).
    kill_worker_at_step: Optional[int] = None

    def check(self, cfg: Any) -> None:
        for key in ("max_seq_length", "epochs", "batch_size", "grad_accum_steps", "log_every_steps"):
            if getattr(self, key) < 1:
                raise UserError(f"workload.{key} must be >= 1, got {getattr(self, key)}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise UserError(f"workload.learning_rate must be > 0, got {self.learning_rate}")
        # clip_grad_norm_ scales gradients to this norm: 0 zeroes them, a negative one reverses them.
        if self.max_grad_norm <= 0:
            raise UserError(f"workload.max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.weight_decay < 0:
            raise UserError(f"workload.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise UserError(f"workload.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        a = self.model.from_config
        sized = changed_fields(a) if self.model.path is not None else []
        if sized:
            raise UserError(f"workload.model.from_config.{sized[0]} sizes a randomly initialised model; "
                            "workload.model.path loads a checkpoint with its own sizes")
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "max_position_embeddings"):
            if self.model.path is None and getattr(a, key) < 1:
                raise UserError(f"workload.model.from_config.{key} must be >= 1, got {getattr(a, key)}")
        if self.model.path is None and a.tokenizer_sample_rows is not None and a.tokenizer_sample_rows < 1:
            raise UserError(f"workload.model.from_config.tokenizer_sample_rows must be >= 1 (or null: all rows), "
                            f"got {a.tokenizer_sample_rows}")
        if self.model.path is None and a.hidden_size % a.num_attention_heads:
            raise UserError(f"workload.model.from_config.hidden_size={a.hidden_size} must be a multiple of "
                            f"num_attention_heads={a.num_attention_heads}")
        if self.precision in (Precision.bf16, Precision.fp16) and cfg.cluster.gpus_per_worker == 0:
            raise UserError(f"workload.precision={self.precision.value} needs GPU workers (cluster.gpus_per_worker >= 1); "
                            "CPU workers train in fp32 (precision=auto or fp32)")
        if cfg.promote.enabled:
            raise UserError("promote.enabled=true does not apply to workload=bert: the gate scores regression "
                            "models (rmse, mae, r2) on rows with a numeric target, and BERT registers a text "
                            "classifier")
        tabular = cfg.data.feature_options_set()
        if tabular and cfg.data.source is not DataSource.synthetic:  # synthetic: refused below, with its preset's options
            raise UserError(f"data.{tabular[0]} does not apply to workload=bert: text classification reads "
                            "data.text.column and data.target only (the feature options are for GBDT workloads)")
        if cfg.data.source is DataSource.synthetic:
            raise UserError("workload=bert needs text data: data=text_synthetic, or data=parquet/csv/jsonl with "
                            "data.text.column and data.target (the label column)")
        s = cfg.data.text.synthetic
        if cfg.data.source is DataSource.text_synthetic and (len(set(s.classes)) < 2 or s.rows < 20):
            raise UserError(f"data.text.synthetic needs >= 2 distinct classes and >= 20 rows, got "
                            f"classes={list(s.classes)}, rows={s.rows}")
