"""The schema of the xgboost, lightgbm and ensemble workloads (conf/workload/{xgboost,lightgbm,ensemble}.yaml)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from omegaconf import MISSING

from training.data.schema import DataSource
from training.errors import UserError
from training.settings import changed_fields


# The libraries' own early-stopping parameters (LightGBM's names and aliases): they would stop
# boosting behind the worker loop's back, before its final checkpoint.
LIBRARY_EARLY_STOPPING = frozenset({"early_stopping_round", "early_stopping_rounds", "early_stopping",
                                    "n_iter_no_change"})


@dataclass
class MemberConfig:
    name: str = MISSING
    # A library in training/gbdt/kinds/ (xgboost, lightgbm).
    kind: str = MISSING
    num_boost_round: int = 100
    # Stop boosting after this many rounds without a lower validation RMSE, and keep the best
    # round's trees (null: boost every round and keep them all).
    early_stopping_rounds: Optional[int] = None
    # Passed to the library's train() as-is (tree_method, threads and distributed settings are
    # filled in from `cluster`).
    params: Dict[str, Any] = field(default_factory=dict)


@dataclass
class GBDTWorkloadConfig:
    name: str = MISSING
    members: List[MemberConfig] = field(default_factory=list)
    # Reporting to Ray Train is a synchronous round trip; report (and checkpoint)
    # every N boosting rounds, never every round.
    checkpoint_every: int = 100
    # How many members train at once: null = as many as the cluster holds.
    max_concurrent_members: Optional[int] = None
    register: bool = True
    registered_model_name: str = "retail-demand"
    # XGBoost members bin a worker's training shard into external memory (files in the worker's
    # temp directory, read back page by page each round) when the shard, counted as a float32
    # matrix, is over this many MB, and keep the validation shard binned (1 byte a value, not 8);
    # null: always in memory. LightGBM has no external memory.
    shard_memory_budget_mb: Optional[float] = None
    # Fault drill: SIGKILL the last Ray Train worker once when it reaches this round (null = off).
    # The run must resume from its last checkpoint and finish; see tests/test_fault_tolerance.py.
    kill_worker_at_round: Optional[int] = None

    def check(self, root: Any) -> None:
        check_tabular(root, self.name)
        if not self.members:
            raise UserError(f"workload.members is empty: workload={self.name} needs at least one model")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise UserError(f"workload.members names must be unique, got {names}")
        for i, name in enumerate(names):
            # A member's name keys its metrics beside the ensemble's, its MLflow metric names and
            # its checkpoint folder.
            if name == "ensemble" or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise UserError(f"workload.members.{i}.name '{name}' must be letters, digits, '_', '.' or '-', and not "
                                "'ensemble' (the combined model's metrics are named so)")
        for i, m in enumerate(self.members):
            key = f"workload.members.{i}"
            check_kind(f"{key}.kind", m.kind)
            check_owned(key, m.kind, m.params, rounds=f"set {key}.num_boost_round instead",
                        stopping=f"set {key}.early_stopping_rounds instead (the worker loop stops, keeps the best "
                                 "round and checkpoints it)")
            if m.num_boost_round < 1:
                raise UserError(f"workload.members.{i}.num_boost_round must be >= 1, got {m.num_boost_round}")
            if m.early_stopping_rounds is not None and m.early_stopping_rounds < 1:
                raise UserError(f"workload.members.{i}.early_stopping_rounds must be >= 1 (or null), "
                                f"got {m.early_stopping_rounds}")
        if self.max_concurrent_members is not None and self.max_concurrent_members < 1:
            raise UserError(f"workload.max_concurrent_members must be >= 1 or null (as many as fit), "
                            f"got {self.max_concurrent_members}")
        if self.shard_memory_budget_mb is not None and self.shard_memory_budget_mb <= 0:
            raise UserError(f"workload.shard_memory_budget_mb must be > 0 (or null), got {self.shard_memory_budget_mb}")
        if self.shard_memory_budget_mb is not None and all(m.kind != "xgboost" for m in self.members):
            raise UserError("workload.shard_memory_budget_mb applies to XGBoost members (their external-memory "
                            f"matrix); workload={self.name} has none")
        if self.checkpoint_every < 1:
            raise UserError(f"workload.checkpoint_every must be >= 1, got {self.checkpoint_every}")
        self.check_params()

    def check_params(self) -> None:
        """Each member's params as its library judges them (a few rows, one round): a bad value is a
        config error, found before a cluster, data or MLflow run exists (or a RayJob is launched)."""
        from training.gbdt import kinds

        kinds.import_libraries({m.kind for m in self.members})
        for i, m in enumerate(self.members):
            reason = kinds.get(m.kind).check_params(dict(m.params))
            if reason:
                raise UserError(f"workload.members.{i}.params (member '{m.name}', {m.kind}) rejected by "
                                f"{m.kind}: {reason}")


def check_tabular(root: Any, workload: str) -> None:
    """GBDT models train on columns: generated text (workload=bert's data) has none to engineer."""
    if root.data.source is DataSource.text_synthetic:
        raise UserError(f"workload={workload} trains on tabular data: data=text_synthetic is for workload=bert "
                        "(use data=synthetic, parquet, csv or jsonl)")
    text = changed_fields(root.data.text)
    if text:
        raise UserError(f"data.text.{text[0]} applies to workload=bert only: workload={workload} trains on the "
                        "columns data.features (or all but data.target and data.exclude) name")


def check_owned(key: str, kind: str, params: Mapping[str, Any], rounds: str, stopping: str) -> None:
    """A parameter the worker loop owns (the kind's `owned_params`, the library's early stopping)
    in `{key}.params` would override it behind its back; `rounds` and `stopping` say what to set
    instead, in the caller's schema."""
    from training.gbdt import kinds

    own = sorted(set(params) & LIBRARY_EARLY_STOPPING)
    if own:
        raise UserError(f"{key}.params.{own[0]}: {stopping}")
    for name, owns in kinds.get(kind).owned_params.items():
        if name not in params:
            continue
        if owns == "rounds":
            raise UserError(f"{key}.params.{name}: {rounds} (the worker loop counts the rounds and checkpoints "
                            "them; the library would stop at its own count)")
        raise UserError(f"{key}.params.{name}: the validation metric is RMSE, which early stopping, the best "
                        "round and the ensemble's weights are judged on (the objective may change)")


def check_kind(key: str, kind: str) -> None:
    from training.gbdt import kinds

    if kind not in kinds.names():
        raise UserError(f"{key} must be one of {', '.join(kinds.names())}, got '{kind}'")
