"""The train/validation split: each row's side is decided by a hash of its content.

The same rows split the same way whatever the block layout, worker count, read order or column
order, and duplicates never straddle. That holds across the dtypes one column takes in different
blocks, which depend on the block's other rows: an integer column is float64 in a block with a
missing value, a boolean column object, a CSV or JSON column a number in one file and text in
another. Each value is hashed in one canonical form: numbers (booleans as 0 and 1) as float64,
whether their column is numeric or holds objects; times as nanoseconds since 1970 in UTC; text as
text; a missing value as one constant. (A column read as text in one file and as numbers in
another splits by its text in the one and its numbers in the other.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLIT_BUCKETS = 10_000
MISSING = np.uint64(0x9E3779B97F4A7C15)  # the hash of a missing value, in any column
COMBINE = np.uint64(1_000_003)


def in_validation(df: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Whether each row goes to validation (about `fraction` of them)."""
    rows = np.full(len(df), 0x345678, dtype=np.uint64)
    for name in sorted(df.columns, key=str):
        rows = (rows * COMBINE) ^ column_hash(df[name])
    # pandas keys only its hashes of text: numbers hash alike under every key. The seed is mixed
    # into each row's hash instead, so it moves the split of any data.
    h = pd.util.hash_array(rows ^ np.uint64(seed % 2**64))
    return (h % SPLIT_BUCKETS) < int(round(fraction * SPLIT_BUCKETS))


def split_batch(df: pd.DataFrame, fraction: float, seed: int, validation: bool) -> pd.DataFrame:
    mask = in_validation(df, fraction, seed)
    return df[mask if validation else ~mask]


def column_hash(col: pd.Series) -> np.ndarray:
    """One hash per value of `col`, the same for a value whatever dtype its block gave the column."""
    missing = col.isna().to_numpy()
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        h = _number_hash(col.astype("float64").to_numpy())
    elif pd.api.types.is_datetime64_any_dtype(col):
        times = col.dt.tz_convert("UTC").dt.tz_localize(None) if col.dt.tz is not None else col
        h = pd.util.hash_array(times.astype("datetime64[ns]").to_numpy().view("int64"))
    else:
        values = col.astype(object).where(~missing, "")
        if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
            h = pd.util.hash_array(values.to_numpy(dtype=object))
        else:  # numbers and booleans in an object column (a null in that block, or JSON rows)
            numbers = pd.to_numeric(values.where(values != "", None), errors="coerce").to_numpy(dtype="float64")
            is_number = ~np.isnan(numbers)
            text = values.where(~is_number, "").astype(str).to_numpy(dtype=object)
            h = np.where(is_number, _number_hash(numbers), pd.util.hash_array(text))
    h[missing] = MISSING
    return h


def _number_hash(values: np.ndarray) -> np.ndarray:
    return pd.util.hash_array(np.nan_to_num(values, nan=0.0) + 0.0)  # + 0.0: -0.0 and 0.0 alike
