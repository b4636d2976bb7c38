"""`objective: dpo`: preference training on (prompt, chosen, rejected) pairs with TRL's DPOTrainer.

The pairs are `collect-failures`' `pairs.jsonl` (TRL's conversational format: `prompt` messages, `chosen` the
correction, `rejected` the failed response, `tools`), or any file of that shape. What clawtune adds to TRL:

- **the same rendering as SFT**: each side is rendered with the model's chat template and tools by `render.py`, so the
  completion's trained tokens are exactly the ones SFT would train (assistant tokens only; a tool result inside a
  correction is context, not scored), and a template the SFT rules refuse is refused here too, with its line;
- **the resumed model as the reference**: `--resume CKPT` continues that adapter, and TRL's reference adapter is a
  frozen copy of it (`ref`), so the KL term holds the model near the checkpoint it improves, not near the base. A
  full fine-tune's reference is a second, frozen load of the resumed weights. Resuming an interrupted DPO run keeps
  its reference: the run's own parent, whose weights the interrupted run started from;
- **a checkpoint like any other**: written whole or not at all, numbered after its parent, with a manifest naming the
  parent, the pairs (path, sha256, count) and the objective, so `ft evaluate`, `ft export` and `serve` read it as they
  read an SFT adapter (only the trained adapter is saved, never the reference copy).

TRL is imported here only, lazily: without the `dpo` extra, `objective: dpo` says how to install it and nothing else
changes.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from clawtune.artifacts.render import IGNORE, TemplateError, render_example
from clawtune.messages import Message, normalize_example
from clawtune.problems import Problems
from clawtune.train.plan import TrainError

PAIRS = "pairs.jsonl"
INSTALL_HINT = "pip install 'clawtune[dpo]'"


@dataclass
class Pair:
    """One tokenized pair: the shared prompt, and each side's completion with the tokens that carry its log-prob."""

    line: int
    prompt_ids: list[int]
    chosen_ids: list[int]
    chosen_mask: list[int]
    rejected_ids: list[int]
    rejected_mask: list[int]

    @property
    def tokens(self) -> int:
        return len(self.prompt_ids) * 2 + len(self.chosen_ids) + len(self.rejected_ids)


@dataclass
class PairData:
    pairs: list[Pair] = field(default_factory=list)
    read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def require_trl() -> Any:
    """TRL, or a clear error naming the extra that installs it."""

    if importlib.util.find_spec("trl") is None:
        raise TrainError(
            f"objective dpo trains with TRL's DPOTrainer, which is not installed: {INSTALL_HINT} (or pip install "
            "'trl>=1.14.2,<1.15'; 1.15 refuses LoRA on lm_head, which the tiny model's preset trains)"
        )
    import trl

    return trl


def pairs_file(path: Path) -> Path:
    """--data with `objective: dpo`: a pairs file, or the folder `collect-failures` wrote (its pairs.jsonl)."""

    if not path.is_dir():
        return path
    pairs = path / PAIRS
    if not pairs.is_file():
        raise TrainError(
            f"--data {path}: a folder, but not one `clawtune agent collect-failures` wrote (no {PAIRS} in it)"
        )
    if pairs.stat().st_size == 0:
        raise TrainError(
            f"--data {path}: {PAIRS} is empty: no failure has both a failed answer and a correction yet (fill in "
            "review.jsonl and run collect-failures again with --corrections, or give it a --teacher)"
        )
    return pairs


# --------------------------------------------------------------------------------------------------- reading pairs


def _messages(value: Any, name: str, roles: set[str]) -> str | None:
    """Why `value` is not a usable list of messages for the pair's field `name` (None: it is)."""
    if not isinstance(value, list) or not value:
        return "expected a non-empty list of messages"
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            return f"message {i}: expected an object"
        if message.get("role") not in roles:
            return f"message {i}: expected a role among {', '.join(sorted(roles))}, got {message.get('role')!r}"
    if name != "prompt" and value[-1].get("role") != "assistant":
        return "the last message must be the assistant's answer"
    return None


