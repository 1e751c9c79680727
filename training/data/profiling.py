"""The check-and-fit pass over the raw rows: one pass, per block, for the data checks, the
feature statistics of the training rows and the model's input example.

Per block: the finite-value counts the data checks need (all rows), the feature statistics of
its training rows (the split is by row content, so a block's training rows are the same
whichever pass computes them), its row count, and a few of its validation rows for the model's
input example (as Arrow, so that their types arrive unchanged). No leakage: validation rows
count only towards the data checks; rows without a target value, which neither train nor score,
count towards nothing else. The pass runs as Ray tasks over the blocks of a source held
in the object store, or as a Ray Data pass over a source read again by each pass.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa

from training.data import holding
from training.data.columns import Columns
from training.data.features import FeaturePipeline, block_stats
from training.data.split import in_validation
from training.data.progress import StageProgress
from training.data.schema import DataConfig
from training.errors import UserError
from training.runtime.memory import data_task

log = logging.getLogger(__name__)

EXAMPLE_ROWS = 5


def profile_block(batch: pd.DataFrame, cfg: DataConfig, cols: Columns) -> Dict[str, Any]:
    """A block's part of the pass: {"finite": column -> [infinite, finite], "rows", "stats",
    "example": a few validation rows as Arrow IPC bytes}."""
    absent = [c for c in (cfg.target, *cols.features) if c not in batch.columns]
    if absent:  # the columns come from the first file's schema; this block's file lacks some
        raise ValueError(f"column(s) {', '.join(absent)} missing from some of its files (the first file has them): "
                         "give every file the same columns, or leave those out (data.exclude)")
    finite = {}
    for c in [cfg.target, *cols.numeric]:
        x = pd.to_numeric(batch[c], errors="coerce").to_numpy("float64")
        finite[c] = [int(np.isinf(x).sum()), int(np.isfinite(x).sum())]
    validation = in_validation(batch, cfg.validation_fraction, cfg.split_seed)
    # Rows without a target value neither train nor score (the transform drops them): nor do
    # they count towards the fitted statistics.
    labelled = ~np.isnan(pd.to_numeric(batch[cfg.target], errors="coerce").to_numpy("float64"))
    train, example = batch[~validation & labelled], batch[validation & labelled].head(EXAMPLE_ROWS)
    return {"finite": finite, "rows": len(batch), "unlabelled": int((~labelled).sum()),
            "example": _arrow_bytes(example), "stats": block_stats(train, cols, [list(p) for p in cfg.interactions])}


def profile_held(blocks: List[Any], cfg: DataConfig, cols: Columns,
                 rows_hint: Optional[int] = None) -> Tuple[Optional[FeaturePipeline], int, pd.DataFrame]:
    """The pass as one Ray task per held block; (the fitted pipeline, rows, input example)."""
    with StageProgress(f"reading {cfg.path}, checking values and fitting features", rows_hint) as progress:
        parts = holding.gather(holding.map_blocks(blocks, profile_block, cfg=cfg, cols=cols),
                               lambda part: progress.advance(part["rows"]))
    return fitted(parts, cfg, cols)


def profile(raw, cfg: DataConfig, cols: Columns,
            rows_hint: Optional[int] = None) -> Tuple[Optional[FeaturePipeline], int, pd.DataFrame]:
    """The pass over a Ray Dataset of the raw rows (a Ray Data pass returns one row per block)."""
    @data_task
    def block(batch: pd.DataFrame) -> pd.DataFrame:
        part = profile_block(batch, cfg, cols)
        example = part.pop("example")
        return pd.DataFrame({"profile": [json.dumps(part)], "example": [example]})

    parts = []
    with StageProgress("checking values and fitting features", rows_hint) as progress:
        for row in raw.map_batches(block, batch_format="pandas", batch_size=None).iter_rows():
            parts.append({**json.loads(row["profile"]), "example": row["example"]})
            progress.advance(parts[-1]["rows"])
    return fitted(parts, cfg, cols)


def fitted(parts: List[Dict[str, Any]], cfg: DataConfig,
           cols: Columns) -> Tuple[Optional[FeaturePipeline], int, pd.DataFrame]:
    """The blocks' parts, in block order, checked and combined."""
    rows = sum(p["rows"] for p in parts)
    if rows == 0:
        return None, 0, pd.DataFrame()
    columns = [cfg.target, *cols.numeric]
    totals = {c: [sum(p["finite"][c][i] for p in parts) for i in (0, 1)] for c in columns}
    check_finite(totals, cfg.target, cols.numeric, rows)
    unlabelled = sum(p["unlabelled"] for p in parts)
    if unlabelled:
        log.warning("%s of %s rows have no value of data.target '%s': left out of training and validation",
                    f"{unlabelled:,}", f"{rows:,}", cfg.target)
    examples = [_from_arrow_bytes(p["example"]) for p in parts]
    example = next((t for t in examples if len(t)), examples[0])
    return FeaturePipeline.from_stats([p["stats"] for p in parts], cfg, cols), rows - unlabelled, example


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
