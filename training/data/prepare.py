"""From `data` config to preprocessed train/validation Ray Datasets and the fitted feature pipeline."""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa
import ray.data

from training.data.schema import DataConfig
from training.data import holding, sources
from training.data.features import (Columns, FeaturePipeline, block_stats, in_validation, resolve_columns,
                                     split_batch)
from training.data.progress import StageProgress
from training.errors import UserError
from training.runtime.memory import data_task

log = logging.getLogger(__name__)

EXAMPLE_ROWS = 5
# Raw rows are held in the object store while the passes over them run only if they take at
# most this share of it: the float32 splits need room beside them (about two thirds of the raw
# size for typical transaction rows), and holding more makes Ray spill to disk.
RAW_SHARE = 0.4
# Sources from this size up are transformed into both splits at once (the validation split's pass
# from a thread): each pass starts an executor of its own, a fixed cost that on small data
# outweighs the CPU time the other pass would have left idle at the end of the first.
SPLITS_AT_ONCE_BYTES = 64 * 2**20


@dataclass
class PreparedData:
    train: ray.data.Dataset          # preprocessed features + target
    valid: ray.data.Dataset
    valid_raw: ray.data.Dataset      # raw validation rows, lazy: read again by a promotion gate
    example: pd.DataFrame            # a few raw validation rows: the registered model's input example
    pipeline: FeaturePipeline
    rows: int
    train_rows: int
    valid_rows: int
    seconds: float
    materialized: bool


def prepare(cfg: DataConfig) -> PreparedData:
    """The raw rows are read, checked, profiled (the feature fit on the training rows), split and
    transformed into float32 features; with `materialize`, the two splits are held in the
    object store for the workers (and for every member and trial that reads them).

    A source that fits a share of the object store is read once and its raw rows held while
    the other passes run (RAW_SHARE); a larger one is read again by each pass, streaming, so that
    no raw rows are held at all: the split and the transform then run in the read's own task."""
    t0 = time.perf_counter()
    raw = lazy_raw = sources.read(cfg)
    cols = resolve_columns(cfg, raw.schema())
    # Without `materialize` nothing is held: no estimate (the progress lines then have no ETA).
    size = holding.measure(cfg) if cfg.materialize else holding.SourceSize(None, 0)
    rows_hint, raw_bytes = size.rows, size.bytes
    hold_raw = cfg.materialize and raw_bytes <= RAW_SHARE * ray.cluster_resources().get("object_store_memory", 0)
    with sources.reading(cfg):  # every file is read here: a permanent read error is one line
        if hold_raw:
            with StageProgress(f"reading {cfg.path}"):
                raw = holding.hold(cfg, raw, size)
        pipeline, rows, example = profile(raw, cfg, cols, rows_hint)
    if rows == 0:
        raise UserError(f"dataset at {cfg.path} is empty (no rows)")
    log.info("data: %s rows, %d features (%d categorical%s) from %s%s", f"{rows:,}", len(cols.features),
             len(cols.categorical), f", time column '{cols.timestamp}'" if cols.timestamp else "", cfg.path,
             "" if hold_raw or not cfg.materialize else
             f" (about {raw_bytes / 2**30:.1f} GiB: read again by each pass rather than held)")
    split = dict(fraction=cfg.validation_fraction, seed=cfg.split_seed)

    def prepared(validation: bool) -> ray.data.Dataset:
        # One function per block, so that the read, the split and the transform are one task
        # and the block's raw rows never reach the object store.
        return raw.map_batches(_split_and_transform, batch_format="pandas", batch_size=None,
                               fn_kwargs=dict(pipeline=pipeline, validation=validation, **split))

    train, valid = prepared(False), prepared(True)
    # Raw validation rows for a promotion gate, read again from the source if one asks: the
    # held raw rows are freed once the splits are materialized.
    valid_raw = lazy_raw.map_batches(data_task(split_batch), batch_format="pandas", batch_size=None,
                                     fn_kwargs=dict(validation=True, **split))
    with sources.reading(cfg), StageProgress("splitting and transforming"):
        if cfg.materialize:
            train, valid = (_materialize_both(train, valid) if raw_bytes >= SPLITS_AT_ONCE_BYTES
                            else (train.materialize(), valid.materialize()))
        train_rows, valid_rows = train.count(), valid.count()
    if hold_raw:
        # Ray Data's plan objects hold the held raw dataset in reference cycles: collect them
        # now, so that its blocks leave the object store before training starts, not at some
        # later garbage collection.
        del raw
        gc.collect()
    if train_rows == 0 or valid_rows == 0:
        raise UserError(f"the {'training' if train_rows == 0 else 'validation'} split is empty "
                        f"({rows} rows with a target; adjust data.validation_fraction or add rows)")
    seconds = time.perf_counter() - t0
    log.info("features: %d after engineering (log1p: %s); split %s train / %s validation rows in %.1fs",
             len(pipeline.output_features), ", ".join(pipeline.log1p) or "none",
             f"{train_rows:,}", f"{valid_rows:,}", seconds)
    return PreparedData(train, valid, valid_raw, example, pipeline, rows, train_rows, valid_rows, seconds,
                        cfg.materialize)


