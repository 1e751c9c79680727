"""The schema of the tune workload (conf/workload/tune.yaml): the model, the space, ASHA, the search."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, Optional

from omegaconf import MISSING

from training.errors import UserError


class SchedulerType(str, Enum):
    asha = "asha"
    fifo = "fifo"


class SearchAlgorithm(str, Enum):
    tpe = "tpe"
    random = "random"


class TrialMode(str, Enum):
    auto = "auto"
    local = "local"
    distributed = "distributed"


@dataclass
class SchedulerConfig:
    type: SchedulerType = SchedulerType.asha
    # ASHA, all in boosting rounds: the first rung, the rung spacing and the cap.
    grace_period: int = 200
    reduction_factor: float = 2.0
    # null = the largest num_boost_round the space can draw.
    max_t: Optional[int] = None


@dataclass
class SearchConfig:
    algorithm: SearchAlgorithm = SearchAlgorithm.tpe
    # TPE: random trials before the model proposes points.
    startup_trials: int = 10
    # null = the top-level seed.
    seed: Optional[int] = None


@dataclass
class TrialConfig:
    # local: one process per trial (cluster.cpus_per_worker threads); distributed: a Ray Train run
    # per trial on cluster.num_workers workers, like every other workload's models; auto: local
    # unless the training split exceeds local_max_rows.
    mode: TrialMode = TrialMode.auto
    local_max_rows: int = 1_000_000


@dataclass
class TuneWorkloadConfig:
    name: str = MISSING
    # A library in training/gbdt/kinds/ (xgboost, lightgbm).
    kind: str = "xgboost"
    num_samples: int = 20
    # null = as many as the cluster holds now.
    max_concurrent_trials: Optional[int] = None
    # Used when the space does not search num_boost_round.
    num_boost_round: int = 500
    # Fixed parameters under every trial's sampled ones.
    params: Dict[str, Any] = field(default_factory=dict)
    # name -> DomainConfig fields. Typed as Any so overrides can add (+workload.space.x={...})
    # and remove (~workload.space.x) parameters; training.tune.space checks each entry.
    space: Dict[str, Any] = field(default_factory=dict)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    # Validation metric report (and checkpoint) every N rounds: what ASHA decides on.
    checkpoint_every: int = 50
    # Rows of the printed summary table.
    top: int = 10
    register: bool = True
    registered_model_name: str = "retail-demand-tuned"

    def check(self, root: Any) -> None:
        from training.gbdt.config import check_kind, check_owned, check_tabular
        from training.settings import check_seed
        from training.tune.space import validate_space

        check_tabular(root, "tune")
        check_kind("workload.kind", self.kind)
        # Every trial trains with these: one the worker loop owns would fail or skew every trial.
        check_owned("workload", self.kind, self.params,
                    rounds="set workload.num_boost_round (or search workload.space.num_boost_round) instead",
                    stopping="drop it: the search stops weak trials early (workload.scheduler.type=asha), and "
                             "a trial runs the rounds it reports and checkpoints")
        if self.search.seed is not None:
            check_seed("workload.search.seed", self.search.seed)
        if self.num_samples < 1:
            raise UserError(f"workload.num_samples must be >= 1, got {self.num_samples}")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise UserError(f"workload.max_concurrent_trials must be >= 1 or null (as many as fit), "
                            f"got {self.max_concurrent_trials}")
        for key in ("num_boost_round", "checkpoint_every", "top"):
            if getattr(self, key) < 1:
                raise UserError(f"workload.{key} must be >= 1, got {getattr(self, key)}")
        s = self.scheduler
        if s.grace_period < 1:
            raise UserError(f"workload.scheduler.grace_period must be >= 1 round, got {s.grace_period}")
        if s.reduction_factor <= 1:
            raise UserError(f"workload.scheduler.reduction_factor must be > 1, got {s.reduction_factor}")
        if s.max_t is not None and s.max_t < s.grace_period:
            raise UserError(f"workload.scheduler.max_t={s.max_t} must be >= grace_period={s.grace_period}")
        domains = validate_space(self.kind, self.space)
        self.check_unread(domains)
        self.check_asha_can_stop(domains)
        self.check_params(domains)
        searched = sorted(set(self.params) & set(domains))
        if searched:
            raise UserError(f"workload.params.{searched[0]} is also searched (workload.space.{searched[0]}), and "
                            f"every trial's sampled value would replace it: fix it with "
                            f"~workload.space.{searched[0]}, or drop workload.params.{searched[0]}")

    def check_unread(self, domains) -> None:
        """Options of a strategy the search does not use: a value set there would change nothing."""
        from training.settings import changed_fields
        from training.tune.space import ROUNDS

        asha_only = changed_fields(self.scheduler, ("grace_period", "reduction_factor", "max_t"))
        if self.scheduler.type is SchedulerType.fifo and asha_only:
            raise UserError(f"workload.scheduler.{asha_only[0]} applies to ASHA only: with "
                            "workload.scheduler.type=fifo every trial runs all its rounds")
        if self.search.algorithm is SearchAlgorithm.random and changed_fields(self.search, ("startup_trials",)):
            raise UserError("workload.search.startup_trials applies to TPE only: with "
                            "workload.search.algorithm=random every trial is drawn at random")
        if self.trial.mode is not TrialMode.auto and changed_fields(self.trial, ("local_max_rows",)):
            raise UserError(f"workload.trial.local_max_rows applies to workload.trial.mode=auto only, "
                            f"not {self.trial.mode.value}")
        if ROUNDS in domains and changed_fields(self, (ROUNDS,)):
            raise UserError("workload.num_boost_round is not used while workload.space searches it: set the "
                            "range (workload.space.num_boost_round), or drop it with ~workload.space.num_boost_round")

    def check_asha_can_stop(self, domains) -> None:
        """ASHA stops a trial at a report on a rung below its longest trial (max_t): a first rung at
        or past max_t, or reports only at the last round, would stop nothing, as FIFO."""
        from training.tune.space import max_rounds

        if self.scheduler.type is not SchedulerType.asha:
            return
        max_t = self.scheduler.max_t or max_rounds(domains, self.num_boost_round)
        if self.scheduler.grace_period >= max_t:
            raise UserError(f"workload.scheduler.grace_period={self.scheduler.grace_period} is not below the longest "
                            f"trial ({max_t} rounds): ASHA would stop no trial early; lower it, or use "
                            "workload.scheduler.type=fifo")
        if self.checkpoint_every >= max_t:
            raise UserError(f"workload.checkpoint_every={self.checkpoint_every} is not below the longest trial "
                            f"({max_t} rounds): trials would report only at their end, so ASHA could stop none "
                            "early; lower it")

    def check_params(self, domains) -> None:
        """The fixed params, and each searched parameter at the ends of its range (or each choice),
        as the library judges them: a range a trial would fail on is a config error now, not a
        search of failed trials later."""
        from training.gbdt import kinds
        from training.tune.space import ROUNDS

        kinds.import_libraries([self.kind])
        kind = kinds.get(self.kind)
        reason = kind.check_params(dict(self.params))
        if reason:
            raise UserError(f"workload.params rejected by {self.kind}: {reason}")
        for name, d in domains.items():
            if name == ROUNDS:
                continue
            ends = list(d.values) if d.type.value == "choice" else [d.low, d.high]
            for value in ends:
                value = int(value) if d.type.value == "int" else value
                reason = kind.check_params({**self.params, name: value})
                if reason:
                    raise UserError(f"workload.space.{name}: {value} rejected by {self.kind}: {reason}")
