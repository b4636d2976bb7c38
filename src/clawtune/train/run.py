"""`clawtune ft train`: LoRA, QLoRA or full fine-tuning with transformers' Trainer and PEFT.

What clawtune adds to the stock Trainer: assistant-only labels rendered with the model's own chat template
(`artifacts/render.py`), isolated packing (`data.py`), checkpoints that are complete or absent (`trainer.py`, with
`artifacts/manifest.py`), a progress bar with tokens/s, a `training-summary.json` and a loss plot, and one clear line
whenever the machine cannot do what the config asks (no GPU, no bf16, no Unsloth) saying what runs instead.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from clawtune import __version__
from clawtune.artifacts.files import write_json_atomic
from clawtune.artifacts.manifest import (
    CHECKPOINT,
    LOSS_PLOT,
    MANIFEST,
    SUMMARY,
    checkpoint_step,
    checkpoints,
    find_checkpoint,
    read_manifest,
    sha256_file,
    write_manifest,
)
from clawtune.models import TINY_AGENT, fingerprint, load_model, load_tokenizer, resolve
from clawtune.problems import InputError, Problems
from clawtune.train.attention import model_implementation
from clawtune.train.config import FTConfig
from clawtune.train.data import Collator, TokenizedData, make_dataset, tokenize_file
from clawtune.train.options import TrainOptions
from clawtune.train.plan import Plan, TrainError, lora_config, plan_run
from clawtune.train.replay import build_mix, describe
from clawtune.train.trainer import make_trainer_class

T = TypeVar("T")


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# --------------------------------------------------------------------------------------------------- data


def load_data(
    path: Path, tokenizer: Any, config: FTConfig, problems: Problems, console: Console | None
) -> TokenizedData:
    data = with_progress(
        path,
        "data file",
        console,
        lambda advance: tokenize_file(
            path,
            tokenizer,
            config.training.max_seq_length,
            config.training.truncation,
            problems,
            progress=advance,
            train_on_inputs=config.training.train_on_inputs,
            max_refused=config.data.max_refused,
        ),
    )
    if not data.examples:
        reasons = ", ".join(f"{k}: {v}" for k, v in data.counts.items() if k.startswith(("skipped", "refused")))
        raise TrainError(
            f"{path}: no example has a trained token ({data.counts['read']} read; {reasons or 'file empty'}). "
            "Training on it would report a loss of 0 and learn nothing."
        )
    return data


def with_progress(path: Path, what: str, console: Console | None, tokenize: Callable[[Callable[[], None]], T]) -> T:
    """`tokenize(advance)` under a progress bar over the lines of `path` (a file of `what`: an error if missing)."""
    from clawtune.progress import progress_bar

    if not path.is_file():
        raise TrainError(f"{path}: no such {what}")
    with open(path, "rb") as f:
        lines = sum(1 for _ in f)
    with progress_bar("tokenizing {task.description}", console) as progress:
        task = progress.add_task(path.name, total=lines)
        return tokenize(lambda: progress.advance(task))


# --------------------------------------------------------------------------------------------------- model


def build_model(options: TrainOptions, plan: Plan, init_from: Path | None) -> Any:
    """The base model with the method's trainable parameters (LoRA adapters, or everything for full)."""
    import torch

    config = options.config
    dtype = torch.bfloat16 if plan.bf16 else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": model_implementation(plan.attention)}
    if config.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=config.qlora.bits == 4,
            load_in_8bit=config.qlora.bits == 8,
            bnb_4bit_quant_type=config.qlora.quant_type,
            bnb_4bit_use_double_quant=config.qlora.double_quant,
            bnb_4bit_compute_dtype=dtype,
        )
    if config.method == "full" and init_from is not None:
        model = load_model(str(init_from), **kwargs)
    else:
        model = load_model(config.base_model, **kwargs)
    model.config.use_cache = False
    if config.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if config.training.gradient_checkpointing and not plan.fsdp:  # FSDP checkpoints its own wrapped layers
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.method == "full":
        return model
    from peft import PeftModel, get_peft_model

    if init_from is not None:
        peft_model = PeftModel.from_pretrained(model, str(init_from), is_trainable=True)
    else:
        try:
            peft_model = get_peft_model(model, lora_config(config))
        except ValueError as exc:
            names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
            raise TrainError(f"lora.target_modules: {exc}. Linear layers of this model: {', '.join(names)}") from None
    # With lm_head among the targets PEFT would also save the frozen base output layer into every adapter ("auto"):
    # megabytes that vLLM, llama.cpp and clawtune serve do not read. The adapter holds the LoRA weights only.
    peft_model.save_pretrained = functools.partial(  # type: ignore[method-assign]
        peft_model.save_pretrained, save_embedding_layers=False
    )
    return peft_model


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------------- trainer


