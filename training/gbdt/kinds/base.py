"""What the GBDT workloads need from a boosting library: one subclass per library, one file each.

A kind is model-side (load, predict, importance: what a registered model runs, with no Ray and
no Hydra) and worker-side (`train`: boost from a worker's shards, training/gbdt/shard.py,
calling back after every round). Nothing outside training/gbdt/kinds/ names a library.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, List, Optional, Protocol, Tuple

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from training.gbdt.shard import Shard


class RoundHooks(Protocol):
    """What the caller of `train` hears: set-up done, then every round (Ray Train or Tune reporting)."""

    def threads(self) -> int:
        """Threads to boost with at the start."""

    def built(self, seconds: float) -> None:
        """The library's datasets are built; boosting starts now."""

    def after_round(self, done: int, valid_value: float, booster: Any,
                    valid_predictions: Callable[[int], np.ndarray]) -> Optional[int]:
        """`done` counts rounds from the very start (resumed runs included); `booster` is the model
        so far (its `save_model(path)` writes it); `valid_predictions(rounds)` this worker's
        validation shard as predicted by the model's first `rounds` rounds (cheapest for all of
        them: the library's running scores); a new thread count or None."""

    def stop(self) -> bool:
        """Whether boosting ends after the round just reported (early stopping)."""


@dataclass
class TrainJob:
    """One member's boosting on one worker: its shards, parameters and where it resumes."""
    train: Shard
    valid: Shard
    features: List[str]
    categorical: List[str]
    params: Dict[str, Any]            # the member's own, over the kind's defaults
    seed: int
    metric: str
    rounds: int                       # rounds still to boost
    start: int = 0                    # rounds done before (a resumed checkpoint)
    init_model: Any = None
    use_gpu: bool = False
    # Set by the caller when the worker is one of several: the library's distributed parameters.
    distributed: Dict[str, Any] = field(default_factory=dict)
    # A training shard larger than this (as float32) is binned into files under `spill_dir`
    # rather than memory, where the library can (XGBoost's external memory); None: never.
    memory_budget_mb: Optional[float] = None
    spill_dir: Optional[str] = None


class GBDTKind(abc.ABC):
    name: str                          # the `kind` of a member in the config
    model_file: str                    # the booster's file in checkpoints and in the registered model
    requirement: str                   # the pip distribution the registered model needs
    module: str                        # the library's Python module (imported through kinds.import_libraries)
    # Tree-booster parameters worth searching (native names and the aliases the library accepts):
    # a name outside the set is almost always a typo or another library's name.
    searchable: FrozenSet[str] = frozenset()
    # Parameters every Tune trial starts from, under the fixed and sampled ones.
    search_defaults: Dict[str, Any] = {}
    # Parameters the worker loop owns, each with what it stands for ("rounds": the rounds it counts
    # and checkpoints; "metric": the validation RMSE it stops early on and weighs members by).
    owned_params: Dict[str, str] = {}
    # True when a worker's validation metric covers only its own validation shard (the library
    # does not combine it across workers): the worker loop then agrees on one value per round.
    local_validation: bool = False

    @abc.abstractmethod
    def load(self, path: str) -> Any:
        """The booster saved at `path`."""

    @abc.abstractmethod
    def predict(self, booster: Any, x: pd.DataFrame) -> np.ndarray:
        """Predictions for a frame of model features (float columns, categories as codes)."""

    @abc.abstractmethod
    def gain(self, booster: Any) -> Dict[str, float]:
        """Total gain per feature (not normalised)."""

    @abc.abstractmethod
    def check_params(self, params: Dict[str, Any]) -> Optional[str]:
        """The library's reason to reject `params` (None when it accepts them), found cheaply."""

    @abc.abstractmethod
    def distributed_params(self, context: Any) -> Dict[str, Any]:
        """Extra parameters when a member trains on several Ray Train workers (`context`: Train's)."""

    @abc.abstractmethod
    def first_rounds(self, booster: Any, rounds: int) -> Any:
        """A booster of the first `rounds` boosting rounds of `booster` (early stopping keeps the best)."""

    @abc.abstractmethod
    def train(self, job: TrainJob, hooks: RoundHooks) -> Any:
        """Boost `job.rounds` rounds; the booster."""

    @staticmethod
    def tiny_data(seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
        """A few rows to let a library judge parameters without the user's data."""
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(64, 3)).astype(np.float32)
        return x, x[:, 0] * 2.0 + rng.normal(size=64).astype(np.float32)
