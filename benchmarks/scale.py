"""Data at scale: the project's CLI run against the plain single-process script a user would write
without it, on the same data, features, rounds, threads and cores, side by side.

The project side is `python -m training workload=<library>` as a user runs it (an in-process
Ray sized to the machine, one Train worker with every core, MLflow in a scratch directory),
with the number of rounds set and everything else as configured. The plain side is what an
expert writes in one process: pyarrow reads the parquet, pandas runs the same feature code
(training/data/features.py, so both sides train on identical columns and the same validation
rows), then `xgboost.QuantileDMatrix` + `xgboost.train` or `lightgbm.Dataset` + `lightgbm.train`
with the member's parameters and one thread per core.

Peak memory is the sum of PSS (proportional set size: shared pages such as Ray's object store
counted once) over each side's whole process tree, sampled 4 times a second, in runs of their
own (`--memory-runs`, one per side by default): reading a process's PSS walks its page tables,
and the project's tree is a dozen processes that each map the object store, so the sampler
competes for the cores with the side it measures, and more with the project than with the
one-process script. Times, phases and RMSE come from the other runs, which nothing samples
(`--memory-runs 0` samples memory in those runs instead, for sizes where one run is long).

Phases: the project's own split ("data" = read, split, features; "training" = workers'
start-up, shard hand-over, binning and boosting); the plain script's read + features, and
build + boost.
A side that fails (for example out of memory at a size the machine cannot hold) is reported as
failed with its exit status, and the other side still runs. `make bench` also runs it at
50,000,000 rows (`scale_beyond.json`), a size the plain script cannot hold on the development
machine: there the point is that the project completes, and at what time and memory.

    python benchmarks/scale.py [--quick] [--rows 5000000] [--rounds 50] [--libraries xgboost lightgbm]
                               [--repeats 3] [--memory-runs 1]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

FINISHED = re.compile(r"Run (\S+) finished in ([\d.]+)s \(cluster ([\d.]+)s, data ([\d.]+)s, "
                      r"training ([\d.]+)s, tracking ([\d.]+)s\)")
MEMBER_ROW = re.compile(r"^(\w+)\s*\|\s*(xgboost|lightgbm)\s*\|\s*(\d+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|")
SAMPLE_S = 0.25


class TreePss:
    """Peak of the summed PSS of a process and all its descendants, sampled every SAMPLE_S."""

    def __init__(self, root: int):
        self.root, self.peak_bytes = root, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, sum(_pss(p) for p in _tree(self.root)))
            self._stop.wait(SAMPLE_S)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_bytes / 2**30


def _tree(root: int) -> List[int]:
    """The process and its descendants, from the kernel's per-thread child lists."""
    tree, frontier = [], [root]
    while frontier:
        tree += frontier
        frontier = [int(c) for p in frontier for c in _children(p)]
    return tree


