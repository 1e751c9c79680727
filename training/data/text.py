"""Text-classification data for workload=bert: a learnable synthetic generator, checks and reads
(parquet, CSV, JSON lines through Ray Data), the label <-> id mapping, and tokenisation
(a WordPiece tokenizer trained on the training text; per-batch tokenising with dynamic padding).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from training.data.schema import DataConfig, DataSource, TextSyntheticConfig
from training.data import sources
from training.data.split import in_validation
from training.data.synthetic import MANIFEST, claim_folder
from training.errors import UserError

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "si", "pe", "du", "ga", "hi", "zo", "be", "fu", "ri"]


# --- the synthetic generator -------------------------------------------------------------------

def _words(rng: np.random.Generator, n: int, taken: set) -> List[str]:
    out: List[str] = []
    while len(out) < n:
        w = "".join(rng.choice(_SYLLABLES, rng.integers(2, 4)))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def synthesize(cfg: TextSyntheticConfig) -> "pa.Table":
    """Rows of (id, text, label): each class owns a set of topic words; a text mixes 3-5 words of its
    class's topic, one word of another topic and filler words, so word identity predicts the class
    (a bag-of-words model reaches ~1 - label_noise) but no single word decides it."""
    rng = np.random.default_rng(cfg.seed)
    classes = list(dict.fromkeys(cfg.classes))
    taken: set = set()
    filler = _words(rng, 400, taken)
    topics = [_words(rng, 16, taken) for _ in classes]
    labels = rng.integers(0, len(classes), cfg.rows)
    texts = []
    for c in labels:
        n_topic = int(rng.integers(4, 8))
        other = topics[(c + rng.integers(1, len(classes))) % len(classes)]
        words = list(rng.choice(topics[c], n_topic)) + [rng.choice(other)]
        words += list(rng.choice(filler, max(cfg.words_per_text - len(words), 0)))
        rng.shuffle(words)
        texts.append(" ".join(words))
    noisy = rng.random(cfg.rows) < cfg.label_noise
    labels = np.where(noisy, rng.integers(0, len(classes), cfg.rows), labels)
    return pa.table({"id": np.arange(cfg.rows), "text": texts, "label": [classes[i] for i in labels]})


def generate(cfg: TextSyntheticConfig, path: str) -> None:
    """Write the synthetic table to `path` once; regenerate only when the generator settings change."""
    import pyarrow.parquet as pq

    root = Path(path)
    manifest = {"generator": "text", "version": 1, **{k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}
    manifest["classes"] = list(manifest["classes"])
    if (root / MANIFEST).exists() and json.loads((root / MANIFEST).read_text()) == manifest:
        return
    log.info("synthetic text: %s rows, classes %s (seed %s) in %s", f"{cfg.rows:,}", list(cfg.classes), cfg.seed,
             path)
    claim_folder(pafs.LocalFileSystem(), str(root.resolve()), path, "text_synthetic")
    for old in root.glob("*.parquet"):
        old.unlink()
    pq.write_table(synthesize(cfg), root / "part-0.parquet")
    (root / MANIFEST).write_text(json.dumps(manifest))


# --- checks and reads --------------------------------------------------------------------------

def check(cfg: DataConfig) -> None:
    """Before any cluster starts: the source exists, has rows, a text column and a label column."""
    if cfg.source is DataSource.text_synthetic:
        if "://" in cfg.path:
            raise UserError(f"data=text_synthetic writes to a local directory, got data.path={cfg.path}")
        generate(cfg.text.synthetic, cfg.path)
    schema, first = sources.peek(cfg)
    if first.num_rows == 0:  # before the column types: an empty file's columns are often typed null
        raise UserError(f"dataset at {cfg.path} is empty (no rows)")
    check_columns(cfg, schema)


def check_columns(cfg: DataConfig, schema: "pa.Schema") -> None:
    names = [n for n in schema.names if not n.startswith("__")]
    types = dict(zip(schema.names, schema.types))
    for key, col in (("data.text.column", cfg.text.column), ("data.target", cfg.target)):
        if col not in names:
            raise UserError(f"{key} '{col}' is not a column of {cfg.path} (columns: {', '.join(names)})")
    typ = types[cfg.text.column]
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        raise UserError(f"data.text.column '{cfg.text.column}' has type {typ}; a string column is required")
    typ = types[cfg.target]
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_integer(typ)
            or pa.types.is_boolean(typ) or pa.types.is_dictionary(typ)):
        raise UserError(f"data.target '{cfg.target}' has type {typ}; labels must be strings or integers")


def read(cfg: DataConfig):
    """A lazy Ray Dataset with two columns, `text` and `label` (the raw label, as a string)."""
    import ray.data

    if cfg.source is DataSource.text_synthetic:
        # Generated on the driver's disk: hand the table over, so that read tasks on other
        # nodes never need that disk (a RayJob without shared storage).
        import pyarrow.parquet as pq

        _, path = sources.open_path(cfg.path)
        with sources.reading(cfg):
            ds = ray.data.from_arrow(pq.read_table(path, columns=[cfg.text.column, cfg.target]))
    else:
        ds = sources.open_dataset(cfg)
    with sources.reading(cfg):
        schema = ds.schema()
    if schema is None:
        raise UserError(f"dataset at {cfg.path} is empty (no rows)")
    base = schema.base_schema
    if isinstance(base, pa.Schema):
        check_columns(cfg, base)
    else:  # a pandas-typed schema: `check` has seen the types already
        check_columns(cfg, pa.schema([pa.field(n, pa.string()) for n in schema.names]))
    text_col, label_col = cfg.text.column, cfg.target

    def normalise(batch):
        import pandas as pd

        return pd.DataFrame({"text": batch[text_col].fillna("").astype(str),
                             "label": batch[label_col].map(_label_str)})

    return ds.map_batches(normalise, batch_format="pandas")


def _label_str(v: Any) -> Optional[str]:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    return str(v)


# --- labels ------------------------------------------------------------------------------------

@dataclass
class TextData:
    train: Any                # Ray Datasets of (text, label id)
    valid: Any
    classes: List[str]        # id -> label
    train_rows: int
    valid_rows: int
    counts: Dict[str, int]    # label -> rows, all data


def _sort_labels(labels: List[str]) -> List[str]:
    """Numeric labels sort as numbers (2 before 10), others alphabetically."""
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def label_mapping(cfg: DataConfig, counts: Dict[Optional[str], int]) -> List[str]:
    """The id -> label list: data.text.classes when set (every label must be one of them), else sorted labels."""
    if None in counts:
        raise UserError(f"data.target '{cfg.target}' has {counts[None]} empty label(s) in {cfg.path}")
    found = _sort_labels([k for k in counts])
    if cfg.text.classes is not None:
        classes = [str(c) for c in cfg.text.classes]
        if len(set(classes)) != len(classes):
            raise UserError(f"data.text.classes has duplicates: {classes}")
        outside = [k for k in found if k not in set(classes)]
        if outside:
            shown = ", ".join(f"'{k}' ({counts[k]} rows)" for k in outside[:5])
            raise UserError(f"labels outside data.text.classes {classes} in {cfg.path}: {shown}"
                            f"{' ...' if len(outside) > 5 else ''}")
    else:
        classes = found
    if len(classes) < 2:
        raise UserError(f"data.target '{cfg.target}' has {len(classes)} distinct label(s) {classes}; "
                        "classification needs at least 2")
    return classes


def label_counts(ds) -> Dict[Optional[str], int]:
    """label -> rows, counted per block (no shuffle, unlike a groupby)."""
    def count(batch):
        import pandas as pd

        vc = batch["label"].value_counts(dropna=False)
        return pd.DataFrame({"label": [None if pd.isna(k) else k for k in vc.index], "n": vc.to_numpy()})

    counts: Dict[Optional[str], int] = {}
    for row in ds.map_batches(count, batch_format="pandas").take_all():
        counts[row["label"]] = counts.get(row["label"], 0) + int(row["n"])
    return counts


def load(cfg: DataConfig, min_rows_per_split: int = 1) -> TextData:
    """Read, map labels to ids, split into train/validation (materialized: both are read several times)."""
    import ray.data

    with sources.reading(cfg):  # every file is read here: a permanent error is one line
        ds = read(cfg).materialize()
    counts = label_counts(ds)
    if not counts:
        raise UserError(f"dataset at {cfg.path} is empty (no rows)")
    classes = label_mapping(cfg, counts)
    ids = {c: i for i, c in enumerate(classes)}

    fraction, seed = cfg.validation_fraction, cfg.split_seed

    def side(validation: bool):
        def encode(batch):
            kept = batch[in_validation(batch[["text", "label"]], fraction, seed) == validation]
            return {"text": kept["text"].to_numpy(), "label": np.array([ids[v] for v in kept["label"]], dtype=np.int64)}
        return ds.map_batches(encode, batch_format="pandas")

    # Each row's side comes from its content (training/data/split.py), as for tabular data: the same
    # rows whatever the cluster's block layout, so a resumed run validates on the rows it validated
    # on before, and duplicate texts never straddle. The training rows are then shuffled: a file
    # sorted by label would feed one class at a time.
    train = side(False).random_shuffle(seed=seed).materialize()
    valid = side(True).materialize()
    train_rows, valid_rows = train.count(), valid.count()
    if min(train_rows, valid_rows) < min_rows_per_split:
        raise UserError(f"dataset at {cfg.path} has {train_rows + valid_rows} rows: too few for a "
                        f"{train_rows}/{valid_rows} train/validation split across {min_rows_per_split} worker(s)")
    return TextData(train, valid, classes, train_rows, valid_rows, {k: counts[k] for k in classes if k in counts})


# --- tokenisation ------------------------------------------------------------------------------

def _texts(ds, limit: Optional[int]) -> Iterator[List[str]]:
    seen = 0
    for batch in ds.iter_batches(batch_size=1000, batch_format="numpy"):
        texts = [str(t) for t in batch["text"]]
        if limit is not None and seen + len(texts) > limit:
            texts = texts[: limit - seen]
        seen += len(texts)
        yield texts
        if limit is not None and seen >= limit:
            return


def train_wordpiece(train_ds, vocab_size: int, max_length: int, out_dir: str, sample_rows: Optional[int] = None):
    """A lower-casing BERT WordPiece tokenizer trained on the training split's text, saved to out_dir."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(_texts(train_ds, sample_rows), vocab_size=vocab_size, min_frequency=1,
                           special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer = BertTokenizerFast(tokenizer_object=wp._tokenizer, model_max_length=max_length)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def tokenize(tokenizer, texts, max_length: int) -> Dict[str, Any]:
    """Token ids and masks as torch tensors, truncated to max_length and padded to the batch's longest."""
    return tokenizer([str(t) for t in texts], truncation=True, max_length=max_length, padding="longest",
                     return_tensors="pt")
