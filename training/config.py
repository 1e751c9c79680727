"""The typed schema of conf/ and the function that composes, validates and returns it.

Hydra composes conf/ (defaults list + command-line overrides); the dataclasses below are
registered as schemas, so an unknown key or a wrong type fails at composition with the
key's full name. Semantic checks that types cannot express live in `validate`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import MISSING, OmegaConf

from training.errors import UserError


class ModelKind(str, Enum):
    xgboost = "xgboost"
    lightgbm = "lightgbm"


class DataSource(str, Enum):
    synthetic = "synthetic"
    parquet = "parquet"
    csv = "csv"
    jsonl = "jsonl"                    # JSON lines: one object per line
    text_synthetic = "text_synthetic"  # generated text-classification data (workload=bert)


class ClusterMode(str, Enum):
    local = "local"
    address = "address"


class TrackingBackend(str, Enum):
    local = "local"
    server = "server"


@dataclass
class MemberConfig:
    name: str = MISSING
    kind: ModelKind = MISSING
    num_boost_round: int = 100
    # Passed to xgboost.train / lightgbm.train as-is (tree_method, threads and
    # distributed settings are filled in from `cluster`).
    params: Dict[str, Any] = field(default_factory=dict)


@dataclass
class GBDTWorkloadConfig:
    name: str = MISSING
    members: List[MemberConfig] = field(default_factory=list)
    # Reporting to Ray Train is a synchronous round trip; report (and checkpoint)
    # every N boosting rounds, never every round.
    checkpoint_every: int = 100
    # How many members train at once: null = as many as the cluster holds.
    max_concurrent_members: Optional[int] = None
    register: bool = True
    registered_model_name: str = "retail-demand"
    # Fault drill: SIGKILL the last Ray Train worker once when it reaches this round (null = off).
    # The run must resume from its last checkpoint and finish; see tests/test_fault_tolerance.py.
    kill_worker_at_round: Optional[int] = None


class DomainType(str, Enum):
    int = "int"                  # inclusive integer range
    uniform = "uniform"
    loguniform = "loguniform"
    choice = "choice"


@dataclass
class DomainConfig:
    """One searched parameter: a range (low, high) or a list of values (choice)."""
    type: DomainType = MISSING
    low: Optional[float] = None
    high: Optional[float] = None
    values: Optional[List[Any]] = None


class SchedulerType(str, Enum):
    asha = "asha"
    fifo = "fifo"


class SearchAlgorithm(str, Enum):
    tpe = "tpe"
    random = "random"


class TrialMode(str, Enum):
    auto = "auto"
    local = "local"
    distributed = "distributed"


@dataclass
class SchedulerConfig:
    type: SchedulerType = SchedulerType.asha
    # ASHA, all in boosting rounds: the first rung, the rung spacing and the cap.
    grace_period: int = 200
    reduction_factor: float = 2.0
    # null = the largest num_boost_round the space can draw.
    max_t: Optional[int] = None


@dataclass
class SearchConfig:
    algorithm: SearchAlgorithm = SearchAlgorithm.tpe
    # TPE: random trials before the model proposes points.
    startup_trials: int = 10
    # null = the top-level seed.
    seed: Optional[int] = None


@dataclass
class TrialConfig:
    # local: one process per trial (cluster.cpus_per_worker threads); distributed: a Ray Train run
    # per trial with `workers` workers; auto: local unless the training split exceeds local_max_rows.
    mode: TrialMode = TrialMode.auto
    workers: int = 2
    local_max_rows: int = 1_000_000


@dataclass
class TuneWorkloadConfig:
    name: str = MISSING
    kind: ModelKind = ModelKind.xgboost
    num_samples: int = 20
    # null = as many as the cluster holds now.
    max_concurrent_trials: Optional[int] = None
    # Used when the space does not search num_boost_round.
    num_boost_round: int = 500
    # Fixed parameters under every trial's sampled ones.
    params: Dict[str, Any] = field(default_factory=dict)
    # name -> DomainConfig fields. Typed as Any so overrides can add (+workload.space.x={...})
    # and remove (~workload.space.x) parameters; training.tuning.space checks each entry.
    space: Dict[str, Any] = field(default_factory=dict)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    # Validation metric report (and checkpoint) every N rounds: what ASHA decides on.
    checkpoint_every: int = 50
    # Rows of the printed summary table.
    top: int = 10
    register: bool = True
    registered_model_name: str = "retail-demand-tuned"


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


@dataclass
class TextSyntheticConfig:
    rows: int = 4000
    seed: int = 7
    # Class names; a text's class decides which topic words it draws (2 = binary).
    classes: List[str] = field(default_factory=lambda: ["negative", "positive"])
    words_per_text: int = 16
    # Share of rows whose label is replaced by a random class: caps the reachable accuracy.
    label_noise: float = 0.05


@dataclass
class TextDataConfig:
    """Text classification (workload=bert): the label column is `data.target`."""
    column: str = "text"
    # The labels, in id order; a row with any other label is an error. null = the distinct labels, sorted.
    classes: Optional[List[str]] = None
    synthetic: TextSyntheticConfig = field(default_factory=TextSyntheticConfig)


@dataclass
class SyntheticConfig:
    rows: int = 200_000
    seed: int = 7
    partitions: int = 8
    users: int = 20_000
    products: int = 2_000


# ray.data.context.DEFAULT_RETRIED_IO_ERRORS (Ray 2.60) and a dropped connection: data.retried_io_errors.
RETRIED_IO_ERRORS = ("AWS Error INTERNAL_FAILURE", "AWS Error NETWORK_CONNECTION", "AWS Error SLOW_DOWN",
                     "AWS Error UNKNOWN (HTTP status 503)", "AWS Error SERVICE_UNAVAILABLE",
                     "Connection reset by peer")


@dataclass
class DataConfig:
    source: DataSource = DataSource.synthetic
    path: str = MISSING
    target: str = MISSING
    # null = every column except the target and `exclude`.
    features: Optional[List[str]] = None
    # null = string / dictionary / boolean columns among the features.
    categorical: Optional[List[str]] = None
    exclude: List[str] = field(default_factory=list)
    # null = the first timestamp-typed feature column, if any.
    timestamp: Optional[str] = None
    interactions: List[List[str]] = field(default_factory=list)
    # null = non-negative numeric columns whose training-split skewness exceeds skew_threshold.
    log1p: Optional[List[str]] = None
    skew_threshold: float = 2.0
    scale: bool = False
    max_categories: int = 1000
    validation_fraction: float = 0.2
    split_seed: int = 0
    # Keep the preprocessed splits in the object store so several members reuse them.
    materialize: bool = True
    # Read errors whose message contains one of these are transient: Ray Data retries that file
    # operation in its read task (10 attempts, exponential backoff up to 32 s); any other read
    # error fails the run at once with one line.
    retried_io_errors: List[str] = field(default_factory=lambda: list(RETRIED_IO_ERRORS))
    # A read task that still fails with one of those errors (Ray 2.60 opens a parquet file in the
    # task outside its per-operation retries) is rerun up to this many times, with backoff.
    read_retries: int = 3
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    text: TextDataConfig = field(default_factory=TextDataConfig)


@dataclass
class ClusterConfig:
    mode: ClusterMode = ClusterMode.local
    address: Optional[str] = None
    # Local mode only: CPUs/GPUs of the in-process Ray (null = this machine's).
    num_cpus: Optional[int] = None
    num_gpus: Optional[int] = None
    # Local mode: bytes of Ray's object store (ray.init(object_store_memory=...)); null = Ray's
    # default, 30% of the machine's memory. On Kubernetes the chart sets it per pod.
    object_store_memory: Optional[int] = None
    dashboard: bool = True
    # Ray Train workers per model and resources per worker: the only place they are set.
    num_workers: int = 2
    cpus_per_worker: int = 1
    gpus_per_worker: int = 0
    storage_path: str = "ray_results"
    max_failures: int = 1
    # How long to wait for the cluster to grow (autoscaling) before an impossible
    # request fails; 0 = fail at once.
    resource_wait_s: float = 0.0
    # Local mode, one worker per model: a member also uses the CPUs that finished members left
    # idle (on 2 cores the last LightGBM member then boosts on both). Models do not change.
    borrow_idle_cpus: bool = True
    # Ray Train's controller polls workers this often; every report waits for a poll
    # (default 2 s, which made each report cost ~1.6 s here).
    train_poll_interval_s: float = 0.1


@dataclass
class TrackingConfig:
    backend: TrackingBackend = TrackingBackend.local
    # Local: the SQLite store and artifacts live under this directory of the working dir.
    local_dir: str = "mlruns"
    # Server: explicit URI, else MLFLOW_TRACKING_URI.
    uri: Optional[str] = None
    experiment: str = "ray-training"


@dataclass
class PromoteConfig:
    """The champion/challenger gate (training/promote.py), run after a registered model when enabled."""
    enabled: bool = False
    # The registry alias that serving reads (models:/<name>@champion).
    alias: str = "champion"
    # rmse or mae (lower is better) or r2 (higher is better), on the same held-out rows for both.
    metric: str = "rmse"
    # How much better the challenger must be: a fraction of the champion's score
    # (0.01 = 1% lower RMSE) with relative=true, in metric units otherwise.
    margin: float = 0.0
    relative: bool = True
    # Held-out rows: null = the validation split of `data` (the rows this run held out);
    # else a parquet/csv file or directory with the same columns, used whole.
    data_path: Optional[str] = None


@dataclass
class PriceConfig:
    """What one unit of cluster capacity costs for an hour, to estimate a run's cost.

    Defaults: on-demand list prices of a general-purpose cloud VM split per vCPU and per GB
    (about $0.032 per vCPU-hour and $0.0043 per GB-hour) and a data-centre GPU ($2.50 per
    GPU-hour). Set your own: reserved, spot and negotiated prices differ a lot."""
    currency: str = "USD"
    cpu_hour: float = 0.032
    memory_gb_hour: float = 0.0043
    gpu_hour: float = 2.50
    # A flat price per node-hour on top (a managed cluster fee, a node's disk); 0 = none.
    node_hour: float = 0.0


@dataclass
class LogsConfig:
    """Ray driver and worker logs uploaded to the MLflow run before it ends (success or failure)."""
    enabled: bool = True
    # Each file keeps its last max_file_mb (the end of a log is where the error is).
    max_file_mb: float = 2.0
    # All files together; newest files first until the budget is spent.
    max_total_mb: float = 20.0


@dataclass
class ObservabilityConfig:
    """Cluster utilisation sampled during a run, resource hours and cost, logs kept in MLflow."""
    enabled: bool = True
    # Seconds between samples of the cluster's resources and utilisation.
    sample_interval_s: float = 5.0
    # Also write the samples to this CSV file (local path); null = MLflow only.
    csv_path: Optional[str] = None
    prices: PriceConfig = field(default_factory=PriceConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)


@dataclass
class Config:
    workload: Any = MISSING
    data: DataConfig = MISSING
    cluster: ClusterConfig = MISSING
    tracking: TrackingConfig = MISSING
    seed: int = 42
    # null = "<workload>-<UTC time>-<random>"; reuse a name only to resume that run.
    run_name: Optional[str] = None
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)


def _register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="workload", name="gbdt_schema", node=GBDTWorkloadConfig)
    cs.store(group="workload", name="tune_schema", node=TuneWorkloadConfig)
    cs.store(group="workload", name="bert_schema", node=BertWorkloadConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="cluster", name="cluster_schema", node=ClusterConfig)
    cs.store(group="tracking", name="tracking_schema", node=TrackingConfig)


def conf_dir() -> Path:
    """conf/ next to the package (source checkout), else ./conf (installed image), else $TRAINING_CONF_DIR."""
    candidates = [os.environ.get("TRAINING_CONF_DIR"), Path(__file__).resolve().parent.parent / "conf",
                  Path.cwd() / "conf"]
    for c in candidates:
        if c and (Path(c) / "config.yaml").is_file():
            return Path(c).resolve()
    raise UserError("cannot find the config tree conf/ (set TRAINING_CONF_DIR to its path)")


def _one_line(exc: BaseException) -> str:
    """Hydra/OmegaConf errors span several lines; keep the ones that name the key and the problem."""
    parts: List[str] = []
    while exc is not None:
        for line in str(exc).splitlines():
            line = line.strip()
            if line.startswith("Config search path"):
                break  # what follows is Hydra's search path, noise for a user
            if (line and not line.startswith(_NOISE) and not line.endswith("_schema")
                    and line not in parts):
                parts.append(line)
        exc = exc.__cause__
    return "; ".join(parts).replace(":;", ":")


_NOISE = ("object_type", "To append", "reference_type", "Set the environment")


def load(overrides: List[str]) -> Any:
    """Compose conf/ with `overrides`, check it against the schema and return the typed config."""
    _register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
        _reject_appended_keys(cfg)
        typed = OmegaConf.to_object(cfg)
    except UserError:
        raise
    except Exception as exc:  # hydra/omegaconf raise many types; all are config mistakes here
        raise UserError(f"bad config: {_one_line(exc)}") from None
    validate(typed)
    return typed


def _reject_appended_keys(cfg: Any) -> None:
    """`+key=value` bypasses struct mode; re-merge every node into its own schema to catch it."""
    known = {f for f in Config.__dataclass_fields__}
    for key in cfg:
        if key not in known:
            raise UserError(f"bad config: unknown key '{key}' (known: {', '.join(sorted(known))})")
    for key in known:
        node = cfg[key]
        schema = OmegaConf.get_type(node)
        if dataclasses.is_dataclass(schema):
            try:
                OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.to_container(node))
            except Exception as exc:
                raise UserError(f"bad config: {_one_line(exc)}".replace("full_key: ", f"full_key: {key}.")) from None


def validate(cfg: Config) -> None:
    """Checks the schema's types cannot express; each names the key and what is accepted."""
    c = cfg.cluster
    if c.num_workers < 1:
        raise UserError(f"cluster.num_workers must be >= 1, got {c.num_workers}")
    if c.cpus_per_worker < 1:
        raise UserError(f"cluster.cpus_per_worker must be >= 1, got {c.cpus_per_worker}")
    if c.gpus_per_worker < 0:
        raise UserError(f"cluster.gpus_per_worker must be >= 0, got {c.gpus_per_worker}")
    if c.max_failures < 0:
        raise UserError(f"cluster.max_failures must be >= 0, got {c.max_failures}")
    if c.object_store_memory is not None and c.object_store_memory < 75 * 2**20:
        raise UserError(f"cluster.object_store_memory must be >= 78643200 bytes (75 MiB, Ray's minimum) or null "
                        f"(30% of the machine's memory), got {c.object_store_memory}")
    if c.mode is ClusterMode.address and not c.address:
        raise UserError("cluster.address is required with cluster=address (use 'auto' inside a RayJob)")
    d = cfg.data
    # A key in a URI ends up in MLflow params, logs and error lines; the value is not echoed here.
    for key, uri in (("data.path", d.path), ("cluster.storage_path", c.storage_path),
                     ("promote.data_path", cfg.promote.data_path)):
        if uri and _CREDENTIAL_IN_URI.search(uri):
            raise UserError(f"{key} carries credentials in its URI; pass them as environment variables "
                            "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, from a Secret on Kubernetes) instead")
    if not 0.0 < d.validation_fraction < 1.0:
        raise UserError(f"data.validation_fraction must be between 0 and 1, got {d.validation_fraction}")
    if d.read_retries < 0:
        raise UserError(f"data.read_retries must be >= 0, got {d.read_retries}")
    if d.synthetic.rows < 100:
        raise UserError(f"data.synthetic.rows must be >= 100, got {d.synthetic.rows}")
    for pair in d.interactions:
        if len(pair) != 2:
            raise UserError(f"data.interactions entries must be pairs of columns, got {list(pair)}")
    if cfg.tracking.backend is TrackingBackend.server and not (cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")):
        raise UserError("tracking=server needs tracking.uri=... or MLFLOW_TRACKING_URI")
    if isinstance(cfg.workload, GBDTWorkloadConfig):
        _validate_gbdt(cfg.workload)
    if isinstance(cfg.workload, TuneWorkloadConfig):
        _validate_tune(cfg.workload)
    if isinstance(cfg.workload, BertWorkloadConfig):
        _validate_bert(cfg.workload, cfg)
    _validate_promote(cfg.promote)
    _validate_observability(cfg.observability)


def _validate_observability(o: ObservabilityConfig) -> None:
    if o.sample_interval_s <= 0:
        raise UserError(f"observability.sample_interval_s must be > 0, got {o.sample_interval_s}")
    for key in ("cpu_hour", "memory_gb_hour", "gpu_hour", "node_hour"):
        price = getattr(o.prices, key)
        if price < 0:
            raise UserError(f"observability.prices.{key} must be >= 0 (a price per hour), got {price}")
    for key in ("max_file_mb", "max_total_mb"):
        if getattr(o.logs, key) <= 0:
            raise UserError(f"observability.logs.{key} must be > 0, got {getattr(o.logs, key)}")


def _validate_promote(p: PromoteConfig) -> None:
    if p.metric not in PROMOTE_METRICS:
        raise UserError(f"promote.metric must be one of {', '.join(PROMOTE_METRICS)}, got '{p.metric}'")
    if p.margin < 0:
        raise UserError(f"promote.margin must be >= 0, got {p.margin}")
    if not p.alias or not p.alias.replace("_", "").replace("-", "").isalnum():
        raise UserError(f"promote.alias must be letters, digits, '-' or '_', got '{p.alias}'")


_CREDENTIAL_IN_URI = re.compile(r"(access_key|secret_key|session_token|password)=|://[^/@?]+:[^/@?]+@", re.I)

# metric -> True when higher is better
PROMOTE_METRICS = {"rmse": False, "mae": False, "r2": True}


def _validate_gbdt(w: GBDTWorkloadConfig) -> None:
    if not w.members:
        raise UserError(f"workload.members is empty: workload={w.name} needs at least one model")
    names = [m.name for m in w.members]
    if len(set(names)) != len(names):
        raise UserError(f"workload.members names must be unique, got {names}")
    for i, m in enumerate(w.members):
        if m.num_boost_round < 1:
            raise UserError(f"workload.members.{i}.num_boost_round must be >= 1, got {m.num_boost_round}")
    if w.checkpoint_every < 1:
        raise UserError(f"workload.checkpoint_every must be >= 1, got {w.checkpoint_every}")


def _validate_tune(w: TuneWorkloadConfig) -> None:
    from training.tuning.space import validate_space

    if w.num_samples < 1:
        raise UserError(f"workload.num_samples must be >= 1, got {w.num_samples}")
    if w.max_concurrent_trials is not None and w.max_concurrent_trials < 1:
        raise UserError(f"workload.max_concurrent_trials must be >= 1 or null (as many as fit), "
                        f"got {w.max_concurrent_trials}")
    for key in ("num_boost_round", "checkpoint_every", "top"):
        if getattr(w, key) < 1:
            raise UserError(f"workload.{key} must be >= 1, got {getattr(w, key)}")
    if w.trial.workers < 1:
        raise UserError(f"workload.trial.workers must be >= 1, got {w.trial.workers}")
    s = w.scheduler
    if s.grace_period < 1:
        raise UserError(f"workload.scheduler.grace_period must be >= 1 round, got {s.grace_period}")
    if s.reduction_factor <= 1:
        raise UserError(f"workload.scheduler.reduction_factor must be > 1, got {s.reduction_factor}")
    if s.max_t is not None and s.max_t < s.grace_period:
        raise UserError(f"workload.scheduler.max_t={s.max_t} must be >= grace_period={s.grace_period}")
    validate_space(w.kind.value, w.space)


def _validate_bert(w: BertWorkloadConfig, cfg: Config) -> None:
    for key in ("max_seq_length", "epochs", "batch_size", "grad_accum_steps", "log_every_steps"):
        if getattr(w, key) < 1:
            raise UserError(f"workload.{key} must be >= 1, got {getattr(w, key)}")
    if w.learning_rate is not None and w.learning_rate <= 0:
        raise UserError(f"workload.learning_rate must be > 0, got {w.learning_rate}")
    if not 0.0 <= w.warmup_fraction < 1.0:
        raise UserError(f"workload.warmup_fraction must be in [0, 1), got {w.warmup_fraction}")
    a = w.model.from_config
    if w.model.path is None and a.hidden_size % a.num_attention_heads:
        raise UserError(f"workload.model.from_config.hidden_size={a.hidden_size} must be a multiple of "
                        f"num_attention_heads={a.num_attention_heads}")
    if w.precision in (Precision.bf16, Precision.fp16) and cfg.cluster.gpus_per_worker == 0:
        raise UserError(f"workload.precision={w.precision.value} needs GPU workers (cluster.gpus_per_worker >= 1); "
                        "CPU workers train in fp32 (precision=auto or fp32)")
    if cfg.data.source is DataSource.synthetic:
        raise UserError("workload=bert needs text data: data=text_synthetic, or data=parquet/csv/jsonl with "
                        "data.text.column and data.target (the label column)")
    s = cfg.data.text.synthetic
    if cfg.data.source is DataSource.text_synthetic and (len(set(s.classes)) < 2 or s.rows < 20):
        raise UserError(f"data.text.synthetic needs >= 2 distinct classes and >= 20 rows, got "
                        f"classes={list(s.classes)}, rows={s.rows}")


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def flatten(cfg: Config) -> Dict[str, Any]:
    """Dotted keys -> values, for MLflow params."""
    out: Dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, list) and node and isinstance(node[0], dict):
            for i, v in enumerate(node):
                walk(f"{prefix}.{i}", v)
        else:
            out[prefix] = node

    walk("", OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True))
    return out
