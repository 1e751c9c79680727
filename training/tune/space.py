"""The search space: its schema, checks against what each library accepts, and the Ray Tune domains.

Kept free of Ray imports at module level: config validation imports it before Ray starts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, List, Mapping, Optional, Tuple

from omegaconf import MISSING

from training.errors import UserError
from training.gbdt import kinds

ROUNDS = "num_boost_round"


class DomainType(str, Enum):
    int = "int"                  # inclusive integer range
    uniform = "uniform"
    loguniform = "loguniform"
    choice = "choice"


@dataclass
class DomainConfig:
    """One searched parameter: a range (low, high) or a list of values (choice)."""
    type: DomainType = MISSING
    low: Optional[float] = None
    high: Optional[float] = None
    values: Optional[List[Any]] = None


def parse(space: Mapping[str, Any]) -> Dict[str, DomainConfig]:
    """`workload.space` entries (plain mappings) -> typed domains; one-line error on a malformed entry."""
    fields = {f.name for f in dataclasses.fields(DomainConfig)}
    out = {}
    for name, entry in space.items():
        key = f"workload.space.{name}"
        if not isinstance(entry, Mapping):
            raise UserError(f"{key}: expected a mapping like {{type: uniform, low: 0.1, high: 1.0}}, got {entry!r}")
        extra = set(entry) - fields
        if extra:
            raise UserError(f"{key}: unknown field(s) {', '.join(sorted(map(str, extra)))} "
                            f"(known: {', '.join(sorted(fields))})")
        types = [t.value for t in DomainType]
        if entry.get("type") not in types:
            raise UserError(f"{key}.type: got {entry.get('type')!r}, expected one of {', '.join(types)}")
        try:
            low = None if entry.get("low") is None else float(entry["low"])
            high = None if entry.get("high") is None else float(entry["high"])
        except (TypeError, ValueError):
            raise UserError(f"{key}: low and high must be numbers, got {entry.get('low')!r}, "
                            f"{entry.get('high')!r}") from None
        values = entry.get("values")
        if values is not None and not isinstance(values, (list, tuple)):
            raise UserError(f"{key}.values: expected a list, got {values!r}")
        out[name] = DomainConfig(DomainType(entry["type"]), low, high, None if values is None else list(values))
    return out


def validate_space(kind: str, space: Mapping[str, Any]) -> Dict[str, DomainConfig]:
    """One-line errors for an empty space, unknown parameter names and malformed domains."""
    if not space:
        raise UserError("workload.space is empty: give at least one parameter to search, e.g. "
                        "+workload.space.max_depth='{type: int, low: 3, high: 10}'")
    known = kinds.get(kind).searchable
    for name in space:
        if name not in known:
            other = next((k for k in kinds.names() if k != kind and name in kinds.get(k).searchable), None)
            hint = f"{name} is a {other} parameter; " if other else ""
            raise UserError(f"workload.space.{name}: unknown {kind} parameter "
                            f"({hint}{kind} accepts: {', '.join(sorted(known))})")
    domains = parse(space)
    for name, d in domains.items():
        key = f"workload.space.{name}"
        kind_of = d.type.value
        if kind_of == "choice":
            if not d.values:
                raise UserError(f"{key}: type choice needs a non-empty values list")
            continue
        if d.low is None or d.high is None:
            raise UserError(f"{key}: type {kind_of} needs low and high")
        if not (math.isfinite(d.low) and math.isfinite(d.high)):
            raise UserError(f"{key}: low and high must be finite numbers, got low={d.low:g} high={d.high:g}")
        if not d.low < d.high:
            raise UserError(f"{key}: low must be < high, got low={d.low:g} high={d.high:g}")
        if kind_of == "loguniform" and d.low <= 0:
            raise UserError(f"{key}: loguniform needs low > 0, got {d.low:g}")
        if kind_of == "int" and (d.low != math.floor(d.low) or d.high != math.floor(d.high)):
            raise UserError(f"{key}: type int needs whole-number bounds, got low={d.low:g} high={d.high:g}")
    rounds = domains.get(ROUNDS)
    if rounds is not None:
        if rounds.type.value not in ("int", "choice"):
            raise UserError(f"workload.space.{ROUNDS}: must be type int or choice (a number of rounds)")
        if rounds.type.value == "choice" and not all(isinstance(v, int) for v in rounds.values):
            raise UserError(f"workload.space.{ROUNDS}: choice values must be whole numbers, got {rounds.values}")
        if min(_bounds(rounds)) < 1:
            raise UserError(f"workload.space.{ROUNDS}: rounds must be >= 1")
    return domains


def _bounds(d: Any) -> Tuple[float, float]:
    if d.type.value == "choice":
        return float(min(d.values)), float(max(d.values))
    return float(d.low), float(d.high)


def max_rounds(space: Mapping[str, DomainConfig], fixed_rounds: int) -> int:
    """The largest number of boosting rounds a trial can draw: ASHA's default max_t."""
    return int(_bounds(space[ROUNDS])[1]) if ROUNDS in space else fixed_rounds


def to_tune(space: Mapping[str, DomainConfig]) -> Dict[str, Any]:
    """Config domains -> Ray Tune domains (OptunaSearch converts these to Optuna distributions)."""
    from ray import tune

    out: Dict[str, Any] = {}
    for name, d in space.items():
        t = d.type.value
        if t == "int":
            out[name] = tune.randint(int(d.low), int(d.high) + 1)  # Tune's upper bound is exclusive
        elif t == "uniform":
            out[name] = tune.uniform(float(d.low), float(d.high))
        elif t == "loguniform":
            out[name] = tune.loguniform(float(d.low), float(d.high))
        else:
            out[name] = tune.choice(list(d.values))
    return out


def split(kind: str, sampled: Mapping[str, Any], fixed: Mapping[str, Any], fixed_rounds: int) -> Tuple[int, Dict]:
    """A trial's config -> (boosting rounds, booster params); sampled values win over fixed ones."""
    params = {**kinds.get(kind).search_defaults, **fixed, **{k: v for k, v in sampled.items() if k != ROUNDS}}
    return int(sampled.get(ROUNDS, fixed_rounds)), plain(params)


def plain(params: Dict[str, Any]) -> Dict[str, Any]:
    """numpy scalars (Optuna, Tune) -> Python numbers, so params log and serialise cleanly."""
    out = {}
    for k, v in params.items():
        if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
            v = v.item()
        out[k] = v
    return out