def _materialize_both(train: ray.data.Dataset, valid: ray.data.Dataset) -> Tuple[ray.data.Dataset, ray.data.Dataset]:
    """Both splits at once: one after the other, the last blocks of each pass would leave CPUs
    idle while the next pass has not started. The validation split's pass runs in a daemon
    thread: an error in the training split's (Ctrl-C included) ends the run without waiting."""
    outcome: Dict[str, object] = {}

    def materialize_valid() -> None:
        try:
            outcome["valid"] = valid.materialize()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    dataset_log = logging.getLogger("ray.data.dataset")
    dataset_log.addFilter(_no_cpu_warning)
    try:
        thread = threading.Thread(target=materialize_valid, name="valid-split", daemon=True)
        thread.start()
        train = train.materialize()
        thread.join()
    finally:
        dataset_log.removeFilter(_no_cpu_warning)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return train, outcome["valid"]  # type: ignore[return-value]


def _no_cpu_warning(record: logging.LogRecord) -> bool:
    """Ray Data warns that a job "will hang" when it starts while no CPU is free: here the other
    split's tasks hold them, and free them as they end."""
    return "does not have any available CPUs" not in record.getMessage()


@data_task
def _split_and_transform(batch: pd.DataFrame, pipeline: FeaturePipeline, fraction: float, seed: int,
                         validation: bool) -> pd.DataFrame:
    return pipeline.transform(split_batch(batch, fraction, seed, validation))


def profile(raw: ray.data.Dataset, cfg: DataConfig, cols: Columns,
            rows_hint: Optional[int] = None) -> Tuple[Optional[FeaturePipeline], int, pd.DataFrame]:
    """One pass over the raw rows. Per block: the finite-value counts the data checks need (all
    rows), the feature statistics of its training rows (the split is by row content, so a
    block's training rows are the same whichever pass computes them), its row count, and a few
    of its validation rows for the model's input example (as Arrow, so that their types arrive
    unchanged). No leakage: validation rows count only towards the data checks."""
    columns = [cfg.target, *cols.numeric]
    interactions = [list(p) for p in cfg.interactions]
    fraction, seed = cfg.validation_fraction, cfg.split_seed

    @data_task
    def block(batch: pd.DataFrame) -> pd.DataFrame:
        finite = {}
        for c in columns:
            x = pd.to_numeric(batch[c], errors="coerce").to_numpy("float64")
            finite[c] = [int(np.isinf(x).sum()), int(np.isfinite(x).sum())]
        validation = in_validation(batch, fraction, seed)
        train, example = batch[~validation], batch[validation].head(EXAMPLE_ROWS)
        return pd.DataFrame({"profile": [json.dumps({"finite": finite, "rows": len(batch),
                                                     "stats": block_stats(train, cols, interactions)})],
                             "example": [_arrow_bytes(example)]})

    parts, examples = [], []
    with StageProgress("checking values and fitting features", rows_hint) as progress:
        for row in raw.map_batches(block, batch_format="pandas", batch_size=None).iter_rows():
            parts.append(json.loads(row["profile"]))
            examples.append(row["example"])
            progress.advance(parts[-1]["rows"])
    rows = sum(p["rows"] for p in parts)
    if rows == 0:
        return None, 0, pd.DataFrame()
    totals = {c: [sum(p["finite"][c][i] for p in parts) for i in (0, 1)] for c in columns}
    check_finite(totals, cfg.target, cols.numeric, rows)
    example = next((t for t in map(_from_arrow_bytes, examples) if len(t)), _from_arrow_bytes(examples[0]))
    return FeaturePipeline.from_stats([p["stats"] for p in parts], cfg, cols), rows, example


def _arrow_bytes(df: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(df, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_arrow_bytes(data: bytes) -> pd.DataFrame:
    return pa.ipc.open_stream(data).read_all().to_pandas()


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
