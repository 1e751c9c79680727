"""One Ray Train backend for a worker group that trains XGBoost and LightGBM members in turn.

XGBoostTrainer sets up XGBoost's collective (a tracker, and a communicator around the training
function), LightGBMTrainer LightGBM's network parameters (`get_network_params()`); a group that
trains both kinds needs both. Built from Ray's own two backends, so each keeps its behaviour.

A group of one worker has no one to communicate with: it gets no tracker, no communicator and no
network, so its members train as in a plain process. Ray's two backends are imported only for a
larger group: importing them imports XGBoost, LightGBM and scikit-learn, and the processes that
run a backend (the slot's task, the Train controller) have no other use for those libraries.
A larger group joins the collective quietly: XGBoost prints "Task [...] got rank N" from every
worker as it joins, lines that say nothing to the user.
"""

from __future__ import annotations

import io
from contextlib import ExitStack, contextmanager, redirect_stdout
from typing import Any, List, Tuple

from ray.train.backend import Backend, BackendConfig


class GBDTBackendConfig(BackendConfig):
    """XGBoost's collective and LightGBM's network, both set up for one worker group, so that a
    slot can train members of either kind (the slot's trainer, gbdt/trainer.py, runs with it)."""

    @property
    def backend_cls(self):
        return _GBDTBackend

    @property
    def train_func_context(self):
        @contextmanager
        def context():
            import ray.train

            with ExitStack() as stack:
                if ray.train.get_context().get_world_size() > 1:
                    from ray.train.xgboost import XGBoostConfig

                    _native_log_through_print()
                    with redirect_stdout(io.StringIO()):  # the "got rank N" line
                        stack.enter_context(XGBoostConfig().train_func_context())
                yield

        return context


# XGBoost's native library logs through a callback registered per thread: Python's print (and
# warnings) in the thread that imported xgboost, straight to the process's stderr in any other,
# such as the thread Ray Train runs the training function in. XGBRegisterLogCallback is XGBoost's
# C API for that; the callback object must outlive the thread's use of it.
_callbacks = []


def _native_log_through_print() -> None:
    import ctypes
    import warnings

    from xgboost.libpath import find_lib_path

    def log(message: bytes) -> None:
        text = message.decode(errors="replace")
        if "WARNING:" in text:
            warnings.warn(text, UserWarning, stacklevel=2)
        else:
            print(text)

    callback = ctypes.CFUNCTYPE(None, ctypes.c_char_p)(log)
    _callbacks.append(callback)
    ctypes.CDLL(find_lib_path()[0]).XGBRegisterLogCallback(callback)


class _GBDTBackend(Backend):
    """Ray's XGBoost and LightGBM backends, each with its own config, for groups of more than
    one worker; nothing for one (its worker enters no communicator either, see above)."""

    def __init__(self):
        self._ray_backends: List[Tuple[Any, Backend]] = []

    def _parts(self, worker_group) -> List[Tuple[Any, Backend]]:
        if len(worker_group) == 1:
            return []
        if not self._ray_backends:
            from ray.train.lightgbm import LightGBMConfig
            from ray.train.xgboost import XGBoostConfig

            self._ray_backends = [(c, c.backend_cls()) for c in (XGBoostConfig(), LightGBMConfig())]
        return self._ray_backends

    def on_start(self, worker_group, backend_config):
        for config, backend in self._parts(worker_group):
            backend.on_start(worker_group, config)

    def on_training_start(self, worker_group, backend_config):
        for config, backend in self._parts(worker_group):
            backend.on_training_start(worker_group, config)

    def on_shutdown(self, worker_group, backend_config):
        for config, backend in self._parts(worker_group):
            backend.on_shutdown(worker_group, config)
