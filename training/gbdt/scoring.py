"""Validation metrics and ensemble weights, computed on the driver as members finish."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List

import numpy as np

from training.gbdt.slots import TrainedMember

if TYPE_CHECKING:
    from training.data.prepare import PreparedData


class ValidationScorer:
    """Each member's validation predictions, computed as soon as the member finishes.

    Slots rarely finish together, and the driver only waits meanwhile: loading a member's
    booster and predicting there takes the finished slot's core instead of adding to the
    tracking phase after the last one."""

    def __init__(self, data: PreparedData):
        self.data = data
        self.valid = None
        self.scored: Dict[str, tuple] = {}   # member name -> (Member, validation predictions)

    def add(self, t: TrainedMember) -> None:
        if self.valid is None:
            self.valid = self.data.valid.to_pandas()
        from training.gbdt.ensemble import Member

        member = Member(t.name, t.kind, t.booster())
        x = self.valid[self.data.pipeline.output_features]
        self.scored[t.name] = (member, member.predict(x))

    def evaluate(self, trained: List[TrainedMember]):
        """(the ensemble model, member and ensemble metrics) on the validation split; the
        ensemble's weights are fitted there too."""
        for t in trained:
            if t.name not in self.scored:
                self.add(t)
        from training.gbdt.ensemble import EnsembleModel, fit_weights, regression_metrics

        y = self.valid[self.data.pipeline.target].to_numpy(np.float64)
        model = EnsembleModel(self.data.pipeline, [self.scored[t.name][0] for t in trained], np.ones(len(trained)))
        preds = np.column_stack([self.scored[t.name][1] for t in trained])
        model.weights = fit_weights(preds, y)
        metrics = {t.name: regression_metrics(y, preds[:, i]) for i, t in enumerate(trained)}
        if len(trained) > 1:
            metrics["ensemble"] = regression_metrics(y, preds @ model.weights)
        return model, metrics


def evaluate(data: PreparedData, trained: List[TrainedMember]):
    """Member and ensemble metrics on the validation split; ensemble weights fitted there too."""
    return ValidationScorer(data).evaluate(trained)
