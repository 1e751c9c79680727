"""Validation metrics and ensemble weights, on the driver as members finish.

A lone member's metrics are its workers' (each scored its validation shard with the final
model, training/gbdt/worker.py): the driver reads nothing. Several members need their
predictions row by row to fit the ensemble's weights, so the driver scores the whole split
with each member's booster, and takes every member's metrics from those predictions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List

import numpy as np

from training.gbdt.metrics import regression_metrics
from training.gbdt.slots import TrainedMember

if TYPE_CHECKING:
    from training.data.prepare import PreparedData


class ValidationScorer:
    """Each member's validation predictions, computed as soon as the member finishes.

    Slots rarely finish together, and the driver only waits meanwhile: loading a member's
    booster and predicting there takes the finished slot's core instead of adding to the
    tracking phase after the last one."""

    def __init__(self, data: PreparedData, members: int):
        self.data, self.members = data, members
        self.valid = None
        self.scored: Dict[str, tuple] = {}   # member name -> (Member, validation predictions or None)

    def add(self, t: TrainedMember) -> None:
        from training.gbdt.ensemble import Member

        member = Member(t.name, t.kind, t.booster())
        if self.members == 1 and t.validation:
            self.scored[t.name] = (member, None)
            return
        if self.valid is None:
            self.valid = self.data.valid.to_pandas()
        x = self.valid[self.data.pipeline.output_features]
        self.scored[t.name] = (member, member.predict(x))

    def evaluate(self, trained: List[TrainedMember]):
        """(the ensemble model, member and ensemble metrics) on the validation split; the
        ensemble's weights are fitted there too."""
        for t in trained:
            if t.name not in self.scored:
                self.add(t)
        from training.gbdt.ensemble import EnsembleModel, fit_weights

        model = EnsembleModel(self.data.pipeline, [self.scored[t.name][0] for t in trained], np.ones(len(trained)))
        if self.valid is None:  # one member, scored by its workers
            return model, {trained[0].name: dict(trained[0].validation)}
        y = self.valid[self.data.pipeline.target].to_numpy(np.float64)
        preds = np.column_stack([self.scored[t.name][1] for t in trained])
        model.weights = fit_weights(preds, y)
        metrics = {t.name: regression_metrics(y, preds[:, i]) for i, t in enumerate(trained)}
        if len(trained) > 1:
            metrics["ensemble"] = regression_metrics(y, preds @ model.weights)
        return model, metrics


def evaluate(data: PreparedData, trained: List[TrainedMember]):
    """Member and ensemble metrics on the validation split; ensemble weights fitted there too."""
    return ValidationScorer(data, len(trained)).evaluate(trained)
