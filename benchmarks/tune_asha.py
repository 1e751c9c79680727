"""ASHA vs FIFO for workload=tune: the same search, side by side, on one in-process Ray.

Both runs draw the same trial configurations (Optuna's random sampler with one seed ignores
results, so trial i has the same parameters under both schedulers), on the same synthetic data,
with the same concurrency. FIFO trains every trial to its num_boost_round; ASHA cuts trials at
rungs of grace_period * reduction_factor^k rounds. Prints wall time of the search, trials per
hour and best validation RMSE per scheduler, and the ratios ASHA/FIFO.
Goal: ASHA's best RMSE within 1% of FIFO's in at most half of FIFO's wall time.

    python benchmarks/tune_asha.py [--rows 50000] [--samples 16] [--concurrency 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402  (benchmarks/, the script's own folder)


def overrides(args, scheduler: str, name: str):
    asha = [f"workload.scheduler.grace_period={args.grace}"] if args.grace else []
    asha += [f"workload.scheduler.reduction_factor={args.rf}"] if args.rf else []
    asha = asha if scheduler == "asha" else []  # FIFO has no rungs; the config refuses their options
    return ["workload=tune", f"workload.scheduler.type={scheduler}", f"workload.num_samples={args.samples}",
            f"workload.max_concurrent_trials={args.concurrency}", f"workload.search.algorithm={args.search}",
            *asha, f"workload.checkpoint_every={args.every}", "workload.register=false", "workload.trial.mode=local",
            f"data.synthetic.rows={args.rows}", f"cluster.cpus_per_worker={args.threads}",
            f"cluster.num_cpus={args.cpus}", "cluster.dashboard=false", f"run_name={name}", f"seed={args.seed}"]


def one(args, scheduler: str, stamp: str):
    from training import config
    from training.tune import workload as tune

    cfg = config.load(overrides(args, scheduler, f"bench-{scheduler}-{stamp}"))
    t0 = time.perf_counter()
    result = tune.run(cfg)
    wall = time.perf_counter() - t0
    search_s = result.timings["tune_s"]
    return {"scheduler": scheduler, "search_s": round(search_s, 1), "total_s": round(wall, 1),
            "trials": len(result.trials), "trials_per_hour": round(len(result.trials) / search_s * 3600, 1),
            "stopped_early": sum(t.stopped_early for t in result.trials),
            "rounds_trained": sum(t.rounds_done for t in result.trials),
            "best_valid_rmse": round(result.best.value, 5), "best_trial": result.best.trial_id,
            "best_rounds": result.best_rounds, "best_params": result.best_params}


def run_order(text: str) -> str:
    """--order: both schedulers, each once, in the order they run."""
    if sorted(text.split(",")) != ["asha", "fifo"]:
        raise argparse.ArgumentTypeError(f"must name fifo and asha once each (fifo,asha or asha,fifo), got {text!r}")
    return text


def main() -> int:
    from training.errors import ArgumentParser

    count = _common.at_least(1)
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=_common.at_least(100), default=50_000)
    p.add_argument("--samples", type=count, default=16)
    p.add_argument("--concurrency", type=count, default=2)
    p.add_argument("--cpus", type=count, default=2, help="CPUs of the in-process Ray")
    p.add_argument("--threads", type=count, default=1, help="threads (CPUs) per trial")
    p.add_argument("--search", default="random", choices=["random", "tpe"],
                   help="random: identical configs under both schedulers (default)")
    p.add_argument("--grace", type=count, help="ASHA grace period in rounds (default: training/conf/workload/tune.yaml)")
    p.add_argument("--rf", type=_common.at_least(1.01, float),
                   help="ASHA reduction factor (default: training/conf/workload/tune.yaml)")
    p.add_argument("--every", type=count, default=50, help="report every N rounds")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--order", default="fifo,asha", type=run_order, help="which runs first (machine load drifts)")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    from training import config

    for scheduler in ("fifo", "asha"):  # the project's own checks, before either search runs
        config.load(overrides(args, scheduler, "x"))

    from training.runtime import report

    report.setup_logging()
    out_path = Path(args.json).resolve() if args.json else None
    workdir = tempfile.mkdtemp(prefix="tune-asha-")
    os.chdir(workdir)  # data, mlruns and ray_results of the benchmark stay out of the checkout
    stamp = time.strftime("%H%M%S")
    runs = {s: one(args, s, stamp) for s in args.order.split(",")}
    fifo, asha = runs["fifo"], runs["asha"]
    sched = config.load(overrides(args, "asha", "x")).workload.scheduler
    time_ratio = asha["search_s"] / fifo["search_s"]
    rmse_gap = asha["best_valid_rmse"] / fifo["best_valid_rmse"] - 1
    print(f"\nASHA vs FIFO: {args.samples} trials, {args.concurrency} at a time, {args.rows:,} synthetic rows "
          f"(~{int(args.rows * 0.8):,} train), {args.search} search, ASHA grace {sched.grace_period} rounds, "
          f"reduction factor {sched.reduction_factor:g}, "
          f"report every {args.every} rounds")
    header = f"{'scheduler':<9} {'search s':>9} {'trials/h':>9} {'stopped':>8} {'rounds':>8} {'best RMSE':>10}"
    print(header)
    for r in (fifo, asha):
        print(f"{r['scheduler']:<9} {r['search_s']:>9.1f} {r['trials_per_hour']:>9.0f} {r['stopped_early']:>8} "
              f"{r['rounds_trained']:>8} {r['best_valid_rmse']:>10.4f}")
    ok_time, ok_rmse = time_ratio <= 0.5, rmse_gap <= 0.01
    print(f"wall time ASHA/FIFO = {time_ratio:.2f} (goal <= 0.50: {'met' if ok_time else 'missed'}); "
          f"trials/hour x{1 / time_ratio:.1f}; best RMSE ASHA vs FIFO {rmse_gap * 100:+.2f}% "
          f"(goal <= +1%: {'met' if ok_rmse else 'missed'})")
    if out_path:
        out = {"args": vars(args), "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                               "load_avg_1m": os.getloadavg()[0]},
               "runs": runs, "time_ratio": round(time_ratio, 3), "rmse_gap": round(rmse_gap, 5)}
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(out, indent=1))
    import ray

    ray.shutdown()
    return 0 if ok_time and ok_rmse else 1


if __name__ == "__main__":
    sys.exit(_common.run(main))
