"""The `clawtune` command line. Commands mirror the seed with `openclaw` replaced by `clawtune`.

Each command imports its work lazily so `clawtune --help` answers at once; `main(argv) -> int` runs in-process
for tests. Bad input ends in one clear message (exit 2), never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.exceptions import Abort, TyperException

from clawtune.problems import InputError

app = typer.Typer(
    help="Fine-tune a specialist model on an OpenClaw agent's own logs, prove it is better, and serve it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
agent_app = typer.Typer(help="Work with an agent's OpenClaw sessions.", no_args_is_help=True)
ft_app = typer.Typer(help="Fine-tuning: data, training, evaluation, export.", no_args_is_help=True)
openclaw_app = typer.Typer(help="Plug clawtune's models into OpenClaw's config.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")
app.add_typer(ft_app, name="ft")
app.add_typer(openclaw_app, name="openclaw")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


@agent_app.command("export-training-data")
def export_training_data(
    agent_id: Annotated[
        str, typer.Option("--agent-id", help="The OpenClaw agent whose sessions to export, e.g. my-agent.")
    ],
    output: Annotated[
        Path, typer.Option("--output", help="Folder for raw.jsonl, validation.jsonl, test.jsonl and the report.")
    ],
    format: Annotated[str, typer.Option("--format", help="Output format (OpenAI chat JSONL).")] = "jsonl",
    min_samples: Annotated[
        int, typer.Option("--min-samples", help="Fail unless at least this many examples remain.")
    ] = 1,
    date_range: Annotated[str | None, typer.Option("--date-range", help="FROM:TO, ISO dates, inclusive.")] = None,
    state_dir: Annotated[
        list[Path] | None,
        typer.Option("--state-dir", help="OpenClaw state folder (default $OPENCLAW_STATE_DIR or ~/.openclaw)."),
    ] = None,
    sessions: Annotated[
        list[Path] | None,
        typer.Option(
            "--sessions", help="Explicit sources: transcript files, folders, an SQLite store, a trajectory bundle."
        ),
    ] = None,
    session_key: Annotated[
        str | None,
        typer.Option("--session-key", help="Only sessions whose key matches this glob, e.g. 'agent:my-agent:*'."),
    ] = None,
    channel: Annotated[str | None, typer.Option("--channel", help="Only sessions from this channel.")] = None,
    system_prompt: Annotated[
        str,
        typer.Option(
            "--system-prompt", help="keep | drop | short (a generated one-liner) | FILE with the prompt to use."
        ),
    ] = "short",
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Split longer sessions at turn boundaries (approximate tokens).")
    ] = 4096,
    no_scrub: Annotated[
        bool, typer.Option("--no-scrub", help="Do not replace secrets and PII (not recommended).")
    ] = False,
    keep_thinking: Annotated[
        bool, typer.Option("--keep-thinking", help="Keep thinking blocks as reasoning_content.")
    ] = False,
    keep_images: Annotated[
        bool, typer.Option("--keep-images", help="Keep an \\[image] placeholder where images were.")
    ] = False,
    drop_failures: Annotated[
        bool, typer.Option("--drop-failures", help="Drop examples with tool errors or aborted turns.")
    ] = False,
    split: Annotated[str, typer.Option("--split", help="train:validation:test ratios.")] = "80:10:10",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the session split.")] = 42,
    strict: Annotated[
        bool, typer.Option("--strict", help="Stop at the first bad line instead of reporting and skipping it.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an earlier export in --output (only the files that export wrote)."),
    ] = False,
    max_line_mb: Annotated[
        float,
        typer.Option(
            "--max-line-mb", help="Skip (and report) transcript lines and store events larger than this.", min=0.001
        ),
    ] = 64,
    gateway_log: Annotated[
        Path | None,
        typer.Option(
            "--gateway-log",
            help="Also (or, without --state-dir/--sessions, only) export the conversations clawtune serve logged: "
            "its requests.sqlite or data folder.",
        ),
    ] = None,
    gateway_model: Annotated[
        list[str] | None,
        typer.Option(
            "--gateway-model",
            help="Logged requests for these models (globs) are the agent's (default: OpenClaw's agent marker, or a "
            "model named after the agent).",
        ),
    ] = None,
    gateway_feedback: Annotated[
        str,
        typer.Option("--gateway-feedback", help="Which rated answers to train on: not-negative, positive or any."),
    ] = "not-negative",
) -> None:
    """Export an agent's sessions as scrubbed OpenAI chat JSONL, split by session into train/validation/test."""
    from clawtune.data.export import ExportOptions, export_training_data, parse_date_range
    from clawtune.data.report import print_export_summary

    if format != "jsonl":
        _fail(f"--format {format!r}: only jsonl (OpenAI chat fine-tuning JSONL) is written")
    try:
        ratios = tuple(float(x) for x in split.split(":"))
        if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
            raise ValueError
    except ValueError:
        _fail(f"--split {split!r}: expected three non-negative ratios like 80:10:10")
    try:
        options = ExportOptions(
            agent_id=agent_id,
            output=output,
            state_dirs=list(state_dir or []),
            sessions=list(sessions or []),
            date_range=parse_date_range(date_range) if date_range else None,
            session_key=session_key,
            channel=channel,
            min_samples=min_samples,
            system_prompt=system_prompt,
            max_tokens=max_tokens,
            scrub=not no_scrub,
            keep_thinking=keep_thinking,
            keep_images=keep_images,
            drop_failures=drop_failures,
            ratios=ratios,  # type: ignore[arg-type]
            seed=seed,
            strict=strict,
            progress=sys.stderr.isatty(),
            force=force,
            max_line_bytes=int(max_line_mb * 1024 * 1024),
        )
        if gateway_log is not None:
            _add_gateway_log(
                options, gateway_log, list(gateway_model or []), gateway_feedback, bool(state_dir or sessions)
            )
        report = export_training_data(options)
    except InputError as exc:
        _fail(str(exc))
    print_export_summary(report, output)


def _add_gateway_log(options: Any, log: Path, models: list[str], feedback: str, stores_too: bool) -> None:
    """The gateway's conversations as a source of the export (read by the loop layer, shaped by the export)."""
    from datetime import UTC, datetime

    from clawtune.loop.gateway import FEEDBACK_CHOICES, GatewayExportOptions, resolve_log, training_conversations

    if feedback not in FEEDBACK_CHOICES:
        raise InputError(f"--gateway-feedback {feedback!r}: expected one of {', '.join(FEEDBACK_CHOICES)}")
    path = resolve_log(log)
    if not path.is_file():
        raise InputError(f"--gateway-log {log}: no request log there (clawtune serve writes DATA_DIR/requests.sqlite)")
    since = None
    if options.date_range:
        since = datetime.combine(options.date_range[0], datetime.min.time(), UTC).timestamp()
    stats: dict[str, Any] = {"log": str(path)}
    gateway = GatewayExportOptions(path, options.agent_id, models, since, feedback)
    options.extra_conversations = training_conversations(gateway, stats)
    options.extra_stats = stats
    options.read_openclaw = stores_too


