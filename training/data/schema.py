"""The `data` section of the config: where the rows come from and how they become features.

Plain dataclasses (no Hydra import), registered as a Hydra schema by training/config.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional

from omegaconf import MISSING

from training.errors import UserError
from training.settings import changed_fields, check_seed


class DataSource(str, Enum):
    synthetic = "synthetic"
    parquet = "parquet"
    csv = "csv"
    jsonl = "jsonl"                    # JSON lines: one object per line
    text_synthetic = "text_synthetic"  # generated text-classification data (workload=bert)


@dataclass
class SyntheticConfig:
    rows: int = 200_000
    seed: int = 7
    partitions: int = 8
    users: int = 20_000
    products: int = 2_000


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


# ray.data.context.DEFAULT_RETRIED_IO_ERRORS (Ray 2.60) and a dropped connection: data.retried_io_errors.
RETRIED_IO_ERRORS = ("AWS Error INTERNAL_FAILURE", "AWS Error NETWORK_CONNECTION", "AWS Error SLOW_DOWN",
                     "AWS Error UNKNOWN (HTTP status 503)", "AWS Error SERVICE_UNAVAILABLE",
                     "Connection reset by peer")

# A key in a URI ends up in MLflow params, logs and error lines.
CREDENTIAL_IN_URI = re.compile(r"(access_key|secret_key|session_token|password)=|://[^/@?]+:[^/@?]+@", re.I)


def reject_credentials(key: str, uri: Optional[str]) -> None:
    """A one-line error when a URI carries credentials; the value itself is not echoed."""
    if uri and CREDENTIAL_IN_URI.search(uri):
        raise UserError(f"{key} carries credentials in its URI; pass them as environment variables "
                        "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, from a Secret on Kubernetes) instead")


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

    # What the tabular feature pipeline (training/data/features.py) reads; text data never meets it.
    FEATURE_OPTIONS = ("features", "categorical", "exclude", "timestamp", "interactions", "log1p", "skew_threshold",
                       "scale", "max_categories", "materialize")

    def feature_options_set(self) -> List[str]:
        """The feature pipeline's options given a value other than the schema's default."""
        return changed_fields(self, self.FEATURE_OPTIONS)

    def check(self) -> None:
        tabular_generator = changed_fields(self.synthetic) if self.source is not DataSource.synthetic else []
        if tabular_generator:
            key = tabular_generator[0]
            hint = f"; generated text takes data.text.synthetic.{key}" if (
                self.source is DataSource.text_synthetic and hasattr(self.text.synthetic, key)) else ""
            raise UserError(f"data.synthetic.{key} applies to data=synthetic only (this source is "
                            f"data={self.source.value}{hint})")
        text_generator = changed_fields(self.text.synthetic) if self.source is not DataSource.text_synthetic else []
        if text_generator:
            raise UserError(f"data.text.synthetic.{text_generator[0]} applies to data=text_synthetic only (this "
                            f"source is data={self.source.value})")
        check_seed("data.synthetic.seed", self.synthetic.seed)
        check_seed("data.text.synthetic.seed", self.text.synthetic.seed)
        if not 0.0 < self.validation_fraction < 1.0:
            raise UserError(f"data.validation_fraction must be between 0 and 1, got {self.validation_fraction}")
        if self.read_retries < 0:
            raise UserError(f"data.read_retries must be >= 0, got {self.read_retries}")
        if self.max_categories < 1:
            raise UserError(f"data.max_categories must be >= 1, got {self.max_categories}")
        if self.synthetic.rows < 100:
            raise UserError(f"data.synthetic.rows must be >= 100, got {self.synthetic.rows}")
        for key in ("partitions", "users", "products"):
            if getattr(self.synthetic, key) < 1:
                raise UserError(f"data.synthetic.{key} must be >= 1, got {getattr(self.synthetic, key)}")
        overlap = [c for c in self.exclude if c in (self.features or [])]
        if overlap:
            raise UserError(f"data.exclude names {', '.join(overlap)}, which data.features lists: exclude "
                            "applies only when data.features is null (every column but the target)")
        if self.log1p is not None and changed_fields(self, ("skew_threshold",)):
            raise UserError("data.skew_threshold picks the log1p columns only when data.log1p is null; "
                            f"data.log1p lists them ({', '.join(self.log1p) or 'none'})")
        for pair in self.interactions:
            if len(pair) != 2:
                raise UserError(f"data.interactions entries must be pairs of columns, got {list(pair)}")
