"""Training throughput and peak memory: clawtune against the usual set-up, on the same data, in one run.

    python bench/train_bench.py                 # CPU: the bundled tiny model on the sample agent's conversations
    python bench/train_bench.py --mode gpu      # CUDA: a Llama-3.1-8B-shaped model, random bf16 weights

Each variant runs in its own process (so peak memory is its own), through transformers' Trainer + PEFT, with LoRA
r=16 alpha=32 dropout=0.1 on q,k,v,o, AdamW, the same learning rate and the same assistant-only labels:

  baseline: the usual set-up: padded batches of 4 examples, gradient checkpointing on, stock loss;
  clawtune: clawtune's Trainer: isolated packing into fixed-length rows (sdpa run on each packed example on CPU,
            compiled flex_attention on CUDA), logits only where a label is trained, gradient checkpointing on;
  mask:     (CPU only) clawtune with sdpa under a block-diagonal document mask, the CPU default before sdpa_varlen.

Prints non-pad tokens/s, peak memory, their ratios, and MFU on non-pad tokens (4 x parameters FLOPs per token for
LoRA, attention excluded). Data: on CPU the sample agent's exported conversations (real lengths and masks); on GPU,
lengths drawn lognormal (median 600, 64..4096) as in ../shared/reference/gpu-measurements.md, with the sample agent's
share of trained tokens. Imports only torch, transformers, peft and clawtune's trainer modules (no pydantic), so it
runs on the GPU machine's stock Python.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

H200_BF16_FLOPS = 790e12
TRAINED_SHARE = 0.11  # the sample agent's share of trained tokens (19,373 of 175,759 in the demo's data)


def sample_agent_examples(n: int) -> list[Any]:
    """The sample agent's exported conversations, rendered and labelled with the tiny model's template."""
    from clawtune.data.build import TrainingDataOptions, export_training_data
    from clawtune.models import load_tokenizer
    from clawtune.problems import Problems
    from clawtune.sample import make_state_dir
    from clawtune.train.data import tokenize_file

    with tempfile.TemporaryDirectory() as tmp:
        state = make_state_dir(Path(tmp), n_sessions=600, seed=11)
        export_training_data(TrainingDataOptions(agent_id="my-agent", output=Path(tmp) / "d", state_dirs=[state]))
        tokenizer = load_tokenizer("clawtune/tiny-agent")[0]
        data = tokenize_file(Path(tmp) / "d" / "raw.jsonl", tokenizer, 4096, "truncate", Problems())
    return data.examples[:n]


def lognormal_examples(n: int, vocab: int, seed: int = 0) -> list[Any]:
    """Token sequences with agent-like lengths; the last turns of each are trained, the share of the sample agent."""
    from clawtune.artifacts.render import IGNORE, Rendered

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = min(4096, max(64, round(math.exp(rng.gauss(math.log(600), 0.8)))))
        ids = [rng.randrange(10, vocab) for _ in range(length)]
        trained = max(1, round(length * TRAINED_SHARE))
        first = rng.randrange(1, length - trained + 1)
        labels = [IGNORE] * length
        labels[first : first + trained] = ids[first : first + trained]
        out.append(Rendered(ids, labels))
    return out


def build_model(mode: str, attention: str) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model

    if mode == "cpu":
        from clawtune.models import load_model

        model = load_model("clawtune/tiny-agent", dtype=torch.float32, attn_implementation=attention)
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            hidden_size=4096,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            intermediate_size=14336,
            vocab_size=128256,
            max_position_embeddings=131072,
            rope_theta=500000.0,
            tie_word_embeddings=False,
        )
        config._attn_implementation = attention
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.1,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


class PaddedCollator:
    """The usual set-up: pad each batch to its longest example, with an attention mask."""

    def __init__(self, pad: int) -> None:
        self.pad = pad

    def __call__(self, rows: list[list[Any]]) -> dict[str, Any]:
        import torch

        examples = [row[0] for row in rows]
        width = max(len(e.input_ids) for e in examples)
        ids = torch.full((len(examples), width), self.pad)
        labels = torch.full((len(examples), width), -100)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
            labels[i, : len(e.labels)] = torch.tensor(e.labels)
            mask[i, : len(e.input_ids)] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def run_variant(variant: str, mode: str, steps: int, warmup: int, row: int, examples: int) -> dict[str, Any]:
    import resource

    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from clawtune.train.data import Collator, RowDataset, pack
    from clawtune.train.trainer import make_trainer_class

    data = sample_agent_examples(examples) if mode == "cpu" else lognormal_examples(examples, 128256)
    from clawtune.train.attention import model_implementation

    attention = {"baseline": "sdpa", "mask": "sdpa", "clawtune": "flex_attention" if mode == "gpu" else "sdpa_varlen"}[
        variant
    ]
    model = build_model(mode, model_implementation(attention))
    pad = 0
    if variant == "baseline":
        dataset = RowDataset(data, [[i] for i in range(len(data))])
        collator: Any = PaddedCollator(pad)
        batch = 4
        trainer_class: Any = Trainer
    else:
        dataset = RowDataset(data, pack([len(e.input_ids) for e in data], row))
        collator = Collator(pad, pad_to=row if mode == "gpu" else None)
        batch = 1 if mode == "gpu" else 2  # about the baseline's tokens per step
        trainer_class = make_trainer_class()

    timing: dict[str, Any] = {"tokens": 0, "padded": 0}

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == warmup:
                if mode == "gpu":
                    torch.cuda.synchronize()
                timing["start"] = time.perf_counter()
                timing["tokens"] = timing["padded"] = 0

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == warmup + steps and mode == "gpu":
                torch.cuda.synchronize()
            timing["end"] = time.perf_counter()

    original = collator.__call__

    def counting(rows: list[list[Any]]) -> dict[str, Any]:
        out = original(rows)
        key = "attention_mask" if "attention_mask" in out else "document_ids"
        real = (out[key] > 0) if key == "attention_mask" else (out[key] >= 0)
        timing["tokens"] += int(real.sum())
        timing["padded"] += out["input_ids"].numel()
        return out

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=batch,
            max_steps=warmup + steps,
            learning_rate=2e-4,
            warmup_steps=0,
            logging_steps=10_000,
            save_strategy="no",
            report_to=[],
            bf16=mode == "gpu",
            use_cpu=mode == "cpu",
            remove_unused_columns=False,
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=0,
        )
        trainer = trainer_class(
            model=model, args=args, train_dataset=dataset, data_collator=counting, callbacks=[Clock()]
        )
        if variant != "baseline":
            trainer.clawtune_attention = attention
        if mode == "gpu":
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
    seconds = timing["end"] - timing["start"]
    peak = (
        torch.cuda.max_memory_allocated()
        if mode == "gpu"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    params = sum(p.numel() for p in model.parameters())
    return {
        "variant": variant,
        "steps": steps,
        "non_pad_tokens": timing["tokens"],
        "padding_efficiency": timing["tokens"] / max(timing["padded"], 1),
        "seconds": seconds,
        "tokens_per_s": timing["tokens"] / seconds,
        "peak_bytes": int(peak),
        "parameters": params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["auto", "cpu", "gpu"], default="auto")
    parser.add_argument("--steps", type=int, default=None, help="measured optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    mode = args.mode
    if mode == "auto":
        import torch

        mode = "gpu" if torch.cuda.is_available() else "cpu"
    # Same tokens for both: the baseline's 4 examples a step vs clawtune's one packed row a step.
    row = 8192 if mode == "gpu" else 1024
    steps = args.steps or (40 if mode == "gpu" else 30)
    warmup = args.warmup if args.warmup is not None else (5 if mode == "gpu" else 3)
    examples = 4 * (steps + warmup) * 2
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args.variant, mode, steps, warmup, row, examples)))
        return
    results = {}
    variants = ("baseline", "clawtune") if mode == "gpu" else ("baseline", "clawtune", "mask")
    for variant in variants:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, __file__, "--mode", mode, "--variant", variant, "--steps", str(steps)]
        command += ["--warmup", str(warmup)]
        out = subprocess.run(command, capture_output=True, text=True, env=env)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{variant} failed:\n{out.stderr[-4000:]}")
        results[variant] = json.loads(line[7:])
    base, ours = results["baseline"], results["clawtune"]
    if mode == "gpu":
        peak_flops = H200_BF16_FLOPS
    else:
        import torch

        from clawtune.train.estimate import device_flops

        peak_flops = device_flops("cpu", torch.float32)
    print(f"mode {mode}; {steps} measured steps after {warmup} warm-up; peak FLOP/s {peak_flops / 1e9:,.0f} G")
    print(f"{'variant':<10} {'non-pad tok/s':>14} {'padding eff.':>13} {'peak memory':>12} {'MFU':>6}")
    for r in results.values():
        mfu = r["tokens_per_s"] * 4 * r["parameters"] / peak_flops
        r["mfu"] = mfu
        print(
            f"{r['variant']:<10} {r['tokens_per_s']:>14,.0f} {r['padding_efficiency']:>12.0%} "
            f"{r['peak_bytes'] / 2**30:>10.2f} GB {mfu:>6.1%}"
        )
    speed = ours["tokens_per_s"] / base["tokens_per_s"]
    memory = ours["peak_bytes"] / base["peak_bytes"]
    print(f"clawtune / baseline: {speed:.2f}x non-pad tokens/s at {memory:.2f}x peak memory")
    if "mask" in results:
        varlen = ours["tokens_per_s"] / results["mask"]["tokens_per_s"]
        print(f"clawtune (sdpa per example) / mask (sdpa + document mask): {varlen:.2f}x non-pad tokens/s")
    if args.json:
        args.json.write_text(
            json.dumps({"mode": mode, "results": results, "speedup": speed, "memory": memory}, indent=2)
        )


if __name__ == "__main__":
    main()
