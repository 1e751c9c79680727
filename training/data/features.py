"""Feature engineering: stateless transforms and state fitted on training rows only (the split: split.py).

The state is fitted from per-block statistics of the training rows (`block_stats`), merged on
the driver: `FeaturePipeline.fit` makes that one pass over a dataset of training rows, and
`prepare()` folds it into its single profiling pass over the raw data. `transform` is plain
pandas, so the exact same code runs in Ray Data's `map_batches` during training and inside the
registered model at inference time.
The fitted state is JSON (no pickle), saved next to the model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Dict, List

import numpy as np
import pandas as pd

from training.data.columns import TIME_PARTS, Columns
from training.errors import UserError

if TYPE_CHECKING:  # the registered model imports this module: no config (omegaconf) at run time
    from training.data.schema import DataConfig



# ---- the stateless part: time features and interactions ---------------------------------------

def _base_features(df: pd.DataFrame, cols: Columns, interactions: List[List[str]]) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for c in cols.numeric:
        out[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    if cols.timestamp:
        # Values with a UTC offset are taken in UTC: a request's offset (or a batch mixing
        # offsets, as across a change to summer time) must not move a moment's hour or day.
        t = pd.to_datetime(df[cols.timestamp], errors="coerce", utc=True)
        for part in TIME_PARTS:
            out[f"{cols.timestamp}_{part}"] = _time_part(t, part)
    for a, b in interactions:
        out[f"{a}_x_{b}"] = out[a] * out[b]
    for c in cols.categorical:
        out[c] = category_keys(df[c])
    return out


def _time_part(t: pd.Series, part: str) -> pd.Series:
    if part == "is_weekend":
        return (t.dt.dayofweek >= 5).astype("float64")
    return getattr(t.dt, part)


def category_keys(col: pd.Series) -> pd.Series:
    """A category's key as text, the same whatever dtype its rows came in: 7, 7.0 (an integer
    column with a missing value in that block, or in a JSON request) and "7" are all "7"."""
    keys = col.astype("object").where(col.notna(), None)
    kind = pd.api.types.infer_dtype(keys, skipna=True)
    if kind in ("string", "empty"):
        return keys
    if kind in ("integer", "boolean"):
        return keys.where(keys.isna(), keys.astype(str))
    return keys.map(_key, na_action="ignore")   # floats, or a mix (JSON rows): value by value


def _key(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


# ---- fitted state -----------------------------------------------------------------------------

@dataclass
class FeaturePipeline:
    target: str
    columns: Dict[str, object]
    interactions: List[List[str]]
    categories: Dict[str, List[str]] = field(default_factory=dict)
    log1p: List[str] = field(default_factory=list)
    scaling: Dict[str, List[float]] = field(default_factory=dict)
    output_features: List[str] = field(default_factory=list)
    train_rows: int = 0

    @property
    def cols(self) -> Columns:
        return Columns(**self.columns)

    @property
    def categorical_features(self) -> List[str]:
        return list(self.cols.categorical)

    # -- fitting (one pass with Ray Data, training split only) --
    @classmethod
    def fit(cls, train_ds, cfg: DataConfig, cols: Columns) -> "FeaturePipeline":
        """Fitted on a dataset of training rows: per-block statistics (`block_stats`) merged here.
        (`prepare()` computes the same statistics inside its one profiling pass over the raw rows.)"""
        interactions = [list(p) for p in cfg.interactions]

        def stats(batch: pd.DataFrame) -> pd.DataFrame:
            return pd.DataFrame({"stats": [json.dumps(block_stats(batch, cols, interactions))]})

        parts = train_ds.map_batches(stats, batch_format="pandas", batch_size=None).take_all()
        return cls.from_stats([json.loads(p["stats"]) for p in parts], cfg, cols)

    @classmethod
    def from_stats(cls, parts: List[dict], cfg: DataConfig, cols: Columns) -> "FeaturePipeline":
        """Fitted from the `block_stats` of every block of the training rows."""
        merged = _merge(parts)
        if merged["rows"] == 0:
            raise UserError("the training split is empty (is the dataset empty?)")
        return cls._from_stats(merged, cfg, cols, [list(p) for p in cfg.interactions])

    @classmethod
    def _from_stats(cls, s, cfg: DataConfig, cols: Columns, interactions) -> "FeaturePipeline":
        categories = {}
        for c, counts in s["cat"].items():
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.max_categories]
            categories[c] = [k for k, _ in top]
        numeric_cols = [c for c in s["num"] if c not in cols.categorical]
        if cfg.log1p is not None:
            missing = [c for c in cfg.log1p if c not in numeric_cols]
            if missing:
                raise UserError(f"data.log1p names non-numeric or unknown columns: {', '.join(missing)}")
            log1p = list(cfg.log1p)
        else:
            log1p = [c for c in numeric_cols if _skewness(s["num"][c]) > cfg.skew_threshold and s["num"][c][4] >= 0]
        scaling = {}
        if cfg.scale:
            for c in numeric_cols:
                n, sx, sxx = (s["num"][c][0], s["num"][c][5], s["num"][c][6]) if c in log1p else s["num"][c][:3]
                mean = sx / n if n else 0.0
                std = float(np.sqrt(max(sxx / n - mean ** 2, 0.0))) if n else 1.0
                scaling[c] = [mean, std or 1.0]
        output = numeric_cols + list(cols.categorical)
        return cls(target=cfg.target, columns=asdict(cols), interactions=interactions, categories=categories,
                   log1p=log1p, scaling=scaling, output_features=output, train_rows=int(s["rows"]))

    # -- applying (pure pandas: training and inference share it) --
    def transform(self, df: pd.DataFrame, with_target: bool = True) -> pd.DataFrame:
        missing = [c for c in self.cols.features if c not in df.columns]
        if missing:
            raise UserError(f"input rows lack feature columns: {', '.join(missing)}")
        base = _base_features(df, self.cols, self.interactions)
        out = pd.DataFrame(index=df.index)
        for c in self.output_features:
            if c in self.categories:
                raw = base[c]
                raw = raw.where(raw.isna(), raw.astype(str))
                codes = pd.Categorical(raw, categories=self.categories[c]).codes.astype("float32")
                # Unseen and missing categories become NaN, which both GBDTs treat as missing.
                codes[codes < 0] = np.nan
                out[c] = codes
                continue
            x = base[c].to_numpy(dtype="float64")
            if c in self.log1p:
                x = np.log1p(np.clip(x, 0, None))
            if c in self.scaling:
                mean, std = self.scaling[c]
                x = (x - mean) / std
            out[c] = x.astype("float32")
        if with_target and self.target in df.columns:
            out[self.target] = pd.to_numeric(df[self.target], errors="coerce").astype("float32")
            out = out[out[self.target].notna()]  # rows without a label cannot train or score
        return out.reset_index(drop=True)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "FeaturePipeline":
        return cls(**json.loads(text))


def block_stats(batch: pd.DataFrame, cols: Columns, interactions: List[List[str]]) -> dict:
    """One block's share of the fitted state: row count, moments per numeric feature, counts per category."""
    base = _base_features(batch, cols, interactions)
    stats: dict = {"rows": len(base), "num": {}, "cat": {}}
    for c in base.columns:
        if c in cols.categorical:
            stats["cat"][c] = base[c].dropna().astype(str).value_counts().to_dict()
        else:
            x = base[c].to_numpy(dtype="float64")
            x = x[~np.isnan(x)]
            lx = np.log1p(np.clip(x, 0, None))
            stats["num"][c] = [len(x), x.sum(), (x ** 2).sum(), (x ** 3).sum(),
                               float(x.min()) if len(x) else 0.0, lx.sum(), (lx ** 2).sum()]
    return stats


def _merge(parts: List[dict]) -> dict:
    out = {"rows": 0, "num": {}, "cat": {}}
    for p in parts:
        out["rows"] += p["rows"]
        for c, v in p["num"].items():
            if c not in out["num"]:
                out["num"][c] = list(v)
            else:
                acc = out["num"][c]
                acc[4] = min(acc[4], v[4]) if acc[0] and v[0] else (acc[4] if acc[0] else v[4])
                for i in (0, 1, 2, 3, 5, 6):
                    acc[i] += v[i]
        for c, counts in p["cat"].items():
            acc = out["cat"].setdefault(c, {})
            for k, n in counts.items():
                acc[k] = acc.get(k, 0) + n
    return out


def _skewness(v) -> float:
    n, s1, s2, s3 = v[:4]
    if n < 3:
        return 0.0
    mean = s1 / n
    var = s2 / n - mean ** 2
    if var <= 1e-12:
        return 0.0
    m3 = s3 / n - 3 * mean * s2 / n + 2 * mean ** 3
    return float(m3 / var ** 1.5)