def _side(prompt: list[Message], answer: list[Message], tools: Any) -> dict[str, Any]:
    """The prompt (earlier assistant turns as context, weight 0) and one answer (trained), as a training example."""
    messages = [{**m, "weight": 0} if m.get("role") == "assistant" else dict(m) for m in prompt]
    messages += [{**m, "weight": 1} if m.get("role") == "assistant" else dict(m) for m in answer]
    return normalize_example({"messages": messages, **({"tools": tools} if tools else {})})


def read_pairs(
    path: Path, tokenizer: Any, max_length: int, truncation: str, problems: Problems, progress: Any = None
) -> PairData:
    """Every usable pair of `path`, tokenized as SFT tokenizes; a bad line is reported with its line and field."""
    from clawtune.data.validate import check_example
    from clawtune.logs.lines import iter_json_lines

    name = str(path)
    data = PairData()
    for lineno, item in iter_json_lines(path, problems):
        data.read += 1
        if progress is not None:
            progress()
        bad = False
        for key, roles in (("prompt", {"system", "user", "assistant", "tool"}), ("chosen", {"assistant", "tool"}),
                           ("rejected", {"assistant", "tool"})):  # fmt: skip
            why = _messages(item.get(key), key, roles)
            if why:
                problems.add(name, lineno, "invalid-pair", why, key=key)
                bad = True
        tools = item.get("tools")
        if tools is not None and not isinstance(tools, list):
            problems.add(name, lineno, "invalid-pair", "expected a list of tool definitions", key="tools")
            bad = True
        if bad:
            data.skip("invalid")
            continue
        prompt = item["prompt"]
        sides = {}
        for key in ("chosen", "rejected"):
            example = _side(prompt, item[key], tools)
            # The rejected answer is a failure: a call of a tool not offered is what it may be rejected for, so its
            # tool names are not checked against the schemas (its shape still is).
            checked = example if key == "chosen" else {"messages": example["messages"]}
            found = Problems(keep=20)
            if not check_example(checked, name, lineno, found):
                for problem in found.items:
                    index = problem.message_index
                    where = key if index is None or index >= len(prompt) else "prompt"
                    if index is not None and index >= len(prompt):
                        index -= len(prompt)
                    field_name = where + (f"[{index}]" if index is not None else "")
                    detail = f" ({problem.key})" if problem.key and problem.key not in ("messages",) else ""
                    problems.add(name, lineno, "invalid-pair", problem.message + detail, key=field_name)
                bad = True
                break
            try:
                sides[key] = render_example(tokenizer, example)
            except TemplateError as exc:
                problems.add(name, lineno, f"template: {exc.rule}", str(exc), key=key)
                bad = True
                break
            except Exception as exc:  # a template raising on this conversation (jinja's raise_exception)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                problems.add(name, lineno, "template: template-error", first, key=key)
                bad = True
                break
        if bad:
            data.skip("invalid or refused by the template")
            continue
        pair = _split(lineno, sides["chosen"], sides["rejected"])
        too_long = max(len(pair.prompt_ids) + len(pair.chosen_ids), len(pair.prompt_ids) + len(pair.rejected_ids))
        if too_long > max_length:
            if truncation == "drop":
                problems.add(name, lineno, "too-long", f"{too_long} tokens > max_seq_length, dropped")
                data.skip("too long")
                continue
            pair = _truncate(pair, max_length)
        empty = [k for k, mask in (("chosen", pair.chosen_mask), ("rejected", pair.rejected_mask)) if not any(mask)]
        if empty:
            why = "after truncation to max_seq_length" if too_long > max_length else "at all"
            problems.add(
                name, lineno, "no-trained-token", f"no assistant token of the answer is scored {why}", key=empty[0]
            )
            data.skip("no scored token")
            continue
        data.pairs.append(pair)
    return data


def _split(lineno: int, chosen: Any, rejected: Any) -> Pair:
    """The shared prompt (up to the first scored token of either side, where both renderings agree) and each side's
    completion with its mask (1 on the assistant tokens SFT would train)."""

    def first(labels: list[int]) -> int:
        return next((i for i, label in enumerate(labels) if label != IGNORE), len(labels))

    limit = min(first(chosen.labels), first(rejected.labels))
    shared = 0
    while shared < limit and chosen.input_ids[shared] == rejected.input_ids[shared]:
        shared += 1

    def mask(labels: list[int]) -> list[int]:
        return [int(label != IGNORE) for label in labels[shared:]]

    return Pair(
        lineno,
        chosen.input_ids[:shared],
        chosen.input_ids[shared:],
        mask(chosen.labels),
        rejected.input_ids[shared:],
        mask(rejected.labels),
    )


