"""Read tabular data into a Ray Dataset from a local path or an object-store URI, and check it.

Also the reading machinery that training/data/text.py and holding.py share: the filesystem of a path, the
transient-error retries and the one-line error for a source that cannot be read."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.fs as pafs
import ray

if TYPE_CHECKING:
    import ray.data

from training.data.schema import DataConfig, DataSource
from training.data import synthetic
from training.errors import UserError

log = logging.getLogger(__name__)

_EXTENSIONS = {"parquet": ["parquet"], "csv": ["csv"], "json": ["jsonl", "json"]}
_FORMATS = {DataSource.csv: "csv", DataSource.jsonl: "json"}  # pyarrow.dataset formats; others: parquet


def fmt_of(cfg: DataConfig) -> str:
    return _FORMATS.get(cfg.source, "parquet")


def open_path(path: str, key: str = "data.path") -> Tuple[Optional[pafs.FileSystem], str]:
    """(filesystem, path) for s3://, gs://, hdfs:// ... URIs; (None, absolute path) for local files.
    `key`: the option that named the path, for the error."""
    if "://" not in path:
        local = Path(path).expanduser().resolve()
        if not local.exists():
            raise UserError(f"{key} does not exist: {path}")
        return None, str(local)
    try:
        fs, inner = pafs.FileSystem.from_uri(path)
        info = fs.get_file_info(inner)
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"cannot open {key} {path}: {str(exc).splitlines()[0]}") from None
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"{key} does not exist: {path}")
    return fs, inner


# --- transient and permanent read errors -------------------------------------------------------

def configure_retries(cfg: DataConfig) -> None:
    """Errors whose message contains one of data.retried_io_errors are transient: Ray Data retries the
    file operation inside its read task (up to 10 attempts, exponential backoff capped at 32 s, Ray's
    fixed policy), and reruns a task that still fails with one up to data.read_retries times. Set on
    the driver before a dataset is created: datasets carry the driver's DataContext into their
    tasks. Any other error fails the read at once."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.retried_io_errors = list(cfg.retried_io_errors)
    ctx.retried_map_errors = list(cfg.retried_io_errors)
    ctx.max_map_retries = cfg.read_retries


def numpy_pandas_batches() -> None:
    """Pandas batches with numpy dtypes, as Ray Data gave them before 2.56 (2.56 made Arrow-backed
    dtypes the default) and as the registered model receives users' rows: the feature code runs
    on the same dtypes in training and at inference, and several times faster (its statistics and
    transforms are numpy work). Set on the driver before a dataset is created, like the above."""
    import ray.data

    ray.data.DataContext.get_current().enable_arrow_backed_pandas_conversion = False


def retrying(cfg: DataConfig, fn, what: str):
    """The driver's own reads (the checks before a cluster starts) under the read tasks' retry policy."""
    from ray.data._internal.util import call_with_retry  # the policy Ray Data's read tasks use

    return call_with_retry(fn, description=what, match=list(cfg.retried_io_errors))


def _first_line(exc: BaseException) -> str:
    """The innermost cause's first line: Ray wraps a read task's error in several layers."""
    while getattr(exc, "cause", None) is not None or exc.__cause__ is not None:
        exc = getattr(exc, "cause", None) or exc.__cause__
    lines = [l.strip() for l in str(exc).strip().splitlines() if l.strip()]
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def reading(cfg: DataConfig) -> Iterator[None]:
    """Turns a failed read (missing file, permission, corrupt file, retries exhausted) into one line."""
    try:
        yield
    except UserError:
        raise
    except (ValueError, OSError, pa.ArrowException, ray.exceptions.RayError) as exc:
        raise UserError(f"cannot read {cfg.source.value} data at {cfg.path}: {_first_line(exc)}") from None


def driver_dataset(cfg: DataConfig, opened: Optional[Tuple[Optional[pafs.FileSystem], str]] = None):
    """The source as a pyarrow dataset, for the driver's cheap reads (schema, first rows, footers);
    `opened`: what open_path returned for it already (on an object store, a request saved)."""
    import pyarrow.dataset as pads

    fs, path = opened or open_path(cfg.path)
    return pads.dataset(data_files(fs, path, fmt_of(cfg)), format=fmt_of(cfg), filesystem=fs,
                        exclude_invalid_files=False)


