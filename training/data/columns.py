"""Column roles from the data's schema: the feature, categorical, timestamp and numeric columns the
configuration names or the types imply, and the model's feature names, checked before any
cluster starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional

import numpy as np
import pyarrow as pa

from training.errors import UserError

if TYPE_CHECKING:  # the registered model imports this module: no config (omegaconf) at run time
    from training.data.schema import DataConfig

# The parts of the timestamp that become features, `<timestamp>_<part>`.
TIME_PARTS = ("hour", "dayofweek", "month", "dayofyear", "is_weekend")


@dataclass
class Columns:
    features: List[str]
    categorical: List[str]
    timestamp: Optional[str]
    numeric: List[str]


def resolve_columns(cfg: DataConfig, schema) -> Columns:
    types = dict(zip(schema.names, schema.types))
    features = list(cfg.features) if cfg.features else [
        c for c in schema.names if c != cfg.target and c not in set(cfg.exclude)]
    unknown = [c for c in features + list(cfg.categorical or []) if c not in types]
    if unknown:
        raise UserError(f"data.features/categorical name columns not in the data: {', '.join(unknown)}")
    absent = [c for c in cfg.exclude if c not in types]
    if absent:  # a misspelt exclusion would train on the column it meant to leave out (an ID, a leak)
        raise UserError(f"data.exclude names columns not in the data: {', '.join(absent)}")
    if cfg.target in features:
        raise UserError(f"data.features must not contain the target '{cfg.target}'")
    ts = cfg.timestamp
    if ts is None:
        ts = next((c for c in features if _is_time(types[c])), None)
    elif ts not in types:
        raise UserError(f"data.timestamp '{ts}' is not a column of the data")
    elif ts not in features:  # its time parts are features: the model reads it from each row
        raise UserError(f"data.timestamp '{ts}' is not a feature column (add it to data.features, or drop it "
                        "from data.exclude)")
    if cfg.categorical is not None:
        categorical = list(cfg.categorical)
        outside = [c for c in categorical if c not in features]
        if outside:
            raise UserError(f"data.categorical names columns that are not features: {', '.join(outside)} (the "
                            "target and excluded columns are not; add them to data.features or drop them here)")
    else:
        categorical = [c for c in features if c != ts and _is_categorical(types[c])]
    numeric = [c for c in features if c not in categorical and c != ts]
    bad = [c for c in numeric if not _is_numeric(types[c])]
    if bad:
        raise UserError(f"columns {', '.join(bad)} are neither numeric nor categorical; "
                        f"list them in data.categorical or data.exclude")
    for a, b in cfg.interactions:
        for c in (a, b):
            if c not in numeric:
                raise UserError(f"data.interactions: '{c}' is not a numeric feature column")
    if not features:
        raise UserError("no feature columns left (check data.features and data.exclude)")
    cols = Columns(features, categorical, ts, numeric)
    check_model_names(model_feature_names(cols, cfg.interactions))
    return cols


# Characters XGBoost (`[`, `]`, `<`) or LightGBM (JSON's) refuse in a feature name, at training time.
REFUSED_IN_NAMES = '[]<",:{}'


def model_feature_names(cols: Columns, interactions: List[List[str]]) -> List[str]:
    """The model's feature columns, in the order `_base_features` writes them."""
    parts = [f"{cols.timestamp}_{p}" for p in TIME_PARTS] if cols.timestamp else []
    return [*cols.numeric, *parts, *(f"{a}_x_{b}" for a, b in interactions), *cols.categorical]


def check_model_names(names: List[str]) -> None:
    """Before any cluster starts: a name the libraries refuse would fail every worker after the
    data is prepared, and a derived feature named like a column would silently replace it."""
    for name in names:
        refused = sorted({ch for ch in name if ch in REFUSED_IN_NAMES})
        if refused:
            raise UserError(f"column '{name}': XGBoost and LightGBM refuse {' '.join(refused)} in a feature name; "
                            "rename the column or list it in data.exclude")
    seen = set()
    for name in names:
        if name in seen:
            raise UserError(f"feature '{name}' is both a column of the data and a derived feature (a time part of "
                            "data.timestamp or a data.interactions product); rename the column or list it in "
                            "data.exclude")
        seen.add(name)


def _is_time(t) -> bool:
    return isinstance(t, pa.DataType) and (pa.types.is_timestamp(t) or pa.types.is_date(t))


def _is_categorical(t) -> bool:
    return isinstance(t, pa.DataType) and (pa.types.is_string(t) or pa.types.is_large_string(t)
                                           or pa.types.is_dictionary(t))


def _is_numeric(t) -> bool:
    if isinstance(t, pa.DataType):
        return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)
    return np.issubdtype(np.dtype(t), np.number) or np.dtype(t) == np.bool_
