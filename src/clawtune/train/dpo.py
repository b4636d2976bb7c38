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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from clawtune.artifacts.manifest import sha256_file
from clawtune.artifacts.render import IGNORE, TemplateError, render_example
from clawtune.messages import Message, normalize_example
from clawtune.models import load_model, load_tokenizer
from clawtune.problems import Problems
from clawtune.train.config import FTConfig
from clawtune.train.options import TrainOptions
from clawtune.train.plan import Plan, TrainError, plan_run
from clawtune.train.run import (
    Meter,
    Start,
    base_manifest,
    build,
    count_parameters,
    data_file,
    fit_out,
    is_main_process,
    last_log,
    make_callbacks,
    notes,
    quiet_transformers,
    ready_output,
    report_problems,
    resolve_start,
    run_summary,
    run_trainer,
    save,
    training_arguments,
    with_progress,
)

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
    return data_file(path, PAIRS, "no failure has both a failed answer and a correction yet")


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


def train_dpo(options: TrainOptions) -> tuple[dict[str, Any], Any]:
    """`ft train` with `objective: dpo`; returns the summary (also written beside the adapter) and the trainer.

    SFT's story (`run.train`) with pairs for examples: plan -> where it starts (and its reference) -> the pairs (a dry
    run stops here) -> the model, its reference and its manifest -> TRL's trainer -> train -> summarise and save."""
    trl = require_trl()
    quiet_transformers()
    main = is_main_process()
    console = Console(soft_wrap=True) if (main and not options.quiet) else None
    config = options.config
    plan = plan_run(options)
    if config.training.replay is not None:
        plan.notes.append(
            "training.replay: not used by objective dpo (it mixes chat examples; a preference run has pairs): the "
            "reference model's pull (dpo.beta) is what keeps the model near the checkpoint it continues"
        )
    notes(plan.notes, main)
    start = reference_start(options)
    data_path = pairs_path(options, start)
    ready_output(options, start, main)
    data = load_run_pairs(options, data_path, main, console)
    if options.dry_run:
        return dry_run_pairs(options, plan, data, start, console), None
    model = build(options, plan, start)
    manifest = dpo_manifest(options, model, data, start, trl.__version__)
    trainer = make_dpo_trainer(trl, options, plan, model, data, manifest, start, console)
    result, runtime = run_trainer(trainer, start)
    summary = summarise_dpo(options, plan, trainer, data, start, result, runtime)
    save(config.output_dir, trainer, manifest, summary, start, main, console)
    return summary, trainer


def reference_start(options: TrainOptions) -> Start:
    """Where the run starts (`resolve_start`), with its reference in `init_from`: the weights the model starts from.

    A checkpoint of an SFT run (or any run, with --data) is continued into a new DPO run, its weights the reference.
    A checkpoint of a DPO run without --data is that run interrupted: it resumes (optimizer, schedule, steps) with
    the same reference as before, the weights that run started from (its manifest's parent)."""
    start = resolve_start(options, resumes=lambda previous: previous.get("objective") == "dpo")
    if start.resume_from is None:
        return start
    parent = ((start.previous or {}).get("parent") or {}).get("path")
    if parent is not None and not Path(parent).is_dir():
        raise TrainError(
            f"{start.checkpoint}: resuming this DPO run needs its reference, the checkpoint it started from "
            f"({parent}), which is gone; continue it as a new run instead (--data with its pairs file)"
        )
    start.init_from = Path(parent) if parent else None
    return start


def pairs_path(options: TrainOptions, start: Start) -> Path:
    """The pairs to train on: an interrupted run's own, unchanged; else --data's or the config's."""
    if start.resume_from is not None:
        return interrupted_pairs(start.resume_from, start.previous or {})
    return pairs_file(options.data) if options.data is not None else options.config.data.train


def interrupted_pairs(checkpoint: Path, manifest: dict[str, Any]) -> Path:
    """The pairs file an interrupted DPO run trained on, as it was (its sha256 in the manifest)."""
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


