"""Read tabular data into a Ray Dataset from a local path or an object-store URI, and check it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Tuple

import pyarrow as pa
import pyarrow.fs as pafs
import ray.data

from training.config import DataConfig, DataSource
from training.data import synthetic
from training.errors import UserError

log = logging.getLogger(__name__)

_EXTENSIONS = {DataSource.parquet: ["parquet"], DataSource.synthetic: ["parquet"], DataSource.csv: ["csv"],
               DataSource.jsonl: ["jsonl", "json"], DataSource.text_synthetic: ["parquet"]}
_FORMATS = {DataSource.csv: "csv", DataSource.jsonl: "json"}  # pyarrow.dataset formats; others: parquet


def _filesystem(path: str) -> Tuple[Optional[pafs.FileSystem], str]:
    """(filesystem, path) for s3://, gs://, hdfs:// ... URIs; (None, absolute path) for local files."""
    if "://" not in path:
        local = Path(path).expanduser().resolve()
        if not local.exists():
            raise UserError(f"data.path does not exist: {path}")
        return None, str(local)
    try:
        fs, inner = pafs.FileSystem.from_uri(path)
        info = fs.get_file_info(inner)
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"cannot open data.path {path}: {str(exc).splitlines()[0]}") from None
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"data.path does not exist: {path}")
    return fs, inner


def check(cfg: DataConfig) -> None:
    """Before any cluster starts: the source exists, has rows and a numeric target (cheap reads only)."""
    import pyarrow.dataset as pads

    prepare_synthetic(cfg)
    fs, path = _filesystem(cfg.path)
    fmt = _FORMATS.get(cfg.source, "parquet")
    try:
        dataset = pads.dataset(path, format=fmt, filesystem=fs, exclude_invalid_files=False,
                               ignore_prefixes=[".", "_"])
        if not dataset.files:
            raise UserError(f"no {fmt} files at data.path {cfg.path}")
        schema = dataset.schema
        first = dataset.head(1)
    except UserError:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise UserError(f"cannot read {fmt} data at {cfg.path}: {str(exc).strip().splitlines()[0]}") from None
    check_target(cfg, schema)
    if first.num_rows == 0:
        raise UserError(f"dataset at {cfg.path} is empty (no rows)")


def prepare_synthetic(cfg: DataConfig) -> None:
    if cfg.source is DataSource.synthetic:
        log.info("synthetic data: %s rows (seed %s) in %s", f"{cfg.synthetic.rows:,}", cfg.synthetic.seed, cfg.path)
        synthetic.generate(cfg.synthetic, cfg.path)


def read(cfg: DataConfig) -> ray.data.Dataset:
    """A lazy Ray Dataset of the raw rows; fails with a UserError on a missing, empty or unreadable source."""
    fs, path = _filesystem(cfg.path)
    ext = _EXTENSIONS[cfg.source]
    try:
        if cfg.source is DataSource.csv:
            ds = ray.data.read_csv(path, filesystem=fs, file_extensions=ext)
        elif cfg.source is DataSource.jsonl:
            ds = ray.data.read_json(path, lines=True, filesystem=fs, file_extensions=ext)
        else:
            ds = ray.data.read_parquet(path, filesystem=fs, file_extensions=ext)
        schema = ds.schema()
    except (ValueError, OSError, pa.ArrowException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read {cfg.source.value} data at {cfg.path}: {first}") from None
    if schema is None:
        raise UserError(f"dataset at {cfg.path} is empty (no rows)")
    check_target(cfg, schema)
    return ds


def check_target(cfg: DataConfig, schema) -> None:
    names = [n for n in schema.names if not n.startswith("__")]
    if cfg.target not in names:
        raise UserError(f"data.target '{cfg.target}' is not a column of {cfg.path} (columns: {', '.join(names)})")
    typ = dict(zip(schema.names, schema.types))[cfg.target]
    if not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)):
        raise UserError(f"data.target '{cfg.target}' has type {typ}; a numeric column is required")
