"""Scaling of XGBoost and LightGBM through Ray Train: 1 and 2 workers (more where the machine has
the cores), on one node and across nodes, with the time of each phase and a projection.

One real multi-process Ray cluster on this machine (`ray start` processes, token auth on):
a head node with one CPU per core (the "1 node" layout) and two 1-CPU worker nodes (the
"2 nodes" layout, so that the histogram all-reduce crosses node boundaries). The same fixed
data (float32 features, a non-linear target) is pre-split into one shard per worker and handed
to the project's per-worker `train_fn` (training/gbdt/worker.py), which reports the seconds of
each phase: shard hand-over from the object store (load), DMatrix / Dataset build, boosting.

Efficiency at n workers is T1 / (n x Tn), as in the seed's table. Per boosting round:
  t(n) = b + c/n + a x log2(n)
c (compute that splits across workers) and b (what does not) come from 1 worker on the full
and on half of the data; a (communication per doubling) from 2 workers minus 1 worker on half
of the data, with the 2-node layout's value used for the projection to 8, 16 and 32 workers.

The default size (2M rows x 30 features, 50 rounds) is chosen so that the split work of a round
outweighs its all-reduce; at much smaller sizes the two are close and a second worker gains little.

    python benchmarks/scaling.py [--quick] [--rows 2000000] [--rounds 50] [--repeats 3]
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from gbdt_overhead import make_data  # noqa: E402

PARAMS = {"max_depth": 6, "learning_rate": 0.1}
PROJECT_TO = [1, 2, 4, 8, 16, 32]


def layouts(cores: int) -> Dict[str, Dict[str, Any]]:
    """Worker counts per layout: powers of two up to the cores on one node; 2 on two nodes."""
    counts, n = [], 1
    while n <= max(cores, 2):
        counts.append(n)
        n *= 2
    configs = {f"{n}w": {"workers": n, "resource": "one_node", "half": False} for n in counts}
    configs["1w_half"] = {"workers": 1, "resource": "one_node", "half": True}
    configs["2w_2nodes"] = {"workers": 2, "resource": "two_nodes", "half": False}
    return configs


def fit(kind: str, shards, features: List[str], rounds: int, workers: int, resource: str, storage: str,
        run: str) -> Dict[str, float]:
    from ray.train import LoggingConfig, RunConfig, ScalingConfig

    from training.gbdt import worker as gbdt
    from training.gbdt.trainer import SlotTrainer

    cfg = {"member": kind, "kind": kind, "params": dict(PARAMS), "num_boost_round": rounds,
           "checkpoint_every": max(rounds // 2, 1), "features": features, "categorical": [], "label": "y",
           "threads": 1, "use_gpu": False, "seed": 0, "metric": "rmse", "shards": shards}
    # The custom resource pins the workers to a layout: the head (one node) or the 1-CPU nodes.
    scaling = ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1, resource: 1})
    t0 = time.perf_counter()
    # The slot's trainer, on a joined cluster as in a RayJob (Ray Train's cleaner actor kept).
    result = SlotTrainer(gbdt.train_fn, train_loop_config=cfg, scaling_config=scaling,
                         run_config=RunConfig(name=run, storage_path=storage,
                                              logging_config=LoggingConfig("WARNING"))).fit()
    wall = time.perf_counter() - t0
    m = result.metrics
    work = m["load_s"] + m["build_s"] + m["boost_s"]
    return {"fit_s": wall, "load_s": m["load_s"], "build_s": m["build_s"], "boost_s": m["boost_s"],
            "work_s": work, "startup_s": wall - work, "per_round_s": m["boost_s"] / rounds,
            "peak_rss_mb": m["peak_rss_mb"]}


def fit_model(med: Dict[str, Dict[str, float]], rounds: int) -> Dict[str, float]:
    """The per-round model t(n) = b + c/n + a log2 n, and the fixed parts, from the medians."""
    p1, half = med["1w"]["per_round_s"], med["1w_half"]["per_round_s"]
    c = max(2 * (p1 - half), 0.0)
    b = max(p1 - c, 0.0)
    a_node = max(med["2w"]["per_round_s"] - (b + c / 2), 0.0)
    a_cross = max(med["2w_2nodes"]["per_round_s"] - (b + c / 2), 0.0)
    return {"compute_per_round_s": c, "serial_per_round_s": b, "allreduce_per_doubling_s_one_node": a_node,
            "allreduce_per_doubling_s_two_nodes": a_cross, "rounds": rounds,
            # Hand-over and build split with the data; start-up (processes, controller) does not.
            "load_build_s": med["1w"]["load_s"] + med["1w"]["build_s"],
            "startup_s": _common.median([m["startup_s"] for m in med.values()])}


def project(model: Dict[str, float], n: int) -> Dict[str, float]:
    per_round = (model["serial_per_round_s"] + model["compute_per_round_s"] / n
                 + model["allreduce_per_doubling_s_two_nodes"] * math.log2(n))
    work = model["load_build_s"] / n + model["rounds"] * per_round
    return {"workers": n, "per_round_s": per_round, "work_s": work, "fit_s": model["startup_s"] + work}


def efficiency(med: Dict[str, Dict[str, float]], key: str, config: str) -> float:
    n = med[config]["workers"]
    return med["1w"][key] / (n * med[config][key])


def main() -> int:
    p = _common.parser(__doc__)
    p.add_argument("--rows", type=_common.at_least(1), help="training rows (default 2000000; --quick 20000)")
    p.add_argument("--features", type=_common.at_least(1), default=30)
    p.add_argument("--rounds", type=_common.at_least(1), help="boosting rounds (default 50; --quick 10)")
    p.add_argument("--models", default="xgboost,lightgbm")
    args = p.parse_args()
    args.rows = args.rows or (20_000 if args.quick else 2_000_000)
    args.rounds = args.rounds or (10 if args.quick else 50)
    machine = _common.Machine()
    cores = os.cpu_count() or 1
    configs = layouts(cores)
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    from tests.local_cluster import RayNodes

    print(f"scaling: {args.rows:,} rows x {args.features} float32 features (+ {args.rows // 5:,} validation), "
          f"{args.rounds} rounds, depth {PARAMS['max_depth']}, 1 thread per worker; layouts: "
          f"{', '.join(configs)}; {_common.repeats(args)} repeat(s)", flush=True)
    x, y = make_data(args.rows, args.features)
    xv, yv = make_data(args.rows // 5, args.features, seed=1)
    features = [f"f{i}" for i in range(args.features)]
    root = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    t0 = time.perf_counter()
    store = max(400_000_000, 3 * x.nbytes)
    cluster = RayNodes(root, head_cpus=cores, head_resources={"one_node": cores}, object_store_bytes=store)
    try:
        for name in ("node-a", "node-b"):
            cluster.add_node(name, cpus=1, resources={"two_nodes": 1})
        # Token auth is read when Ray is imported and initialised: set it first.
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=cluster.env["RAY_AUTH_TOKEN"])
        import ray

        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        cluster_start = time.perf_counter() - t0
        ray.data.DataContext.get_current().enable_progress_bars = False
        to_ds = lambda a, b: ray.data.from_pandas(pd.DataFrame(a, columns=features).assign(y=b)).materialize()
        half = args.rows // 2
        data = {False: (to_ds(x, y), to_ds(xv, yv)), True: (to_ds(x[:half], y[:half]), to_ds(xv, yv))}
        shards = {}
        for name, c in configs.items():
            train, valid = data[c["half"]]
            shards[name] = {"train": train.split(c["workers"], equal=True), "valid": valid.split(c["workers"],
                                                                                                equal=True)}
        results: Dict[str, Any] = {"cluster_start_s": cluster_start, "layouts": configs, "models": {}}
        for kind in args.models.split(","):
            sides = {name: (lambda r, name=name, c=c: fit(kind, shards[name], features, args.rounds, c["workers"],
                                                          c["resource"], str(root / "ray_results"),
                                                          f"{kind}-{name}-{r}"))
                     for name, c in configs.items()}
            runs = _common.side_by_side(sides, _common.repeats(args), label=f"{kind} ")
            med = {name: {k: _common.median([r[k] for r in rs]) for k in rs[0]} | {"workers": configs[name]["workers"]}
                   for name, rs in runs.items()}
            model = fit_model(med, args.rounds)
            eff = {name: {key: efficiency(med, key, name) for key in ("fit_s", "work_s", "boost_s")}
                   for name in configs if not configs[name]["half"] and name != "1w"}
            projection = [project(model, n) for n in PROJECT_TO]
            for pr in projection:
                pr["efficiency_fit"] = projection[0]["fit_s"] / (pr["workers"] * pr["fit_s"])
                pr["efficiency_work"] = projection[0]["work_s"] / (pr["workers"] * pr["work_s"])
            results["models"][kind] = {"runs": runs, "median": med, "efficiency": eff, "model": model,
                                       "projection": projection}
    finally:
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()
        cluster.stop()
    _print(results)
    _common.write("scaling", args, machine, results)
    return 0


def _print(results: Dict[str, Any]) -> None:
    print(f"\n{'model':9s} {'layout':10s} {'fit s':>7s} {'load':>6s} {'build':>6s} {'boost':>6s} {'start':>6s} "
          f"{'eff(fit)':>9s} {'eff(work)':>9s}")
    for kind, r in results["models"].items():
        for name, m in r["median"].items():
            e = r["efficiency"].get(name, {})
            fmt = lambda v: f"{100 * v:8.0f}%" if v is not None else f"{'':9s}"
            print(f"{kind:9s} {name:10s} {m['fit_s']:7.1f} {m['load_s']:6.1f} {m['build_s']:6.1f} {m['boost_s']:6.1f} "
                  f"{m['startup_s']:6.1f} {fmt(e.get('fit_s'))} {fmt(e.get('work_s'))}")
        proj = ", ".join(f"{p['workers']}: {p['fit_s']:.0f}s ({100 * p['efficiency_fit']:.0f}%)"
                         for p in r["projection"])
        print(f"{kind:9s} projected fit time (efficiency): {proj}")


if __name__ == "__main__":
    sys.exit(_common.run(main))
