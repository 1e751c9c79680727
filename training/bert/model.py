"""The pieces of BERT fine-tuning that are plain PyTorch/transformers: the classifier, mixed
precision, the optimizer and its schedule. No Ray here; the worker loop (worker.py) uses them.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Dict, List


def quiet_transformers() -> None:
    """Offline-friendly and quiet: no progress bars, no 'newly initialised weights' notices per worker."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def build_model(cfg: Dict[str, Any], model_dir: str, from_checkpoint: bool):
    """The classifier: a checkpoint's own weights, a pretrained encoder with a new head, or a new model."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig

    classes: List[str] = cfg["classes"]
    labels = dict(num_labels=len(classes), id2label=dict(enumerate(classes)),
                  label2id={c: i for i, c in enumerate(classes)})
    if from_checkpoint:
        # model_dir is always a local directory here (B615 is about hub downloads).
        return AutoModelForSequenceClassification.from_pretrained(model_dir)  # nosec B615
    if cfg["pretrained"]:
        config = AutoConfig.from_pretrained(model_dir, **labels)  # nosec B615 (local directory)
        # The head is new (or has another number of classes): initialise it, keep the encoder.
        return AutoModelForSequenceClassification.from_pretrained(model_dir, config=config,  # nosec B615
                                                                  ignore_mismatched_sizes=True)
    arch = cfg["architecture"]
    config = BertConfig(vocab_size=cfg["vocab_size"], hidden_size=arch["hidden_size"],
                        num_hidden_layers=arch["num_hidden_layers"], num_attention_heads=arch["num_attention_heads"],
                        intermediate_size=arch["intermediate_size"],
                        max_position_embeddings=arch["max_position_embeddings"], pad_token_id=0, **labels)
    return AutoModelForSequenceClassification.from_config(config)


# --- worker: mixed precision --------------------------------------------------------------------

def choose_precision(requested: str, device) -> str:
    """bf16 where the GPU supports it, else fp16 (with a grad scaler); fp32 on CPU."""
    import torch

    if device.type != "cuda":
        return "fp32"
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"precision=bf16 but {torch.cuda.get_device_name(device)} does not support bf16; "
                           "use precision=auto or fp16")
    return requested


def autocast(precision: str, device):
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


# --- worker: optimisation -----------------------------------------------------------------------

def make_optimizer(model, cfg: Dict[str, Any]):
    """AdamW (no weight decay on biases and LayerNorm) with linear warm-up then linear decay to 0."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name or name.endswith("bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg["learning_rate"])
    total = cfg["total_steps"]
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg["warmup_fraction"] * total), total)
    return optimizer, scheduler


def steps_per_epoch(train_rows: int, world_size: int, batch_size: int, grad_accum_steps: int) -> int:
    """Optimizer steps per epoch on every worker (Ray Data gives each worker an equal share of rows)."""
    batches = math.ceil((train_rows // world_size) / batch_size)
    return max(1, math.ceil(batches / grad_accum_steps))
