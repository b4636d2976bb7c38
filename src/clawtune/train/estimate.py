"""`clawtune ft train --dry-run`: what a run will cost before it starts.

Parameters are counted on a weightless (meta-device) copy of the model with the method applied, so a dry run of an
8B model needs no memory for its weights. Tokens come from the real tokenization of the data. Memory and time are
estimates, labelled as such:

- memory: weights + gradients and AdamW state of the trainable parameters + activations of one micro-batch (one
  layer's worth per layer boundary with gradient checkpointing) + fp32 logits and their gradient;
- time: FLOPs per trained-over token (forward 2N, backward 2N for activation gradients, +2N for weight gradients in
  full fine-tuning, +2N recomputation with checkpointing) over this device's matmul throughput, measured now for a
  fraction of a second, at an assumed 40% utilisation.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from clawtune.models import resolve

if TYPE_CHECKING:
    from rich.console import Console

    from clawtune.train.data import TokenizedData
    from clawtune.train.options import TrainOptions
    from clawtune.train.plan import Plan

UTILISATION = 0.4


def skeleton(options: TrainOptions, plan: Plan) -> Any:
    """The model with the method applied, on the meta device (no weights in memory)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = options.config
    model_config = AutoConfig.from_pretrained(resolve(config.base_model))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config, dtype=torch.bfloat16 if plan.bf16 else torch.float32)
    if config.method == "full":
        return model
    from peft import get_peft_model

    from clawtune.train.plan import lora_config

    return get_peft_model(model, lora_config(config))


def device_flops(device: str, dtype: Any) -> float:
    """Dense matmul FLOP/s on this device, measured over about half a second."""
    import torch

    n = 1024 if device == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < 0.5:
        a @ b
        runs += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * runs / (time.perf_counter() - started)


def estimate(options: TrainOptions, plan: Plan, train: TokenizedData, rows: int) -> dict[str, Any]:
    import torch

    config, t = options.config, options.config.training
    model = skeleton(options, plan)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    base = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    hidden = base.hidden_size
    layers = base.num_hidden_layers
    vocab = base.vocab_size
    intermediate = getattr(base, "intermediate_size", 4 * hidden)

    weight_bytes: float = 2 if plan.bf16 else 4
    if config.method == "qlora":
        weight_bytes = 0.56 if config.qlora.bits == 4 else 1.06
    per_step = t.batch_size * t.gradient_accumulation_steps * plan.world_size
    steps_per_epoch = math.ceil(rows / per_step)
    steps = options.max_steps or math.ceil(steps_per_epoch * t.epochs)
    lengths = sorted(len(e.input_ids) for e in train.examples)
    row_tokens = t.max_seq_length if t.packing else lengths[int(0.95 * (len(lengths) - 1))]
    micro_tokens = t.batch_size * row_tokens
    act_bytes = 2 if plan.bf16 else 4
    layer_activations = micro_tokens * (16 * hidden + 3 * intermediate) * act_bytes
    activations = (
        layers * micro_tokens * hidden * act_bytes + layer_activations
        if t.gradient_checkpointing
        else layers * layer_activations
    )
    logits = micro_tokens * vocab * 4 * 2
    memory = {
        "weights": int(total * weight_bytes),
        "gradients_and_optimizer": int(trainable * (4 + 8 + (4 if plan.bf16 else 0))),
        "activations": int(activations),
        "logits": int(logits),
    }
    tokens_per_epoch = train.tokens
    flops_per_token = (4 if config.method != "full" else 6) * total + (2 * total if t.gradient_checkpointing else 0)
    epochs = steps / steps_per_epoch
    total_flops = flops_per_token * tokens_per_epoch * epochs
    dtype = torch.bfloat16 if plan.bf16 else torch.float32
    measured = device_flops(plan.device if plan.device != "mps" else "cpu", dtype) * plan.world_size
    seconds = total_flops / (measured * UTILISATION)
    return {
        "dry_run": True,
        "base_model": config.base_model,
        "method": config.method,
        "device": plan.device,
        "processes": plan.world_size,
        "precision": "bf16" if plan.bf16 else "fp32",
        "trainable_parameters": trainable,
        "total_parameters": total,
        "examples": dict(train.counts),
        "tokens_per_epoch": tokens_per_epoch,
        "trained_tokens_per_epoch": train.trained_tokens,
        "rows": rows,
        "steps": steps,
        "epochs": round(epochs, 3),
        "estimated_peak_memory_bytes": sum(memory.values()),
        "memory_breakdown_bytes": memory,
        "device_matmul_flops": measured,
        "estimated_seconds": round(seconds, 1),
        "notes": plan.notes,
    }


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def print_estimate(report: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    table = Table(
        title=f"dry run: {report['method']} on {report['base_model']} ({report['device']})", show_header=False
    )
    table.add_row("trainable parameters", f"{report['trainable_parameters']:,} of {report['total_parameters']:,}")
    table.add_row("examples", f"{report['examples'].get('used', 0):,} used of {report['examples'].get('read', 0):,}")
    for label, prefix in (("refused by the chat template", "refused: "), ("adapted to the chat template", "adapted: ")):
        found = {k.removeprefix(prefix): v for k, v in report["examples"].items() if k.startswith(prefix)}
        if found:
            table.add_row(label, ", ".join(f"{k}: {v:,}" for k, v in found.items()))
    table.add_row(
        "tokens per epoch", f"{report['tokens_per_epoch']:,} ({report['trained_tokens_per_epoch']:,} trained)"
    )
    table.add_row("rows, steps, epochs", f"{report['rows']:,} rows, {report['steps']:,} steps, {report['epochs']}")
    memory = report["memory_breakdown_bytes"]
    table.add_row(
        "peak memory (estimate)",
        f"{_bytes(report['estimated_peak_memory_bytes'])}  ("
        + ", ".join(f"{k.replace('_', ' ')} {_bytes(v)}" for k, v in memory.items())
        + ")",
    )
    table.add_row(
        "time (estimate)",
        f"{_duration(report['estimated_seconds'])} at {UTILISATION:.0%} of the {report['device_matmul_flops'] / 1e9:,.0f} "
        "GFLOP/s measured now",
    )
    console.print(table)
