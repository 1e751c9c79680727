"""From `data` config to preprocessed train/validation Ray Datasets and the fitted feature pipeline."""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass
from typing import Dict, Tuple

import pandas as pd
import pyarrow as pa
import ray.data

from training.data.schema import DataConfig
from training.data import holding, sources
from training.data.columns import resolve_columns
from training.data.features import FeaturePipeline
from training.data.split import split_batch
from training.data.profiling import profile, profile_held
from training.data.progress import StageProgress
from training.errors import UserError
from training.runtime.memory import data_task

log = logging.getLogger(__name__)

# Raw rows are held in the object store while the passes over them run only if they take at
# most this share of it: the float32 splits need room beside them (about two thirds of the raw
# size for typical transaction rows), and holding more makes Ray spill to disk.
RAW_SHARE = 0.4
# Sources read again by each pass (not held) from this size up are transformed into both splits
# at once (the validation split's pass from a thread): each pass starts an executor of its own, a
# fixed cost that on small data outweighs the CPU time the other pass would have left idle at the
# end of the first.
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
    the other passes run (RAW_SHARE), each pass a Ray task per held block (training/data/holding.py);
    a larger one is read again by each pass, by Ray Data, streaming, so that no raw rows are held
    at all: the split and the transform then run in the read's own task."""
    t0 = time.perf_counter()
    raw = sources.read(cfg)
    cols = resolve_columns(cfg, raw.schema())
    # Without `materialize` nothing is held: no estimate (the progress lines then have no ETA).
    size = holding.measure(cfg) if cfg.materialize else holding.SourceSize(None, 0)
    rows_hint, raw_bytes = size.rows, size.bytes
    hold_raw = cfg.materialize and raw_bytes <= RAW_SHARE * ray.cluster_resources().get("object_store_memory", 0)
    split = dict(fraction=cfg.validation_fraction, seed=cfg.split_seed)
    with sources.reading(cfg):  # every file is read here: a permanent read error is one line
        if hold_raw:
            blocks = holding.hold(cfg, raw, size)
            pipeline, rows, example = profile_held(blocks, cfg, cols, rows_hint)
        else:
            pipeline, rows, example = profile(raw, cfg, cols, rows_hint)
    if rows == 0:
        raise UserError(f"dataset at {cfg.path} is empty (no rows)")
    log.info("data: %s rows, %d features (%d categorical%s) from %s%s", f"{rows:,}", len(cols.features),
             len(cols.categorical), f", time column '{cols.timestamp}'" if cols.timestamp else "", cfg.path,
             "" if hold_raw or not cfg.materialize else
             f" (about {raw_bytes / 2**30:.1f} GiB: read again by each pass rather than held)")
    # Raw validation rows for a promotion gate, read again from the source if one asks: the
    # held raw rows are freed once the splits are materialized.
    valid_raw = raw.map_batches(data_task(split_batch), batch_format="pandas", batch_size=None,
                                fn_kwargs=dict(validation=True, **split))
    with sources.reading(cfg), StageProgress("splitting and transforming"):
        if hold_raw:
            # Both splits' tasks at once: the training split's last blocks leave no CPU idle.
            splits = [holding.map_blocks(blocks, _split_and_transform_arrow, pipeline=pipeline, validation=v, **split)
                      for v in (False, True)]
            train, valid = (ray.data.from_arrow_refs(refs) for refs in splits)
        else:
            train, valid = (raw.map_batches(data_task(_split_and_transform), batch_format="pandas", batch_size=None,
                                            fn_kwargs=dict(pipeline=pipeline, validation=v, **split))
                            for v in (False, True))
            if cfg.materialize:
                train, valid = (_materialize_both(train, valid) if raw_bytes >= SPLITS_AT_ONCE_BYTES
                                else (train.materialize(), valid.materialize()))
        train_rows, valid_rows = train.count(), valid.count()
    if hold_raw:
        # The held blocks leave the object store with their last reference, before training
        # starts (the tasks' references go as they end; a collection catches any cycle).
        del blocks
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


def _split_and_transform(batch: pd.DataFrame, pipeline: FeaturePipeline, fraction: float, seed: int,
                         validation: bool) -> pd.DataFrame:
    return pipeline.transform(split_batch(batch, fraction, seed, validation))


def _split_and_transform_arrow(batch: pd.DataFrame, **kwargs) -> pa.Table:
    """The split's float32 columns as an Arrow block: the workers read Arrow blocks in place."""
    return pa.Table.from_pandas(_split_and_transform(batch, **kwargs), preserve_index=False)