def _collect_help() -> str:
    from clawtune.loop.failures.fields import grammar_help  # no parser imported: --help stays fast

    return (
        "Collect the agent's failing turns (OpenClaw stores, the gateway's log, an evaluation's wrong answers) with "
        "corrections: failures, "
        "corrected examples, preference pairs, a review file for a person, and a held-out share.\n\n" + grammar_help()
    )


@agent_app.command("collect-failures", help=_collect_help())
def collect_failures(
    agent_id: Annotated[str, typer.Option("--agent-id", help="The agent whose failures to collect, e.g. my-agent.")],
    output: Annotated[
        Path, typer.Option("--output", help="Folder for failures, corrected, pairs, review, held-out and the report.")
    ],
    criteria: Annotated[
        str | None,
        typer.Option("--criteria", help="Which failing turns to keep (default: any failure signal); grammar below."),
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="openclaw, gateway, or both (default: both, each if found).")
    ] = None,
    state_dir: Annotated[
        list[Path] | None,
        typer.Option("--state-dir", help="OpenClaw state folder (default $OPENCLAW_STATE_DIR or ~/.openclaw)."),
    ] = None,
    sessions: Annotated[
        list[Path] | None, typer.Option("--sessions", help="Explicit OpenClaw sources instead of the state folder.")
    ] = None,
    gateway_log: Annotated[
        Path | None,
        typer.Option("--gateway-log", help="clawtune serve's request log or data folder (default ./clawtune-data)."),
    ] = None,
    gateway_model: Annotated[
        list[str] | None,
        typer.Option(
            "--gateway-model",
            help="Gateway requests for these models (globs) are the agent's (default: OpenClaw's agent marker, "
            "or a model named after the agent).",
        ),
    ] = None,
    eval_items: Annotated[
        list[Path] | None,
        typer.Option(
            "--eval-items",
            help="ft evaluate's eval-items.jsonl (or its folder): test items the evaluated model got wrong become "
            "failures, corrected by their reference answers (repeatable).",
        ),
    ] = None,
    date_range: Annotated[str | None, typer.Option("--date-range", help="FROM:TO, ISO dates, inclusive.")] = None,
    holdout: Annotated[
        str, typer.Option("--holdout", help="Share of failing sessions never trained on (held-out.jsonl).")
    ] = "20%",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the hold-out split.")] = 42,
    corrections: Annotated[
        Path | None, typer.Option("--corrections", help="A review.jsonl a person filled in: merge its corrections.")
    ] = None,
    teacher_endpoint: Annotated[
        str | None, typer.Option("--teacher-endpoint", help="OpenAI-compatible endpoint of a teacher model.")
    ] = None,
    teacher_model: Annotated[str | None, typer.Option("--teacher-model", help="The teacher's model name.")] = None,
    negative_reactions: Annotated[
        str | None, typer.Option("--negative-reactions", help="Emoji that count as negative, e.g. '👎,❌,😡'.")
    ] = None,
    export: Annotated[
        list[Path] | None,
        typer.Option("--export", help="An earlier export folder: its validation/test sessions are refused."),
    ] = None,
    system_prompt: Annotated[
        str, typer.Option("--system-prompt", help="keep | drop | short | FILE, as in export-training-data.")
    ] = "short",
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Context kept before a failing turn.")] = 4096,
    no_scrub: Annotated[bool, typer.Option("--no-scrub", help="Do not replace secrets and PII.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace another run's files in --output.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first bad line.")] = False,
) -> None:
    import os

    from clawtune.data.export import parse_date_range
    from clawtune.loop.failures.collect import CollectOptions, collect_failures, parse_holdout, print_summary
    from clawtune.loop.failures.criteria import DEFAULT_CRITERIA
    from clawtune.loop.failures.signals import NEGATIVE_REACTIONS, parse_emoji_list

    sources = ("openclaw", "gateway") if source in (None, "both") else tuple(source.split(","))
    if not set(sources) <= {"openclaw", "gateway"}:
        _fail(f"--source {source!r}: expected openclaw, gateway or both")
    try:
        options = CollectOptions(
            agent_id=agent_id,
            output=output,
            criteria=criteria or DEFAULT_CRITERIA,
            sources=sources,
            explicit_sources=source is not None,
            state_dirs=list(state_dir or []),
            sessions=list(sessions or []),
            gateway_log=gateway_log,
            gateway_models=list(gateway_model or []),
            eval_items=list(eval_items or []),
            date_range=parse_date_range(date_range) if date_range else None,
            holdout=parse_holdout(holdout),
            seed=seed,
            corrections=corrections,
            teacher_endpoint=teacher_endpoint,
            teacher_model=teacher_model,
            teacher_api_key=os.environ.get("CLAWTUNE_TEACHER_API_KEY") or os.environ.get("OPENAI_API_KEY"),
            negative_reactions=parse_emoji_list(negative_reactions) if negative_reactions else NEGATIVE_REACTIONS,
            exports=list(export or []),
            system_prompt=system_prompt,
            max_tokens=max_tokens,
            scrub=not no_scrub,
            force=force,
            strict=strict,
            progress=sys.stderr.isatty(),
        )
        report = collect_failures(options)
    except InputError as exc:
        _fail(str(exc))
        return
    print_summary(report, output)


