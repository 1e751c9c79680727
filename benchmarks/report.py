"""Read every benchmark's results JSON, print one table of the goals (measured, goal, met/missed),
write benchmarks/results/summary.json and the PNG plots next to it.

    python benchmarks/report.py [--results benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from figures import MODELS, plot_all  # noqa: E402

BENCHMARKS = ["gbdt_overhead", "scaling", "data_pipeline", "memory", "scale", "scale_20m", "scale_beyond", "end_to_end",
              "tune_asha", "bert_throughput"]


@dataclass
class Row:
    what: str
    benchmark: str
    measured: Optional[float]
    unit: str              # "x" (ratio), "%", "s", "MiB"
    goal: str              # e.g. "<= 1.5"; "" for figures reported without a goal
    status: str            # met, missed, info, not run, no GPU

    def shown(self) -> str:
        if self.measured is None:
            return "-"
        if self.unit == "%":
            # A signed gap (goal "<= +1%") needs its sign and decimals; efficiencies do not.
            return f"{100 * self.measured:+.2f}%" if "+" in self.goal else f"{100 * self.measured:.0f}%"
        if self.unit == "x":
            return f"{self.measured:.2f}x"
        return f"{self.measured:.1f} {self.unit}".strip()


def _get(doc: Optional[dict], *path: Any) -> Optional[float]:
    for key in path:
        if doc is None:
            return None
        if isinstance(doc, dict):
            doc = doc.get(key)
        elif isinstance(doc, list) and isinstance(key, int) and -len(doc) <= key < len(doc):
            doc = doc[key]
        else:
            doc = None
    return float(doc) if isinstance(doc, (int, float)) and not math.isnan(doc) else None


def _row(what: str, bench: str, results: Dict[str, dict], path: tuple, unit: str, goal: str = "",
         ok: Optional[Callable[[float], bool]] = None) -> Row:
    value = _get(results.get(bench), *path)
    if value is None:
        status = "not run"
    elif ok is None:
        status = "info"
    else:
        status = "met" if ok(value) else "missed"
    return Row(what, bench, value, unit, goal, status)


def goals(results: Dict[str, dict]) -> List[Row]:
    rows: List[Row] = []
    for kind, name in MODELS.items():
        rows.append(_row(f"Ray Train overhead, {name} (Ray time / plain time)", "gbdt_overhead", results,
                         ("models", kind, "ratio"), "x", "<= 1.5", lambda v: v <= 1.5))
    for kind, name in MODELS.items():
        eff = ("models", kind, "efficiency")
        rows.append(_row(f"2-worker efficiency, {name}, 1 node (load + build + boost)", "scaling", results,
                         eff + ("2w", "work_s"), "%", ">= 80%", lambda v: v >= 0.8))
        rows.append(_row(f"2-worker efficiency, {name}, 2 nodes (load + build + boost)", "scaling", results,
                         eff + ("2w_2nodes", "work_s"), "%"))
        rows.append(_row(f"2-worker efficiency, {name}, 1 node (whole fit, with start-up)", "scaling", results,
                         eff + ("2w", "fit_s"), "%"))
        rows.append(_row(f"projected efficiency at 32 workers, {name} (whole fit)", "scaling", results,
                         ("models", kind, "projection", -1, "efficiency_fit"), "%"))
    rows.append(_row("Ray Data preprocessing, 1 CPU / pandas on 1 core (rows/s)", "data_pipeline", results,
                     ("ratio_vs_pandas", "ray_1cpu"), "x", ">= 0.7", lambda v: v >= 0.7))
    rows.append(_row("Ray Data preprocessing, 2 CPUs / pandas on 1 core (rows/s)", "data_pipeline", results,
                     ("ratio_vs_pandas", "ray_2cpu"), "x", "> 1.0", lambda v: v > 1.0))
    rows.append(_row("peak RSS per Train worker (2 workers) / single process", "memory", results,
                     ("ratios", "worker_2w_vs_single"), "x"))
    rows.append(_row("peak RSS of the Ray driver / single process", "memory", results,
                     ("ratios", "driver_vs_single"), "x"))
    for kind, name in MODELS.items():
        for key, what, goal in (("wall", "whole run", 1.3), ("data", "data phase", 1.5), ("peak_memory", "peak memory", 1.0)):
            rows.append(_row(f"at scale, {name}: {what}, project / plain script", "scale", results,
                             ("libraries", kind, "ratios", key), "x", f"<= {goal}", lambda v, g=goal: v <= g))
        rows.append(_row(f"at scale, {name}: validation RMSE, project vs plain script", "scale", results,
                         ("libraries", kind, "ratios", "rmse_gap"), "%", "<= +1%", lambda v: abs(v) <= 0.01))
    rows += data_dominates(results)
    rows += beyond(results.get("scale_beyond"))
    rows.append(_row("concurrent ensemble members vs sequential (training phase)", "end_to_end", results,
                     ("speedup_concurrent_vs_sequential", "train"), "x", ">= 1.6", lambda v: v >= 1.6))
    rows.append(_row("main job (make run's workload), whole run", "end_to_end", results,
                     ("median", "concurrent", "total_s"), "s", "<= 60 s", lambda v: v <= 60))
    rows.append(_row("Tune: ASHA wall time / FIFO wall time", "tune_asha", results, ("time_ratio",), "x", "<= 0.5",
                     lambda v: v <= 0.5))
    rows.append(_row("Tune: ASHA best RMSE vs FIFO's", "tune_asha", results, ("rmse_gap",), "%", "<= +1%",
                     lambda v: v <= 0.01))
    bert = [_row("BERT: TorchTrainer / plain loop (samples/s per GPU)", "bert_throughput", results,
                 ("ratio_ray_over_plain_per_gpu",), "x", ">= 0.95", lambda v: v >= 0.95),
            _row("BERT: model FLOPs utilisation (TorchTrainer)", "bert_throughput", results, ("ray_mfu_per_gpu",), "%",
                 ">= 40%", lambda v: v >= 0.4)]
    for r in bert:
        if r.status == "not run" and not _gpu_recorded(results):
            r.status = "no GPU"
    return rows + bert


def data_dominates(results: Dict[str, dict]) -> List[Row]:
    """The same comparison at a size where the data, not the start-up, takes most of the run
    (the goals are set at the default size; these are information)."""
    doc = results.get("scale_20m")
    if not doc:
        return []
    return [_row(f"at {doc['rows']:,} rows, {MODELS[kind]}: {what}, project / plain script", "scale_20m", results,
                 ("libraries", kind, "ratios", key), "x")
            for kind in doc["libraries"]
            for key, what in (("wall", "whole run"), ("data", "data phase"), ("peak_memory", "peak memory"))]


def beyond(doc: Optional[dict]) -> List[Row]:
    """The run beyond what one process can hold: the project must complete (its wall time and peak
    memory shown); the plain script's outcome is information."""
    if not doc:
        return [Row("beyond one process: project completes", "scale_beyond", None, "s", "completes", "not run")]
    rows = []
    for kind, sides in doc["libraries"].items():
        where = f"beyond one process, {MODELS[kind]}, {doc['rows']:,} rows"
        project, plain = sides["project"], sides["plain"]
        rows.append(Row(f"{where}: project, whole run", "scale_beyond", project["wall_s"], "s", "completes",
                        "missed" if "failed" in project else "met"))
        rows.append(Row(f"{where}: plain script, " + (f"failed ({plain['failed']}) after" if "failed" in plain
                                                      else "whole run"), "scale_beyond", plain["wall_s"], "s", "",
                        "info"))
        for side, label in ((project, "project"), (plain, "plain script")):
            rows.append(Row(f"{where}: {label}, peak memory (PSS)", "scale_beyond", side["peak_pss_gb"], "GB", "",
                            "info"))
    return rows