class Meter:
    """Non-pad and trained tokens seen, for the progress bar and the summary (saved in checkpoints for resume)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.trained = 0
        self.run_tokens = 0

    def count(self, documents: Any, labels: Any) -> None:
        tokens = int((documents >= 0).sum())
        self.tokens += tokens
        self.run_tokens += tokens
        self.trained += int((labels != -100).sum())


def make_callbacks(meter: Meter, console: Console | None, resume_tokens: dict[str, int] | None) -> list[Any]:
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    class MeterState(TrainerCallback, ExportableState):  # type: ignore[misc]
        """Carries the token counters through checkpoints, so a resumed run's totals continue."""

        def state(self) -> dict[str, Any]:
            return {"args": {}, "attributes": {"tokens": meter.tokens, "trained": meter.trained}}

    class ProgressBarCallback(TrainerCallback):  # type: ignore[misc]
        """The rich bar (or, off a terminal, a line per log step); also makes the last step save a checkpoint."""

        def __init__(self) -> None:
            self.progress: Any = None
            self.task: Any = None
            self.loss: float | None = None
            self.started = 0.0
            self.start_step = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if resume_tokens:
                meter.tokens = resume_tokens.get("tokens", 0)
                meter.trained = resume_tokens.get("trained", 0)
            if console is None or not state.is_world_process_zero:
                return
            from clawtune.progress import progress_bar

            self.progress = progress_bar(
                "training", console, "loss {task.fields[loss]}  {task.fields[speed]} tok/s  ETA", transient=False
            )
            self.progress.start()
            self.start_step = state.global_step
            self.task = self.progress.add_task(
                "train", total=state.max_steps, completed=state.global_step, loss="-", speed="-"
            )
            self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step >= state.max_steps:
                control.should_save = True  # the last step always leaves a complete checkpoint
            if self.progress is None:
                return
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            speed = f"{meter.run_tokens * args.world_size / elapsed:,.0f}"
            loss = "-" if self.loss is None else f"{self.loss:.4f}"
            self.progress.update(self.task, completed=state.global_step, loss=loss, speed=speed)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])
            if self.progress is not None and console is not None and not console.is_terminal and logs:
                # Not a terminal (a log file, CI): the bar cannot redraw, so each log step is one line instead.
                elapsed = max(time.perf_counter() - self.started, 1e-9)
                done = max(state.global_step - self.start_step, 1)
                eta = elapsed / done * (state.max_steps - state.global_step)
                shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items())
                console.print(
                    f"step {state.global_step}/{state.max_steps}: {shown}; "
                    f"{meter.run_tokens * args.world_size / elapsed:,.0f} tok/s; ETA {eta:.0f} s",
                    highlight=False,
                )

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.progress is not None:
                self.progress.stop()

    return [MeterState(), ProgressBarCallback()]


def report_to(options: TrainOptions) -> list[str]:
    tracking = options.config.tracking
    targets = []
    if tracking.tensorboard:
        targets.append("tensorboard")
    if options.wandb or tracking.wandb:
        if importlib.util.find_spec("wandb") is None:
            raise TrainError("--wandb: Weights & Biases is not installed (pip install wandb)")
        targets.append("wandb")
        os.environ.setdefault("WANDB_PROJECT", options.project_name or tracking.project_name or "clawtune")
        if os.environ.get("WANDB_MODE") not in ("offline", "disabled", "dryrun") and not wandb_key_configured():
            # wandb.init() without a key raises UsageError deep inside the Trainer: log offline instead, and say so.
            os.environ["WANDB_MODE"] = "offline"
            os.environ.setdefault("WANDB_DIR", str(options.config.output_dir))
            if is_main_process():
                Console(stderr=True, soft_wrap=True).print(
                    "[yellow]note[/]: --wandb: no Weights & Biases API key (WANDB_API_KEY, or `wandb login`); logging "
                    f"offline to {os.environ['WANDB_DIR']}/wandb instead: `wandb sync` uploads it later",
                    highlight=False,
                )
    if tracking.mlflow:
        if importlib.util.find_spec("mlflow") is None:
            raise TrainError("tracking.mlflow: MLflow is not installed (pip install mlflow)")
        targets.append("mlflow")
    return targets


