"""Peak memory: a single-process run against the Ray run on the same data, per Ray Train worker and
for the driver, and the object-store footprint of the preprocessed datasets.

Data: the synthetic retail parquet (default 500k rows). The single-process side reads it with
pyarrow, runs the project's preprocessing in pandas (as benchmarks/data_pipeline.py does) and
trains XGBoost with `xgboost.train`. The Ray side is the project's path: `prepare()` (Ray Data,
materialized splits in the object store), then the per-worker `train_fn` under the slot's trainer
(gbdt/trainer.py) with 1 and with 2 workers (shards pre-split as a run does). Each side runs in a
fresh process; peak resident memory is `getrusage(RUSAGE_SELF).ru_maxrss` of that process (the
driver) and of the Train worker, reported by rank 0 with its last metrics (the shards are equal, so
rank 0 stands for every worker). The object store footprint: `Dataset.size_bytes()` of the
preprocessed splits and the plasma usage after `prepare()` (`ray memory --stats-only`).

    python benchmarks/memory.py [--quick] [--rows 500000] [--repeats 3]
"""

from __future__ import annotations

import json
import re
import time
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

ROUNDS = 20  # memory hardly depends on the number of trees; the data structures dominate
PARAMS = {"max_depth": 6, "learning_rate": 0.1}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def single(cfg) -> Dict[str, Any]:
    import pyarrow.parquet as pq
    import xgboost as xgb

    from data_pipeline import _InMemory
    from training.data.columns import resolve_columns
    from training.data.features import FeaturePipeline
    from training.data.split import split_batch

    d = cfg.data
    table = pq.read_table(d.path)
    df = table.to_pandas()
    cols = resolve_columns(d, table.schema)
    del table
    train_raw = split_batch(df, d.validation_fraction, d.split_seed, validation=False)
    valid_raw = split_batch(df, d.validation_fraction, d.split_seed, validation=True)
    pipeline = FeaturePipeline.fit(_InMemory(train_raw), d, cols)
    train, valid = pipeline.transform(train_raw), pipeline.transform(valid_raw)
    f, y = pipeline.output_features, pipeline.target
    kw = dict(enable_categorical=True, nthread=1)
    dtrain, dvalid = xgb.DMatrix(train[f], train[y], **kw), xgb.DMatrix(valid[f], valid[y], **kw)
    xgb.train({**PARAMS, "tree_method": "hist", "nthread": 1}, dtrain, ROUNDS, evals=[(dvalid, "valid")],
              verbose_eval=False)
    return {"peak_rss_mb": peak_rss_mb(), "rows": len(df)}


def plasma_used_mb() -> float:
    import ray
    from ray._private.internal_api import memory_summary

    # Name this session's Ray: other Ray instances may run on the same machine.
    address = ray.get_runtime_context().gcs_address
    m = re.search(r"Plasma memory usage (\d+) MiB", memory_summary(address, stats_only=True))
    return float(m.group(1)) if m else float("nan")


def settled_plasma_mb(wait_s: float = 5.0) -> float:
    """Plasma in use once the objects prepare() let go of are freed (Ray frees them a moment
    after their last reference goes)."""
    samples, deadline = [plasma_used_mb()], time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        samples.append(plasma_used_mb())
        if samples[-1] == samples[-2] < samples[0]:  # fell, then held
            break
    return min(samples)


def through_ray(cfg, storage: str) -> Dict[str, Any]:
    from ray.train import LoggingConfig, RunConfig, ScalingConfig

    from training.runtime import cluster
    from training.data.prepare import prepare
    from training.gbdt import worker as gbdt
    from training.gbdt.trainer import SlotTrainer
    from training.settings import ClusterMode

    cluster.connect(cfg.cluster)
    before = plasma_used_mb()
    data = prepare(cfg.data)
    out: Dict[str, Any] = {"plasma_before_mb": before, "plasma_after_prepare_mb": settled_plasma_mb(),
                           "train_dataset_mb": data.train.size_bytes() / 2**20,
                           "valid_dataset_mb": data.valid.size_bytes() / 2**20, "rows": data.rows}
    for workers in (1, 2):
        loop = {"member": "m", "kind": "xgboost", "params": dict(PARAMS), "num_boost_round": ROUNDS,
                "checkpoint_every": ROUNDS, "features": list(data.pipeline.output_features),
                "categorical": data.pipeline.categorical_features, "label": data.pipeline.target, "threads": 1,
                "use_gpu": False, "seed": 0, "metric": "rmse",
                "shards": {"train": data.train.split(workers, equal=True),
                           "valid": data.valid.split(workers, equal=True)}}
        result = SlotTrainer(gbdt.train_fn, train_loop_config=loop, scaling_config=ScalingConfig(num_workers=workers),
                             placement_group_cleaner=cfg.cluster.mode is not ClusterMode.local,
                             run_config=RunConfig(name=f"mem-{workers}", storage_path=storage,
                                                  logging_config=LoggingConfig("WARNING"))).fit()
        out[f"worker_peak_rss_mb_{workers}w"] = result.metrics["peak_rss_mb"]
    out["driver_peak_rss_mb"] = peak_rss_mb()
    return out


def one_side(side: str, path: str, rows: int) -> None:
    from training import config
    from training.runtime import report

    report.setup_logging()
    cfg = config.load(_common.data_overrides(path, rows) + ["cluster.num_cpus=2"])
    with tempfile.TemporaryDirectory() as storage:
        result = single(cfg) if side == "single" else through_ray(cfg, storage)
    print("RESULT " + json.dumps(result), flush=True)


def measure(side: str, path: str, rows: int) -> Dict[str, Any]:
    env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    return _common.run_side(__file__, side, path, rows, env)


def main() -> int:
    p = _common.parser(__doc__)
    _common.side_args(p, ["single", "ray"])
    args = p.parse_args()
    args.rows = _common.rows(args)
    if args.side:
        one_side(args.side, args.data_path, args.rows)
        return 0
    machine = _common.Machine()
    path, ready_s = _common.bench_data(args.rows)
    print(f"memory: {args.rows:,} synthetic retail rows (ready in {ready_s:.1f}s), XGBoost "
          f"{ROUNDS} rounds; {_common.repeats(args)} repeat(s)", flush=True)
    sides = {side: (lambda r, side=side: measure(side, path, args.rows)) for side in ("single", "ray")}
    runs = _common.side_by_side(sides, _common.repeats(args))
    med = {side: {k: _common.median([r[k] for r in rs]) for k in rs[0]} for side, rs in runs.items()}
    s, r = med["single"]["peak_rss_mb"], med["ray"]
    ratios = {"worker_1w_vs_single": r["worker_peak_rss_mb_1w"] / s, "worker_2w_vs_single": r["worker_peak_rss_mb_2w"] / s,
              "driver_vs_single": r["driver_peak_rss_mb"] / s}
    print(f"\npeak RSS (MiB): single process {s:.0f}; Ray driver {r['driver_peak_rss_mb']:.0f}; Train worker "
          f"{r['worker_peak_rss_mb_1w']:.0f} (1 worker), {r['worker_peak_rss_mb_2w']:.0f} each (2 workers)")
    print(f"object store: preprocessed train {r['train_dataset_mb']:.0f} MiB + valid {r['valid_dataset_mb']:.0f} MiB; "
          f"plasma in use after prepare {r['plasma_after_prepare_mb']:.0f} MiB")
    _common.write("memory", args, machine, {"rows": args.rows, "rounds": ROUNDS, "runs": runs, "median": med,
                                            "ratios": ratios})
    return 0


if __name__ == "__main__":
    sys.exit(_common.run(main))
