"""Ray Train overhead for GBDTs: the project's Ray Train path vs plain xgboost.train / lightgbm.train.

Same data (default 1M rows x 30 float features), same threads (1), same rounds (200), same
params, side by side in one process, each repeated; prints medians and the ratio
ray/plain (goal: <= 1.5). The Ray side is what `python -m training` runs: the project's
per-worker `train_fn` under the slot's trainer (gbdt/trainer.py) with one 1-CPU worker, data handed
over as a materialized Ray Dataset, a report + checkpoint every 50 rounds. Ray's own start-up
(`ray.init`) is timed separately and not included in the ratio.

    python benchmarks/gbdt_overhead.py [--quick] [--rows 1000000] [--rounds 200] [--repeats 3]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

PARAMS = {"max_depth": 6, "learning_rate": 0.1}


def make_data(rows: int, features: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    y = (np.sin(x[:, 0]) * 3 + x[:, 1] * x[:, 2] + np.abs(x[:, 3]) + 0.5 * x[:, 4:10].sum(axis=1)
         + rng.normal(0, 0.5, rows)).astype(np.float32)
    return x, y


def plain(kind: str, x, y, xv, yv, rounds: int) -> float:
    t0 = time.perf_counter()
    if kind == "xgboost":
        import xgboost as xgb
        dtrain, dvalid = xgb.DMatrix(x, y, nthread=1), xgb.DMatrix(xv, yv, nthread=1)
        xgb.train({**PARAMS, "tree_method": "hist", "nthread": 1, "eval_metric": "rmse"}, dtrain, rounds,
                  evals=[(dvalid, "valid")], verbose_eval=False)
    else:
        import lightgbm as lgb
        dtrain = lgb.Dataset(x, y)
        lgb.train({**PARAMS, "num_threads": 1, "verbosity": -1, "metric": "rmse"}, dtrain, rounds,
                  valid_sets=[lgb.Dataset(xv, yv, reference=dtrain)], valid_names=["valid"])
    return time.perf_counter() - t0


def through_ray(kind: str, shards, features, rounds: int, storage: str, run: str) -> float:
    from ray.train import LoggingConfig, RunConfig, ScalingConfig

    from training.gbdt import worker as gbdt
    from training.gbdt.trainer import SlotTrainer

    cfg = {"member": kind, "kind": kind, "params": dict(PARAMS), "num_boost_round": rounds, "checkpoint_every": 50,
           "features": features, "categorical": [], "label": "y", "threads": 1, "use_gpu": False, "seed": 0,
           "metric": "rmse", "shards": shards}
    t0 = time.perf_counter()
    # An in-process Ray, as `cluster=local`: the slot's trainer leaves out the cleaner actor there.
    SlotTrainer(gbdt.train_fn, train_loop_config=cfg, placement_group_cleaner=False,
                scaling_config=ScalingConfig(num_workers=1),
                run_config=RunConfig(name=run, storage_path=storage, logging_config=LoggingConfig("WARNING"))).fit()
    return time.perf_counter() - t0


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--rows", type=_common.at_least(1), help="training rows (default 1000000; --quick 20000)")
    ap.add_argument("--features", type=_common.at_least(1), default=30)
    ap.add_argument("--rounds", type=_common.at_least(1), help="boosting rounds (default 200; --quick 20)")
    ap.add_argument("--models", default="xgboost,lightgbm")
    args = ap.parse_args()
    args.rows = args.rows or (20_000 if args.quick else 1_000_000)
    args.rounds = args.rounds or (20 if args.quick else 200)
    args.repeats = _common.repeats(args)
    machine = _common.Machine()

    import ray

    from training.runtime import cluster
    from training.settings import ClusterConfig

    print(f"data: {args.rows:,} rows x {args.features} features (+ {args.rows // 5:,} validation), "
          f"{args.rounds} rounds, depth {PARAMS['max_depth']}, 1 thread, {args.repeats} repeat(s)", flush=True)
    x, y = make_data(args.rows, args.features)
    xv, yv = make_data(args.rows // 5, args.features, seed=1)
    t0 = time.perf_counter()
    # The in-process Ray `cluster=local` starts, with its environment (training/runtime/cluster.py).
    # Worker lines show where the Ray side spends its time (load, build + boost, reports).
    cluster.connect(ClusterConfig(num_cpus=2))
    ray_start = time.perf_counter() - t0
    features = [f"f{i}" for i in range(args.features)]
    to_ds = lambda a, b: ray.data.from_pandas(pd.DataFrame(a, columns=features).assign(y=b)).materialize()
    shards = {"train": [to_ds(x, y)], "valid": [to_ds(xv, yv)]}

    results = {"ray_init_s": ray_start, "models": {}}
    with tempfile.TemporaryDirectory() as storage:
        for kind in args.models.split(","):
            times = {"plain": [], "ray": []}
            for r in range(args.repeats):
                # Alternate the order so drift in machine load hits both sides alike.
                order = ("plain", "ray") if r % 2 == 0 else ("ray", "plain")
                for side in order:
                    t = (plain(kind, x, y, xv, yv, args.rounds) if side == "plain"
                         else through_ray(kind, shards, features, args.rounds, storage, f"{kind}-{r}"))
                    times[side].append(t)
                    print(f"  {kind:8s} {side:5s} run {r + 1}: {t:6.1f}s", flush=True)
            med = {k: statistics.median(v) for k, v in times.items()}
            results["models"][kind] = {"plain_s": times["plain"], "ray_s": times["ray"], "median_plain_s": med["plain"],
                                       "median_ray_s": med["ray"], "ratio": med["ray"] / med["plain"]}
    ray.shutdown()

    print(f"\nray.init: {ray_start:.1f}s (once per job, not in the ratio)")
    print(f"{'model':10s} {'plain (s)':>10s} {'Ray Train (s)':>14s} {'ratio':>7s}  goal <= 1.5")
    for kind, r in results["models"].items():
        verdict = "met" if r["ratio"] <= 1.5 else "MISSED"
        print(f"{kind:10s} {r['median_plain_s']:10.1f} {r['median_ray_s']:14.1f} {r['ratio']:7.2f}  {verdict}")
    _common.write("gbdt_overhead", args, machine, results)


if __name__ == "__main__":
    sys.exit(_common.run(main))
