"""What every benchmark shares: the machine record, side-by-side repeats with alternating order,
medians, and writing results JSON to benchmarks/results/<name>.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
# `make bench-quick` points this elsewhere so that smoke runs never overwrite the published results.
RESULTS = Path(os.environ.get("BENCH_RESULTS", REPO / "benchmarks" / "results"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parser(doc: str) -> argparse.ArgumentParser:
    from training.errors import ArgumentParser

    p = ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small smoke size (seconds, not minutes)")
    p.add_argument("--repeats", type=at_least(1), help="runs per side (default 3; --quick: 1)")
    p.add_argument("--out", help="results JSON (default benchmarks/results/<name>.json)")
    return p


def at_least(low: float, kind: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` no smaller than `low` (0 or a negative count would
    silently fall back to a default, or fail after the data is made)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low:g}, got {text}")
        return value
    return parse


def run(main: Callable[[], Any]) -> int:
    """A benchmark's entry point: a config the project refuses is its one line and exit 2."""
    from training import errors

    try:
        return main() or 0
    except errors.UserError as exc:
        return errors.show(exc)


def repeats(args) -> int:
    return args.repeats or (1 if args.quick else 3)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpu() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _version(pkg: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# Seconds to write one GiB of newly allocated memory above which a machine's figures are not of
# record: a VM whose host is slow to hand back the memory it reported free (free page reporting)
# stalls on every fresh page, and a side that allocates more fresh memory (the plain scripts'
# whole-table pandas steps) is slowed far more than the other.
SLOW_FRESH_MEMORY_S = 1.0


def fresh_memory_s(gib: float = 1.0) -> float:
    """Seconds to allocate and write `gib` GiB of fresh memory (then freed)."""
    import numpy as np

    t0 = time.perf_counter()
    block = np.ones(int(gib * 2**30), np.uint8)
    seconds = time.perf_counter() - t0
    del block
    return round(seconds / gib, 3)


def slow_memory(record: Dict[str, Any]) -> bool:
    return max(record.get("fresh_memory_s_per_gib") or [0.0]) > SLOW_FRESH_MEMORY_S


class Machine:
    """The machine record: taken at the start, completed (load average, duration) at the end,
    with the time a GiB of fresh memory takes at both ends (SLOW_FRESH_MEMORY_S)."""

    def __init__(self, probe_memory: bool = True):
        self.t0, self.probe_memory = time.time(), probe_memory
        self.record: Dict[str, Any] = {
            "cpus": os.cpu_count(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                                        / 2**30, 1),
            "cpu_model": _cpu_model(), "gpu": _gpu(), "platform": platform.platform(),
            "python": platform.python_version(),
            **{pkg: _version(pkg) for pkg in ("ray", "xgboost", "lightgbm", "pandas", "pyarrow")},
            "git_commit": _git_commit(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "load_avg_start": [round(x, 2) for x in os.getloadavg()],
            "fresh_memory_s_per_gib": [fresh_memory_s()] if probe_memory else []}
        if slow_memory(self.record):
            print(f"warning: {self.record['fresh_memory_s_per_gib'][0]:.1f} s to write 1 GiB of fresh memory "
                  f"(over {SLOW_FRESH_MEMORY_S:g} s): comparisons run now are not figures of record", flush=True)

    def finish(self) -> Dict[str, Any]:
        self.record["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        self.record["duration_s"] = round(time.time() - self.t0, 1)
        if self.probe_memory and len(self.record["fresh_memory_s_per_gib"]) == 1:
            self.record["fresh_memory_s_per_gib"].append(fresh_memory_s())
        return self.record


def side_by_side(sides: Dict[str, Callable[[int], Any]], n: int, label: str = "") -> Dict[str, List[Any]]:
    """Run every side `n` times, reversing the order on every other repeat so that drift in
    machine load hits all sides alike. Each callable gets the repeat index."""
    out: Dict[str, List[Any]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(n):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            value = sides[name](r)
            out[name].append(value)
            print(f"  {label}{name} run {r + 1}/{n}: {_short(value)} ({time.perf_counter() - t0:.1f}s)", flush=True)
    return out


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in list(value.items())[:6])
    return str(value)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def write(name: str, args, machine: Machine, payload: Dict[str, Any]) -> Path:
    out = Path(args.out) if args.out else RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "quick": bool(args.quick), "machine": machine.finish(),
           "args": {k: v for k, v in vars(args).items() if k != "out"}, **payload}
    out.write_text(json.dumps(doc, indent=1, default=float))
    print(f"results: {out}")
    return out


# --- benchmarks that run each side in a fresh process on shared synthetic data --------------------

def side_args(p: argparse.ArgumentParser, sides: Sequence[str], default_rows: int = 500_000,
              quick_rows: int = 20_000) -> None:
    """--rows, plus the hidden --side/--data-path a script passes to its own child processes."""
    p.add_argument("--rows", type=at_least(100), help=f"raw rows (default {default_rows}; --quick {quick_rows})")
    p.add_argument("--side", choices=list(sides), help=argparse.SUPPRESS)
    p.add_argument("--data-path", help=argparse.SUPPRESS)
    p.set_defaults(_rows=(default_rows, quick_rows))


def rows(args) -> int:
    default_rows, quick_rows = args._rows
    return args.rows or (quick_rows if args.quick else default_rows)


def data_overrides(path: str, n_rows: int) -> List[str]:
    """The data config of a benchmark size. Files of at most about a million rows (8 at least, the
    default): a larger dataset comes as more files, as it would from any writer, so that no
    read block, and no transform of one, outgrows a worker."""
    parts = max(8, -(-n_rows // 1_000_000))
    return [f"data.path={path}", f"data.synthetic.rows={n_rows}", f"data.synthetic.partitions={parts}",
            "cluster.dashboard=false"]


def bench_data(n_rows: int) -> Tuple[str, float]:
    """The synthetic retail data for a benchmark size (generated once, reused while its parameters
    are unchanged): its path and the seconds it took to have it ready."""
    from training import config
    from training.data import sources

    path = str(REPO / "data" / "bench" / f"retail-{n_rows}")
    t0 = time.perf_counter()
    sources.prepare_synthetic(config.load(data_overrides(path, n_rows)).data)
    return path, time.perf_counter() - t0


def run_side(script: str, side: str, path: str, n_rows: int, env: Dict[str, str] | None = None) -> Dict[str, Any]:
    """Run `script --side SIDE` in a fresh process and return the JSON of its last `RESULT` line."""
    proc = subprocess.run([sys.executable, script, "--side", side, "--data-path", path, "--rows", str(n_rows)],
                          capture_output=True, text=True, timeout=1800, cwd=REPO,
                          env=dict(os.environ, **(env or {})))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{side} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])
