"""A worker's part of one split, handed to the boosting libraries without a copy of its own.

The shard is kept as Arrow columns over the blocks Ray Data hands over: read from a
materialized dataset, those are views of the object store's shared memory, so the worker holds
no second copy of its rows. The libraries then build their compact binned structures from it: XGBoost's
`QuantileDMatrix` from float32 batches of BATCH_ROWS rows (one batch in memory at a time),
LightGBM's `Dataset` from the Arrow columns themselves. Neither sees a full-shard float matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Tuple

import numpy as np
import pyarrow as pa

# Rows per batch handed to XGBoost: a batch's float32 copy stays a few MB for typical widths.
BATCH_ROWS = 65_536


@dataclass
class Shard:
    table: pa.Table        # feature columns and the label, as Arrow columns (possibly chunked)
    features: List[str]
    label: str
    batch_rows: int = BATCH_ROWS

    @property
    def rows(self) -> int:
        return self.table.num_rows

    @property
    def nbytes_float32(self) -> int:
        """What the shard would take as one float32 matrix: the measure of the memory budget."""
        return self.rows * (len(self.features) + 1) * 4

    def batches(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """(float32 features [rows, features], float32 labels) per batch; nulls become NaN (missing)."""
        if self.rows == 0:
            yield np.empty((0, len(self.features)), np.float32), np.empty(0, np.float32)
            return
        for batch in self.table.to_batches(max_chunksize=self.batch_rows):
            # Column-major: each column is one contiguous copy, where a row-major batch would
            # write every value with a stride; XGBoost reads the strides.
            x = np.empty((len(self.features), batch.num_rows), np.float32)
            for j, name in enumerate(self.features):
                x[j] = _floats(batch.column(name))
            yield x.T, _floats(batch.column(self.label))

    def feature_table(self) -> pa.Table:
        return self.table.select(self.features)

    def labels(self) -> pa.ChunkedArray:
        return self.table.column(self.label)

    @classmethod
    def from_arrays(cls, x: np.ndarray, y: np.ndarray, features: List[str], label: str,
                    batch_rows: int = BATCH_ROWS) -> "Shard":
        """A shard from in-memory arrays (tests; callers that already hold the rows)."""
        columns = {name: np.ascontiguousarray(x[:, j]) for j, name in enumerate(features)}
        return cls(pa.table({**columns, label: np.asarray(y)}), list(features), label, batch_rows)


def _floats(column) -> np.ndarray:
    return column.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)


def read(source, features: List[str], label: str) -> Shard:
    """A shard from a Ray Data source (a materialized Dataset or a Train DataIterator), in one pass.
    Each block's float32 columns come out as numpy views of the block and become Arrow arrays
    over the same memory (NaN stays NaN: missing to both libraries)."""
    names = [*features, label]
    blocks = [pa.table({c: batch[c] for c in names})
              for batch in source.iter_batches(batch_size=None, batch_format="numpy")]
    if not blocks:
        return Shard(pa.schema([(c, pa.float32()) for c in names]).empty_table(), list(features), label)
    return Shard(pa.concat_tables(blocks), list(features), label)
