"""A synthetic retail-transactions dataset shaped like the seed workload, with a learnable target.

The target, `spend_next_30d`, mixes non-linear effects (log, sqrt, saturation), interactions
(promotion x loyalty, price x discount), categorical effects (store, region, user segment),
seasonality from the timestamp, missing values and noise, so that GBDTs and ensembles have
something real to find. Deterministic for a given (rows, seed, partitions): each partition
draws from its own seeded generator, so any size is generated in bounded memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from training.errors import UserError

from training.data.schema import SyntheticConfig

REGIONS = ["north", "south", "east", "west", "central", "online"]
N_STORES = 60
START = np.datetime64("2025-01-01T00:00:00")
TARGET = "spend_next_30d"
MANIFEST = "_generator.json"


def _fixed_effects(cfg: SyntheticConfig):
    """Per-user, per-product and per-store latent effects shared by every partition."""
    rng = np.random.default_rng(cfg.seed)
    user_effect = rng.normal(0.0, 6.0, cfg.users)
    product_price = np.exp(rng.normal(3.0, 0.8, cfg.products))  # log-normal list prices
    store_region = rng.integers(0, len(REGIONS), N_STORES)
    store_effect = rng.normal(0.0, 4.0, N_STORES)
    region_effect = np.array([3.0, -2.0, 1.0, 0.0, -4.0, 6.0])
    return user_effect, product_price, store_region, store_effect, region_effect


def generate_partition(cfg: SyntheticConfig, part: int, rows: int, first_id: int) -> pd.DataFrame:
    user_effect, product_price, store_region, store_effect, region_effect = _fixed_effects(cfg)
    rng = np.random.default_rng([cfg.seed, part])
    user = rng.integers(0, cfg.users, rows)
    product = rng.integers(0, cfg.products, rows)
    store = rng.integers(0, N_STORES, rows)
    region = store_region[store]
    seconds = rng.integers(0, 365 * 24 * 3600, rows)
    ts = START + seconds.astype("timedelta64[s]")
    day = seconds / 86400.0
    hour = (seconds // 3600) % 24
    weekday = (pd.DatetimeIndex(ts).dayofweek.to_numpy())

    promo = rng.random(rows) < 0.25
    discount = np.where(promo, rng.uniform(0.05, 0.5, rows), 0.0)
    price = product_price[product] * rng.uniform(0.9, 1.1, rows) * (1.0 - discount)
    quantity = rng.poisson(1.5, rows) + 1
    sessions = rng.poisson(np.exp(1.5 + user_effect[user] / 12.0))
    days_since = rng.exponential(20.0, rows)
    basket_90d = np.exp(rng.normal(3.5 + user_effect[user] / 10.0, 0.9))  # heavily skewed
    loyalty = np.clip(rng.beta(2, 3, rows) + user_effect[user] / 40.0, 0, 1)
    returns = rng.poisson(0.3, rows)

    signal = (
        20.0
        + 14.0 * np.log1p(basket_90d)
        + 9.0 * np.sqrt(sessions)
        - 25.0 * (1.0 - np.exp(-days_since / 15.0))          # saturating recency effect
        + 30.0 * promo * loyalty                              # interaction
        + 0.4 * price * discount                              # interaction
        + 0.03 * price * quantity
        + region_effect[region] + store_effect[store]
        + np.where(user % 7 == 0, 10.0, 0.0)                  # a user segment
        + 8.0 * np.sin(2 * np.pi * day / 365.0)               # seasonality
        + np.where(weekday >= 5, 5.0, 0.0)
        + np.where((hour >= 18) & (hour <= 22), 3.0, 0.0)
        - 6.0 * returns
    )
    target = np.maximum(0.0, signal + rng.normal(0.0, 8.0, rows))

    # Missing values, as in real data: new customers have no recency, some loyalty unknown.
    days_since[rng.random(rows) < 0.03] = np.nan
    loyalty[rng.random(rows) < 0.02] = np.nan
    return pd.DataFrame({
        "transaction_id": np.arange(first_id, first_id + rows, dtype=np.int64),
        "user_id": user.astype(np.int64),
        "product_id": product.astype(np.int64),
        "store": np.char.add("store_", np.char.zfill(store.astype(str), 3)),
        "region": np.array(REGIONS)[region],
        "timestamp": ts.astype("datetime64[us]"),
        "price": price.round(2),
        "quantity": quantity.astype(np.int64),
        "promo": promo,
        "discount": discount.round(3),
        "sessions_30d": sessions.astype(np.int64),
        "days_since_last_purchase": days_since,
        "avg_basket_value_90d": basket_90d.round(2),
        "loyalty_score": loyalty,
        "returns_90d": returns.astype(np.int64),
        TARGET: target,
    })


def generate(cfg: SyntheticConfig, path: str | Path):
    """Write `cfg.rows` rows as `cfg.partitions` parquet files under a local path or an object-store
    URI (s3://, gs://: e.g. shared storage of a RayJob); reuse an identical earlier write."""
    fs, root = _filesystem(str(path))
    manifest = {"rows": cfg.rows, "seed": cfg.seed, "partitions": cfg.partitions,
                "users": cfg.users, "products": cfg.products, "version": 1}
    marker = f"{root}/{MANIFEST}"
    if fs.get_file_info(marker).type == pafs.FileType.File:
        with fs.open_input_stream(marker) as f:
            if json.loads(f.read()) == manifest:
                return Path(path) if "://" not in str(path) else path
    claim_folder(fs, root, str(path), "synthetic")
    for old in fs.get_file_info(pafs.FileSelector(root)):
        if old.base_name.startswith("part-"):
            fs.delete_file(old.path)
    parts = max(1, min(cfg.partitions, cfg.rows))
    sizes = np.full(parts, cfg.rows // parts)
    sizes[: cfg.rows % parts] += 1
    first = 0
    for i, n in enumerate(sizes):
        df = generate_partition(cfg, i, int(n), first)
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), f"{root}/part-{i:05d}.parquet", filesystem=fs)
        first += int(n)
    # Written last: a crash mid-way leaves no manifest, so the next run regenerates.
    with fs.open_output_stream(marker) as f:
        f.write(json.dumps(manifest).encode())
    return Path(path) if "://" not in str(path) else path


def claim_folder(fs, root: str, path: str, source: str) -> None:
    """Make `root` the generator's folder, or refuse: one that holds files of someone else's
    (no manifest of a generator) is the user's data, and a generator replaces what it finds.
    An unfinished manifest marks the folder as the generator's before it writes a file there,
    so a write that crashed midway is redone next time, not refused."""
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        raise UserError(f"data.path={path} is a file; data={source} writes its rows into a folder there")
    if info.type == pafs.FileType.Directory:
        entries = fs.get_file_info(pafs.FileSelector(root))
        names = sorted(e.base_name for e in entries)
        if names and MANIFEST not in names:
            shown = names[0] + (", ..." if len(names) > 1 else "")
            raise UserError(f"data.path={path} holds files that data={source} did not write ({shown}) and "
                            f"would replace with generated rows: to train on them, name their format (data=parquet, "
                            f"data=csv or data=jsonl); to generate, point data.path at an empty or new folder")
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/{MANIFEST}") as f:
        f.write(json.dumps({"unfinished": True}).encode())


def _filesystem(path: str):
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    local = Path(path).expanduser().resolve()
    return pafs.LocalFileSystem(), str(local)
