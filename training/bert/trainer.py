"""The Ray Train trainer of a BERT run: TorchTrainer without the helper actors the run does not
use (runtime/lean_trainer.py; the workers read pre-split shards from the loop config)."""

from __future__ import annotations

from ray.train.torch import TorchTrainer

from training.runtime.lean_trainer import LeanTrainer


class BertTrainer(LeanTrainer, TorchTrainer):
    pass
