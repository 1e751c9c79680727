"""The Ray Train trainer of a slot of GBDT members: XGBoostTrainer with the two-library backend
(gbdt/backend.py), without the helper actors a slot does not use (runtime/lean_trainer.py)."""

from __future__ import annotations

from ray.train.xgboost import XGBoostTrainer

from training.gbdt.backend import GBDTBackendConfig
from training.runtime.lean_trainer import LeanTrainer


class SlotTrainer(LeanTrainer, XGBoostTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, xgboost_config=GBDTBackendConfig(), **kwargs)