@ft_app.command("validate")
def validate(
    files: Annotated[list[Path], typer.Argument(help="OpenAI chat JSONL files to check.")],
    output: Annotated[
        Path | None, typer.Option("--output", help="Write the normalised examples (tool-call ids added) here.")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first problem.")] = False,
) -> None:
    """Check chat JSONL: roles, tool-call ids answered, JSON arguments, a trained turn, tool schemas; all at once."""
    from clawtune.data.validate import validate_files

    try:
        result = validate_files(files, output, strict)
    except InputError as exc:
        _fail(str(exc))
    for problem in result.problems.items:
        typer.echo(str(problem), err=True)
    hidden = len(result.problems) - len(result.problems.items)
    if hidden:
        typer.echo(f"... and {hidden} more", err=True)
    for warning in result.warnings:
        typer.secho(f"warning: {warning}", fg="yellow", err=True)
    if result.ok:
        typer.secho(
            f"OK: {result.examples} examples, all valid" + (f"; normalised into {output}" if output else ""), fg="green"
        )
        return
    typer.secho(
        f"{len(result.problems)} problems; {result.valid} of {result.examples} examples valid", fg="red", err=True
    )
    raise typer.Exit(1)


@ft_app.command("data-stats")
def data_stats_command(
    files: Annotated[list[Path], typer.Argument(help="OpenAI chat JSONL files.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
) -> None:
    """The mix against the seed's recipe (30% normal, 20% edge, 20% refusal, 15% multi-turn, 15% tool call), token
    lengths, tool usage, duplicates, and what to add."""
    import json

    from clawtune.data.recipe import data_stats, print_data_stats
    from clawtune.data.validate import iter_examples
    from clawtune.problems import Problems

    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        _fail(f"no such file: {', '.join(missing)}")
    problems = Problems()
    examples = [e for path in files for _, e in iter_examples(path, problems)]
    for problem in problems.items:
        typer.echo(f"skipped {problem}", err=True)
    if not examples:
        why = f"{len(problems)} unreadable lines" if problems else "empty"
        _fail(f"{', '.join(map(str, files))}: no examples ({why}); nothing to compare with the recipe")
    stats = data_stats(examples)
    if as_json:
        typer.echo(json.dumps(stats.to_json(), indent=2, ensure_ascii=False))
    else:
        print_data_stats(stats, ", ".join(str(f) for f in files))


@ft_app.command("augment-data")
def augment_data(
    input: Annotated[
        Path, typer.Option("--input", help="Training examples (OpenAI chat JSONL), e.g. ./ft-data/raw.jsonl.")
    ],
    output: Annotated[Path, typer.Option("--output", help="Where to write the grown set.")],
    factor: Annotated[
        float, typer.Option("--factor", help="Output size as a multiple of the input (originals included).")
    ] = 3.0,
    balance: Annotated[bool, typer.Option("--balance", help="Move the mix toward the seed's recipe.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random choice.")] = 0,
    holdout: Annotated[
        list[Path] | None,
        typer.Option(
            "--holdout",
            help="Held-out files to check for leakage (validation.jsonl and test.jsonl beside the input are always checked).",
        ),
    ] = None,
    teacher_endpoint: Annotated[
        str | None,
        typer.Option("--teacher-endpoint", help="OpenAI-compatible endpoint of a teacher model for paraphrases."),
    ] = None,
    teacher_model: Annotated[
        str | None, typer.Option("--teacher-model", help="The teacher model's name at that endpoint.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
) -> None:
    """Grow a training set N-fold with transformations that keep tool calls, results and answers consistent."""
    import json
    import os

    from clawtune.data.augment import AugmentOptions, augment
    from clawtune.data.recipe import CATEGORIES

    api_key = os.environ.get("CLAWTUNE_TEACHER_API_KEY") or os.environ.get("OPENAI_API_KEY")
    options = AugmentOptions(
        input=input,
        output=output,
        factor=factor,
        balance=balance,
        seed=seed,
        holdout=list(holdout or []),
        teacher_endpoint=teacher_endpoint,
        teacher_model=teacher_model,
        teacher_api_key=api_key,
        force=force,
    )
    try:
        report = augment(options)
    except InputError as exc:
        _fail(str(exc))
    report_path = output.with_name(output.stem + "-report.json")
    report_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    typer.echo(
        f"{report['examples_in']} examples -> {report['examples_out']} (target {report['target_out']}) in {output}"
    )
    if report["shortfall"]:
        typer.secho(f"  {report['shortfall']} short of the target: the seeds ran out of distinct variants", fg="yellow")
    for note in report["notes"]:
        typer.secho(f"  note: {note}", fg="yellow")
    teacher = report["teacher"]
    if teacher and teacher["failures"]:
        typer.secho(
            f"  the teacher failed {teacher['failures']} of {teacher['requests']} requests (last: "
            f"{teacher['last_error']}); those examples used the offline transformations",
            fg="yellow",
        )
    typer.echo("  made by: " + (", ".join(f"{k} {v}" for k, v in report["made_by"].items()) or "nothing"))
    typer.echo("  candidates discarded: " + (", ".join(f"{k} {v}" for k, v in report["discarded"].items()) or "none"))
    before, after = report["mix_before"], report["mix_after"]
    typer.echo(
        "  mix:     "
        + ", ".join(
            f"{c} {before[c]['share']:.0%} -> {after[c]['share']:.0%} (target {after[c]['target']:.0%})"
            for c in CATEGORIES
        )
    )
    typer.echo(f"  report:  {report_path}")


@ft_app.command("init")
def ft_init(
    base_model: Annotated[
        str, typer.Option("--base-model", help="A Hugging Face id, a local folder, or clawtune/tiny-agent.")
    ],
    method: Annotated[str, typer.Option("--method", help="lora | qlora | full.")] = "lora",
    output_dir: Annotated[
        Path, typer.Option("--output-dir", help="Where training writes checkpoints and the adapter.")
    ] = Path("./fine-tuned-model/"),
    config: Annotated[Path, typer.Option("--config", help="The config file to write.")] = Path("ft-config.yaml"),
    train: Annotated[
        str, typer.Option("--train", help="Training data path, as written into the config.")
    ] = "./ft-data/augmented.jsonl",
    validation: Annotated[
        str, typer.Option("--validation", help="Validation data path, as written into the config.")
    ] = "./ft-data/validation.jsonl",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing config.")] = False,
    preset: Annotated[
        str,
        typer.Option(
            "--preset",
            help="seed (the founding document's values, for a 7-8B base), tiny-agent (what trains the bundled "
            "model), or auto: tiny-agent for clawtune/tiny-agent, else seed.",
        ),
    ] = "auto",
) -> None:
    """Write a commented ft-config.yaml with the seed's values (LoRA r=16, alpha=32, lr 2e-4, ...)."""
    from clawtune.models import check_base_model
    from clawtune.train.config import init_config, preset_for, warmup_warning

    try:
        note = check_base_model(base_model)
        chosen = preset_for(base_model, preset)
        init_config(config, base_model, method, output_dir, train, validation, force, chosen)
    except InputError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {config} (base_model {base_model}, method {method}, output_dir {output_dir}, preset {chosen})")
    for line in (note, warmup_warning(config)):
        if line:
            typer.secho(f"note: {line}", fg="yellow", err=True)


@ft_app.command("train")
def ft_train(
    config: Annotated[Path, typer.Option("--config", help="The training config (see `clawtune ft init`).")],
    gpus: Annotated[
        int | None, typer.Option("--gpus", help="GPUs to train on (N > 1: one DDP process per GPU).", min=1)
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue exactly from this checkpoint (or the newest one in this folder)."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Train on this file (or a collect-failures folder: its corrected.jsonl, or its pairs.jsonl with "
            "objective: dpo) instead; with --resume, continue the weights on it into a new checkpoint "
            "(training.replay mixes in what it knew; DPO's reference is the resumed model).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what the run would cost, then stop.")] = False,
    wandb: Annotated[bool, typer.Option("--wandb", help="Also log to Weights & Biases.")] = False,
    project_name: Annotated[str | None, typer.Option("--project-name", help="Run name and tracker project.")] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop after this many optimizer steps.", min=1)
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail on the first bad example instead of skipping it.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace an earlier run's checkpoints in output_dir (with --resume: those after it)."
        ),
    ] = False,
) -> None:
    """Fine-tune (LoRA, QLoRA or full) with assistant-only loss, isolated packing and resumable checkpoints."""
    import os

    from clawtune.train.config import load_config
    from clawtune.train.run import TrainOptions, launch_processes, run_training

    try:
        loaded = load_config(config, check_files=data is None)
        options = TrainOptions(
            config=loaded,
            gpus=gpus,
            resume=resume,
            data=data,
            dry_run=dry_run,
            wandb=wandb,
            project_name=project_name,
            max_steps=max_steps,
            strict=strict,
            force=force,
        )
        if gpus and gpus > 1 and "LOCAL_RANK" not in os.environ and not dry_run:
            argv = ["ft", "train", "--config", str(config), "--gpus", str(gpus)]
            for flag, value in (("--resume", resume), ("--data", data), ("--project-name", project_name)):
                if value is not None:
                    argv += [flag, str(value)]
            argv += ["--max-steps", str(max_steps)] if max_steps else []
            argv += ["--wandb"] * wandb + ["--strict"] * strict + ["--force"] * force
            raise typer.Exit(launch_processes(options, argv))
        try:
            run_training(options)
        finally:
            _end_process_group()
    except InputError as exc:
        _fail(str(exc))


@ft_app.command("check-template")
def check_template_command(
    base: Annotated[
        list[str],
        typer.Option(
            "--base", help="A model (Hugging Face id or folder) or a .jinja chat template; repeat to compare."
        ),
    ],
    data: Annotated[Path, typer.Option("--data", help="Training examples (OpenAI chat JSONL).")],
    tokenizer: Annotated[
        str | None, typer.Option("--tokenizer", help="Tokenizer for a .jinja template (default: the tiny model's).")
    ] = None,
    max_refused: Annotated[
        float, typer.Option("--max-refused", help="Share of refused examples above which training stops.", min=0, max=1)
    ] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
) -> None:
    """How each chat template trains on your data: masks, refusals by rule with the fix, adaptations, and how far a
    clawtune training template's prompts differ from the stock template's. Exit 1 if training would stop."""
    import json

    from rich.console import Console

    from clawtune.train.check import check_template, print_reports, read_examples

    try:
        examples = read_examples(data)
        reports = [report for name in base for report in check_template(name, examples, tokenizer)]
    except InputError as exc:
        _fail(str(exc))
    if any(name.endswith(".jinja") for name in base) and tokenizer is None:
        typer.echo(
            "note: .jinja templates are rendered with the tiny model's tokenizer (--tokenizer MODEL for yours)",
            err=True,
        )
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in reports], indent=2, ensure_ascii=False))
        ok = all(r.refused_share <= max_refused for r in reports if r.used_for_training)
    else:
        console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
        ok = print_reports(reports, data, max_refused, console)
    if not ok:
        raise typer.Exit(1)


