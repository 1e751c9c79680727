"""Evaluation and loss figures that every BERT worker agrees on: a confusion matrix's metrics and
sums all-reduced across the worker group (a no-op for one worker)."""

from __future__ import annotations

from typing import Dict, List


def classification_metrics(confusion, loss_sum: float) -> Dict[str, float]:
    """Accuracy, macro-F1 (over classes that occur as truth or prediction) and mean loss from a confusion matrix."""
    import numpy as np

    n = confusion.sum()
    tp = np.diag(confusion)
    support, predicted = confusion.sum(1), confusion.sum(0)
    present = (support + predicted) > 0
    f1 = np.where(present, 2 * tp / np.maximum(support + predicted, 1e-12), 0.0)
    return {"eval_loss": float(loss_sum / max(n, 1)), "eval_accuracy": float(tp.sum() / max(n, 1)),
            "eval_macro_f1": float(f1[present].mean()) if present.any() else 0.0, "eval_rows": float(n)}


def all_reduce(values: List[float], device) -> List[float]:
    """The sums of `values` over every worker (float64, on `device`)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