def data_files(fs: Optional[pafs.FileSystem], path: str, fmt: str) -> List[str]:
    """The files Ray Data reads at `path`, so that the driver's checks see the same ones: the path
    itself if it is a file; else the files under it with the format's extensions, in any case
    (`.PARQUET` too), and none whose name or folder starts with `.` or `_` (`_SUCCESS`, `.crc`).
    A README or schema.json beside the data is not data."""
    fs = fs or pafs.LocalFileSystem()
    if fs.get_file_info(path).type == pafs.FileType.File:
        return [path]
    extensions = tuple(f".{e}" for e in _EXTENSIONS[fmt])
    root = path.rstrip("/")
    found = []
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        parts = info.path[len(root):].strip("/").split("/")
        if (info.type == pafs.FileType.File and info.path.lower().endswith(extensions)
                and not any(part.startswith((".", "_")) for part in parts)):
            found.append(info.path)
    return sorted(found)


def peek(cfg: DataConfig) -> Tuple[pa.Schema, pa.Table]:
    """The source's schema and first row, read on the driver (cheap), for the checks before any cluster."""
    def head() -> Tuple[pa.Schema, pa.Table]:
        dataset = driver_dataset(cfg)
        if not dataset.files:
            raise UserError(f"no {cfg.source.value} files at data.path {cfg.path}")
        return dataset.schema, first_row(dataset)

    with reading(cfg):
        return retrying(cfg, head, f"read the first row of {cfg.path}")


def first_row(dataset) -> pa.Table:
    """The first row of the first file that has one, read file by file: a dataset's own head
    opens several files at once, and on an object store downloads the first row groups of each."""
    for fragment in dataset.get_fragments():
        head = fragment.head(1, batch_readahead=0)
        if head.num_rows:
            return head
    return dataset.schema.empty_table()


def open_dataset(cfg: DataConfig) -> ray.data.Dataset:
    """A lazy Ray Dataset over data.path (parquet, csv or JSON lines), transient errors retried."""
    import ray.data  # not at the top: `check` runs before Ray starts and should not pay for this import

    fs, path = open_path(cfg.path)
    fmt = fmt_of(cfg)
    configure_retries(cfg)
    numpy_pandas_batches()

    def create() -> ray.data.Dataset:
        if fmt == "csv":
            return ray.data.read_csv(path, filesystem=fs, file_extensions=_EXTENSIONS[fmt])
        if fmt == "json":
            return ray.data.read_json(path, lines=True, filesystem=fs, file_extensions=_EXTENSIONS[fmt])
        return ray.data.read_parquet(path, filesystem=fs, file_extensions=_EXTENSIONS[fmt])

    with reading(cfg):
        # Creating the dataset lists the files and reads parquet footers on the driver, outside
        # the read tasks' retries (Ray 2.60's parquet reader infers the schema without them).
        return retrying(cfg, create, f"list and sample {cfg.path}")


# --- tabular data (GBDT workloads) -------------------------------------------------------------

def check(cfg: DataConfig) -> None:
    """Before any cluster starts: the source exists, has rows and a numeric target (cheap reads only)."""
    prepare_synthetic(cfg)
    schema, first = peek(cfg)
    check_target(cfg, schema)
    if first.num_rows == 0:
        raise UserError(f"dataset at {cfg.path} is empty (no rows)")


def prepare_synthetic(cfg: DataConfig) -> None:
    if cfg.source is DataSource.synthetic:
        log.info("synthetic data: %s rows (seed %s) in %s", f"{cfg.synthetic.rows:,}", cfg.synthetic.seed, cfg.path)
        synthetic.generate(cfg.synthetic, cfg.path)


def read(cfg: DataConfig) -> ray.data.Dataset:
    """A lazy Ray Dataset of the raw rows; fails with a UserError on a missing, empty or unreadable source.

    Reading every file happens later, when the dataset is consumed: wrap that in `reading(cfg)`."""
    ds = open_dataset(cfg)
    with reading(cfg):
        schema = ds.schema()
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
