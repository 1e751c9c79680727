"""Ray Train trainers as this project runs them: every worker loop's last report is sure to
count, and no helper actors a run here does not use.

A worker loop ends only once Ray Train's controller has taken each report the worker made.
Ray Train's status poll (Ray 2.60, `RayTrainWorker.poll_status`) reads a worker's result queue,
then asks whether the training thread still runs: a last report put between the two by a thread
that then ends is never read, the run ends on the checkpoint before it, and the driver would
register a model short of its last rounds or epochs. Waiting keeps the thread alive until the
report is in (tests/test_gbdt_train_fn.py drives the poll into that gap).

Besides its controller and workers, every Ray Train 2.60 fit starts
- a `DatasetManager` actor, which splits the trainer's `datasets` among the workers. A GBDT
  slot over materialized data and a BERT run hand their workers pre-split shards in the loop
  config instead (no `datasets`), and the actor would then hold nothing;
- a detached `PlacementGroupCleaner` actor, which removes the worker group's placement group
  when the controller dies without removing it (a placement group outlives its creator; only the
  end of the job frees it).

Each is one more Python process to start, and the controller waits for the cleaner before its
workers start, so leaving both out shortens every fit's start-up (tests/test_slot_actors.py
checks what a GBDT slot starts, tests/test_bert.py what a BERT run starts).

The cleaner is left out only where the driver owns the cluster (`cluster=local`): there, the
job ends with the driver, and the driver stops a fit through the trainer's own abort (Ray
Train's interrupt handler in a slot's task, `abort()` on the driver), which removes the
placement group. On a cluster that was joined (a RayJob's, a shared one), the cleaner stays.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

# Ray Train's callbacks that start the actors above (matched by name: the classes are internal).
_DATASETS = "DatasetsCallback"
_PG_CLEANER = "PlacementGroupCleanerCallback"


class LeanTrainer:
    """Mixin for a Ray Train `DataParallelTrainer` subclass, listed before it:
    `class T(LeanTrainer, TorchTrainer)`. `placement_group_cleaner=False` leaves the cleaner out."""

    def __init__(self, train_loop_per_worker: Callable[..., Any], *args, placement_group_cleaner: bool = True,
                 interrupt_raises: bool = False, **kwargs):
        self._placement_group_cleaner = placement_group_cleaner
        self._interrupt_raises = interrupt_raises
        self._controller = None
        super().__init__(_waiting_for_its_reports(train_loop_per_worker), *args, **kwargs)

    def _register_sigint_handler(self, controller) -> None:
        # Ray Train 2.60 calls this from fit() on a main thread (a driver's, a task's) and installs
        # a handler that aborts the run on Ctrl-C and stays installed after fit(). A slot's task
        # keeps it (cancelling the task aborts the run). On the driver's main thread
        # (`interrupt_raises=True`), Ctrl-C raises KeyboardInterrupt as everywhere else in the
        # program: Ray's handler would instead return from fit() as if the run had ended, or exit
        # the process with no message when the same Ctrl-C had stopped an in-process Ray; the
        # caller then calls `abort()`. If a later Ray renames this method, its handler comes back
        # (tests/test_bert.py's Ctrl-C test then fails).
        self._controller = controller
        if not self._interrupt_raises:
            super()._register_sigint_handler(controller)

    def abort(self, timeout_s: float = 10.0) -> None:
        """Stop the fit's run: its controller stops the workers and removes their placement
        group. A controller already gone (the same Ctrl-C stopped an in-process Ray) is fine."""
        import ray

        if self._controller is None:
            return
        try:
            ray.get(self._controller.abort.remote(), timeout=timeout_s)
        except ray.exceptions.RayError:
            pass

    def _create_default_callbacks(self):
        # Ray Train 2.60 builds the controller's callbacks here (DataParallelTrainer). If a later
        # Ray renames it, this is never called and the actors come back: slower, not wrong
        # (tests/test_slot_actors.py then fails).
        unused = set()
        if not self.datasets:
            unused.add(_DATASETS)
        if not self._placement_group_cleaner:
            unused.add(_PG_CLEANER)
        return [c for c in super()._create_default_callbacks() if type(c).__name__ not in unused]


def _waiting_for_its_reports(loop: Callable[..., Any]) -> Callable[..., Any]:
    """`loop`, returning once Ray Train's controller has taken every report of this worker (at
    once in Ray Train's in-process mode). Ray reads the arguments `loop` takes through the wrap."""

    @functools.wraps(loop)
    def waiting(*config):
        import ray.train

        result = loop(*config)
        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
        return result

    return waiting