def _gpu_recorded(results: Dict[str, dict]) -> bool:
    return any((doc.get("machine") or {}).get("gpu") for doc in results.values()) or "bert_throughput" in results


def load(results_dir: Path) -> Dict[str, dict]:
    out = {}
    for name in BENCHMARKS:
        f = results_dir / f"{name}.json"
        if f.exists():
            out[name] = json.loads(f.read_text())
    return out


def table(rows: List[Row], markdown: bool = False) -> str:
    head = ["goal / figure", "measured", "goal", "status"]
    body = [[r.what, r.shown(), r.goal or "-", r.status] for r in rows]
    if markdown:  # for README.md
        return "\n".join(["| " + " | ".join(head) + " |", "| --- | --- | --- | --- |"]
                         + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(x[i]) for x in [head] + body) for i in range(4)]
    line = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(head), "-+-".join("-" * w for w in widths)] + [line(b) for b in body])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--results", default=str(_common.RESULTS), help="folder with the benchmarks' JSON")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown (for README.md)")
    args = p.parse_args()
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    results = load(out)
    rows = goals(results)
    pngs = plot_all(results, out)
    quick = sorted(n for n, d in results.items() if d.get("quick"))
    sources = {n: {k: (d.get("machine") or {}).get(k) for k in ("started_at", "load_avg_start", "load_avg_end",
                                                                "duration_s", "git_commit",
                                                                "fresh_memory_s_per_gib")} | {"quick": d.get("quick")}
               for n, d in results.items()}
    summary = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": _common.Machine(probe_memory=False).finish(),
               "goals": [asdict(r) for r in rows], "plots": [p.name for p in pngs], "sources": sources}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(table(rows, markdown=args.markdown))
    slow = sorted(n for n, d in results.items() if _common.slow_memory(d.get("machine") or {}))
    if slow:
        print(f"\nslow fresh memory while these ran ({', '.join(slow)}): over {_common.SLOW_FRESH_MEMORY_S:g} s "
              "to write a GiB of newly allocated memory; their figures are not of record")
    if quick:
        print(f"\nquick smoke sizes ({', '.join(quick)}): these figures check that everything runs, "
              "they are not comparable to the goals")
    print(f"\nsummary: {out / 'summary.json'}; plots: {', '.join(p.name for p in pngs)}")
    return 0


if __name__ == "__main__":
    sys.exit(_common.run(main))