def _end_process_group() -> None:
    """Tear down torch.distributed before exit: gloo's threads abort the process if left running."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@ft_app.command("evaluate")
def ft_evaluate(
    test_set: Annotated[Path, typer.Option("--test-set", help="Held-out examples (e.g. ./ft-data/test.jsonl).")],
    model_dir: Annotated[
        str | None, typer.Option("--model-dir", help="A checkpoint or output folder of `ft train`, or any model.")
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            help="Comma-separated: accuracy, f1, tool_calls, refusal, hallucination, latency, tokens, cost, forgetting "
            "(default: all).",
        ),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="A local baseline model (default: the adapter's base model).")
    ] = None,
    baseline_endpoint: Annotated[
        str | None, typer.Option("--baseline-endpoint", help="An OpenAI-compatible endpoint as the baseline.")
    ] = None,
    baseline_model: Annotated[
        str | None, typer.Option("--baseline-model", help="The model id to ask the baseline endpoint for.")
    ] = None,
    baseline_system_prompt: Annotated[
        Path | None, typer.Option("--baseline-system-prompt", help="System prompt the baseline needs (a file).")
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="Evaluate a served model behind this endpoint instead.")
    ] = None,
    endpoint_model: Annotated[str | None, typer.Option("--endpoint-model", help="Its model id.")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Report folder (default: MODEL_DIR/eval).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Local generation batch size.", min=1)] = 8,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 256,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N turns.", min=1)] = None,
    price_in: Annotated[float | None, typer.Option("--price-in", help="Endpoint price per 1K prompt tokens.")] = None,
    price_out: Annotated[
        float | None, typer.Option("--price-out", help="Endpoint price per 1K completion tokens.")
    ] = None,
    gpu_hour_price: Annotated[
        float, typer.Option("--gpu-hour-price", help="Price of an hour of the local device.")
    ] = 2.5,
    forgetting_threshold: Annotated[
        float, typer.Option("--forgetting-threshold", help="Flag a general-accuracy drop past this.")
    ] = 0.05,
    forgetting_size: Annotated[
        int, typer.Option("--forgetting-size", help="General conversations in the forgetting check.", min=1)
    ] = 60,
    judge_endpoint: Annotated[
        str | None, typer.Option("--judge-endpoint", help="Optional LLM-as-judge endpoint for text answers.")
    ] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model")] = None,
    allow_base_mismatch: Annotated[
        bool, typer.Option("--allow-base-mismatch", help="Load an adapter on a base it was not trained on.")
    ] = False,
    train_set: Annotated[
        Path | None,
        typer.Option(
            "--train-set",
            help="Training data to check the held-out turns against (default: the file in the checkpoint's manifest).",
        ),
    ] = None,
    held_out: Annotated[
        Path | None,
        typer.Option(
            "--held-out",
            help="The gate after a retrain: the collect-failures folder (its held-out.jsonl). Compares --model-dir "
            "with --baseline (default: the checkpoint it was retrained from) on those failures, the test set and the "
            "forgetting set; exits 3 unless the gate passes.",
        ),
    ] = None,
    benchmark: Annotated[
        str | None,
        typer.Option(
            "--benchmark",
            help="A general tool-calling check: bfcl:simple,multiple,irrelevance (the Berkeley Function Calling "
            "Leaderboard's cases, scored by its own AST checker; needs bfcl-eval, installed without its dependencies).",
        ),
    ] = None,
    benchmark_limit: Annotated[
        int, typer.Option("--benchmark-limit", help="Cases per benchmark category.", min=1)
    ] = 50,
) -> None:
    """Baseline vs fine-tuned on held-out turns: accuracy, F1, tool calls, refusals, hallucination, latency, cost."""
    from clawtune.evaluate.run import EvalOptions, parse_metrics, run_evaluation

    try:
        report = run_evaluation(
            EvalOptions(
                test_set=test_set,
                model_dir=model_dir,
                endpoint=endpoint,
                endpoint_model=endpoint_model,
                baseline=baseline,
                baseline_endpoint=baseline_endpoint,
                baseline_model=baseline_model,
                baseline_system_prompt=baseline_system_prompt,
                metrics=parse_metrics(metrics),
                output=output,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                limit=limit,
                price_in_per_1k=price_in,
                price_out_per_1k=price_out,
                gpu_hour_price=gpu_hour_price,
                forgetting_threshold=forgetting_threshold,
                forgetting_size=forgetting_size,
                allow_base_mismatch=allow_base_mismatch,
                judge_endpoint=judge_endpoint,
                judge_model=judge_model,
                train_set=train_set,
                held_out=held_out,
                benchmark=benchmark,
                benchmark_limit=benchmark_limit,
            )
        )
    except InputError as exc:
        _fail(str(exc))
    if report.get("gate", {}).get("verdict", "PASSED") != "PASSED":
        raise typer.Exit(3)


@ft_app.command("export")
def ft_export(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="A checkpoint or output folder of `ft train`.")],
    output: Annotated[Path, typer.Option("--output", help="The export folder, e.g. ./exports/finance-agent-v1/.")],
    format: Annotated[
        str,
        typer.Option("--format", help="openclaw-lora, merged, gguf, ollama, vllm, a comma-separated list, or all."),
    ] = "openclaw-lora",
    name: Annotated[str | None, typer.Option("--name", help="Model name (default: the output folder's name).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing export.")] = False,
    chat_template: Annotated[
        Path | None, typer.Option("--chat-template", help="Ship this Jinja template instead (parity-checked).")
    ] = None,
    ollama_template: Annotated[
        Path | None, typer.Option("--ollama-template", help="A Go TEMPLATE for Ollama (parity-checked).")
    ] = None,
    ollama_base: Annotated[
        str | None,
        typer.Option("--ollama-base", help="An Ollama model to use as FROM instead of writing base.gguf."),
    ] = None,
    gguf_f16: Annotated[bool, typer.Option("--gguf-f16", help="Write whole-model GGUFs in float16.")] = False,
    dtype: Annotated[
        str | None, typer.Option("--dtype", help="The merged model's dtype (default: the base model's).")
    ] = None,
    allow_base_mismatch: Annotated[
        bool, typer.Option("--allow-base-mismatch", help="Export an adapter whose base model has changed.")
    ] = False,
    register_endpoint: Annotated[
        str | None,
        typer.Option("--register-endpoint", help="Then show the OpenClaw registration for a server at this URL."),
    ] = None,
) -> None:
    """Ship a trained model: the adapter, a merged model, GGUF, Ollama and vLLM, each parity-checked."""
    from clawtune.export.run import ExportOptions, export, parse_formats, print_summary

    try:
        summary = export(
            ExportOptions(
                model_dir=model_dir,
                output=output,
                formats=parse_formats(format),
                name=name,
                force=force,
                chat_template=chat_template,
                ollama_template=ollama_template,
                ollama_base=ollama_base,
                gguf_f16=gguf_f16,
                merged_dtype=dtype,
                allow_base_mismatch=allow_base_mismatch,
            )
        )
        print_summary(summary, register_endpoint)
    except InputError as exc:
        _fail(str(exc))


@openclaw_app.command("register")
def openclaw_register(
    model_id: Annotated[str, typer.Option("--model-id", help="The model id clients ask for, e.g. finance-agent.")],
    endpoint: Annotated[str, typer.Option("--endpoint", help="Where it is served, e.g. http://127.0.0.1:8000/v1.")],
    api: Annotated[str, typer.Option("--api", help="openai-completions (clawtune serve, vLLM) or ollama.")] = (
        "openai-completions"
    ),
    agent: Annotated[str | None, typer.Option("--agent", help="Make it this agent's primary model.")] = None,
    primary: Annotated[
        bool, typer.Option("--primary", help="Make it the primary model (of --agent, else of every agent).")
    ] = False,
    provider: Annotated[str, typer.Option("--provider", help="Provider id in OpenClaw's config.")] = "clawtune",
    api_key: Annotated[
        str | None, typer.Option("--api-key", help='A key, or "${ENV_VAR}" for OpenClaw to read from the environment.')
    ] = None,
    context_window: Annotated[
        int | None,
        typer.Option("--context-window", min=1, help="The model's context (default: what the endpoint states)."),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", min=1, help="Its longest answer (default: what the endpoint states)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="openclaw.json (default: $OPENCLAW_CONFIG_PATH, $OPENCLAW_STATE_DIR, ~/.openclaw)."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the change as a diff; write nothing.")] = False,
) -> None:
    """Add a fine-tuned model to OpenClaw's config (comments and other settings kept, backup first)."""
    from clawtune.openclaw.register import Registration, register

    try:
        result = register(
            Registration(
                model_id=model_id,
                endpoint=endpoint,
                api=api,
                provider=provider,
                agent=agent,
                primary=primary,
                api_key=api_key,
                context_window=context_window,
                max_tokens=max_tokens,
            ),
            config,
            dry_run=dry_run,
        )
    except InputError as exc:
        _fail(str(exc))
        return
    for note in result.limits.notes if result.limits else []:
        typer.echo(note)
    for warning in result.limits.warnings if result.limits else []:
        typer.secho(f"warning: {warning}", fg="yellow", err=True)
    if not result.changed:
        typer.echo(f"{result.path}: already registered; nothing to change")
    elif dry_run:
        typer.echo(result.diff, nl=False)
        typer.echo(f"(dry run: {result.path} not changed)")
    else:
        typer.echo(result.diff, nl=False)
        typer.echo(
            f"{result.path}: registered {provider}/{model_id}"
            + (f" (backup: {result.backup})" if result.backup else "")
        )


