"""One Ray Train backend for a worker group that trains XGBoost and LightGBM members in turn.

XGBoostTrainer sets up XGBoost's collective (a tracker, and a communicator around the training
function), LightGBMTrainer LightGBM's network parameters (`get_network_params()`); a group that
trains both kinds needs both. Built from Ray's own two backends, so each keeps its behaviour.

A group of one worker has no one to communicate with: it gets no tracker and no communicator,
so its XGBoost trains as in a plain process (and prints no "got rank 0" line of the collective).
"""

from __future__ import annotations

from contextlib import contextmanager

from ray.train.backend import Backend
from ray.train.lightgbm import LightGBMConfig
from ray.train.xgboost import XGBoostConfig


class GBDTBackendConfig(XGBoostConfig):
    """XGBoost's collective and LightGBM's network, both set up for one worker group, so that a
    slot can train members of either kind (XGBoostTrainer takes it as its `xgboost_config`)."""

    @property
    def backend_cls(self):
        return _GBDTBackend

    @property
    def train_func_context(self):
        collective = super().train_func_context

        @contextmanager
        def context():
            import ray.train

            if ray.train.get_context().get_world_size() > 1:
                with collective():
                    yield
            else:
                yield

        return context


class _GBDTBackend(Backend):
    def __init__(self):
        self.xgboost = (XGBoostConfig(), XGBoostConfig().backend_cls())
        self.lightgbm = (LightGBMConfig(), LightGBMConfig().backend_cls())
        self.parts = [self.xgboost, self.lightgbm]

    def on_start(self, worker_group, backend_config):
        for config, backend in self.parts:
            backend.on_start(worker_group, config)

    def on_training_start(self, worker_group, backend_config):
        # One worker: no XGBoost tracker (the worker enters no communicator either, see above).
        for config, backend in self.parts if len(worker_group) > 1 else [self.lightgbm]:
            backend.on_training_start(worker_group, config)

    def on_shutdown(self, worker_group, backend_config):
        for config, backend in self.parts:
            backend.on_shutdown(worker_group, config)