def wandb_key_configured() -> bool:
    """Whether W&B will find an API key: $WANDB_API_KEY (or an identity token file), or the .netrc entry that
    `wandb login` writes for its server. Checked by hand because wandb's own lookup is internal API."""
    import netrc
    from urllib.parse import urlsplit

    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def training_arguments(
    options: TrainOptions, plan: Plan, has_eval: bool, layer_classes: list[str], args_class: Any = None
) -> Any:
    """The Trainer's arguments for the config; `args_class`: a subclass taking the same ones (TRL's DPOConfig)."""
    from transformers import TrainingArguments

    config, t = options.config, options.config.training
    fsdp: dict[str, Any] = {}
    if plan.fsdp:
        fsdp = {
            "fsdp": True,
            "fsdp_config": {
                "version": 2,
                "transformer_layer_cls_to_wrap": layer_classes,
                "activation_checkpointing": t.gradient_checkpointing,
                "state_dict_type": "FULL_STATE_DICT",
            },
        }
    return (args_class or TrainingArguments)(
        **fsdp,
        output_dir=str(config.output_dir),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.epochs,
        max_steps=options.max_steps or -1,
        learning_rate=t.learning_rate,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.scheduler,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=None,  # rotation is clawtune's (complete checkpoints only)
        eval_strategy="steps" if has_eval else "no",
        eval_steps=(t.eval_steps or t.save_steps) if has_eval else None,
        seed=t.seed,
        data_seed=t.seed,
        bf16=plan.bf16,
        use_cpu=plan.device == "cpu",
        report_to=report_to(options),
        run_name=options.project_name or config.tracking.project_name,
        remove_unused_columns=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        label_names=["labels"],
        ddp_find_unused_parameters=False if plan.world_size > 1 else None,
    )


# --------------------------------------------------------------------------------------------------- run


def run_training(options: TrainOptions) -> dict[str, Any]:
    """Train as configured and return the summary (also written to `output_dir/training-summary.json`)."""
    return train(options)[0]


def train(options: TrainOptions) -> tuple[dict[str, Any], Any]:
    """`run_training`, also returning the Trainer (None for a dry run), whose model is the trained one.

    The recipe: plan -> where it starts -> the data (a dry run stops here, with the estimate) -> the model and its
    manifest -> the Trainer -> train -> summarise and save."""
    if options.config.objective == "dpo":  # preference pairs with TRL (imported there only)
        from clawtune.train.dpo import train_dpo

        return train_dpo(options)
    quiet_transformers()
    main = is_main_process()
    console = Console(soft_wrap=True) if (main and not options.quiet) else None
    plan = plan_run(options)
    notes(plan.notes, main)
    start = resolve_start(options)
    data_path = prepare(options, start, main)
    data = load_run_data(options, data_path, start, plan, main, console)
    if options.dry_run:
        return dry_run(options, plan, data, main), None
    model = build(options, plan, start)
    manifest = build_manifest(options, model, data, start)
    trainer = make_run_trainer(options, plan, model, data, manifest, start, console)
    result, runtime = run_trainer(trainer, start)
    summary = summarise(options, plan, trainer, data, start, result, runtime)
    save(options.config.output_dir, trainer, manifest, summary, start, main, console)
    return summary, trainer