@app.command("serve")
def serve(
    config: Annotated[Path, typer.Option("--config", help="The models file (the seed's models: list).")],
    host: Annotated[str | None, typer.Option("--host", help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default 8000).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where the request log (SQLite) goes (default: ./clawtune-data).")
    ] = None,
    runs: Annotated[
        Path | None,
        typer.Option("--runs", help="The folder whose runs and reports the dashboard at /ui/ shows (default: here)."),
    ] = None,
) -> None:
    """An OpenAI-compatible server: one base model, many adapters, remote engines; routing by id, tags, A/B split."""
    import signal

    from clawtune.extras import require

    try:
        require("uvicorn", "serve", "clawtune serve")
        require("fastapi", "serve", "clawtune serve")
    except InputError as exc:
        _fail(str(exc))
        return
    from clawtune.serve.app import Gateway, Server, bind
    from clawtune.serve.config import load

    try:
        settings = load(config)
    except InputError as exc:
        _fail(str(exc))
        return
    address = (host or settings.server.host, settings.server.port if port is None else port)
    try:
        sock = bind(*address)  # before loading any model: a port in use is said at once
    except OSError as exc:
        _fail(f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc} (--port, or server.port in {config})")
        return
    from clawtune.loop.canary import Watchdog

    try:
        gateway = Gateway(settings, data_dir=data_dir)
        gateway.watchdog = Watchdog(gateway)  # the A/B tests' guardrails hold even when no `ft ab-test` runs
        server = Server(gateway, address[0], sock=sock)
    except InputError as exc:
        sock.close()
        _fail(str(exc))
        return
    from clawtune.ui.app import UISettings, loopback_url, mount

    bound = server.socket.getsockname()
    ui = UISettings(
        (runs or Path.cwd()).resolve(),
        server.gateway.log.path,
        list(settings.server.admin_keys),
        endpoint=loopback_url(bound[0], bound[1]),  # the dashboard's actions go through the admin API (audited)
    )
    mount(server.app, ui)
    models = ", ".join(server.gateway.entries)
    typer.echo(f"clawtune serving {models} on {server.url}/v1 (log: {server.gateway.log.path}); Ctrl-C stops")
    typer.echo(
        f"dashboard: {server.url}/ui/ (runs and reports under {ui.root})"
        + ("" if ui.admin_keys else "; it needs server.admin_keys to open")
    )
    typer.echo(f"answering for Host: {', '.join(server.gateway.allowed_hosts())} (server.allowed_hosts)")

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo("stopped taking requests; flushing the log")
        server.close()


