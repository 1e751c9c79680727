"""The benchmark report's plots: one PNG per benchmark next to its results JSON (report.py writes
them), and the figure helpers the benchmarks' own plots share (scale.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

MODELS = {"xgboost": "XGBoost", "lightgbm": "LightGBM"}


def figure(width: float = 8, height: float = 3.4, cols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, cols, figsize=(width, height), dpi=90, squeeze=False)
    return plt, fig, axes[0]


def save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_scaling(doc: dict, out: Path) -> List[Path]:
    plt, fig, axes = figure(cols=len(doc["models"]))
    for ax, (kind, r) in zip(axes, doc["models"].items()):
        med, layouts = r["median"], doc["layouts"]
        one = sorted((v["workers"], med[k]["fit_s"]) for k, v in layouts.items()
                     if v["resource"] == "one_node" and not v["half"])
        ax.plot(*zip(*one), "o-", color="tab:blue", label="measured, 1 node")
        ax.plot([2], [med["2w_2nodes"]["fit_s"]], "s", color="tab:orange", markersize=8,
                label="measured, 2 nodes x 1 CPU")
        proj = r["projection"]
        ax.plot([p["workers"] for p in proj], [p["fit_s"] for p in proj], "x--", color="gray",
                label="projected (model)")
        t1 = med["1w"]["fit_s"]
        ax.plot([p["workers"] for p in proj], [t1 / p["workers"] for p in proj], ":", color="black",
                label="ideal (T1 / n)")
        ax.set_xscale("log", base=2)
        ax.set_xticks([p["workers"] for p in proj], [str(p["workers"]) for p in proj])
        ax.set_xlabel("Ray Train workers")
        ax.set_ylabel("fit time (s)")
        ax.set_title(f"{MODELS.get(kind, kind)}: {doc['args']['rows']:,} rows, {doc['args']['rounds']} rounds",
                     fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    paths = [save(plt, fig, out / "scaling.png")]

    plt, fig, axes = figure(cols=len(doc["models"]))
    phases = [("startup_s", "start-up"), ("load_s", "shard hand-over"), ("build_s", "DMatrix/Dataset build"),
              ("boost_s", "boosting")]
    for ax, (kind, r) in zip(axes, doc["models"].items()):
        names = list(r["median"])
        bottom = [0.0] * len(names)
        for key, label in phases:
            vals = [r["median"][n][key] for n in names]
            ax.bar(names, vals, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_ylabel("seconds (median)")
        ax.set_title(f"{MODELS.get(kind, kind)}: time per phase", fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    axes[0].legend(fontsize=7)
    paths.append(save(plt, fig, out / "scaling_phases.png"))
    return paths


def plot_bars(groups: Dict[str, Dict[str, float]], ylabel: str, title: str, path: Path) -> Path:
    """Grouped bars: {group: {series: value}}."""
    plt, fig, axes = figure(width=6.5, height=3.2)
    ax = axes[0]
    series = list(next(iter(groups.values())))
    width = 0.8 / len(series)
    for i, s in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, [groups[g].get(s, 0) for g in groups], width, label=s)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=7)
    return save(plt, fig, path)


def plot_end_to_end(doc: dict, path: Path) -> Path:
    plt, fig, axes = figure(width=7, height=2.6)
    ax = axes[0]
    sides = list(doc["median"])
    left = [0.0] * len(sides)
    for key, label in [("cluster_s", "cluster start"), ("data_s", "data"), ("train_s", "training"),
                       ("tracking_s", "tracking")]:
        vals = [doc["median"][s][key] for s in sides]
        ax.barh(sides, vals, left=left, label=label)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xlabel("seconds (median)")
    ax.set_title("main job: concurrent vs sequential members", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return save(plt, fig, path)


def plot_all(results: Dict[str, dict], out: Path) -> List[Path]:
    """Every plot the results allow; their paths."""
    paths: List[Path] = []
    if "scaling" in results:
        paths += plot_scaling(results["scaling"], out)
    if "gbdt_overhead" in results:
        m = results["gbdt_overhead"]["models"]
        paths.append(plot_bars({MODELS.get(k, k): {"plain": v["median_plain_s"], "Ray Train": v["median_ray_s"]}
                                for k, v in m.items()}, "seconds (median)", "Ray Train vs plain training, 1 thread",
                               out / "gbdt_overhead.png"))
    if "data_pipeline" in results:
        med = results["data_pipeline"]["median"]
        paths.append(plot_bars({"pandas, 1 core": {"rows/s": med["pandas"]["rows_per_s"]},
                                "Ray, 1 CPU": {"rows/s": med["ray_1cpu"]["rows_per_s"]},
                                "Ray, 2 CPUs": {"rows/s": med["ray_2cpu"]["rows_per_s"]}},
                               "rows per second (median)", "ingest + preprocessing throughput",
                               out / "data_pipeline.png"))
    if "memory" in results:
        r, s = results["memory"]["median"]["ray"], results["memory"]["median"]["single"]
        paths.append(plot_bars({"single process": {"MiB": s["peak_rss_mb"]},
                                "Ray driver": {"MiB": r["driver_peak_rss_mb"]},
                                "worker (1 of 1)": {"MiB": r["worker_peak_rss_mb_1w"]},
                                "worker (1 of 2)": {"MiB": r["worker_peak_rss_mb_2w"]},
                                "object store": {"MiB": r["train_dataset_mb"] + r["valid_dataset_mb"]}},
                               "MiB (median)", "peak resident memory and dataset footprint", out / "memory.png"))
    for name in ("scale", "scale_20m", "scale_beyond"):
        if name in results:
            from scale import plot as plot_scale

            paths.append(plot_scale(results[name], out / f"{name}.png"))
    if "end_to_end" in results:
        paths.append(plot_end_to_end(results["end_to_end"], out / "end_to_end.png"))
    return paths
