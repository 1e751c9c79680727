"""BERT training throughput on a GPU: through Ray Train's TorchTrainer vs a plain PyTorch loop.

bert-base sizes (12 layers, hidden 768, 12 heads; from config, random init), sequence length
128, bf16 autocast, AdamW, the project's optimizer/precision helpers (training/bert/worker.py).
Both sides run the same timed step function on the same pre-built batches (random token ids,
full length, so padding cannot flatter either side); the Ray side runs it inside one
TorchTrainer worker (prepare_model, one report at the end). Prints samples/s, model FLOPs
utilisation (MFU) and the ratio ray/plain. Goal on an H100-class GPU: MFU >= 40%, ratio >= 0.95.

Training FLOPs per token: 6 x non-embedding parameters + 12 x layers x hidden x seq (attention).
Peak dense bf16 FLOP/s come from the GPU's name (table below) or --peak-tflops.

    python benchmarks/bert_throughput.py [--batch-size 64] [--seq 128] [--steps 50] [--warmup 10]

On a machine without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Dense bf16 tensor-core peak, TFLOP/s (vendor datasheets, without sparsity). Longer names first.
PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.0), ("H100", 989.0), ("H200", 989.0),
                    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0),
                    ("A10", 125.0)]


def bert_base_config():
    from transformers import BertConfig

    return BertConfig(num_labels=2)  # the defaults are bert-base: 30522 x 768, 12 x (12 heads, 3072)


def flops_per_sample(config, seq: int) -> float:
    h, layers = config.hidden_size, config.num_hidden_layers
    per_layer = 4 * h * h + 4 * h + 2 * h * config.intermediate_size + config.intermediate_size + h + 4 * h
    non_embedding = layers * per_layer + h * h + h + h * config.num_labels + config.num_labels
    return seq * (6 * non_embedding + 12 * layers * h * seq)


def peak_flops(name: str, override: Optional[float]) -> Optional[float]:
    if override:
        return override * 1e12
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


def timed_steps(model, batches, steps: int, warmup: int, precision: str, device) -> Dict[str, float]:
    """Warm-up steps, then `steps` timed optimizer steps; the same function for both sides."""
    import torch

    from training.bert.model import autocast, make_optimizer

    optimizer, scheduler = make_optimizer(model, {"weight_decay": 0.01, "learning_rate": 5e-5,
                                                  "total_steps": steps + warmup, "warmup_fraction": 0.1})
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    model.train()

    def step(i: int) -> None:
        inputs = batches[i % len(batches)]
        with autocast(precision, device):
            loss = model(**inputs).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(i)
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "samples_per_s": steps * batches[0]["input_ids"].shape[0] / seconds}


def make_batches(batch_size: int, seq: int, vocab: int, device, n: int = 8):
    import torch

    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(1, vocab, (batch_size, seq), generator=g).to(device),
             "attention_mask": torch.ones(batch_size, seq, dtype=torch.long).to(device),
             "labels": torch.randint(0, 2, (batch_size,), generator=g).to(device)} for _ in range(n)]


def plain(args) -> Dict[str, float]:
    import torch
    from transformers import AutoModelForSequenceClassification

    from training.bert.model import choose_precision

    device = torch.device("cuda", 0)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(bert_base_config()).to(device)
    precision = choose_precision(args.precision, device)
    out = timed_steps(model, make_batches(args.batch_size, args.seq, model.config.vocab_size, device),
                      args.steps, args.warmup, precision, device)
    del model
    torch.cuda.empty_cache()
    return {**out, "precision": precision}


def _ray_worker(cfg: Dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    import torch
    from transformers import AutoModelForSequenceClassification

    from training.bert.model import choose_precision

    device = ray.train.torch.get_device()
    torch.manual_seed(0)
    model = ray.train.torch.prepare_model(AutoModelForSequenceClassification.from_config(bert_base_config()))
    precision = choose_precision(cfg["precision"], device)
    vocab = getattr(model, "module", model).config.vocab_size
    out = timed_steps(model, make_batches(cfg["batch_size"], cfg["seq"], vocab, device), cfg["steps"],
                      cfg["warmup"], precision, device)
    ray.train.report({**out, "world_size": ray.train.get_context().get_world_size()})  # one report, at the end


def through_ray(args) -> Dict[str, float]:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    t0 = time.perf_counter()
    if not ray.is_initialized():
        ray.init(logging_level="WARNING")
    init_s = time.perf_counter() - t0
    trainer = TorchTrainer(_ray_worker, train_loop_config={k: getattr(args, k) for k in
                                                           ("batch_size", "seq", "steps", "warmup", "precision")},
                           scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=True),
                           run_config=RunConfig(name=f"bert-throughput-{int(time.time())}",
                                                storage_path=str(Path("/tmp/bert-throughput").resolve())))
    t1 = time.perf_counter()
    result = trainer.fit()
    fit_s = time.perf_counter() - t1
    m = result.metrics
    # Each worker timed its own steps; aggregate throughput = per-worker rate x workers (DDP, same step count).
    return {"seconds": m["seconds"], "samples_per_s": m["samples_per_s"] * m["world_size"],
            "per_gpu_samples_per_s": m["samples_per_s"], "fit_seconds": fit_s, "ray_init_seconds": init_s}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=64, help="per GPU")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=50, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--precision", default="bf16", choices=["auto", "bf16", "fp16"])
    p.add_argument("--workers", type=int, default=1, help="TorchTrainer workers (one GPU each)")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the GPU's dense bf16 peak")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bert_throughput.json"))
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(f"bert_throughput: no GPU on this machine (torch {torch.__version__}, "
              f"torch.cuda.is_available() is False): nothing measured. Run it on a GPU node.")
        return 0
    name = torch.cuda.get_device_name(0)
    peak = peak_flops(name, args.peak_tflops)
    flops = flops_per_sample(bert_base_config(), args.seq)
    print(f"GPU: {name} x {torch.cuda.device_count()}; bert-base, seq {args.seq}, batch {args.batch_size}/GPU, "
          f"{args.precision}; {flops / 1e9:.1f} GFLOP per training sample", flush=True)
    base = plain(args)
    ray_side = through_ray(args)

    def mfu(rate: float) -> Optional[float]:
        return rate * flops / peak if peak else None

    per_gpu = ray_side["per_gpu_samples_per_s"]
    result = {"gpu": name, "gpus": args.workers, "seq": args.seq, "batch_size": args.batch_size,
              "precision": base["precision"], "steps": args.steps, "peak_tflops": peak / 1e12 if peak else None,
              "plain_samples_per_s": base["samples_per_s"], "plain_mfu": mfu(base["samples_per_s"]),
              "ray_samples_per_s": ray_side["samples_per_s"], "ray_mfu_per_gpu": mfu(per_gpu),
              "ratio_ray_over_plain_per_gpu": per_gpu / base["samples_per_s"],
              "ray_fit_seconds": ray_side["fit_seconds"], "ray_init_seconds": ray_side["ray_init_seconds"],
              "torch": torch.__version__, "python": platform.python_version()}
    fmt = lambda v: f"{100 * v:.1f}%" if v is not None else "n/a (unknown GPU peak: pass --peak-tflops)"
    print(f"plain loop:   {base['samples_per_s']:8.1f} samples/s  MFU {fmt(result['plain_mfu'])}")
    print(f"TorchTrainer: {per_gpu:8.1f} samples/s per GPU  MFU {fmt(result['ray_mfu_per_gpu'])} "
          f"({args.workers} worker(s), {ray_side['samples_per_s']:.1f} samples/s in all)")
    print(f"ratio TorchTrainer / plain (per GPU): {result['ratio_ray_over_plain_per_gpu']:.3f} "
          f"(goal >= 0.95; MFU goal >= 40% on H100-class GPUs)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