def _truncate(pair: Pair, length: int) -> Pair:
    """Keep the start, as `training.truncation: truncate` does for SFT."""
    room = max(length - len(pair.prompt_ids), 0)
    return Pair(
        pair.line,
        pair.prompt_ids[:length],
        pair.chosen_ids[:room],
        pair.chosen_mask[:room],
        pair.rejected_ids[:room],
        pair.rejected_mask[:room],
    )


class PairCollator:
    """A batch for DPOTrainer: chosen rows, then rejected rows, right-padded; `completion_mask` marks the tokens whose
    log-prob counts (the assistant tokens of the answer, as `render.py` labels them), not every completion token as
    TRL's own collator would (a tool result inside a corrected answer is not the model's to be scored on)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        sequences = [r["prompt_ids"] + r["chosen_ids"] for r in rows] + [
            r["prompt_ids"] + r["rejected_ids"] for r in rows
        ]
        masks = [[0] * len(r["prompt_ids"]) + r["chosen_mask"] for r in rows] + [
            [0] * len(r["prompt_ids"]) + r["rejected_mask"] for r in rows
        ]
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        completion = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, (ids, mask) in enumerate(zip(sequences, masks, strict=True)):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[i, : len(ids)] = 1
            completion[i, : len(mask)] = torch.tensor(mask, dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion}


def as_rows(data: PairData) -> list[dict[str, Any]]:
    return [
        {
            "prompt_ids": p.prompt_ids,
            "chosen_ids": p.chosen_ids,
            "chosen_mask": p.chosen_mask,
            "rejected_ids": p.rejected_ids,
            "rejected_mask": p.rejected_mask,
        }
        for p in data.pairs
    ]


# --------------------------------------------------------------------------------------------------- the run


def load_pairs(path: Path, tokenizer: Any, options: Any, problems: Problems, console: Console | None) -> PairData:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    config = options.config
    if not path.is_file():
        raise TrainError(f"{path}: no such pairs file")
    with open(path, "rb") as f:
        lines = sum(1 for _ in f)
    with Progress(
        TextColumn("tokenizing {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=console is None,
        transient=True,
    ) as progress:
        task = progress.add_task(path.name, total=lines)
        data = read_pairs(
            path,
            tokenizer,
            config.training.max_seq_length,
            config.training.truncation,
            problems,
            progress=lambda: progress.advance(task),
        )
    if not data.pairs:
        reasons = ", ".join(f"{k}: {v}" for k, v in data.skipped.items())
        raise TrainError(
            f"{path}: no usable preference pair ({data.read} read; {reasons or 'file empty'}). Each line needs "
            '"prompt" (messages), "chosen" and "rejected" (the answers: assistant and tool messages), as '
            f"collect-failures writes them in {PAIRS}"
        )
    return data


def reference_start(options: Any) -> tuple[Path | None, Path | None, Path | None, dict[str, Any] | None]:
    """(checkpoint given, weights to start from, checkpoint to resume an interrupted DPO run from, its manifest).

    A checkpoint of an SFT run (or any run, with --data) is continued into a new DPO run, its weights the reference.
    A checkpoint of a DPO run without --data is that run interrupted: it resumes (optimizer, schedule, steps) with
    the same reference as before, the weights that run started from (its manifest's parent)."""
    from clawtune.artifacts.manifest import find_checkpoint, read_manifest

    config = options.config
    if options.resume is None:
        return None, None, None, None
    checkpoint = find_checkpoint(options.resume)
    previous = read_manifest(checkpoint)
    if previous.get("base_model") != config.base_model or previous.get("kind") != config.method:
        raise TrainError(
            f"{checkpoint}: trained as {previous.get('kind')} on {previous.get('base_model')}, "
            f"but the config says {config.method} on {config.base_model}"
        )
    if options.data is None and previous.get("objective") == "dpo":
        parent = (previous.get("parent") or {}).get("path")
        if parent is not None and not Path(parent).is_dir():
            raise TrainError(
                f"{checkpoint}: resuming this DPO run needs its reference, the checkpoint it started from "
                f"({parent}), which is gone; continue it as a new run instead (--data with its pairs file)"
            )
        return checkpoint, Path(parent) if parent else None, checkpoint, previous
    return checkpoint, checkpoint, None, previous


def interrupted_pairs(checkpoint: Path, manifest: dict[str, Any]) -> Path:
    """The pairs file an interrupted DPO run trained on, as it was (its sha256 in the manifest)."""
    from clawtune.artifacts.manifest import sha256_file

    recorded = manifest.get("training_data") or {}
    path = Path(recorded.get("path") or "")
    if not recorded.get("path") or not path.is_file():
        raise TrainError(
            f"{checkpoint}: its run trained on {recorded.get('path')}, which is gone; continue it as a new run on "
            "the pairs you have (--data PAIRS with --resume)"
        )
    if recorded.get("sha256") and sha256_file(path) != recorded["sha256"]:
        raise TrainError(
            f"{checkpoint}: {path} changed since its run began; resuming would continue on other data. Continue it "
            "as a new run on the new pairs instead (--data with --resume)"
        )
    return path


def train_dpo(options: Any) -> tuple[dict[str, Any], Any]:
    """`ft train` with `objective: dpo`; returns the summary (also written beside the adapter) and the trainer."""
    import torch
    import transformers

    from clawtune import __version__
    from clawtune.artifacts.files import write_json_atomic
    from clawtune.artifacts.manifest import LOSS_PLOT, SUMMARY, find_checkpoint, sha256_file, write_manifest
    from clawtune.models import fingerprint, load_model, load_tokenizer, resolve
    from clawtune.train.plan import plan_run
    from clawtune.train.run import (
        Meter,
        build_model,
        count_parameters,
        is_main_process,
        make_callbacks,
        peak_memory,
        plot_losses,
        prepare_output,
        training_arguments,
    )
    from clawtune.train.trainer import AtomicCheckpoints

    trl = require_trl()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    main = is_main_process()
    console = Console(soft_wrap=True) if (main and not options.quiet) else None
    err = Console(stderr=True, soft_wrap=True)
    config = options.config
    plan = plan_run(options)
    if config.training.replay is not None:
        plan.notes.append(
            "training.replay: not used by objective dpo (it mixes chat examples; a preference run has pairs): the "
            "reference model's pull (dpo.beta) is what keeps the model near the checkpoint it continues"
        )
    for note in plan.notes if main else []:
        err.print(f"[yellow]note[/]: {note}", highlight=False)

    checkpoint, init_from, resume_from, previous = reference_start(options)
    step_offset = 0
    if previous is not None:
        step_offset = int(previous.get("step_offset") or 0) if resume_from else int(previous.get("step") or 0)
    data_path = pairs_file(options.data) if options.data is not None else config.data.train
    if resume_from is not None:  # an interrupted run continues on its own pairs, unchanged
        data_path = interrupted_pairs(resume_from, previous or {})
    if main and not options.dry_run:
        prepare_output(config.output_dir, checkpoint, options.force)

    tokenizer, template_source = load_tokenizer(config.base_model, config.chat_template, training=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    problems = Problems(strict=options.strict, keep=1000)
    train = load_pairs(data_path, tokenizer, options, problems, console)
    validation = None
    if config.data.validation is not None and options.data is None:
        validation = load_pairs(config.data.validation, tokenizer, options, problems, console)
    if main and problems.items:
        for problem in problems.items[:10]:
            err.print(f"[yellow]skipped[/] {problem}", highlight=False)
        if len(problems) > 10:
            err.print(f"... and {len(problems) - 10} more ({dict(problems.counts)})", highlight=False)
    tokens = sum(p.tokens for p in train.pairs)
    if options.dry_run:
        t = config.training
        per_step = t.batch_size * t.gradient_accumulation_steps * plan.world_size
        steps = options.max_steps or max(1, -(-len(train.pairs) // per_step)) * max(1, round(t.epochs))
        report = {"objective": "dpo", "pairs": len(train.pairs), "tokens": tokens, "steps": steps, "notes": plan.notes}
        if console is not None:
            console.print(
                f"dry run, objective dpo: {len(train.pairs)} pairs ({tokens:,} tokens, both sides) from {data_path}, "
                f"about {steps} steps of {per_step} pairs; reference: "
                + (f"{init_from} (frozen)" if init_from else f"{config.base_model} (the new adapter starts at it)"),
                highlight=False,
            )
        return report, None

    transformers.set_seed(config.training.seed)
    model = build_model(options, plan, init_from)
    ref_model = None
    if config.method == "full":  # the reference: the resumed weights (or the base), loaded again and frozen
        ref_model = load_model(str(init_from) if init_from else config.base_model, dtype=model.dtype).eval()
        ref_model.requires_grad_(False)
    trainable, total = count_parameters(model)
    base_config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    reference = (
        f"{init_from} (frozen copy of its adapter)" if init_from and config.method != "full"
        else f"{init_from} (frozen)" if init_from
        else f"{config.base_model} (the new adapter starts at zero)"
    )  # fmt: skip
    manifest = {
        "kind": config.method,
        "objective": "dpo",
        "base_model": config.base_model,
        "base_model_path": resolve(config.base_model),
        "base_revision": getattr(base_config, "_commit_hash", None),
        "base_fingerprint": fingerprint(base_config.to_dict(), tokenizer),
        "chat_template": {"source": template_source, "file": "chat_template.jinja"},
        "config": json.loads(config.model_dump_json()),
        "clawtune": __version__,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "training_data": {
            "path": str(data_path.resolve()),
            "sha256": sha256_file(data_path),
            "format": "preference pairs (prompt, chosen, rejected)",
            "pairs": len(train.pairs),
            "examples": len(train.pairs),
        },
        "dpo": {**config.dpo.model_dump(), "reference": reference},
        "parent": (
            {
                "path": str((init_from or checkpoint).resolve()),  # type: ignore[union-attr]
                "step": (previous or {}).get("step") if not resume_from else None,
                "how": "dpo reference",
            }
            if init_from is not None
            else None
        ),
    }
    if resume_from is not None:  # an interrupted DPO run: its manifest already names parent and reference
        manifest["parent"] = (previous or {}).get("parent")

    meter = Meter()
    resume_tokens = None
    start_step = 0
    if resume_from is not None:
        state = json.loads((resume_from / "trainer_state.json").read_text())
        resume_tokens = state.get("stateful_callbacks", {}).get("MeterState", {}).get("attributes")
        start_step = int(state.get("global_step") or 0)

    class ClawtuneDPOTrainer(AtomicCheckpoints, trl.DPOTrainer):  # type: ignore[misc,name-defined]
        """TRL's DPOTrainer on pairs clawtune already rendered and tokenized; clawtune's checkpoints."""

        def _prepare_dataset(self, dataset: Any, *args: Any, **kwargs: Any) -> Any:
            return dataset  # tokenized by `read_pairs` with clawtune's templates and masks (render.py)

        def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if model.training:
                attention, scored = inputs["attention_mask"], inputs["completion_mask"]
                meter.tokens += int(attention.sum())
                meter.run_tokens += int(attention.sum())
                meter.trained += int(scored.sum())
            return super().compute_loss(model, inputs, *args, **kwargs)

    from datasets import Dataset

    args = training_arguments(
        options,
        plan,
        validation is not None,
        list(getattr(model, "_no_split_modules", None) or []),
        args_class=functools.partial(
            trl.DPOConfig,
            beta=config.dpo.beta,
            loss_type=list(config.dpo.loss_type),
            loss_weights=config.dpo.loss_weights,
            label_smoothing=config.dpo.label_smoothing,
            max_length=None,  # truncated by read_pairs, as training.truncation says
            precompute_ref_log_probs=False,
            gradient_checkpointing=False,  # build_model enables it on the model (non-reentrant) when configured
        ),
    )
    trainer = ClawtuneDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        data_collator=PairCollator(tokenizer.pad_token_id),
        train_dataset=Dataset.from_list(as_rows(train)),
        eval_dataset=Dataset.from_list(as_rows(validation)) if validation else None,
        processing_class=tokenizer,
        callbacks=make_callbacks(meter, console, resume_tokens),
    )
    if hasattr(model, "peft_config") and "ref" in model.peft_config:
        # TRL added the reference as a second adapter: the checkpoint holds the trained one only.
        model.save_pretrained = functools.partial(model.save_pretrained, selected_adapters=["default"])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.clawtune_manifest = manifest
    trainer.clawtune_keep = config.training.save_total_limit
    trainer.clawtune_step_offset = step_offset
    trainer.clawtune_protect = checkpoint
    if console is not None:
        console.print(
            f"dpo ({config.method}) on {config.base_model} ({plan.device}, {'bf16' if plan.bf16 else 'fp32'}): "
            f"{trainable:,} trainable of {total:,} parameters; {len(train.pairs)} pairs, {tokens:,} tokens; "
            f"reference {reference}" + (f"; resuming from {resume_from}" if resume_from else ""),
            highlight=False,
        )
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    runtime = time.perf_counter() - started

    steps_ran = trainer.state.global_step - start_step
    mean_loss = result.training_loss * trainer.state.global_step / steps_ran if steps_ran > 0 else None
    logged = [e for e in trainer.state.log_history if "loss" in e]
    last = logged[-1] if logged and logged[-1]["step"] > start_step else {}
    summary = {
        "base_model": config.base_model,
        "method": config.method,
        "objective": "dpo",
        "reference": reference,
        "device": plan.device,
        "processes": plan.world_size,
        "precision": "bf16" if plan.bf16 else "fp32",
        "trainable_parameters": trainable,
        "total_parameters": total,
        "pairs": {"read": train.read, "used": len(train.pairs), "skipped": train.skipped},
        "validation_pairs": {"read": validation.read, "used": len(validation.pairs)} if validation else None,
        "steps": trainer.state.global_step,
        "step_offset": step_offset,
        "epochs": trainer.state.epoch,
        "tokens_seen": meter.tokens,
        "trained_tokens_seen": meter.trained,
        "this_run": {
            "steps": steps_ran,
            "mean_loss": mean_loss,
            "last_loss": last.get("loss"),
            "last_reward_margin": last.get("rewards/margins"),
            "last_reward_accuracy": last.get("rewards/accuracies"),
            "runtime_s": round(runtime, 2),
            "non_pad_tokens": meter.run_tokens,
            "non_pad_tokens_per_s": round(meter.run_tokens / runtime, 1) if runtime else None,
        },
        "peak_memory_bytes": peak_memory(plan.device),
        "final_train_loss": mean_loss,
        "losses": [{"step": e["step"] + step_offset, "loss": e["loss"]} for e in logged],
        "reward_margins": [
            {"step": e["step"] + step_offset, "margin": e["rewards/margins"]} for e in logged if "rewards/margins" in e
        ],
        "eval_losses": [
            {"step": e["step"] + step_offset, "loss": e["eval_loss"]}
            for e in trainer.state.log_history
            if "eval_loss" in e
        ],
        "checkpoint": str(find_checkpoint(config.output_dir)),
        "resumed_from": str(resume_from) if resume_from else None,
        "resumed_at_step": start_step + step_offset if resume_from else None,
        "initialised_from": str(init_from) if init_from else None,
        "notes": plan.notes,
    }
    out = config.output_dir
    trainer.save_model(str(out))
    if main:
        write_manifest(out, {**manifest, "step": trainer.state.global_step + step_offset, "step_offset": step_offset})
        write_json_atomic(out / SUMMARY, summary)
        plot_losses(summary, out / LOSS_PLOT)
        if console is not None:
            margin = summary["this_run"]["last_reward_margin"]
            console.print(
                f"[green]done[/]: dpo, {steps_ran} steps"
                + ("" if mean_loss is None else f", mean loss {mean_loss:.4f}")
                + ("" if margin is None else f", last reward margin {margin:.4f}")
                + f"; adapter and manifest in {out}, last checkpoint {summary['checkpoint']}, summary {out / SUMMARY}",
                highlight=False,
            )
    return summary, trainer