def _children(pid: int) -> List[str]:
    out: List[str] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                out += Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
            except OSError:
                continue
    except OSError:
        pass
    return out


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def measured(cmd: List[str], cwd: Path, sample_memory: bool = True) -> Dict[str, Any]:
    """Run a command; its wall time, its output and, when sampled, its process tree's peak PSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONPATH=str(_common.REPO)))
    sampler = TreePss(proc.pid) if sample_memory else None
    out, _ = proc.communicate(timeout=7200)
    r = {"wall_s": time.perf_counter() - t0, "exit": proc.returncode, "output": out}
    if sampler is not None:
        r["peak_pss_gb"] = sampler.stop()
    return r


def project(lib: str, path: str, n_rows: int, rounds: int, threads: int, workdir: Path,
            sample_memory: bool = True) -> Dict[str, Any]:
    cmd = [sys.executable, "-m", "training", f"workload={lib}", *_common.data_overrides(path, n_rows),
           f"workload.members.0.num_boost_round={rounds}", f"cluster.cpus_per_worker={threads}",
           f"cluster.num_cpus={threads}", f"run_name=scale-{lib}-{time.strftime('%H%M%S')}"]
    r = measured(cmd, workdir, sample_memory)
    out = r.pop("output")
    finished, row = FINISHED.search(out), next(filter(None, map(MEMBER_ROW.match, out.splitlines())), None)
    if r["exit"] != 0 or not finished or not row:
        return {**r, "failed": out.strip().splitlines()[-1] if out.strip() else f"exit {r['exit']}"}
    return {**r, "data_s": float(finished.group(4)), "train_s": float(finished.group(5)),
            "rmse": float(row.group(5))}


def plain(lib: str, path: str, n_rows: int, rounds: int, threads: int, workdir: Path,
          sample_memory: bool = True) -> Dict[str, Any]:
    cmd = [sys.executable, __file__, "--side", f"plain-{lib}", "--data-path", path, "--rows", str(n_rows),
           "--rounds", str(rounds), "--threads", str(threads)]
    r = measured(cmd, workdir, sample_memory)
    out = r.pop("output")
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if r["exit"] != 0 or not lines:
        return {**r, "failed": out.strip().splitlines()[-1] if out.strip() else f"exit {r['exit']}"}
    return {**r, **json.loads(lines[-1][len("RESULT "):])}


def plain_script(lib: str, path: str, n_rows: int, rounds: int, threads: int) -> Dict[str, Any]:
    """The single-process script: this function is what the plain side runs, in its own process."""
    import numpy as np
    import pyarrow.parquet as pq

    from data_pipeline import _InMemory
    from training import config
    from training.data.columns import resolve_columns
    from training.data.features import FeaturePipeline
    from training.data.split import split_batch

    cfg = config.load([f"workload={lib}", *_common.data_overrides(path, n_rows)])
    d, member = cfg.data, cfg.workload.members[0]
    t0 = time.perf_counter()
    table = pq.read_table(path)
    cols = resolve_columns(d, table.schema)
    df = table.to_pandas()
    del table
    train_raw = split_batch(df, d.validation_fraction, d.split_seed, validation=False)
    valid_raw = split_batch(df, d.validation_fraction, d.split_seed, validation=True)
    del df
    pipeline = FeaturePipeline.fit(_InMemory(train_raw), d, cols)
    train, valid = pipeline.transform(train_raw), pipeline.transform(valid_raw)
    del train_raw, valid_raw
    f, y = list(pipeline.output_features), pipeline.target
    data_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    params = dict(member.params)
    if lib == "xgboost":
        import xgboost as xgb

        types = ["c" if c in pipeline.categorical_features else "q" for c in f]
        kw = dict(feature_types=types, enable_categorical=True, nthread=threads)
        dtrain = xgb.QuantileDMatrix(train[f], train[y], **kw)
        dvalid = xgb.QuantileDMatrix(valid[f], valid[y], ref=dtrain, **kw)
        booster = xgb.train({"objective": "reg:squarederror", "tree_method": "hist", "nthread": threads,
                             "seed": cfg.seed, **params}, dtrain, rounds)
        pred = booster.predict(dvalid)
    else:
        import lightgbm as lgb

        dtrain = lgb.Dataset(train[f], train[y], categorical_feature=list(pipeline.categorical_features))
        booster = lgb.train({"objective": "regression", "num_threads": threads, "seed": cfg.seed,
                             "verbosity": -1, "deterministic": True, **params}, dtrain, rounds)
        pred = booster.predict(valid[f])
    rmse = float(np.sqrt(np.mean((pred - valid[y].to_numpy(np.float64)) ** 2)))
    return {"data_s": data_s, "train_s": time.perf_counter() - t1, "rmse": rmse}


def ratios(sides: Dict[str, Dict[str, Any]]) -> Dict[str, Optional[float]]:
    p, s = sides["project"], sides["plain"]
    if "failed" in p or "failed" in s:
        return {}
    return {"wall": p["wall_s"] / s["wall_s"], "data": p["data_s"] / s["data_s"],
            "train": p["train_s"] / s["train_s"], "peak_memory": p["peak_pss_gb"] / s["peak_pss_gb"],
            "rmse_gap": p["rmse"] / s["rmse"] - 1}


def plot(doc: Dict[str, Any], path: Path) -> Path:
    """Wall time and peak memory per side; a side that failed shows how far it got (hatched, with
    its exit), and the memory panel marks the machine's memory."""
    from figures import figure, save

    plt, fig, axes = figure(width=9, height=3.2, cols=2)
    libs = list(doc["libraries"])
    for ax, (key, label) in zip(axes, [("wall_s", "wall time (s)"), ("peak_pss_gb", "peak memory, PSS (GB)")]):
        for i, side in enumerate(("project", "plain")):
            runs = [doc["libraries"][lib][side] for lib in libs]
            bars = ax.bar([j + (i - 0.5) * 0.38 for j in range(len(libs))], [r.get(key, 0) for r in runs], 0.38,
                          label="this project" if side == "project" else "plain script", color=f"C{i}",
                          hatch=["//" if "failed" in r else "" for r in runs])
            ax.bar_label(bars, labels=[f"failed ({r['failed']})\nat {r.get(key, 0):.3g}" if "failed" in r
                                       else f"{r.get(key, 0):.3g}" for r in runs], fontsize=7)
        ax.set_xticks(range(len(libs)), libs)
        ax.set_ylabel(label)
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    axes[1].axhline(memory_gb, color="gray", linestyle="--", linewidth=1)
    axes[1].text(-0.45, memory_gb, f"machine memory {memory_gb:.1f} GB", fontsize=7, va="bottom")
    axes[1].set_ylim(0, memory_gb * 1.15)
    axes[0].set_title(f"{doc['rows']:,} rows, {doc['rounds']} rounds, {doc['threads']} threads", fontsize=10)
    axes[0].legend(fontsize=7)
    return save(plt, fig, path)


