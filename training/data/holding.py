"""A source's size in memory, measured on the driver, and a parquet source read whole into the
object store when prepare() holds its raw rows.

The driver reads every parquet footer anyway, to estimate the source's size in memory, so it
knows every file's row groups and their rows: it plans the blocks itself and reads them with
one plain Ray task each, consecutive row groups of a file up to Ray Data's target block size
(a larger row group split into several blocks). Ray Data's own reader, which the other passes
and the other formats use, starts a streaming executor, lists and samples the files again and
sizes its blocks while it reads; for a source read once and held, that machinery is most of
the read's time. The tasks keep Ray Data's read semantics: the same files (`.parquet`, hidden
files left out), hive partition directories as string columns, transient errors
(`data.retried_io_errors`) retried within the task with Ray Data's back-off, and a task still
failing with one rerun up to `data.read_retries` times; any other error fails the read at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote

import pyarrow as pa
import ray

from training.data import sources
from training.data.schema import DataConfig

WIDTH_SAMPLE_ROWS = 4096  # rows read to measure a parquet source's in-memory row width


@dataclass(frozen=True)
class ParquetFile:
    path: str
    row_groups: List[int]        # rows of each row group, in file order
    partition: Dict[str, str]    # hive partition columns from the file's directories


@dataclass(frozen=True)
class SourceSize:
    rows: Optional[int]          # None where only the files' sizes are known (CSV, JSON lines)
    bytes: int                   # estimated size in memory
    files: Tuple[ParquetFile, ...] = ()
    filesystem: object = None    # the parquet files' pyarrow filesystem; None for local files

    @property
    def row_bytes(self) -> float:
        return self.bytes / self.rows if self.rows else 0.0


def measure(cfg: DataConfig) -> SourceSize:
    """The source's size in memory from what the driver learns without reading it all: for
    parquet, the row count in the footers times the in-memory width of the first rows (the
    footers' sizes are of encoded pages, often half the columns' size); for text formats, the
    files' sizes (text takes about as much room as its parsed columns)."""
    def footers() -> SourceSize:
        import pyarrow.parquet as pq

        dataset = sources.driver_dataset(cfg)
        if sources.fmt_of(cfg) != "parquet":
            return SourceSize(None, sum(dataset.filesystem.get_file_info(f).size or 0 for f in dataset.files))
        root = sources.open_path(cfg.path)[1].rstrip("/")
        fragments = [f for f in dataset.get_fragments() if f.path.endswith(".parquet")]
        files = tuple(ParquetFile(f.path, [f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)],
                                  _hive_partition(root, f.path)) for f in fragments)
        rows = sum(sum(f.row_groups) for f in files)
        first = next((f for f in files if sum(f.row_groups)), None)
        if first is None:
            return SourceSize(0, 0, files, dataset.filesystem)
        # The first rows only (a dataset's head would decode a whole row group).
        head = next(pq.ParquetFile(first.path, filesystem=dataset.filesystem).iter_batches(WIDTH_SAMPLE_ROWS))
        return SourceSize(rows, int(rows * head.nbytes / max(head.num_rows, 1)), files, dataset.filesystem)

    with sources.reading(cfg):
        return sources.retrying(cfg, footers, f"read the file footers of {cfg.path}")


def _hive_partition(root: str, path: str) -> Dict[str, str]:
    directories = path[len(root):].strip("/").split("/")[:-1]
    return dict(unquote(d).split("=", 1) for d in directories if "=" in d)


def hold(cfg: DataConfig, raw: "ray.data.Dataset", size: SourceSize) -> "ray.data.Dataset":
    """The raw rows, read whole into the object store: a parquet source by the planned tasks,
    any other through `raw`, Ray Data's lazy read of it. Read errors surface here (wrap the call
    in `sources.reading`)."""
    import ray.data

    if not size.files:
        return raw.materialize()
    target = ray.data.DataContext.get_current().target_max_block_size or 128 * 2**20
    read = ray.remote(max_retries=cfg.read_retries, retry_exceptions=[TransientReadError])(_read_row_groups)
    retried = list(cfg.retried_io_errors)
    refs = []
    for file, first, count, blocks in plan(size, target):
        out = read.options(num_returns=blocks).remote(file.path, size.filesystem, list(range(first, first + count)),
                                                      blocks, file.partition, retried)
        refs.extend([out] if blocks == 1 else out)
    return ray.data.from_arrow_refs(refs)


def plan(size: SourceSize, target_bytes: int) -> List[Tuple[ParquetFile, int, int, int]]:
    """(file, first row group, row groups, blocks) per read task: a file's consecutive row groups
    while they fit `target_bytes` in memory, and as many blocks as a larger read needs."""
    tasks = []
    for file in size.files:
        first, rows = 0, 0
        for i, n in enumerate(file.row_groups):
            if i > first and (rows + n) * size.row_bytes > target_bytes:
                tasks.append((file, first, i - first, _blocks(rows, size.row_bytes, target_bytes)))
                first, rows = i, 0
            rows += n
        if rows:
            tasks.append((file, first, len(file.row_groups) - first, _blocks(rows, size.row_bytes, target_bytes)))
    return tasks


def _blocks(rows: int, row_bytes: float, target_bytes: int) -> int:
    return max(1, min(rows, math.ceil(rows * row_bytes / target_bytes)))


class TransientReadError(Exception):
    """A read that still failed with a transient error after the task's own retries: Ray reruns
    the task for this one only."""


def _read_row_groups(path: str, filesystem, row_groups: List[int], blocks: int, partition: Dict[str, str],
                     retried: Sequence[str]):
    import pyarrow.parquet as pq
    # Ray Data's read tasks' own retry policy and error matching.
    from ray.data._internal.util import call_with_retry, format_exception, matches_error

    def read() -> pa.Table:
        return pq.ParquetFile(path, filesystem=filesystem).read_row_groups(row_groups)

    try:
        table = call_with_retry(read, description=f"read {path}", match=retried)
    except Exception as exc:
        if any(matches_error(pattern, format_exception(exc)) for pattern in retried):
            raise TransientReadError(str(exc)) from exc
        raise
    for name, value in partition.items():
        if name not in table.column_names:
            table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
    if blocks == 1:
        return table
    bounds = [round(i * table.num_rows / blocks) for i in range(blocks + 1)]
    return tuple(table.slice(a, b - a) for a, b in zip(bounds, bounds[1:]))