@app.command("ui")
def ui_command(
    runs: Annotated[
        Path, typer.Option("--runs", help="Folder whose training runs, data, evaluation and failure reports to show.")
    ] = Path("."),
    log: Annotated[
        Path | None,
        typer.Option("--log", help="The gateway's request log or its data folder (default ./clawtune-data)."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Bind address (default loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0: any free one).", min=0, max=65535)] = 8010,
    config: Annotated[
        Path | None, typer.Option("--config", help="The gateway's models file: its admin keys open the page.")
    ] = None,
    admin_key: Annotated[
        str | None,
        typer.Option(
            "--admin-key", envvar="CLAWTUNE_ADMIN_KEY", help="The key that opens the page (default: generated)."
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", envvar="CLAWTUNE_ENDPOINT", help="The running gateway, for actions (stop a test)."),
    ] = None,
) -> None:
    """A web page over the runs, data, evaluations, the gateway's traffic, experiments and failures to review."""
    import secrets

    from clawtune.extras import require

    try:
        require("uvicorn", "serve", "clawtune ui")
        require("fastapi", "serve", "clawtune ui")
    except InputError as exc:
        _fail(str(exc))
        return
    import uvicorn

    from clawtune.loop.gateway import resolve_log
    from clawtune.serve.app import bind
    from clawtune.ui.app import UISettings, loopback_url, standalone

    if not runs.is_dir():
        _fail(f"--runs {runs}: no such folder")
    keys = [admin_key] if admin_key else []
    log_path = resolve_log(log)
    if config is not None:
        from clawtune.serve.config import load, resolve_path

        try:
            served = load(config)
        except InputError as exc:
            _fail(str(exc))
            return
        keys += served.server.admin_keys
        if log is None:
            log_path = resolve_path(served.server.data_dir, config.parent) / "requests.sqlite"
        if served.server.port:  # port 0: the gateway's port is known only to it; --endpoint says it
            endpoint = endpoint or loopback_url(served.server.host, served.server.port)
    generated = not keys
    if generated:
        keys = [secrets.token_urlsafe(18)]  # shown once on the terminal, never written anywhere
    try:
        sock = bind(host, port)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc} (--port)")
        return
    bound = sock.getsockname()
    settings = UISettings(runs.resolve(), log_path.resolve(), keys, endpoint=endpoint)
    hosts = ["127.0.0.1", "localhost", "::1", "[::1]"] + ([host] if host not in ("0.0.0.0", "::") else ["*"])
    app = standalone(settings, hosts)
    url = f"http://{'[' + bound[0] + ']' if ':' in bound[0] else bound[0]}:{bound[1]}/ui/"
    typer.echo(f"clawtune ui on {url} (runs under {settings.root}, log {settings.log}); Ctrl-C stops")
    if generated:
        typer.echo(f"admin key for this session: {keys[0]}")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, server_header=False))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


@app.command("chat")
def chat(
    model: Annotated[str, typer.Option("--model", help="The model id (or auto, or an experiment id).")],
    message: Annotated[
        str | None, typer.Option("--message", help="Ask once and print the answer; without it, an interactive chat.")
    ] = None,
    endpoint: Annotated[
        str,
        typer.Option("--endpoint", help="The server (default: the local clawtune serve).", envvar="CLAWTUNE_ENDPOINT"),
    ] = "http://127.0.0.1:8000/v1",
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="CLAWTUNE_API_KEY")] = None,
    system: Annotated[str | None, typer.Option("--system", help="A system prompt for --message.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the whole reply as JSON.")] = False,
) -> None:
    """Talk to a served model: `--message` once, or interactively with streaming and /model, /reset, /feedback."""
    import json

    from clawtune.serve.chat import interactive, once

    try:
        if message is None:
            interactive(endpoint, model, api_key)
            return
        reply = once(endpoint, model, message, api_key, system)
    except InputError as exc:
        _fail(str(exc))
        return
    if json_output:
        typer.echo(json.dumps(reply, ensure_ascii=False, indent=2))
        return
    content = reply["message"].get("content")
    if content:
        typer.echo(content)
    for call in reply["message"].get("tool_calls") or []:
        typer.echo(f"[tool call] {call['function']['name']}({call['function']['arguments']})")


