"""Ray Data ingest + the project's preprocessing vs a single-process pandas/pyarrow pipeline doing the
same transforms, in rows per second.

Both sides start from the same partitioned parquet (the synthetic retail data) and end with the
preprocessed train and validation splits in memory: read, the hash split, the feature pipeline
fitted on the training split (time features, interactions, log1p, category codes), applied to
both splits. The Ray side is `training.data.prepare.prepare` as a run calls it (materialized
splits in the object store); the pandas side calls the same functions (split_batch,
FeaturePipeline) on one in-memory frame. Each measurement runs in its own process pinned to
the cores it may use (os.sched_setaffinity, inherited by every Ray process it starts):
  pandas   1 core
  ray_1cpu Ray with num_cpus=1, pinned to 1 core
  ray_2cpu Ray with num_cpus=2 on 2 cores
Start-up (imports, ray.init) is not timed. Goal: ray_1cpu >= 0.7 x pandas, ray_2cpu > pandas.

    python benchmarks/data_pipeline.py [--quick] [--rows 500000] [--repeats 3]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

SIDES = {"pandas": 1, "ray_1cpu": 1, "ray_2cpu": 2}  # side -> cores


class _InMemory:
    """The only Dataset calls FeaturePipeline.fit makes (map_batches, take_all), on one frame."""

    def __init__(self, df):
        self.df = df

    def map_batches(self, fn, **_):
        return _InMemory(fn(self.df))

    def take_all(self) -> List[Dict[str, Any]]:
        return self.df.to_dict("records")


def run_pandas(cfg) -> Dict[str, Any]:
    import pyarrow.parquet as pq

    from training.data.columns import resolve_columns

    from training.data.features import FeaturePipeline
    from training.data.split import split_batch

    d = cfg.data
    t0 = time.perf_counter()
    table = pq.read_table(d.path)
    df = table.to_pandas()
    cols = resolve_columns(d, table.schema)
    train_raw = split_batch(df, d.validation_fraction, d.split_seed, validation=False)
    valid_raw = split_batch(df, d.validation_fraction, d.split_seed, validation=True)
    pipeline = FeaturePipeline.fit(_InMemory(train_raw), d, cols)
    train, valid = pipeline.transform(train_raw), pipeline.transform(valid_raw)
    return {"seconds": time.perf_counter() - t0, "rows": len(df), "train_rows": len(train),
            "valid_rows": len(valid), "features": len(pipeline.output_features)}


def run_ray(cfg) -> Dict[str, Any]:
    from training.runtime import cluster
    from training.data.prepare import prepare

    cluster.connect(cfg.cluster)
    t0 = time.perf_counter()
    data = prepare(cfg.data)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": data.rows, "train_rows": data.train_rows, "valid_rows": data.valid_rows,
            "features": len(data.pipeline.output_features)}


def one_side(side: str, path: str, rows: int) -> None:
    """In a fresh process: pin to the side's cores, run it, print one RESULT line."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: SIDES[side]]))
    from training import config
    from training.runtime import report

    report.setup_logging()
    cfg = config.load(_common.data_overrides(path, rows) + [f"cluster.num_cpus={SIDES[side]}"])
    result = run_pandas(cfg) if side == "pandas" else run_ray(cfg)
    print("RESULT " + json.dumps(result), flush=True)


def measure(side: str, path: str, rows: int) -> Dict[str, Any]:
    r = _common.run_side(__file__, side, path, rows)
    r["rows_per_s"] = r["rows"] / r["seconds"]
    return r


def main() -> int:
    p = _common.parser(__doc__)
    _common.side_args(p, SIDES)
    args = p.parse_args()
    args.rows = _common.rows(args)
    if args.side:
        one_side(args.side, args.data_path, args.rows)
        return 0
    machine = _common.Machine()
    path, ready_s = _common.bench_data(args.rows)
    print(f"data_pipeline: {args.rows:,} synthetic retail rows at {path} (ready in {ready_s:.1f}s); "
          f"sides {', '.join(SIDES)}; {_common.repeats(args)} repeat(s)", flush=True)
    sides = {side: (lambda r, side=side: measure(side, path, args.rows)) for side in SIDES}
    runs = _common.side_by_side(sides, _common.repeats(args))
    med = {side: {"seconds": _common.median([r["seconds"] for r in rs]),
                  "rows_per_s": _common.median([r["rows_per_s"] for r in rs]), "cores": SIDES[side]}
           for side, rs in runs.items()}
    base = med["pandas"]["rows_per_s"]
    ratios = {side: med[side]["rows_per_s"] / base for side in ("ray_1cpu", "ray_2cpu")}
    print(f"\n{'side':9s} {'cores':>5s} {'seconds':>8s} {'rows/s':>10s} {'vs pandas':>9s}")
    for side, m in med.items():
        print(f"{side:9s} {m['cores']:5d} {m['seconds']:8.1f} {m['rows_per_s']:10.0f} "
              f"{m['rows_per_s'] / base:9.2f}")
    _common.write("data_pipeline", args, machine, {"rows": args.rows, "data_path": path, "runs": runs,
                                                   "median": med, "ratio_vs_pandas": ratios})
    return 0


if __name__ == "__main__":
    sys.exit(_common.run(main))
