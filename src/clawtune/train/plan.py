"""What a training run will be: the options it was started with and what this machine will actually run (device,
precision, attention, processes), worked out before anything is loaded. `train.run` carries the plan out;
`train.estimate` (the dry run) prices it.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any

from clawtune.problems import InputError
from clawtune.train.config import FTConfig
from clawtune.train.options import TrainOptions


class TrainError(InputError):
    """The run cannot start as configured; the message says why and what to change."""


@dataclass
class Plan:
    """What the machine will actually run, and the lines that say where that differs from the config."""

    device: str
    bf16: bool
    attention: str
    world_size: int
    notes: list[str] = field(default_factory=list)
    fsdp: bool = False


def plan_run(options: TrainOptions) -> Plan:
    """Match the config and flags to this machine, with one line for each substitution."""
    import torch

    config = options.config
    cuda = torch.cuda.is_available()
    mps = not cuda and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    notes = []
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cuda:
        device = "cuda"
        if options.gpus and options.gpus > torch.cuda.device_count():
            raise TrainError(f"--gpus {options.gpus}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif mps:
        device = "mps"
    else:
        device = "cpu"
    if options.gpus and not cuda:
        what = f"{options.gpus} CPU processes (over gloo)" if options.gpus > 1 else "the CPU"
        notes.append(f"--gpus {options.gpus}: no CUDA GPU on this machine; training on {what} instead")
    bf16 = False
    if config.bfloat16:
        if cuda and torch.cuda.is_bf16_supported():
            bf16 = True
        else:
            notes.append(f"bfloat16: not supported well on {device}; training in float32 instead")
    if config.method == "qlora":
        if not cuda:
            raise TrainError(
                "method qlora quantises the base model to 4 bits with bitsandbytes, which needs a CUDA GPU; "
                "this machine has none. Use method: lora (same adapter, full-precision base) or run on a GPU."
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise TrainError("method qlora needs bitsandbytes: pip install bitsandbytes (or use method: lora)")
    if config.use_unsloth:
        if not cuda:
            why = "no CUDA GPU on this machine"
        elif importlib.util.find_spec("unsloth") is None:
            why = "Unsloth is not installed (pip install unsloth)"
        else:
            why = "clawtune's isolated packing and masks are not wired into Unsloth's patched model yet"
        notes.append(f"use_unsloth: {why}; training with transformers + PEFT instead")
    attention = config.training.attention
    if attention == "auto":  # sdpa per packed example skips the blocks between them (train/attention.py)
        attention = "sdpa_varlen" if config.training.packing else "sdpa"
    strategy = config.training.distributed
    fsdp = world > 1 and (strategy == "fsdp" or (strategy == "auto" and config.method == "full"))
    return Plan(device=device, bf16=bf16, attention=attention, world_size=world, notes=notes, fsdp=fsdp)


def lora_config(config: FTConfig) -> Any:
    """PEFT's LoraConfig for the config's `lora` section."""
    from peft import LoraConfig

    lora = config.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