def quiet_transformers() -> None:
    """transformers' own logging and bars off: clawtune's bar and summary say what happens."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def notes(lines: list[str], main: bool) -> None:
    """Notes on stderr, from the main process only."""
    for line in lines if main else []:
        Console(stderr=True, soft_wrap=True).print(f"[yellow]note[/]: {line}", highlight=False)


@dataclass
class Start:
    """Where a run starts: from nothing, resuming a checkpoint exactly, or continuing its weights on new data."""

    checkpoint: Path | None = None  # the one --resume names (never rotated away nor written over)
    previous: dict[str, Any] | None = None  # its manifest
    resume_from: Path | None = None  # exactly: the same data order, optimizer and schedule
    # the weights the model is built from: the seed's retraining (new data, fresh optimizer and schedule); with DPO
    # also its reference, which a resumed DPO run keeps (`dpo.reference_start`)
    init_from: Path | None = None
    step_offset: int = 0  # checkpoint names continue the numbering of the run this one continues
    start_step: int = 0  # the Trainer's step it resumes at
    resume_tokens: dict[str, int] | None = None  # the token counters it had


def resolve_start(options: TrainOptions, resumes: Callable[[dict[str, Any]], bool] | None = None) -> Start:
    """--resume: the checkpoint, checked against the config; with --data its weights continue on new data, as they
    also do when `resumes` (given the checkpoint's manifest) says this run cannot resume that one's exactly."""
    if options.resume is None:
        return Start()
    config = options.config
    checkpoint = find_checkpoint(options.resume)
    previous = read_manifest(checkpoint)
    if previous.get("base_model") != config.base_model or previous.get("kind") != config.method:
        raise TrainError(
            f"{checkpoint}: trained as {previous.get('kind')} on {previous.get('base_model')}, "
            f"but the config says {config.method} on {config.base_model}"
        )
    if options.data is not None or (resumes is not None and not resumes(previous)):
        return Start(checkpoint, previous, init_from=checkpoint, step_offset=int(previous.get("step") or 0))
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return Start(
        checkpoint,
        previous,
        resume_from=checkpoint,
        step_offset=int(previous.get("step_offset") or 0),
        start_step=int(state.get("global_step") or 0),
        resume_tokens=state.get("stateful_callbacks", {}).get("MeterState", {}).get("attributes"),
    )


def prepare(options: TrainOptions, start: Start, main: bool) -> Path:
    """The file to train on (found before --force clears anything), then the output folder made ready."""
    config = options.config
    data_path = data_file(options.data) if options.data is not None else config.data.train
    ready_output(options, start, main)
    notes(check_holdouts(data_path, config), main)
    return data_path


def ready_output(options: TrainOptions, start: Start, main: bool) -> None:
    """The output folder made ready for this run (`prepare_output`), by the main process of a real run only."""
    if main and not options.dry_run:
        prepare_output(options.config.output_dir, start.checkpoint, options.force)


@dataclass
class RunData:
    """What a run trains and validates on, tokenized and packed."""

    path: Path  # the file trained on: the replay mix, or else --data or the config's
    mix: dict[str, Any] | None  # the replay mix's record (None without replay)
    tokenizer: Any
    template_source: str
    train: TokenizedData
    validation: TokenizedData | None
    train_set: Any
    eval_set: Any


def load_run_data(
    options: TrainOptions, data_path: Path, start: Start, plan: Plan, main: bool, console: Console | None
) -> RunData:
    """Replay mixed in, the chat template chosen, the examples tokenized (bad ones skipped and reported) and packed."""
    config = options.config
    replay_notes: list[str] = []
    mix_dir = Path(tempfile.mkdtemp(prefix="clawtune-dry-run-")) if options.dry_run else config.output_dir
    mix = build_mix(config, data_path, start.previous if start.init_from else None, mix_dir, replay_notes)
    train_path = Path(mix["path"]) if mix else data_path
    notes(replay_notes, main)
    if main and console is not None and mix:
        console.print(f"replay: {describe(mix)}", highlight=False)

    tokenizer, template_source = load_tokenizer(config.base_model, config.chat_template, training=True)
    if template_source.startswith("clawtune:") and config.chat_template is None:
        notes(
            [
                f"chat template: {template_source}, clawtune's training template for this model's stock template "
                "(which cannot be trained on as it is); the checkpoint and its exports carry it"
            ],
            main,
        )
    problems = Problems(strict=options.strict, keep=1000)
    train = load_data(train_path, tokenizer, config, problems, console)
    validation = None
    if config.data.validation is not None and not options.data:
        validation = load_data(config.data.validation, tokenizer, config, problems, console)
    capacity = config.training.max_seq_length
    train_set = make_dataset(train, config.training.packing, capacity)
    eval_set = make_dataset(validation, config.training.packing, capacity) if validation else None
    warmup = warmup_note(config, options.max_steps, len(train_set), plan.world_size)
    if warmup:
        plan.notes.append(warmup)
        notes([warmup], main)
    report_problems(problems, main)
    return RunData(train_path, mix, tokenizer, template_source, train, validation, train_set, eval_set)


def report_problems(problems: Problems, main: bool) -> None:
    """The lines skipped while reading (the first ten, then how many more), on stderr from the main process."""
    if not main or not problems.items:
        return
    err = Console(stderr=True, soft_wrap=True)
    for problem in problems.items[:10]:
        err.print(f"[yellow]skipped[/] {problem}", highlight=False)
    if len(problems) > 10:
        err.print(f"... and {len(problems) - 10} more ({dict(problems.counts)})", highlight=False)


def dry_run(options: TrainOptions, plan: Plan, data: RunData, main: bool) -> dict[str, Any]:
    """`--dry-run`: what the run would cost, printed; nothing trained."""
    from clawtune.train.estimate import estimate, print_estimate

    report = estimate(options, plan, data.train, len(data.train_set))
    if main:
        print_estimate(report, Console())
    return report


def build(options: TrainOptions, plan: Plan, start: Start) -> Any:
    """The model with the method applied, seeded (LoRA's initialisation draws from the global RNG)."""
    import transformers

    transformers.set_seed(options.config.training.seed)
    return build_model(options, plan, start.init_from)


def build_manifest(options: TrainOptions, model: Any, data: RunData, start: Start) -> dict[str, Any]:
    """What every checkpoint carries (`base_manifest`), the data it was trained on and the checkpoint it continues."""
    parent = None
    if start.checkpoint is not None:
        how = "resume" if start.resume_from else "new data"
        parent = {"path": str(start.checkpoint.resolve()), "step": (start.previous or {}).get("step"), "how": how}
    return {
        **base_manifest(options, model, data.tokenizer, data.template_source),
        # what it was trained on (a retrain's --data or the replay mix; else the config's file) and what it continues
        "training_data": data.mix
        or {"path": str(data.path.resolve()), "sha256": sha256_file(data.path), "examples": len(data.train.examples)},
        "parent": parent,
    }


def base_manifest(
    options: TrainOptions, model: Any, tokenizer: Any, template_source: str, **versions: str
) -> dict[str, Any]:
    """What every checkpoint carries whatever its objective: the base model and its fingerprint, the template, the
    config and the versions (torch, transformers and `versions`, e.g. TRL's)."""
    import torch
    import transformers

    config = options.config
    base_config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    return {
        "kind": config.method,
        "base_model": config.base_model,
        "base_model_path": resolve(config.base_model),
        "base_revision": getattr(base_config, "_commit_hash", None),
        "base_fingerprint": fingerprint(base_config.to_dict(), tokenizer),
        "chat_template": {"source": template_source, "file": "chat_template.jinja"},
        "config": json.loads(config.model_dump_json()),
        "clawtune": __version__,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, **versions},
    }


def make_run_trainer(
    options: TrainOptions,
    plan: Plan,
    model: Any,
    data: RunData,
    manifest: dict[str, Any],
    start: Start,
    console: Console | None,
) -> Any:
    """clawtune's Trainer over the packed data, with the meter, the progress bar and what its checkpoints carry."""
    config = options.config
    meter = Meter()
    trainable, total = count_parameters(model)
    trainer = make_trainer_class()(
        model=model,
        args=training_arguments(options, plan, data.eval_set is not None, list(model._no_split_modules or [])),
        train_dataset=data.train_set,
        eval_dataset=data.eval_set,
        data_collator=Collator(data.tokenizer.pad_token_id),
        processing_class=data.tokenizer,
        callbacks=make_callbacks(meter, console, start.resume_tokens),
    )
    trainer.clawtune_attention = plan.attention
    fit_out(trainer, options, manifest, start, meter, (trainable, total))
    if console is not None:
        train = data.train
        console.print(
            f"{config.method} on {config.base_model} ({plan.device}"
            f"{f' x{plan.world_size} ' + ('FSDP' if plan.fsdp else 'DDP') if plan.world_size > 1 else ''}, "
            f"{'bf16' if plan.bf16 else 'fp32'}, "
            f"{plan.attention}): {trainable:,} trainable of {total:,} parameters; {len(train.examples)} examples, "
            f"{train.tokens:,} tokens ({train.trained_tokens:,} trained) in {len(data.train_set)} rows"
            + (f"; resuming from {start.resume_from}" if start.resume_from else "")
            + (f"; continuing {start.init_from} on new data" if start.init_from else ""),
            highlight=False,
        )
    return trainer


def fit_out(
    trainer: Any,
    options: TrainOptions,
    manifest: dict[str, Any],
    start: Start,
    meter: Meter,
    parameters: tuple[int, int],
) -> None:
    """What any clawtune trainer (SFT's or DPO's) reads when it checkpoints and what `summarise` reads off it."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the progress bar and the summary say it, without a dict per log
    trainer.clawtune_manifest = manifest
    trainer.clawtune_keep = options.config.training.save_total_limit
    trainer.clawtune_meter = meter
    trainer.clawtune_step_offset = start.step_offset
    trainer.clawtune_protect = start.checkpoint  # never rotated away nor written over: the loop compares and rolls back
    trainer.clawtune_parameters = parameters  # (trainable, total)


def run_trainer(trainer: Any, start: Start) -> tuple[Any, float]:
    """Train (from the resumed checkpoint's state, if any); the Trainer's result and the seconds it took."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(start.resume_from) if start.resume_from else None)
    return result, time.perf_counter() - started


def summarise(
    options: TrainOptions, plan: Plan, trainer: Any, data: RunData, start: Start, result: Any, runtime: float
) -> dict[str, Any]:
    """training-summary.json of an SFT run: `run_summary` with the examples and rows it trained on."""
    trained_on = {
        "packing": options.config.training.packing,
        "examples": dict(data.train.counts),
        "validation_examples": dict(data.validation.counts) if data.validation else None,
        "rows": len(data.train_set),
    }
    return run_summary(options, plan, trainer, start, result, runtime, trained_on)


def run_summary(
    options: TrainOptions,
    plan: Plan,
    trainer: Any,
    start: Start,
    result: Any,
    runtime: float,
    trained_on: dict[str, Any],
) -> dict[str, Any]:
    """training-summary.json, whatever the objective: the run's figures, what it trained on (`trained_on`: the
    objective's own counts), the losses, and where it started and ended."""
    import torch

    config = options.config
    meter = trainer.clawtune_meter
    trainable, total = trainer.clawtune_parameters
    step_offset, start_step = start.step_offset, start.start_step
    run_tokens = int(trainer.accelerator.reduce(torch.tensor(meter.run_tokens, device=trainer.args.device), "sum"))
    # The Trainer's training_loss divides the loss summed over the steps this process ran by the global step count:
    # after a resume that is not the loss of any step. The mean over the steps this run ran is.
    steps_ran = trainer.state.global_step - start_step
    mean_loss = result.training_loss * trainer.state.global_step / steps_ran if steps_ran > 0 else None
    logged = [e for e in trainer.state.log_history if "loss" in e]
    return {
        "base_model": config.base_model,
        "method": config.method,
        "device": plan.device,
        "processes": plan.world_size,
        "precision": "bf16" if plan.bf16 else "fp32",
        "attention": plan.attention,
        "trainable_parameters": trainable,
        "total_parameters": total,
        **trained_on,
        "steps": trainer.state.global_step,
        "step_offset": step_offset,
        "epochs": trainer.state.epoch,
        "tokens_seen": meter.tokens * plan.world_size,
        "trained_tokens_seen": meter.trained * plan.world_size,
        "this_run": {
            "steps": steps_ran,
            "mean_loss": mean_loss,
            "last_loss": last_log(trainer, start).get("loss"),
            "runtime_s": round(runtime, 2),
            "non_pad_tokens": run_tokens,
            "non_pad_tokens_per_s": round(run_tokens / runtime, 1) if runtime else None,
        },
        "peak_memory_bytes": peak_memory(plan.device),
        "final_train_loss": mean_loss,
        "losses": [{"step": e["step"] + step_offset, "loss": e["loss"]} for e in logged],
        "eval_losses": [
            {"step": e["step"] + step_offset, "loss": e["eval_loss"]}
            for e in trainer.state.log_history
            if "eval_loss" in e
        ],
        "checkpoint": str(find_checkpoint(config.output_dir)),
        "resumed_from": str(start.resume_from) if start.resume_from else None,
        "resumed_at_step": start_step + step_offset if start.resume_from else None,
        "initialised_from": str(start.init_from) if start.init_from else None,
        "notes": plan.notes,
    }


def last_log(trainer: Any, start: Start) -> dict[str, Any]:
    """The last training step logged by this run ({} if none: a resumed run's history holds the earlier run's too)."""
    logged = [e for e in trainer.state.log_history if "loss" in e]
    return logged[-1] if logged and logged[-1]["step"] > start.start_step else {}


def save(
    out: Path,
    trainer: Any,
    manifest: dict[str, Any],
    summary: dict[str, Any],
    start: Start,
    main: bool,
    console: Console | None,
) -> None:
    """The trained weights, the manifest, the summary and the loss plot into the output folder, and a line saying so."""
    trainer.save_model(str(out))  # every process: FSDP gathers the full weights for the main one to write
    if not main:
        return
    step_offset = start.step_offset
    write_manifest(out, {**manifest, "step": trainer.state.global_step + step_offset, "step_offset": step_offset})
    write_json_atomic(out / SUMMARY, summary)
    plot_losses(summary, out / LOSS_PLOT)
    if console is None:
        return
    this_run = summary["this_run"]
    ran = f"{this_run['steps']} steps" + (
        f" (steps {start.start_step + 1}-{trainer.state.global_step})" if start.start_step else ""
    )
    mean_loss, last = this_run["mean_loss"], this_run["last_loss"]
    loss = "no step run" if mean_loss is None else f"mean loss over them {mean_loss:.4f}"
    margin = this_run.get("last_reward_margin")  # a preference run's (DPO)
    console.print(
        "[green]done[/]: "
        + (f"{summary['objective']}, " if summary.get("objective") else "")
        + f"{ran}, {loss}"
        + (f", last logged {last:.4f}" if last is not None else "")
        + (f", last reward margin {margin:.4f}" if margin is not None else "")
        + f"; {this_run['non_pad_tokens_per_s']:,} non-pad tokens/s; adapter and manifest in "
        f"{out}, last checkpoint {summary['checkpoint']}, summary {out / SUMMARY}, plot {out / LOSS_PLOT}",
        highlight=False,
    )


def peak_memory(device: str) -> int:
    import resource

    import torch

    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def plot_losses(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    losses = summary["losses"]
    ax.plot([e["step"] for e in losses], [e["loss"] for e in losses], label="train loss", color="#1f77b4")
    if summary["eval_losses"]:
        evals = summary["eval_losses"]
        ax.plot([e["step"] for e in evals], [e["loss"] for e in evals], "o-", label="validation loss", color="#d62728")
    if summary.get("resumed_at_step") is not None:
        step = summary["resumed_at_step"]
        ax.axvline(step, color="grey", linestyle="--", linewidth=1, label=f"resumed at step {step}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title(f"{summary['method']} on {summary['base_model']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def data_file(path: Path, name: str = "corrected.jsonl", empty: str = "no failure has a correction yet") -> Path:
    """--data: a file of examples, or the folder `collect-failures` wrote (its `name`: corrected.jsonl, or DPO's
    pairs.jsonl), as the seed's `--data "./failure-cases/"` passes it; `empty` says why that file can be empty."""
    if not path.is_dir():
        return path
    found = path / name
    if not found.is_file():
        raise TrainError(
            f"--data {path}: a folder, but not one `clawtune agent collect-failures` wrote (no {name} in it)"
        )
    if found.stat().st_size == 0:
        raise TrainError(
            f"--data {path}: {name} is empty: {empty} (fill in review.jsonl and run collect-failures again with "
            "--corrections, or give it a --teacher)"
        )
    return found


def prepare_output(out: Path, resumed: Path | None, force: bool) -> list[Path]:
    """Refuse to train into a folder holding another run's checkpoints (with `force`, remove them); resuming inside
    the folder, refuse to write over the checkpoints after the one resumed from. Returns what was removed."""
    found = checkpoints(out)
    if resumed is not None and resumed.resolve().parent == out.resolve():
        step = checkpoint_step(resumed)
        later = [c for c in found if checkpoint_step(c) > step]
        if later and not force:
            raise TrainError(
                f"{out} holds checkpoints after {resumed.name} ({', '.join(c.name for c in later)}): this run would "
                f"write over them. Resume from the newest (--resume {out}), or pass --force to replace them"
            )
        for path in later:
            shutil.rmtree(path)
        return later
    if not found and not (out / MANIFEST).is_file():
        return []
    if not force:
        shown = ", ".join(c.name for c in found[-3:]) or MANIFEST
        raise TrainError(
            f"{out} holds an earlier run ({shown}): training into it would mix the two runs (its last checkpoint "
            f"would pass for this run's). Pass --resume {out} to continue that run, --force to replace it, or set "
            "output_dir to a new folder"
        )
    removed = [c for c in out.iterdir() if CHECKPOINT.match(c.name) and c.is_dir()]
    for path in removed:
        shutil.rmtree(path)
    shutil.rmtree(out / ".staging", ignore_errors=True)
    recorded = list((read_manifest(out).get("files") or {}) if (out / MANIFEST).is_file() else [])
    for name in [*recorded, MANIFEST, SUMMARY, LOSS_PLOT]:
        if Path(name).name == name and (out / name).is_file():
            (out / name).unlink()
            removed.append(out / name)
    return removed


def check_holdouts(train_path: Path, config: FTConfig) -> list[str]:
    """Refuse training data that shares a session or an example with the held-out files of the export that made it
    (found through the export id in its metadata) or with the validation file; returns notes on what was found."""
    from clawtune.data.holdout import export_ids, find_holdouts, leakage_message, leaks
    from clawtune.data.validate import iter_examples

    if not train_path.is_file():
        return []  # load_data says so
    validation = config.data.validation
    found = find_holdouts(
        train_path,
        export_ids(e for _, e in iter_examples(train_path, Problems(keep=0))),
        folders=[validation.parent] if validation else [],
        extra=[validation] if validation else [],
    )
    leaked = leaks(iter_examples(train_path, Problems(keep=0)), train_path, found.files)
    if leaked:
        raise TrainError(leakage_message("train", leaked, found.notes))
    return found.notes


def warmup_note(config: FTConfig, max_steps: int | None, rows: int, world: int) -> str | None:
    """A line when the warm-up is longer than the run: the learning rate would still be rising at the end."""
    t = config.training
    batches = math.ceil(rows / (t.batch_size * world))
    per_epoch = max(batches // t.gradient_accumulation_steps, 1)
    steps = max_steps or math.ceil(t.epochs * per_epoch)
    if t.warmup_steps <= steps:
        return None
    return (
        f"warmup_steps {t.warmup_steps} is longer than this run ({steps} steps): the learning rate would still be "
        f"rising when it ends and the loss may rise; set training.warmup_steps to about {max(steps // 10, 1)}"
        + (" (or `clawtune ft init --preset tiny-agent`)" if config.base_model == TINY_AGENT else "")
    )


def train_command(options: TrainOptions) -> int:
    """`ft train`: with --gpus N > 1, launch one process per GPU (each runs this again, as a rank); else train here."""
    if options.gpus and options.gpus > 1 and "LOCAL_RANK" not in os.environ and not options.dry_run:
        return launch_processes(options)
    try:
        run_training(options)
    finally:
        end_process_group()
    return 0


def end_process_group() -> None:
    """Tear down torch.distributed before exit: gloo's threads abort the process if left running."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def launch_processes(options: TrainOptions) -> int:
    """Run `clawtune ft train` in N processes with torch.distributed.run (DDP); returns the exit status. Each process
    gets this run's own command line (`command_words`), so it trains exactly what this one was asked to."""
    import subprocess

    from clawtune.options import command_words

    if options.config_file is None:
        raise InputError("--gpus: each process reads the config file; give --config FILE")
    checkpoint = find_checkpoint(options.resume) if options.resume is not None else None
    prepare_output(options.config.output_dir, checkpoint, options.force)
    n = options.gpus or 1
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
    command += ["-m", *command_words("ft train", options)]
    env = {**os.environ, "CLAWTUNE_LAUNCHED": "1"}
    return subprocess.call(command, env=env)
