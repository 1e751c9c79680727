"""One Ray Train backend for a worker group that trains XGBoost and LightGBM members in turn.

XGBoostTrainer sets up XGBoost's collective (a tracker, and a communicator around the training
function), LightGBMTrainer LightGBM's network parameters (`get_network_params()`); a group that
trains both kinds needs both. Built from Ray's own two backends, so each keeps its behaviour.

A group of one worker has no one to communicate with: it gets no tracker and no communicator,
so its XGBoost trains as in a plain process. A larger group joins the collective quietly: XGBoost
prints "Task [...] got rank N" from every worker as it joins, lines that say nothing to the user.
"""

from __future__ import annotations

import io
from contextlib import ExitStack, contextmanager, redirect_stdout

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

            with ExitStack() as stack:
                if ray.train.get_context().get_world_size() > 1:
                    _native_log_through_print()
                    with redirect_stdout(io.StringIO()):  # the "got rank N" line
                        stack.enter_context(collective())
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
