"""The `clawtune` command line: it declares the commands and dispatches; the work is in the stages.

Commands mirror the seed with `openclaw` replaced by `clawtune`. A command with many options takes them from its
stage's options dataclass (`clawtune.options`: each option's default, flag and help declared once, there). Each
command imports its work lazily so `clawtune --help` answers at once; `main(argv) -> int` runs in-process for tests.
Bad input ends in one clear message (exit 2), never a traceback: `main()` turns every `InputError` into that.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import MISSING
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.exceptions import Abort, TyperException

from clawtune.data.options import AugmentOptions, TrainingDataOptions
from clawtune.evaluate.options import EvalOptions
from clawtune.export.options import ExportOptions
from clawtune.loop.failures.options import CollectOptions
from clawtune.loop.options import ABTestOptions, PromoteOptions, ResumeOptions, RollbackOptions, StatusOptions
from clawtune.options import declared, default_of
from clawtune.problems import InputError
from clawtune.train.options import InitOptions, TrainOptions

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

Run = Callable[[Any], int | None]  # a command's work: its exit code (None: 0)


def options_command(
    group: typer.Typer, name: str | None, options: type, help: str | None = None
) -> Callable[[Run], Run]:
    """Declare command `name` whose options are the `flag` fields of the dataclass `options`, in their order; the
    decorated function (its docstring is the command's help) gets the options object, built and checked. With
    `name` None it is the group's own callback, which runs only when no subcommand is named."""
    specs = declared(options)
    namespace = vars(sys.modules[options.__module__])

    def parameter(spec: Any, cli: Any) -> inspect.Parameter:
        # Only the declared fields' annotations are resolved (typing.get_type_hints would resolve every field's,
        # including types imported for type checking only); they are the options module's own code.
        annotation = eval(spec.type, namespace) if isinstance(spec.type, str) else spec.type
        default = default_of(spec)
        if cli.invert:
            default = not default  # the switch is off by default; given, it turns the field off
        elif spec.default_factory is not MISSING:
            annotation, default = annotation | None, None  # a repeated option: none given is the empty list
        if cli.required:
            default = MISSING
        info = (
            typer.Argument(help=cli.help, **cli.settings)
            if cli.argument
            else typer.Option(cli.name, help=cli.help, **cli.settings)
        )
        return inspect.Parameter(
            spec.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if default is MISSING else default,
            annotation=Annotated[annotation, info],
        )

    def register(run: Run) -> Run:
        def command(ctx: typer.Context, **values: Any) -> None:
            if ctx.invoked_subcommand is not None:
                return
            for spec, cli in specs:
                if cli.invert:
                    values[spec.name] = not values[spec.name]
                elif spec.default_factory is not MISSING and values[spec.name] is None:
                    values[spec.name] = spec.default_factory()
            code = run(options(**values))
            if code:
                raise typer.Exit(code)

        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        parameters = [context, *(parameter(spec, cli) for spec, cli in specs)]
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__doc__ = run.__doc__
        given: dict[str, Any] = {} if help is None else {"help": help}  # None given would hide the group's help
        if name is None:
            group.callback(**given)(command)
        else:
            group.command(name, **given)(command)
        return run

    return register


@options_command(agent_app, "export-training-data", TrainingDataOptions)
def export_training_data(options: TrainingDataOptions) -> None:
    """Export an agent's sessions as scrubbed OpenAI chat JSONL, split by session into train/validation/test."""
    from clawtune.data.build import export_training_data
    from clawtune.data.report import print_export_summary
    from clawtune.loop.gateway import add_gateway_source

    options.progress = sys.stderr.isatty()
    print_export_summary(export_training_data(add_gateway_source(options)), options.output)


def _collect_help() -> str:
    from clawtune.loop.failures.fields import grammar_help  # no parser imported: --help stays fast

    return (
        "Collect the agent's failing turns (OpenClaw stores, the gateway's log, an evaluation's wrong answers) with "
        "corrections: failures, "
        "corrected examples, preference pairs, a review file for a person, and a held-out share.\n\n" + grammar_help()
    )


@options_command(agent_app, "collect-failures", CollectOptions, help=_collect_help())
def collect_failures(options: CollectOptions) -> None:
    from clawtune.loop.failures.collect import collect_failures, print_summary

    options.progress = sys.stderr.isatty()
    print_summary(collect_failures(options), options.output)


@ft_app.command("validate")
def validate(
    files: Annotated[list[Path], typer.Argument(help="OpenAI chat JSONL files to check.")],
    output: Annotated[
        Path | None, typer.Option("--output", help="Write the normalised examples (tool-call ids added) here.")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first problem.")] = False,
) -> None:
    """Check chat JSONL: roles, tool-call ids answered, JSON arguments, a trained turn, tool schemas; all at once."""
    from clawtune.data.validate import validate_command

    raise typer.Exit(validate_command(files, output, strict))


@ft_app.command("data-stats")
def data_stats_command(
    files: Annotated[list[Path], typer.Argument(help="OpenAI chat JSONL files.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
) -> None:
    """The mix against the seed's recipe (30% normal, 20% edge, 20% refusal, 15% multi-turn, 15% tool call), token
    lengths, tool usage, duplicates, and what to add."""
    from clawtune.data.recipe import data_stats_command

    data_stats_command(files, as_json)


@options_command(ft_app, "augment-data", AugmentOptions)
def augment_data(options: AugmentOptions) -> None:
    """Grow a training set N-fold with transformations that keep tool calls, results and answers consistent."""
    from clawtune.data.augment import run_augment

    run_augment(options)


@options_command(ft_app, "init", InitOptions)
def ft_init(options: InitOptions) -> None:
    """Write a commented ft-config.yaml with the seed's values (LoRA r=16, alpha=32, lr 2e-4, ...)."""
    from clawtune.train.config import init_command

    init_command(options)


@options_command(ft_app, "train", TrainOptions)
def ft_train(options: TrainOptions) -> int:
    """Fine-tune (LoRA, QLoRA or full) with assistant-only loss, isolated packing and resumable checkpoints."""
    from clawtune.train.run import train_command

    return train_command(options)


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
    from clawtune.train.check import check_template_command

    raise typer.Exit(check_template_command(base, data, tokenizer, max_refused, as_json))


@options_command(ft_app, "evaluate", EvalOptions)
def ft_evaluate(options: EvalOptions) -> int:
    """Baseline vs fine-tuned on held-out turns: accuracy, F1, tool calls, refusals, hallucination, latency, cost."""
    from clawtune.evaluate.run import gate_exit_code, run_evaluation

    return gate_exit_code(run_evaluation(options))


@options_command(ft_app, "export", ExportOptions)
def ft_export(options: ExportOptions) -> None:
    """Ship a trained model: the adapter, a merged model, GGUF, Ollama and vLLM, each parity-checked."""
    from clawtune.export.run import export, print_summary

    print_summary(export(options), options.register_endpoint)


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
    # The body stays here: it composes the gateway (serve) with the A/B tests' watchdog (loop) and the dashboard (ui),
    # and only the command line sits above all three layers.
    import signal

    from clawtune.extras import require

    require("uvicorn", "serve", "clawtune serve")
    require("fastapi", "serve", "clawtune serve")
    from clawtune.serve.app import Gateway, Server, bind
    from clawtune.serve.config import load

    settings = load(config)
    address = (host or settings.server.host, settings.server.port if port is None else port)
    try:
        sock = bind(*address)  # before loading any model: a port in use is said at once
    except OSError as exc:
        raise InputError(
            f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc} (--port, or server.port in {config})"
        ) from None
    from clawtune.loop.canary import Watchdog

    try:
        gateway = Gateway(settings, data_dir=data_dir)
        gateway.watchdog = Watchdog(gateway)  # the A/B tests' guardrails hold even when no `ft ab-test` runs
        server = Server(gateway, address[0], sock=sock)
    except InputError:
        sock.close()
        raise
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
    from clawtune.extras import require

    require("uvicorn", "serve", "clawtune ui")
    require("fastapi", "serve", "clawtune ui")
    from clawtune.ui.command import run_ui

    run_ui(runs, log, host, port, config, admin_key, endpoint)


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
    from clawtune.serve.chat_client import chat_command

    chat_command(model, message, endpoint, api_key, system, json_output)


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

    run_demo(output, train_steps, eval_limit)


# ---- ft ab-test: the command's logic is in clawtune.loop.abtest --------------------------------------------------

abtest_app = typer.Typer(
    help="A/B test two models on a running gateway's traffic (always-valid statistics, guardrails, --canary ramps); "
    "`status [ID]` shows one, `rollback ID` / `promote ID` / `resume ID` act on one.",
    invoke_without_command=True,
)
ft_app.add_typer(abtest_app, name="ab-test")


@options_command(abtest_app, None, ABTestOptions)
def ft_ab_test(options: ABTestOptions) -> None:
    """Split the requests for model A's id between A and B on a running `clawtune serve` (sticky per session),
    refresh a live table every few seconds, and end at --duration or as soon as the primary metric is decided.
    Guardrails roll B back on a breach; --canary ramps B's share in steps; --promote-if-better promotes B."""
    from clawtune.loop.abtest import ab_test_command

    ab_test_command(options, live=sys.stdout.isatty())


@options_command(abtest_app, "status", StatusOptions)
def ft_ab_test_status(options: StatusOptions) -> None:
    """Any experiment, running or past: its arms' figures, every metric's interval and the verdict."""
    from clawtune.loop import abtest

    abtest.status(options.endpoint, options.admin_key, options.experiment_id)


@options_command(abtest_app, "rollback", RollbackOptions)
def ft_ab_test_rollback(options: RollbackOptions) -> None:
    """Every request for the experiment's model back to A at once; a promotion is undone (the gateway, its
    models.yaml, and OpenClaw's primary model when the promotion registered B)."""
    from clawtune.loop import canary

    canary.rollback(options.endpoint, options.admin_key, options.experiment_id, options.reason)


@options_command(abtest_app, "promote", PromoteOptions)
def ft_ab_test_promote(options: PromoteOptions) -> None:
    """Serve B behind the agent's model id from now on, by hand (the gateway and its models.yaml, with a backup)."""
    from clawtune.loop import canary
    from clawtune.loop.options import registration

    registered = registration(options.register, options.openclaw_config, options.agent)
    canary.promote_now(options.endpoint, options.admin_key, options.experiment_id, registered)


@options_command(abtest_app, "resume", ResumeOptions)
def ft_ab_test_resume(options: ResumeOptions) -> None:
    """Take over a running test whose `ft ab-test` was stopped: same settings, the ramp where the gateway has it,
    the duration counted from the experiment's start."""
    from clawtune.loop import abtest

    settings = abtest.Settings("", "")
    live = sys.stdout.isatty()
    run = abtest.RunOptions(
        settings, options.endpoint, options.admin_key, options.experiment_id, options.refresh, options.output, live
    )
    abtest.resume(run)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code instead of exiting, so tests can call it in-process."""
    try:
        # Without standalone mode click hands back an Exit's code as the return value.
        code = app(args=argv, prog_name="clawtune", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except InputError as exc:  # bad input, from any command: one clear message, no traceback
        typer.secho(f"error: {exc}", fg="red", err=True)
        return 2
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