def main() -> int:
    p = _common.parser(__doc__)
    _common.side_args(p, [f"plain-{lib}" for lib in ("xgboost", "lightgbm")], default_rows=5_000_000,
                      quick_rows=50_000)
    p.add_argument("--rounds", type=_common.at_least(1), default=50)
    p.add_argument("--threads", type=_common.at_least(1), default=os.cpu_count())
    p.add_argument("--libraries", nargs="+", default=["xgboost", "lightgbm"], choices=["xgboost", "lightgbm"])
    p.add_argument("--memory-runs", type=_common.at_least(0), default=1,
                   help="runs per side that sample memory, apart from the timed runs (0: sample in the timed runs)")
    args = p.parse_args()
    n_rows = _common.rows(args)
    if args.side:
        print("RESULT " + json.dumps(plain_script(args.side.split("-", 1)[1], args.data_path, n_rows, args.rounds,
                                                  args.threads)), flush=True)
        return 0
    machine = _common.Machine()
    path, _ = _common.bench_data(n_rows)
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"scale: {n_rows:,} rows, {args.rounds} rounds, {args.threads} threads; project runs in {workdir}",
          flush=True)
    doc: Dict[str, Any] = {"rows": n_rows, "rounds": args.rounds, "threads": args.threads, "libraries": {}}
    for lib in args.libraries:
        def sides(sample_memory: bool, lib: str = lib):
            return {"project": lambda r: project(lib, path, n_rows, args.rounds, args.threads, workdir, sample_memory),
                    "plain": lambda r: plain(lib, path, n_rows, args.rounds, args.threads, workdir, sample_memory)}

        runs = _common.side_by_side(sides(args.memory_runs == 0), _common.repeats(args), label=f"{lib} ")
        memory_runs = (_common.side_by_side(sides(True), args.memory_runs, label=f"{lib} memory ")
                       if args.memory_runs else runs)
        med = {side: medians(rs, memory_runs[side]) for side, rs in runs.items()}
        doc["libraries"][lib] = {**med, "ratios": ratios(med), "runs": runs,
                                 **({"memory_runs": memory_runs} if args.memory_runs else {})}
        _print(lib, med, doc["libraries"][lib]["ratios"])
    out = _common.write("scale", args, machine, doc)
    print(f"plot: {plot(doc, out.with_suffix('.png'))}")
    return 0


def medians(runs: List[Dict[str, Any]], memory_runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Medians of the timed runs, and the peak memory of the runs that sampled it (a failed run's
    peak too: how far a side that ran out of memory got)."""
    peak = _common.median([r["peak_pss_gb"] for r in memory_runs])
    ok = [r for r in runs if "failed" not in r]
    if not ok:
        return {**runs[-1], "peak_pss_gb": peak}
    return {**{k: _common.median([r[k] for r in ok]) for k in ("wall_s", "data_s", "train_s", "rmse")},
            "peak_pss_gb": peak}


def _print(lib: str, med: Dict[str, Dict[str, Any]], ratio: Dict[str, Optional[float]]) -> None:
    print(f"\n{lib:9s} {'wall s':>8s} {'data s':>8s} {'train s':>8s} {'peak GB':>8s} {'RMSE':>9s}")
    for side, m in med.items():
        if "failed" in m:
            print(f"{side:9s} failed: {m['failed']} (after {m['wall_s']:.0f}s, peak {m['peak_pss_gb']:.2f} GB)")
        else:
            print(f"{side:9s} {m['wall_s']:8.1f} {m['data_s']:8.1f} {m['train_s']:8.1f} {m['peak_pss_gb']:8.2f} "
                  f"{m['rmse']:9.4f}")
    if ratio:
        print("project / plain: " + ", ".join(f"{k} {v:.2f}x" if k != "rmse_gap" else f"RMSE {v:+.2%}"
                                             for k, v in ratio.items()))


if __name__ == "__main__":
    sys.exit(_common.run(main))
