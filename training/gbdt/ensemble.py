"""The trained ensemble as one artifact: preprocessing state, member boosters and weights.

Ray-free on purpose: the registered MLflow model imports only this module, numpy, pandas,
xgboost and lightgbm, and predicts from a pandas DataFrame of raw rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from training.data.features import FeaturePipeline
from training.gbdt import kinds


def fit_weights(predictions: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least-squares weights for combining member predictions (columns).

    Any single member is a feasible weight vector, so on the split the weights are fitted on
    the ensemble is never worse than its best member.
    """
    if predictions.shape[1] == 1:
        return np.ones(1)
    weights, _ = nnls(predictions.astype(np.float64), y.astype(np.float64))
    if not np.any(weights > 0):  # degenerate (all-zero predictions): fall back to the mean
        weights = np.full(predictions.shape[1], 1.0 / predictions.shape[1])
    return weights


@dataclass
class Member:
    name: str
    kind: str
    booster: object

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        return kinds.get(self.kind).predict(self.booster, x)

    def importance(self) -> Dict[str, float]:
        """Total gain per feature, normalised to sum to 1."""
        gain = kinds.get(self.kind).gain(self.booster)
        total = sum(gain.values()) or 1.0
        return {k: float(v) / total for k, v in gain.items()}

    def save(self, directory: Path) -> str:
        name = f"{self.name}{Path(kinds.get(self.kind).model_file).suffix}"
        self.booster.save_model(str(directory / name))
        return name

    @staticmethod
    def load(directory: Path, name: str, kind: str, file: str) -> "Member":
        return Member(name, kind, kinds.get(kind).load(str(directory / file)))


@dataclass
class EnsembleModel:
    pipeline: FeaturePipeline
    members: List[Member]
    weights: np.ndarray

    def member_predictions(self, features: pd.DataFrame) -> np.ndarray:
        x = features[self.pipeline.output_features]
        return np.column_stack([m.predict(x) for m in self.members])

    def predict(self, raw: pd.DataFrame) -> np.ndarray:
        """Predictions for raw rows (the columns the training data had; the target is not needed)."""
        features = self.pipeline.transform(raw, with_target=False)
        return self.member_predictions(features) @ self.weights

    def importance(self) -> Dict[str, float]:
        out: Dict[str, float] = {}
        total = float(np.sum(self.weights)) or 1.0
        for m, w in zip(self.members, self.weights):
            for k, v in m.importance().items():
                out[k] = out.get(k, 0.0) + v * float(w) / total
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "preprocessing.json").write_text(self.pipeline.to_json())
        members = [{"name": m.name, "kind": m.kind, "file": m.save(d), "weight": float(w)}
                   for m, w in zip(self.members, self.weights)]
        (d / "ensemble.json").write_text(json.dumps({"format": 1, "members": members}, indent=1))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "EnsembleModel":
        d = Path(directory)
        spec = json.loads((d / "ensemble.json").read_text())
        pipeline = FeaturePipeline.from_json((d / "preprocessing.json").read_text())
        members = [Member.load(d, m["name"], m["kind"], m["file"]) for m in spec["members"]]
        return cls(pipeline, members, np.array([m["weight"] for m in spec["members"]]))