@app.command("demo")
def demo(
    output: Annotated[Path, typer.Option("--output", help="Folder for everything the demo writes.")] = Path(
        "demo-output"
    ),
    train_steps: Annotated[
        int | None, typer.Option("--train-steps", help="Stop training after this many steps (a quick run).", min=1)
    ] = None,
    eval_limit: Annotated[
        int | None, typer.Option("--eval-limit", help="Evaluate only this many held-out turns (a quick run).", min=1)
    ] = None,
) -> None:
    """Run every stage that exists on the bundled sample agent, and say where each output is."""
    from clawtune.demo import run_demo

    try:
        run_demo(output, train_steps, eval_limit)
    except InputError as exc:
        _fail(str(exc))


# ---- ft ab-test: the command's logic is in clawtune.loop.abtest --------------------------------------------------

abtest_app = typer.Typer(
    help="A/B test two models on a running gateway's traffic (always-valid statistics, guardrails, --canary ramps); "
    "`status [ID]` shows one, `rollback ID` / `promote ID` / `resume ID` act on one.",
    invoke_without_command=True,
)
ft_app.add_typer(abtest_app, name="ab-test")

ADMIN_KEY_HELP = "The gateway's admin key (server.admin_keys; default $CLAWTUNE_ADMIN_KEY)."


