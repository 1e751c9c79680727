"""From `data` config to preprocessed train/validation Ray Datasets and the fitted feature pipeline."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Dict, List

import numpy as np
import pandas as pd
import ray.data

from training.data.schema import DataConfig
from training.data import sources
from training.data.features import Columns, FeaturePipeline, block_stats, resolve_columns, split_batch
from training.data.progress import StageProgress
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
    # Every file is read here: a permanent read error is one line.
    with sources.reading(cfg), StageProgress(f"reading {cfg.path}"):
        if cfg.materialize:
            raw = raw.materialize()  # read the source once; the split, fit and transforms reuse it
        rows = raw.count()
    if rows == 0:
        raise UserError(f"dataset at {cfg.path} is empty (no rows)")
    cols = resolve_columns(cfg, raw.schema())
    pipeline = profile(raw, cfg, cols, rows)  # one pass: the data checks, and the fit on training rows
    log.info("data: %s rows, %d features (%d categorical%s) from %s", f"{rows:,}", len(cols.features),
             len(cols.categorical), f", time column '{cols.timestamp}'" if cols.timestamp else "", cfg.path)

    def split(validation: bool) -> ray.data.Dataset:
        return raw.map_batches(split_batch, batch_format="pandas", batch_size=None,
                               fn_kwargs=dict(fraction=cfg.validation_fraction, seed=cfg.split_seed,
                                              validation=validation))

    train_raw, valid_raw = split(False), split(True)
    train = train_raw.map_batches(pipeline.transform, batch_format="pandas", batch_size=None)
    valid = valid_raw.map_batches(pipeline.transform, batch_format="pandas", batch_size=None)
    with StageProgress("splitting and transforming"):
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


def profile(raw: ray.data.Dataset, cfg: DataConfig, cols: Columns, rows: int) -> FeaturePipeline:
    """One pass over the raw rows: per block, the finite-value counts the data checks need (all
    rows) and the feature statistics of its training rows (the split is by row content, so a
    block's training rows are the same whichever pass computes them). No leakage: validation
    rows count only towards the data checks."""
    columns = [cfg.target, *cols.numeric]
    interactions = [list(p) for p in cfg.interactions]
    fraction, seed = cfg.validation_fraction, cfg.split_seed

    def block(batch: pd.DataFrame) -> pd.DataFrame:
        finite = {}
        for c in columns:
            x = pd.to_numeric(batch[c], errors="coerce").to_numpy("float64")
            finite[c] = [int(np.isinf(x).sum()), int(np.isfinite(x).sum())]
        train = split_batch(batch, fraction, seed, validation=False)
        return pd.DataFrame({"profile": [json.dumps({"finite": finite, "rows": len(batch),
                                                     "stats": block_stats(train, cols, interactions)})]})

    parts = []
    with StageProgress("checking values and fitting features", total_rows=rows) as progress:
        for row in raw.map_batches(block, batch_format="pandas", batch_size=None).iter_rows():
            parts.append(json.loads(row["profile"]))
            progress.advance(parts[-1]["rows"])
    totals = {c: [sum(p["finite"][c][i] for p in parts) for i in (0, 1)] for c in columns}
    check_finite(totals, cfg.target, cols.numeric, rows)
    return FeaturePipeline.from_stats([p["stats"] for p in parts], cfg, cols)


def check_finite(totals: Dict[str, List[int]], target: str, numeric: List[str], rows: int) -> None:
    """A one-line data error, before training, for what the boosting libraries cannot take: an
    infinite target, a target with no value at all, an infinite numeric feature (missing
    values, NaN, are fine: both libraries treat them as missing). `totals`: column -> [infinite,
    finite] counts."""
    inf, finite = totals[target]
    if inf:
        raise UserError(f"data.target '{target}' has {inf:,} infinite value(s) in {rows:,} rows; a target must be "
                        "finite: fix or drop those rows")
    if finite == 0:
        raise UserError(f"data.target '{target}' has no finite value in {rows:,} rows (all missing)")
    bad = [f"'{c}' ({totals[c][0]:,} rows)" for c in numeric if totals[c][0]]
    if bad:
        raise UserError(f"feature column(s) with infinite values: {', '.join(bad)}; replace them with a finite "
                        "or missing value, or leave the column out (data.exclude)")