@dataclass
class RunPairs:
    """What a DPO run trains and validates on, tokenized."""

    path: Path
    tokenizer: Any
    template_source: str
    train: PairData
    validation: PairData | None

    @property
    def tokens(self) -> int:
        return sum(p.tokens for p in self.train.pairs)


def load_run_pairs(options: TrainOptions, data_path: Path, main: bool, console: Console | None) -> RunPairs:
    """The chat template chosen, the pairs tokenized (bad ones skipped and reported)."""
    config = options.config
    tokenizer, template_source = load_tokenizer(config.base_model, config.chat_template, training=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    problems = Problems(strict=options.strict, keep=1000)
    train = load_pairs(data_path, tokenizer, config, problems, console)
    validation = None
    if config.data.validation is not None and options.data is None:
        validation = load_pairs(config.data.validation, tokenizer, config, problems, console)
    report_problems(problems, main)
    return RunPairs(data_path, tokenizer, template_source, train, validation)


def load_pairs(path: Path, tokenizer: Any, config: FTConfig, problems: Problems, console: Console | None) -> PairData:
    t = config.training
    data = with_progress(
        path,
        "pairs file",
        console,
        lambda advance: read_pairs(path, tokenizer, t.max_seq_length, t.truncation, problems, progress=advance),
    )
    if not data.pairs:
        reasons = ", ".join(f"{k}: {v}" for k, v in data.skipped.items())
        raise TrainError(
            f"{path}: no usable preference pair ({data.read} read; {reasons or 'file empty'}). Each line needs "
            '"prompt" (messages), "chosen" and "rejected" (the answers: assistant and tool messages), as '
            f"collect-failures writes them in {PAIRS}"
        )
    return data


def reference(options: TrainOptions, start: Start) -> str:
    """The model the KL term holds the trained one near, in words."""
    init_from, config = start.init_from, options.config
    if init_from and config.method != "full":
        return f"{init_from} (frozen copy of its adapter)"
    if init_from:
        return f"{init_from} (frozen)"
    return f"{config.base_model} (the new adapter starts at zero)"


def dry_run_pairs(
    options: TrainOptions, plan: Plan, data: RunPairs, start: Start, console: Console | None
) -> dict[str, Any]:
    """`--dry-run`: the pairs, the steps they make and the reference, printed; nothing trained."""
    t = options.config.training
    pairs = len(data.train.pairs)
    per_step = t.batch_size * t.gradient_accumulation_steps * plan.world_size
    steps = options.max_steps or max(1, -(-pairs // per_step)) * max(1, round(t.epochs))
    if console is not None:
        init_from = start.init_from
        console.print(
            f"dry run, objective dpo: {pairs} pairs ({data.tokens:,} tokens, both sides) from {data.path}, "
            f"about {steps} steps of {per_step} pairs; reference: "
            + (f"{init_from} (frozen)" if init_from else f"{options.config.base_model} (the new adapter starts at it)"),
            highlight=False,
        )
    return {"objective": "dpo", "pairs": pairs, "tokens": data.tokens, "steps": steps, "notes": plan.notes}


def dpo_manifest(options: TrainOptions, model: Any, data: RunPairs, start: Start, trl_version: str) -> dict[str, Any]:
    """What every checkpoint carries (`base_manifest`), with the objective, the pairs and the reference it continues."""
    config = options.config
    if start.resume_from is not None:  # an interrupted DPO run: its manifest already names parent and reference
        parent = (start.previous or {}).get("parent")
    elif start.checkpoint is not None:
        parent = {
            "path": str(start.checkpoint.resolve()),
            "step": (start.previous or {}).get("step"),
            "how": "dpo reference",
        }
    else:
        parent = None
    return {
        **base_manifest(options, model, data.tokenizer, data.template_source, trl=trl_version),
        "objective": "dpo",
        "training_data": {
            "path": str(data.path.resolve()),
            "sha256": sha256_file(data.path),
            "format": "preference pairs (prompt, chosen, rejected)",
            "pairs": len(data.train.pairs),
            "examples": len(data.train.pairs),
        },
        "dpo": {**config.dpo.model_dump(), "reference": reference(options, start)},
        "parent": parent,
    }


def make_dpo_trainer(
    trl: Any,
    options: TrainOptions,
    plan: Plan,
    model: Any,
    data: RunPairs,
    manifest: dict[str, Any],
    start: Start,
    console: Console | None,
) -> Any:
    """TRL's DPOTrainer (clawtune's subclass) over the pairs, against the reference, with the meter and the bar."""
    from datasets import Dataset

    from clawtune.train.trainer import AtomicCheckpoints

    class ClawtuneDPOTrainer(AtomicCheckpoints, trl.DPOTrainer):  # type: ignore[misc,name-defined]
        """TRL's DPOTrainer on pairs clawtune already rendered and tokenized; clawtune's checkpoints."""

        clawtune_meter: Meter

        def _prepare_dataset(self, dataset: Any, *args: Any, **kwargs: Any) -> Any:
            return dataset  # tokenized by `read_pairs` with clawtune's templates and masks (render.py)

        def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if model.training:
                meter, attention, scored = self.clawtune_meter, inputs["attention_mask"], inputs["completion_mask"]
                meter.tokens += int(attention.sum())
                meter.run_tokens += int(attention.sum())
                meter.trained += int(scored.sum())
            return super().compute_loss(model, inputs, *args, **kwargs)

    config = options.config
    ref_model = None
    if config.method == "full":  # the reference: the resumed weights (or the base), loaded again and frozen
        ref_model = load_model(str(start.init_from or config.base_model), dtype=model.dtype).eval()
        ref_model.requires_grad_(False)
    trainable, total = count_parameters(model)  # before TRL adds the reference adapter
    args = training_arguments(
        options,
        plan,
        data.validation is not None,
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
    meter = Meter()
    trainer = ClawtuneDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        data_collator=PairCollator(data.tokenizer.pad_token_id),
        train_dataset=Dataset.from_list(as_rows(data.train)),
        eval_dataset=Dataset.from_list(as_rows(data.validation)) if data.validation else None,
        processing_class=data.tokenizer,
        callbacks=make_callbacks(meter, console, start.resume_tokens),
    )
    if hasattr(model, "peft_config") and "ref" in model.peft_config:
        # TRL added the reference as a second adapter: the checkpoint holds the trained one only.
        model.save_pretrained = functools.partial(model.save_pretrained, selected_adapters=["default"])
    fit_out(trainer, options, manifest, start, meter, (trainable, total))
    if console is not None:
        console.print(
            f"dpo ({config.method}) on {config.base_model} ({plan.device}, {'bf16' if plan.bf16 else 'fp32'}): "
            f"{trainable:,} trainable of {total:,} parameters; {len(data.train.pairs)} pairs, {data.tokens:,} tokens; "
            f"reference {reference(options, start)}"
            + (f"; resuming from {start.resume_from}" if start.resume_from else ""),
            highlight=False,
        )
    return trainer


def summarise_dpo(
    options: TrainOptions, plan: Plan, trainer: Any, data: RunPairs, start: Start, result: Any, runtime: float
) -> dict[str, Any]:
    """training-summary.json of a DPO run: `run_summary` with the pairs, the reference and the reward margins."""
    train, validation = data.train, data.validation
    trained_on = {
        "pairs": {"read": train.read, "used": len(train.pairs), "skipped": train.skipped},
        "validation_pairs": {"read": validation.read, "used": len(validation.pairs)} if validation else None,
    }
    summary = run_summary(options, plan, trainer, start, result, runtime, trained_on)
    last = last_log(trainer, start)
    summary["this_run"].update(
        last_reward_margin=last.get("rewards/margins"), last_reward_accuracy=last.get("rewards/accuracies")
    )
    logged = [e for e in trainer.state.log_history if "rewards/margins" in e and "loss" in e]
    summary["reward_margins"] = [
        {"step": e["step"] + start.step_offset, "margin": e["rewards/margins"]} for e in logged
    ]
    return {"objective": "dpo", "reference": reference(options, start), **summary}
