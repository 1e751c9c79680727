"""A source's size in memory, measured on the driver, and a source held whole in the object
store: its read, and the passes of prepare() over its blocks, as plain Ray tasks.

The driver reads every parquet footer anyway (FOOTER_READS_AT_ONCE at a time), to estimate the
source's size in memory, so it knows every file's row groups and their rows: it plans the
blocks itself and reads them with one plain Ray task each, consecutive row groups of a file up
to Ray Data's target block size (a larger row group split into several blocks). The tasks keep
Ray Data's read semantics: the same files (`.parquet`, hidden files left out), hive partition
directories as string columns, transient errors (`data.retried_io_errors`) retried within the
task with Ray Data's back-off, and a read still failing with one started again up to
`data.read_retries` times; any other error fails the read at once. Other formats are read by
Ray Data and held as its blocks.

The passes over held blocks (`map_blocks`) are one task per block too. Ray Data, which reads a
source too large to hold (training/data/prepare.py), starts an executor for every pass and
lists and samples the files again: for blocks already in the object store that machinery was
most of a pass on small data, and seconds of it at millions of rows.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote

import pyarrow as pa
import ray

from training.data import sources
from training.data.schema import DataConfig
from training.runtime.memory import data_task

WIDTH_SAMPLE_ROWS = 4096  # rows read to measure a parquet source's in-memory row width
# Footers (or text files' sizes) read at once. Each is a few small requests that mostly wait on
# the store's round trip (tens of milliseconds on an object store): one file after another, a
# source of thousands of files would keep the driver waiting minutes before any work starts.
FOOTER_READS_AT_ONCE = 32


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

        opened = sources.open_path(cfg.path)
        dataset = sources.driver_dataset(cfg, opened)
        if sources.fmt_of(cfg) != "parquet":
            sizes = _at_once(lambda path: dataset.filesystem.get_file_info(path).size or 0, dataset.files)
            return SourceSize(None, sum(sizes))
        root = opened[1].rstrip("/")

        def footer(fragment) -> ParquetFile:
            meta = fragment.metadata  # read on first use: the file's footer
            return ParquetFile(fragment.path, [meta.row_group(i).num_rows for i in range(meta.num_row_groups)],
                               _hive_partition(root, fragment.path))

        files = tuple(_at_once(footer, list(dataset.get_fragments())))  # the data files (sources.data_files)
        rows = sum(sum(f.row_groups) for f in files)
        first = next((f for f in files if sum(f.row_groups)), None)
        if first is None:
            return SourceSize(0, 0, files, dataset.filesystem)
        # The first rows only (a dataset's head would decode a whole row group).
        head = next(pq.ParquetFile(first.path, filesystem=dataset.filesystem, pre_buffer=True)
                    .iter_batches(WIDTH_SAMPLE_ROWS))
        return SourceSize(rows, int(rows * head.nbytes / max(head.num_rows, 1)), files, dataset.filesystem)

    with sources.reading(cfg):
        return sources.retrying(cfg, footers, f"read the file footers of {cfg.path}")


def _at_once(fn: Callable[[Any], Any], items: Sequence[Any]) -> List[Any]:
    """fn over items, FOOTER_READS_AT_ONCE at a time, results in order; the first error raised."""
    with ThreadPoolExecutor(max(1, min(FOOTER_READS_AT_ONCE, len(items))), thread_name_prefix="footers") as pool:
        return list(pool.map(fn, items))


def _hive_partition(root: str, path: str) -> Dict[str, str]:
    directories = path[len(root):].strip("/").split("/")[:-1]
    return dict(unquote(d).split("=", 1) for d in directories if "=" in d)


def hold(cfg: DataConfig, raw: "ray.data.Dataset", size: SourceSize) -> List["ray.ObjectRef"]:
    """The raw rows as blocks in the object store (refs to Arrow tables, or to Ray Data's blocks):
    a parquet source read by the planned tasks, any other through `raw`, Ray Data's lazy read of
    it. The reads run as the blocks are first used: wrap their use in `sources.reading`."""
    import ray.data

    if not size.files:
        return [ref for bundle in raw.materialize().iter_internal_ref_bundles() for ref in bundle.block_refs]
    target = ray.data.DataContext.get_current().target_max_block_size or 128 * 2**20
    retried = list(cfg.retried_io_errors)
    refs = []
    for file, first, count, blocks in plan(size, target):
        out = _read_row_groups.options(num_returns=blocks).remote(
            file.path, size.filesystem, list(range(first, first + count)), blocks, file.partition, retried,
            cfg.read_retries)
        refs.extend([out] if blocks == 1 else out)
    return refs


def map_blocks(blocks: List["ray.ObjectRef"], fn: Callable[..., Any], **kwargs) -> List["ray.ObjectRef"]:
    """`fn(pandas frame of the block, **kwargs)` on every block, one Ray task each, reusing its
    memory while it runs (`data_task`); the refs of the results, in block order."""
    shared = ray.put(kwargs)
    return [_on_block.remote(block, fn, shared) for block in blocks]


def gather(refs: List["ray.ObjectRef"], on_result: Callable[[Any], None] = lambda _: None) -> List[Any]:
    """The results of `refs` in their order, `on_result` called on each as it arrives."""
    position = {ref: i for i, ref in enumerate(refs)}
    out: List[Any] = [None] * len(refs)
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        out[position[done[0]]] = result = ray.get(done[0])
        on_result(result)
    return out


@ray.remote
@data_task
def _on_block(block, fn: Callable[..., Any], kwargs: Dict[str, Any]):
    return fn(block.to_pandas() if isinstance(block, pa.Table) else block, **kwargs)


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


@ray.remote
def _read_row_groups(path: str, filesystem, row_groups: List[int], blocks: int, partition: Dict[str, str],
                     retried: Sequence[str], reruns: int):
    # Ray Data's read tasks' own retry policy and error matching.
    from ray.data._internal.util import call_with_retry, format_exception, matches_error
    import pyarrow.parquet as pq

    def read() -> pa.Table:
        # pre_buffer: the column chunks' byte ranges coalesced and fetched at once. Without it
        # each column chunk is a request of its own: on an object store, a round trip each.
        return pq.ParquetFile(path, filesystem=filesystem, pre_buffer=True).read_row_groups(row_groups)

    for attempt in range(reruns + 1):
        try:
            table = call_with_retry(read, description=f"read {path}", match=retried)
            break
        except Exception as exc:
            # A transient error outlasting the retries: read again from the start, as Ray Data
            # reruns its read task (Ray's own task retries stay for lost workers and nodes).
            if attempt == reruns or not any(matches_error(p, format_exception(exc)) for p in retried):
                raise
    for name, value in partition.items():
        if name not in table.column_names:
            table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
    if blocks == 1:
        return table
    bounds = [round(i * table.num_rows / blocks) for i in range(blocks + 1)]
    return tuple(table.slice(a, b - a) for a, b in zip(bounds, bounds[1:]))
