"""What the run prints as it goes, the final summary table, and the plots it logs."""

from __future__ import annotations

import logging
import sys
from typing import Dict, List, Sequence

log = logging.getLogger("training")


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[training] %(message)s"))
    root = logging.getLogger("training")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def eta(seconds: float) -> str:
    """Time left for a progress line: 'ETA 42s', 'ETA 3m05s', 'ETA 1h02m'."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"ETA {s}s"
    if s < 3600:
        return f"ETA {s // 60}m{s % 60:02d}s"
    return f"ETA {s // 3600}h{s % 3600 // 60:02d}m"


def table(headers: Sequence[str], rows: List[Sequence[object]]) -> str:
    """A plain-text table: text left-aligned, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in r] for r in rows]
    numeric = [all(isinstance(r[i], (int, float)) or r[i] == "" or _is_number(r[i]) for r in rows)
               for i in range(len(headers))]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: List[str]) -> str:
        return " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)).rstrip()

    return "\n".join([line(cells[0]), "-+-".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def _is_number(v: object) -> bool:
    try:
        float(str(v))
        return True
    except ValueError:
        return False


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    return str(v)


def importance_plot(importance: Dict[str, float], path: str, title: str, top: int = 20) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(importance.items())[:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#3b7dd8")
    ax.set_xlabel("share of total gain (weighted by ensemble weight)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves_plot(curves: Dict[str, List[float]], metric: str, path: str) -> str:
    """Validation curves: the whole run (log scale) and a zoom on the floor, best rounds marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (full, zoom) = plt.subplots(1, 2, figsize=(11, 4))
    best_all = min(min(v) for v in curves.values() if v)
    for name, values in curves.items():
        rounds = range(1, len(values) + 1)
        best = min(range(len(values)), key=values.__getitem__)
        for ax in (full, zoom):
            line, = ax.plot(rounds, values, label=f"{name} (best {values[best]:.4f} @ {best + 1})")
            ax.plot(best + 1, values[best], "o", color=line.get_color())
    full.set_yscale("log")
    full.set_title(f"validation {metric}")
    zoom.set_ylim(best_all * 0.995, best_all * 1.03)
    zoom.set_title("near the best value")
    for ax in (full, zoom):
        ax.set_xlabel("boosting round")
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
    zoom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
