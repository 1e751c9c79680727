"""The held-out rows the promotion gate scores on: `promote.data_path` (a parquet or csv file or
folder, local or in an object store, used whole) or the validation split of the run's data config
(the same hash split as `prepare()`), and the check a training run makes of the path up front."""

from __future__ import annotations

import pandas as pd

from training.config import Config
from training.data.schema import DataConfig
from training.errors import UserError


def _held_out_dataset(path: str):
    """promote.data_path, a parquet or csv file/directory (local or object store), as a dataset."""
    import pyarrow.dataset as pads

    from training.data.sources import open_path

    fs, inner = open_path(path, "promote.data_path")
    fmt = "csv" if path.rstrip("/").endswith(".csv") or _has_csv(fs, inner) else "parquet"
    try:
        return pads.dataset(inner, format=fmt, filesystem=fs, ignore_prefixes=[".", "_"])
    except Exception as exc:  # arrow's many error types: one line for the user
        raise UserError(f"cannot read held-out data at {path}: {str(exc).strip().splitlines()[0]}") from None


def read_table(path: str) -> pd.DataFrame:
    """promote.data_path as one DataFrame."""
    dataset = _held_out_dataset(path)
    try:
        return dataset.to_table().to_pandas()
    except Exception as exc:
        raise UserError(f"cannot read held-out data at {path}: {str(exc).strip().splitlines()[0]}") from None


def check_held_out(cfg: Config) -> None:
    """Before a training run with the gate on, after its data's checks: promote.data_path opens,
    has a numeric target column and every column the model takes (else found only once the run
    had trained and registered its version)."""
    import pyarrow as pa

    from training.data import sources
    from training.data.columns import resolve_columns

    if not (cfg.promote.enabled and cfg.promote.data_path):
        return
    schema = _held_out_dataset(cfg.promote.data_path).schema
    target = cfg.data.target
    features = resolve_columns(cfg.data, sources.peek(cfg.data)[0]).features
    missing = [c for c in features if c not in schema.names]
    if missing:
        raise UserError(f"promote.data_path {cfg.promote.data_path} lacks the model's feature column(s) "
                        f"{', '.join(missing)}")
    if target not in schema.names:
        raise UserError(f"promote.data_path {cfg.promote.data_path} has no target column '{target}' (columns: "
                        f"{', '.join(schema.names)})")
    typ = schema.field(target).type
    if not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)):
        raise UserError(f"promote.data_path {cfg.promote.data_path}: target '{target}' has type {typ}; a numeric "
                        "column is required")


def _has_csv(fs, inner: str) -> bool:
    """A folder, local or in an object store, that holds csv files."""
    from pathlib import Path

    if fs is None:
        return Path(inner).is_dir() and any(Path(inner).glob("*.csv"))
    import pyarrow.fs as pafs

    try:
        if fs.get_file_info(inner).type != pafs.FileType.Directory:
            return False
        return any(f.path.endswith(".csv") for f in fs.get_file_info(pafs.FileSelector(inner, recursive=True)))
    except OSError:  # the read that follows says what is wrong with the path
        return False


def validation_rows(data: DataConfig) -> pd.DataFrame:
    """The rows a training run with this data config held out (same hash split as prepare())."""
    from training.data import sources
    from training.data.split import split_batch

    sources.check(data)
    raw = sources.read(data)
    valid = raw.map_batches(split_batch, batch_format="pandas", batch_size=None,
                            fn_kwargs=dict(fraction=data.validation_fraction, seed=data.split_seed, validation=True))
    return valid.to_pandas()


def held_out(cfg: Config) -> tuple:
    """(rows, description) per promote.data_path, else the data config's validation split."""
    if cfg.promote.data_path:
        return read_table(cfg.promote.data_path), cfg.promote.data_path
    d = cfg.data
    return validation_rows(d), f"{d.path} validation split (fraction {d.validation_fraction}, seed {d.split_seed})"
