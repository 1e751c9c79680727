"""Regression metrics of a member on the validation split, from sums that add up across shards.

Each Train worker holds a shard of the validation split, so the workers score the final model on
their own rows and the driver adds up their sums (`sums`, `from_sums`); the driver's own scoring
of the whole split (`regression_metrics`) gives the same values.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

# What `sums` adds up, in order.
SUMS = ("rows", "squared_error", "absolute_error", "target", "squared_target")


def sums(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The SUMS over these rows, as float64."""
    y, err = np.asarray(y, np.float64), np.asarray(pred, np.float64) - np.asarray(y, np.float64)
    return np.array([len(y), np.dot(err, err), np.abs(err).sum(), y.sum(), np.dot(y, y)])


def from_sums(total: np.ndarray) -> Dict[str, float]:
    """RMSE, MAE and R2 from the SUMS of all rows (rows > 0)."""
    n, sse, sae, sy, syy = (float(v) for v in total)
    ss_tot = syy - sy * sy / n
    return {"rmse": float(np.sqrt(sse / n)), "mae": sae / n,
            "r2": 1.0 - sse / ss_tot if ss_tot > 1e-12 * max(syy, 1.0) else 0.0}


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> Dict[str, float]:
    return from_sums(sums(y, pred))
