"""From `data` config to preprocessed train/validation Ray Datasets and the fitted feature pipeline."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import ray.data

from training.data.schema import DataConfig
from training.data import sources
from training.data.features import FeaturePipeline, resolve_columns, split_batch
from training.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    train: ray.data.Dataset          # preprocessed features + target
    valid: ray.data.Dataset
    valid_raw: ray.data.Dataset      # raw validation rows: input examples, promotion gates
    pipeline: FeaturePipeline
    rows: int
    train_rows: int
    valid_rows: int
    seconds: float
    materialized: bool


def prepare(cfg: DataConfig) -> PreparedData:
    t0 = time.perf_counter()
    raw = sources.read(cfg)
    with sources.reading(cfg):  # every file is read here: a permanent read error is one line
        if cfg.materialize:
            raw = raw.materialize()  # read the source once; the split, fit and transforms reuse it
        rows = raw.count()
    if rows == 0:
        raise UserError(f"dataset at {cfg.path} is empty (no rows)")
    cols = resolve_columns(cfg, raw.schema())
    check_finite(raw, cols, cfg.target, rows)
    log.info("data: %s rows, %d features (%d categorical%s) from %s", f"{rows:,}", len(cols.features),
             len(cols.categorical), f", time column '{cols.timestamp}'" if cols.timestamp else "", cfg.path)

    def split(validation: bool) -> ray.data.Dataset:
        return raw.map_batches(split_batch, batch_format="pandas", batch_size=None,
                               fn_kwargs=dict(fraction=cfg.validation_fraction, seed=cfg.split_seed,
                                              validation=validation))

    train_raw, valid_raw = split(False), split(True)
    pipeline = FeaturePipeline.fit(train_raw, cfg, cols)  # training split only: no leakage
    train = train_raw.map_batches(transformed, batch_format="pandas", batch_size=None, fn_args=(pipeline,))
    valid = valid_raw.map_batches(transformed, batch_format="pandas", batch_size=None, fn_args=(pipeline,))
    if cfg.materialize:
        train, valid = train.materialize(), valid.materialize()
    train_rows, valid_rows = train.count(), valid.count()
    if train_rows == 0 or valid_rows == 0:
        raise UserError(f"the {'training' if train_rows == 0 else 'validation'} split is empty "
                        f"({rows} rows with a target; adjust data.validation_fraction or add rows)")
    seconds = time.perf_counter() - t0
    log.info("features: %d after engineering (log1p: %s); split %s train / %s validation rows in %.1fs",
             len(pipeline.output_features), ", ".join(pipeline.log1p) or "none",
             f"{train_rows:,}", f"{valid_rows:,}", seconds)
    return PreparedData(train, valid, valid_raw, pipeline, rows, train_rows, valid_rows, seconds,
                        cfg.materialize)


def transformed(batch: pd.DataFrame, pipeline: FeaturePipeline) -> pa.Table:
    """The pipeline's float32 columns as an Arrow block: the GBDT workers then read their shard
    from the object store without a copy (training/gbdt/shard.py). NaN stays NaN (missing)."""
    out = pipeline.transform(batch)
    return pa.table({c: out[c].to_numpy() for c in out.columns})


def check_finite(raw: ray.data.Dataset, cols, target: str, rows: int) -> None:
    """A one-line data error, before training, for what the boosting libraries cannot take: an
    infinite target, a target with no value at all, an infinite numeric feature (missing
    values, NaN, are fine: both libraries treat them as missing)."""
    import json

    import numpy as np
    import pandas as pd

    columns = [target, *cols.numeric]

    def count(batch: pd.DataFrame) -> pd.DataFrame:
        out = {}
        for c in columns:
            x = pd.to_numeric(batch[c], errors="coerce").to_numpy("float64")
            out[c] = [int(np.isinf(x).sum()), int(np.isfinite(x).sum())]
        return pd.DataFrame({"counts": [json.dumps(out)]})

    totals = {c: [0, 0] for c in columns}
    for part in raw.map_batches(count, batch_format="pandas", batch_size=None).take_all():
        for c, (inf, finite) in json.loads(part["counts"]).items():
            totals[c][0] += inf
            totals[c][1] += finite
    inf, finite = totals[target]
    if inf:
        raise UserError(f"data.target '{target}' has {inf:,} infinite value(s) in {rows:,} rows; a target must be "
                        "finite: fix or drop those rows")
    if finite == 0:
        raise UserError(f"data.target '{target}' has no finite value in {rows:,} rows (all missing)")
    bad = [f"'{c}' ({totals[c][0]:,} rows)" for c in cols.numeric if totals[c][0]]
    if bad:
        raise UserError(f"feature column(s) with infinite values: {', '.join(bad)}; replace them with a finite "
                        "or missing value, or leave the column out (data.exclude)")
