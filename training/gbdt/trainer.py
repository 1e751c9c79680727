"""The Ray Train trainer of a slot of GBDT members: Ray Train's data-parallel trainer with the
two-library backend (gbdt/backend.py), without the helper actors a slot does not use
(runtime/lean_trainer.py). Ray's XGBoostTrainer is the same trainer with XGBoost's backend
alone; it is not used because importing it imports XGBoost in every process that builds or runs
a slot's trainer, whatever the slot trains."""

from __future__ import annotations

from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from training.gbdt.backend import GBDTBackendConfig
from training.runtime.lean_trainer import LeanTrainer


class SlotTrainer(LeanTrainer, DataParallelTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, backend_config=GBDTBackendConfig(), **kwargs)