@abtest_app.callback()
def ft_ab_test(
    ctx: typer.Context,
    model_a: Annotated[str | None, typer.Option("--model-a", help="The incumbent (the id agents ask for).")] = None,
    model_b: Annotated[str | None, typer.Option("--model-b", help="The challenger.")] = None,
    traffic_split: Annotated[
        str | None, typer.Option("--traffic-split", help="A:B traffic shares, e.g. 50:50 (default).")
    ] = None,
    canary_steps: Annotated[
        str | None,
        typer.Option(
            "--canary",
            help="Gray release instead of a fixed split: B's share at each step in percent, e.g. 10,50,100; each step "
            "is held until --step-sessions of B's sessions, no guardrail breach and a primary metric not worse; 100 "
            "is the promotion (needs --promote-if-better).",
        ),
    ] = None,
    step_sessions: Annotated[
        int, typer.Option("--step-sessions", help="Canary: B's sessions each step needs before it may pass.", min=1)
    ] = 100,
    promote_if_better: Annotated[
        bool,
        typer.Option(
            "--promote-if-better",
            help="When the primary metric calls B better (after the canary's last step): serve B behind the agent's "
            "model id, in the gateway and its models.yaml (with a backup).",
        ),
    ] = False,
    guardrails: Annotated[
        str,
        typer.Option(
            "--guardrails",
            help="B against A, each with the worsening allowed (a share); a breach rolls B back at once. 'none': off.",
        ),
    ] = "error_rate=0.01,invalid_tool_calls=0.02,slow_requests=0.05",
    slow_ms: Annotated[
        float, typer.Option("--slow-ms", help="A request slower than this counts as slow (slow_requests).", min=1)
    ] = 10_000.0,
    register: Annotated[
        bool,
        typer.Option("--register", help="On promotion, make B OpenClaw's primary model (clawtune openclaw register)."),
    ] = False,
    openclaw_config: Annotated[
        Path | None, typer.Option("--openclaw-config", help="--register: OpenClaw's config (default: its own).")
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="--register: the agent whose primary model changes (default: all).")
    ] = None,
    duration: Annotated[str, typer.Option("--duration", help="The longest it runs: 2h, 90m, 20s.")] = "2h",
    metrics: Annotated[
        str,
        typer.Option(
            "--metrics",
            help="Comma-separated: user_satisfaction, accuracy, latency, tokens, cost, error_rate, invalid_tool_calls.",
        ),
    ] = "user_satisfaction,accuracy,latency",
    primary: Annotated[
        str | None, typer.Option("--primary", help="The metric the verdict is on (default: the first in --metrics).")
    ] = None,
    endpoint: Annotated[
        str, typer.Option("--endpoint", envvar="CLAWTUNE_ENDPOINT", help="The running gateway.")
    ] = "http://127.0.0.1:8000",
    admin_key: Annotated[
        str | None, typer.Option("--admin-key", envvar="CLAWTUNE_ADMIN_KEY", help=ADMIN_KEY_HELP)
    ] = None,
    agent_model: Annotated[
        str | None, typer.Option("--agent-model", help="The id the agent asks for, when it is not model A's.")
    ] = None,
    margin: Annotated[
        float | None,
        typer.Option(
            "--margin", help="Equivalence margin in the primary metric's units (default 0.02 for shares).", min=0
        ),
    ] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="False-positive rate, under continuous monitoring.")] = 0.05,
    min_effect: Annotated[
        float | None, typer.Option("--min-effect", help="Fixed-horizon mode: the smallest difference to detect.")
    ] = None,
    power: Annotated[float, typer.Option("--power", help="Fixed-horizon mode: the power at --min-effect.")] = 0.8,
    price_a: Annotated[float | None, typer.Option("--price-a", help="Model A's price, USD per 1M tokens.")] = None,
    price_b: Annotated[float | None, typer.Option("--price-b", help="Model B's price, USD per 1M tokens.")] = None,
    refresh: Annotated[float, typer.Option("--refresh", help="Seconds between refreshes.", min=0.1)] = 5.0,
    experiment_id: Annotated[str | None, typer.Option("--id", help="The experiment's id (default: generated).")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Report folder (default ./ab-tests/ID).")] = None,
    test_set: Annotated[
        Path | None,
        typer.Option(
            "--test-set", help="Offline: compare the two models on these held-out turns (paired, ft evaluate)."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Offline: only the first N turns.", min=1)] = None,
) -> None:
    """Split the requests for model A's id between A and B on a running `clawtune serve` (sticky per session),
    refresh a live table every few seconds, and end at --duration or as soon as the primary metric is decided.
    Guardrails roll B back on a breach; --canary ramps B's share in steps; --promote-if-better promotes B."""
    if ctx.invoked_subcommand is not None:
        return
    from clawtune.loop import abtest, canary

    try:
        if not model_a or not model_b:
            raise abtest.ABTestError(
                "--model-a and --model-b are required (or: clawtune ft ab-test status|rollback|promote|resume ID)"
            )
        if test_set is not None:
            abtest.offline(model_a, model_b, test_set, endpoint, output, limit)
            return
        names = abtest.parse_metrics(metrics)
        chosen = primary or names[0]
        if chosen not in abtest.METRICS:
            raise abtest.ABTestError(f"--primary: unknown metric {chosen!r} (known: {', '.join(abtest.METRICS)})")
        if not 0 < alpha < 1 or not 0 < power < 1:
            raise abtest.ABTestError("--alpha and --power must lie between 0 and 1")
        if model_a == model_b:
            raise abtest.ABTestError("--model-a and --model-b must differ")
        if canary_steps is not None and traffic_split is not None:
            raise abtest.ABTestError("--canary replaces --traffic-split: give one of them")
        steps = canary.parse_canary(canary_steps) if canary_steps is not None else None
        if steps and steps[-1] >= 100 and not promote_if_better:
            raise abtest.ABTestError(
                "--canary: a last step of 100% is the promotion: add --promote-if-better (or end the ramp below 100)"
            )
        if (register or openclaw_config or agent) and not promote_if_better:
            raise abtest.ABTestError(
                "--register, --openclaw-config and --agent act on promotion: add --promote-if-better"
            )
        split = abtest.parse_split(traffic_split or "50:50")
        if steps:
            split = (100 - steps[0], steps[0])
        settings = abtest.Settings(
            model_a=model_a,
            model_b=model_b,
            split=split,
            metrics=names if chosen in names else [chosen, *names],
            primary=chosen,
            duration_s=abtest.parse_duration(duration),
            alpha=alpha,
            margin=margin,
            mode="fixed" if min_effect is not None else "sequential",
            min_effect=min_effect,
            power=power,
            price_a=price_a,
            price_b=price_b,
            agent_model=agent_model,
            guardrails=canary.parse_guardrails(guardrails),
            slow_ms=slow_ms,
            canary=steps,
            step_sessions=step_sessions,
            promote_if_better=promote_if_better,
            register=_registration(register, openclaw_config, agent),
        )
        abtest.run_ab_test(
            abtest.RunOptions(settings, endpoint, admin_key, experiment_id, refresh, output, live=sys.stdout.isatty())
        )
    except InputError as exc:
        _fail(str(exc))


@abtest_app.command("status")
def ft_ab_test_status(
    experiment_id: Annotated[str | None, typer.Argument(help="An experiment (default: list them all).")] = None,
    endpoint: Annotated[
        str, typer.Option("--endpoint", envvar="CLAWTUNE_ENDPOINT", help="The running gateway.")
    ] = "http://127.0.0.1:8000",
    admin_key: Annotated[
        str | None, typer.Option("--admin-key", envvar="CLAWTUNE_ADMIN_KEY", help=ADMIN_KEY_HELP)
    ] = None,
) -> None:
    """Any experiment, running or past: its arms' figures, every metric's interval and the verdict."""
    from clawtune.loop import abtest

    try:
        abtest.status(endpoint, admin_key, experiment_id)
    except InputError as exc:
        _fail(str(exc))


def _registration(register: bool, config: Path | None, agent: str | None) -> dict[str, Any] | None:
    if not register:
        return None
    return {"config": str(config) if config else None, "agent": agent}


@abtest_app.command("rollback")
def ft_ab_test_rollback(
    experiment_id: Annotated[str, typer.Argument(help="The experiment to roll back (running or promoted).")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the record.")] = None,
    endpoint: Annotated[
        str, typer.Option("--endpoint", envvar="CLAWTUNE_ENDPOINT", help="The running gateway.")
    ] = "http://127.0.0.1:8000",
    admin_key: Annotated[
        str | None, typer.Option("--admin-key", envvar="CLAWTUNE_ADMIN_KEY", help=ADMIN_KEY_HELP)
    ] = None,
) -> None:
    """Every request for the experiment's model back to A at once; a promotion is undone (the gateway, its
    models.yaml, and OpenClaw's primary model when the promotion registered B)."""
    from clawtune.loop import canary

    try:
        canary.rollback(endpoint, admin_key, experiment_id, reason)
    except InputError as exc:
        _fail(str(exc))


@abtest_app.command("promote")
def ft_ab_test_promote(
    experiment_id: Annotated[str, typer.Argument(help="The experiment (running or ended) whose B is promoted.")],
    register: Annotated[
        bool, typer.Option("--register", help="Also make B OpenClaw's primary model (clawtune openclaw register).")
    ] = False,
    openclaw_config: Annotated[
        Path | None, typer.Option("--openclaw-config", help="--register: OpenClaw's config (default: its own).")
    ] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="--register: the agent (default: all).")] = None,
    endpoint: Annotated[
        str, typer.Option("--endpoint", envvar="CLAWTUNE_ENDPOINT", help="The running gateway.")
    ] = "http://127.0.0.1:8000",
    admin_key: Annotated[
        str | None, typer.Option("--admin-key", envvar="CLAWTUNE_ADMIN_KEY", help=ADMIN_KEY_HELP)
    ] = None,
) -> None:
    """Serve B behind the agent's model id from now on, by hand (the gateway and its models.yaml, with a backup)."""
    from clawtune.loop import canary

    try:
        canary.promote_now(endpoint, admin_key, experiment_id, _registration(register, openclaw_config, agent))
    except InputError as exc:
        _fail(str(exc))


@abtest_app.command("resume")
def ft_ab_test_resume(
    experiment_id: Annotated[str, typer.Argument(help="The running experiment to drive again.")],
    refresh: Annotated[float, typer.Option("--refresh", help="Seconds between refreshes.", min=0.1)] = 5.0,
    output: Annotated[Path | None, typer.Option("--output", help="Report folder (default ./ab-tests/ID).")] = None,
    endpoint: Annotated[
        str, typer.Option("--endpoint", envvar="CLAWTUNE_ENDPOINT", help="The running gateway.")
    ] = "http://127.0.0.1:8000",
    admin_key: Annotated[
        str | None, typer.Option("--admin-key", envvar="CLAWTUNE_ADMIN_KEY", help=ADMIN_KEY_HELP)
    ] = None,
) -> None:
    """Take over a running test whose `ft ab-test` was stopped: same settings, the ramp where the gateway has it,
    the duration counted from the experiment's start."""
    from clawtune.loop import abtest

    try:
        abtest.resume(
            abtest.RunOptions(
                abtest.Settings("", ""), endpoint, admin_key, experiment_id, refresh, output, live=sys.stdout.isatty()
            )
        )
    except InputError as exc:
        _fail(str(exc))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code instead of exiting, so tests can call it in-process."""
    try:
        # Without standalone mode click hands back an Exit's code as the return value.
        code = app(args=argv, prog_name="clawtune", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except TyperException as exc:  # usage errors (unknown option, bad value) in non-standalone mode
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except (KeyboardInterrupt, Abort):
        typer.echo("interrupted", err=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
