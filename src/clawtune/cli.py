"""The `clawtune` command line. Commands mirror the seed with `openclaw` replaced by `clawtune`.

Each command imports its work lazily so `clawtune --help` answers at once; `main(argv) -> int` runs in-process
for tests. Bad input ends in one clear message (exit 2), never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

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
app.add_typer(agent_app, name="agent")
app.add_typer(ft_app, name="ft")


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
        bool, typer.Option("--keep-images", help="Keep an [image] placeholder where images were.")
    ] = False,
    drop_failures: Annotated[
        bool, typer.Option("--drop-failures", help="Drop examples with tool errors or aborted turns.")
    ] = False,
    split: Annotated[str, typer.Option("--split", help="train:validation:test ratios.")] = "80:10:10",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the session split.")] = 42,
    strict: Annotated[
        bool, typer.Option("--strict", help="Stop at the first bad line instead of reporting and skipping it.")
    ] = False,
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
        )
        report = export_training_data(options)
    except InputError as exc:
        _fail(str(exc))
    print_export_summary(report, output)


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


@app.command("demo")
def demo(
    output: Annotated[Path, typer.Option("--output", help="Folder for everything the demo writes.")] = Path(
        "demo-output"
    ),
) -> None:
    """Run every stage that exists on the bundled sample agent, and say where each output is."""
    from clawtune.demo import run_demo

    try:
        run_demo(output)
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
