"""BERT sequence classification under Ray Train's TorchTrainer: the per-worker loop.

`train_fn` runs DDP with mixed precision, gradient accumulation, AdamW + linear warm-up/decay
(model.py), evaluates each epoch and reports once per epoch with a checkpoint (model, tokenizer, optimizer, scheduler, scaler, step)
that a restarted worker group resumes from.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from training.bert.metrics import all_reduce, classification_metrics
from training.bert.model import autocast, build_model, choose_precision, make_optimizer, quiet_transformers
from training.runtime import drill, report
from training.runtime.live import LiveMetrics

STATE_FILE = "training_state.json"     # epoch, step, loss/lr history, per-epoch evaluation
OPTIM_FILE = "optimizer.pt"            # optimizer, scheduler, grad scaler
LABELS_FILE = "labels.json"            # id -> label, also in config.json (id2label)


class Trainer:
    """One worker's state: model (DDP-wrapped), optimizer, scheduler, scaler, step counter, history."""

    def __init__(self, cfg: Dict[str, Any], model, tokenizer, device, precision: str):
        import torch
        import ray.train.torch

        self.cfg, self.tokenizer, self.device, self.precision = cfg, tokenizer, device, precision
        self.model = ray.train.torch.prepare_model(model)
        self.optimizer, self.scheduler = make_optimizer(self.model, cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.step, self.epoch = 0, 0
        self.history: List[Dict[str, float]] = []   # {"step", "loss", "lr"} every log_every_steps
        self.evals: List[Dict[str, float]] = []     # one per epoch
        self.ctx = ray.train.get_context()
        self.rank, self.world = self.ctx.get_world_rank(), self.ctx.get_world_size()
        # Rank 0 logs losses and evaluations to the run's MLflow run as they come.
        self.live = LiveMetrics(cfg.get("tracking_uri"), cfg.get("mlflow_run_id") if self.rank == 0 else None, "bert",
                                once_per_step=True)

    @property
    def unwrapped(self):
        return getattr(self.model, "module", self.model)

    def batch(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        from training.data.text import tokenize

        import numpy as np
        import torch

        enc = tokenize(self.tokenizer, batch["text"], self.cfg["max_seq_length"])
        enc["labels"] = torch.from_numpy(np.array(batch["label"], dtype=np.int64))
        return {k: v.to(self.device, non_blocking=True) for k, v in enc.items()}

    def _optimizer_step(self) -> None:
        import torch

        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["max_grad_norm"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def train_epoch(self, shard) -> Tuple[float, int]:
        """One pass over this worker's shard; returns (mean training loss across workers, samples seen here)."""
        accum = self.cfg["grad_accum_steps"]
        self.model.train()
        total_loss, total_n, window_loss, window_n, samples, micro = 0.0, 0, 0.0, 0, 0, 0
        t0 = time.perf_counter()
        batches = shard.iter_batches(batch_size=self.cfg["batch_size"], batch_format="numpy",
                                     local_shuffle_buffer_size=min(10 * self.cfg["batch_size"], 10_000),
                                     local_shuffle_seed=self.cfg["seed"] + self.epoch * 1000 + self.rank)
        for raw, last in _with_last(batches):
            inputs = self.batch(raw)
            micro += 1
            # The epoch's last accumulation may be shorter; it must still all-reduce before its step.
            sync = micro % accum == 0 or last
            no_sync = getattr(self.model, "no_sync", None)
            # Between optimizer steps gradients accumulate locally; DDP all-reduces on the last micro-batch.
            with (no_sync() if (no_sync and not sync) else contextlib.nullcontext()):
                with autocast(self.precision, self.device):
                    loss = self.model(**inputs).loss
                self.scaler.scale(loss / accum).backward()
            n = len(raw["label"])
            window_loss += loss.detach().float() * n  # a tensor: no device sync per micro-batch
            window_n += n
            samples += n
            if sync:
                self._optimizer_step()
                if self.step % self.cfg["log_every_steps"] == 0:
                    total_loss, total_n = total_loss + float(window_loss), total_n + window_n
                    self._log(float(window_loss), window_n, samples / (time.perf_counter() - t0))
                    window_loss, window_n = 0.0, 0
                if self.step == self.cfg.get("kill_worker_at_step") and self.rank == self.world - 1:
                    last = {k: self.evals[-1][k] for k in ("epoch", "step")} if self.evals else None
                    drill.kill_once("bert", f"[bert] fault drill: killing worker "
                                    f"{self.rank} (pid {os.getpid()}) at step {self.step}", last)
        total_loss, total_n = total_loss + float(window_loss), total_n + window_n
        loss_sum, count = all_reduce([total_loss, float(total_n)], self.device)
        return loss_sum / max(count, 1.0), samples

    def _log(self, loss_sum: float, n: int, rate: float) -> None:
        loss_sum, count = all_reduce([loss_sum, float(n)], self.device)
        lr = self.scheduler.get_last_lr()[0]
        self.history.append({"step": self.step, "loss": loss_sum / max(count, 1.0), "lr": lr})
        if self.rank == 0:
            self.live.add("train_loss_step", self.step, loss_sum / max(count, 1.0))
            self.live.add("learning_rate", self.step, lr)
            # An optimizer step takes batch_size x grad_accum_steps samples on each worker.
            per_step = self.cfg["batch_size"] * self.cfg.get("grad_accum_steps", 1)
            left = (self.cfg["total_steps"] - self.step) * per_step / max(rate, 1e-9)
            print(f"[bert] epoch {self.epoch + 1} step {self.step}/{self.cfg['total_steps']} "
                  f"loss={loss_sum / max(count, 1.0):.4f} lr={lr:.2e} ({rate * self.world:.1f} samples/s, "
                  f"{report.eta(left)})", flush=True)

    def replica_spread(self) -> float:
        """Max - min across workers of a parameter checksum: 0 when DDP kept the replicas identical."""
        import torch
        import torch.distributed as dist

        total = torch.stack([p.detach().double().sum() for p in self.unwrapped.parameters()]).sum().reshape(1)
        if self.world == 1:
            return 0.0
        high, low = total.clone(), total.clone()
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        return float(high - low)

    def evaluate(self, shard) -> Dict[str, float]:
        """Loss, accuracy and macro-F1 over every worker's validation shard (a confusion matrix all-reduced)."""
        import torch

        k = len(self.cfg["classes"])
        self.model.eval()
        confusion = torch.zeros(k * k, dtype=torch.float64, device=self.device)
        loss_sum = 0.0
        with torch.no_grad():
            for raw in shard.iter_batches(batch_size=self.cfg["batch_size"] * 2, batch_format="numpy"):
                inputs = self.batch(raw)
                with autocast(self.precision, self.device):
                    out = self.model(**inputs)
                loss_sum += out.loss.item() * len(raw["label"])
                pred = out.logits.argmax(-1)
                confusion += torch.bincount(inputs["labels"] * k + pred, minlength=k * k).to(torch.float64)
        loss_sum = all_reduce([loss_sum], self.device)[0]
        if self.world > 1:
            torch.distributed.all_reduce(confusion)
        return classification_metrics(confusion.view(k, k).cpu().numpy(), loss_sum)


def _with_last(items):
    """(item, is_last) pairs: one item of look-ahead."""
    it = iter(items)
    try:
        prev = next(it)
    except StopIteration:
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True


# --- worker: checkpoints ------------------------------------------------------------------------

def save_checkpoint(t: Trainer, directory: str) -> None:
    import torch

    t.unwrapped.save_pretrained(directory)
    t.tokenizer.save_pretrained(directory)
    torch.save({"optimizer": t.optimizer.state_dict(), "scheduler": t.scheduler.state_dict(),
                "scaler": t.scaler.state_dict()}, os.path.join(directory, OPTIM_FILE))
    Path(directory, LABELS_FILE).write_text(json.dumps(t.cfg["classes"]))
    Path(directory, STATE_FILE).write_text(json.dumps(
        {"epoch": t.epoch, "step": t.step, "history": t.history, "evals": t.evals,
         "precision": t.precision, "world_size": t.world}))


def restore_optimizer(t: Trainer, directory: str) -> None:
    import torch

    # This run's own checkpoint from its storage path: trusted like the model weights beside it.
    state = torch.load(os.path.join(directory, OPTIM_FILE), map_location="cpu", weights_only=False)  # nosec B614
    t.optimizer.load_state_dict(state["optimizer"])
    t.scheduler.load_state_dict(state["scheduler"])
    t.scaler.load_state_dict(state["scaler"])
    saved = json.loads(Path(directory, STATE_FILE).read_text())
    t.epoch, t.step, t.history, t.evals = saved["epoch"], saved["step"], saved["history"], saved["evals"]


def read_state(directory: str) -> Dict[str, Any]:
    return json.loads(Path(directory, STATE_FILE).read_text())


# --- the worker loop ----------------------------------------------------------------------------

def train_fn(cfg: Dict[str, Any]) -> None:
    """Ray Train worker loop; `cfg` is built by training.bert.workload from the workload config."""
    import ray
    import ray.train
    import ray.train.torch
    import torch
    from transformers import AutoTokenizer

    from training.bert.source import unpack
    from training.runtime.memory import training_allocator
    from training.runtime.workers import quiet_worker_logs

    quiet_worker_logs()
    training_allocator()
    quiet_transformers()
    torch.manual_seed(cfg["seed"])
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(cfg["threads"])
    work = tempfile.mkdtemp(prefix="bert-worker-")
    try:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                model_dir = shutil.copytree(d, os.path.join(work, "checkpoint"))
        else:
            model_dir = unpack(ray.get(cfg["bundle"]), os.path.join(work, "model"))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)  # nosec B615 (local directory)
        model = build_model(cfg, model_dir, from_checkpoint=checkpoint is not None)
        precision = choose_precision(cfg["precision"], device)
        t = Trainer(cfg, model, tokenizer, device, precision)
        if checkpoint is not None:
            restore_optimizer(t, model_dir)
            if t.rank == 0:
                print(f"[bert] resuming from checkpoint at epoch {t.epoch} (step {t.step})", flush=True)
        elif t.rank == 0:
            params = sum(p.numel() for p in t.unwrapped.parameters())
            print(f"[bert] {t.world} worker(s) on {device.type}, {precision}, {params / 1e6:.2f}M parameters, "
                  f"{cfg['total_steps']} optimizer steps", flush=True)
        # Pre-split by the driver (equal row counts, so every worker takes the same number of steps):
        # each worker reads its blocks straight from the object store, no split coordinators.
        train_shard, valid_shard = cfg["shards"]["train"][t.rank], cfg["shards"]["valid"][t.rank]
        while t.epoch < cfg["epochs"]:
            t0 = time.perf_counter()
            train_loss, samples = t.train_epoch(train_shard)
            seconds = time.perf_counter() - t0
            metrics = t.evaluate(valid_shard)
            metrics["replica_spread"] = t.replica_spread()
            t.epoch += 1
            metrics.update(epoch=t.epoch, step=t.step, train_loss=train_loss, epoch_seconds=seconds,
                           samples_per_s=samples * t.world / seconds)
            t.evals.append(metrics)
            _report(t, metrics)
        t.live.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _report(t: Trainer, metrics: Dict[str, float]) -> None:
    """Once per epoch: every worker reports (Ray Train needs the same count), rank 0 with the checkpoint."""
    import ray.train

    if t.rank != 0:
        ray.train.report(metrics)
        return
    print(f"[bert] epoch {t.epoch}/{t.cfg['epochs']}: train loss {metrics['train_loss']:.4f}, "
          f"eval loss {metrics['eval_loss']:.4f}, accuracy {metrics['eval_accuracy']:.4f}, "
          f"macro-F1 {metrics['eval_macro_f1']:.4f} ({metrics['samples_per_s']:.1f} samples/s)", flush=True)
    for name, value in metrics.items():
        if name not in ("epoch", "step"):
            t.live.add(name, t.epoch, value)
    t.live.flush()
    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(t, d)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
