"""The main job end to end (`make run`'s workload: `python -m training workload=ensemble`), wall time
split into cluster start, data, training and tracking; and its members trained concurrently (the
default) vs one after another (`workload.max_concurrent_members=1`), side by side.

Each run is a fresh `python -m training` process, as a user runs it, in one scratch working
directory (its own mlruns/ and ray_results/), on the same synthetic data generated beforehand
(generation is a one-off, not part of any run). The phase split is what the run prints and
logs to MLflow ("Run ... finished in T s (cluster, data, training, tracking)"); the process
wall time adds interpreter start and imports. Goal: concurrent training phase >= 1.6x faster
than sequential when two members fit at once (2 cores, 1-CPU members).

    python benchmarks/end_to_end.py [--quick] [--repeats 3]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

SIDES = {"concurrent": [], "sequential": ["workload.max_concurrent_members=1"]}
FINISHED = re.compile(r"Run (\S+) finished in ([\d.]+)s \(cluster ([\d.]+)s, data ([\d.]+)s, "
                      r"training ([\d.]+)s, tracking ([\d.]+)s\)")
MEMBER_ROW = re.compile(r"^(\w+)\s*\|\s*(xgboost|lightgbm)\s*\|\s*(\d+)\s*\|\s*([\d.]+)\s*\|")


def quick_overrides() -> List[str]:
    return ["data.synthetic.rows=20000"] + [f"workload.members.{i}.num_boost_round=30" for i in range(3)]


def parse(stdout: str) -> Dict[str, Any]:
    m = FINISHED.search(stdout)
    if not m:
        raise RuntimeError(f"no 'Run ... finished' line in the output:\n{stdout[-3000:]}")
    members = {r.group(1): float(r.group(4)) for r in map(MEMBER_ROW.match, stdout.splitlines()) if r}
    return {"total_s": float(m.group(2)), "cluster_s": float(m.group(3)), "data_s": float(m.group(4)),
            "train_s": float(m.group(5)), "tracking_s": float(m.group(6)), "member_s": members}


def run_job(workdir: Path, extra: List[str], name: str) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(_common.REPO))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "training", "workload=ensemble", f"run_name={name}", *extra],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, **parse(proc.stdout)}


def main() -> int:
    args = _common.parser(__doc__).parse_args()
    machine = _common.Machine()
    from training import config
    from training.data import sources

    base = quick_overrides() if args.quick else []
    cfg = config.load(["workload=ensemble", *base])
    path = str(_common.REPO / "data" / "bench" / f"retail-{cfg.data.synthetic.rows}")
    base.append(f"data.path={path}")
    sources.prepare_synthetic(config.load(["workload=ensemble", *base]).data)
    workdir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    stamp = time.strftime("%H%M%S")
    print(f"end_to_end: python -m training workload=ensemble {' '.join(base)} (in {workdir}); "
          f"{_common.repeats(args)} repeat(s) per side", flush=True)
    sides = {side: (lambda r, side=side, extra=extra: run_job(workdir, base + extra, f"bench-{side}-{stamp}-{r}"))
             for side, extra in SIDES.items()}
    runs = _common.side_by_side(sides, _common.repeats(args))
    keys = ("wall_s", "total_s", "cluster_s", "data_s", "train_s", "tracking_s")
    med = {side: {k: _common.median([r[k] for r in rs]) for k in keys} for side, rs in runs.items()}
    speedup = {"train": med["sequential"]["train_s"] / med["concurrent"]["train_s"],
               "total": med["sequential"]["total_s"] / med["concurrent"]["total_s"],
               "wall": med["sequential"]["wall_s"] / med["concurrent"]["wall_s"]}
    print(f"\n{'side':11s} " + " ".join(f"{k[:-2]:>9s}" for k in keys))
    for side, m in med.items():
        print(f"{side:11s} " + " ".join(f"{m[k]:9.1f}" for k in keys))
    print(f"concurrent vs sequential: training {speedup['train']:.2f}x, whole run {speedup['total']:.2f}x "
          f"(goal >= 1.6x)")
    _common.write("end_to_end", args, machine, {"overrides": base, "runs": runs, "median": med,
                                                "speedup_concurrent_vs_sequential": speedup})
    return 0


if __name__ == "__main__":
    sys.exit(_common.run(main))
