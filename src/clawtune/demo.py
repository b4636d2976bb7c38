"""`clawtune demo`: the whole pipeline on the bundled sample agent and tiny model, saying where each output is.

Each stage prints the command it stands for and runs that command's own options object through the same function
the command line calls (`command_line` writes the printed line from that object), so what is printed is what ran.
The gateway is the exception: it runs in-process here, on a free port, with an admin key made for the run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rich.console import Console

from clawtune.data.options import AugmentOptions, TrainingDataOptions
from clawtune.models import TINY_AGENT
from clawtune.options import command_line
from clawtune.problems import InputError, Problems
from clawtune.sample import make_state_dir

SEED_DATE_RANGE = "2026-04-01:2026-05-20"
DEMO_SESSIONS = 1000  # about 600 in the seed's date range: 265 distinct conversations once duplicates are dropped
DEMO_SPLIT = "70:10:20"  # a fifth held out, so the paired test has enough turns to tell a real difference
# The augmentation's factor. Measured (2026-12-03, 2 idle cores): at 1 the first training takes 200 s instead of 660 s,
# but the fine-tune's win is gone (accuracy 0.0% -> 2.1%, McNemar p = 0.25); 3 keeps it (0.0% -> 15.3%, p = 4.8e-7).
DEMO_FACTOR = 3.0
ALL_METRICS = "accuracy,f1,tool_calls,refusal,hallucination,latency,tokens,cost,forgetting"


def show(console: Console, command: str, options: Any) -> None:
    """Print `clawtune COMMAND ...` as the options object about to run says it."""
    console.print(command_line(command, options), highlight=False, markup=False)


def write_demo_config(
    output: Path, path: Path | None = None, output_dir: str = "fine-tuned-model", console: Console | None = None
) -> Path:
    """`clawtune ft init --base-model clawtune/tiny-agent --preset tiny-agent`: the seed's values, changed where a
    3M-parameter model on a CPU needs it; each line of the file says so."""
    from clawtune.train.config import init_command
    from clawtune.train.options import InitOptions

    options = InitOptions(
        base_model=TINY_AGENT,
        output_dir=Path(output_dir),
        config=path or output / "ft-config.yaml",
        train="ft-data/augmented.jsonl",
        validation="ft-data/validation.jsonl",
        force=True,
        preset="tiny-agent",
    )
    if console is not None:
        show(console, "ft init", options)
    init_command(options)
    return options.config


def run_demo(output: Path, train_steps: int | None = None, eval_limit: int | None = None) -> None:
    """Sample agent -> export -> validate -> augment -> train -> evaluate -> export -> serve (a chat, an A/B test,
    rated traffic) -> collect failures -> retrain with replay -> the gate."""
    console = Console()
    output.mkdir(parents=True, exist_ok=True)
    state = sample_agent(output, console)
    data = export_data(output, state, console)
    check_data(data, console)
    augment_data(data, console)
    checkpoint = train_model(output, console, train_steps)
    evaluate_model(checkpoint, data, console, eval_limit)
    exports = export_model(output, checkpoint, state, console)
    console.rule("[bold]8. clawtune serve, and a chat with a tool through the official openai client")
    production = production_scripts(output, state, console, 24 if eval_limit else PRODUCTION_TURNS)
    serve_demo(output, exports / "openclaw-lora", console, data / "test.jsonl", production)
    console.rule("[bold]11. clawtune agent collect-failures, a retrain with replay (the seed's command), and the gate")
    improve_demo(output, state, checkpoint, data, console, train_steps, eval_limit)
    console.rule("[bold]Done")
    console.print(f"Everything is under {output}/.")
    console.print(
        f"Look at it all: clawtune ui --runs {output} --log {output / 'serve-data'}   (prints a one-time admin key; "
        "then open http://127.0.0.1:8010/ui/)",
        highlight=False,
    )


def sample_agent(output: Path, console: Console) -> Path:
    """1. The sample agent's OpenClaw state folder."""
    console.rule("[bold]1. Sample agent logs")
    state = make_state_dir(output, n_sessions=DEMO_SESSIONS)
    console.print(f"OpenClaw state folder for agent my-agent (JSONL files, cold archives, SQLite store): {state}")
    return state


def export_data(output: Path, state: Path, console: Console) -> Path:
    """2. The seed's export command, on the seed's date range."""
    from clawtune.data.build import export_training_data
    from clawtune.data.report import print_export_summary

    console.rule("[bold]2. clawtune agent export-training-data")
    data = output / "ft-data"
    options = TrainingDataOptions(
        agent_id="my-agent",
        output=data,
        state_dirs=[state],
        min_samples=100,
        date_range=SEED_DATE_RANGE,
        split=DEMO_SPLIT,
        force=True,  # the demo owns its output folder: a second run replaces the first
    )
    show(console, "agent export-training-data", options)
    print_export_summary(export_training_data(options), data)
    return data


def check_data(data: Path, console: Console) -> None:
    """3. Every exported file validates (the demo stops if one does not)."""
    from clawtune.data.validate import validate_files

    console.rule("[bold]3. clawtune ft validate")
    files = [data / "raw.jsonl", data / "validation.jsonl", data / "test.jsonl"]
    console.print("clawtune ft validate " + " ".join(str(f) for f in files), highlight=False, markup=False)
    result = validate_files(files)
    if not result.ok:
        raise InputError(f"the exported data does not validate: {[str(p) for p in result.problems.items[:5]]}")
    console.print(f"[green]OK[/]: {result.examples} examples in {', '.join(str(f) for f in files)} are valid")


def augment_data(data: Path, console: Console) -> None:
    """4. The mix before, the augmentation toward the seed's recipe, the mix after."""
    from clawtune.data.augment import run_augment

    console.rule(f"[bold]4. clawtune ft data-stats (before) and ft augment-data --factor {DEMO_FACTOR:g} --balance")
    print_stats(data / "raw.jsonl")
    options = AugmentOptions(
        input=data / "raw.jsonl", output=data / "augmented.jsonl", factor=DEMO_FACTOR, balance=True, force=True
    )
    show(console, "ft augment-data", options)
    run_augment(options)
    print_stats(options.output)


def print_stats(path: Path) -> None:
    """`clawtune ft data-stats FILE`."""
    from clawtune.data.recipe import data_stats, print_data_stats
    from clawtune.data.validate import iter_examples

    print_data_stats(data_stats([e for _, e in iter_examples(path, Problems())]), path.name)


def train_model(output: Path, console: Console, train_steps: int | None) -> Path:
    """5. `ft init` with the tiny-agent preset, then `ft train`; returns the last checkpoint."""
    from clawtune.train.options import TrainOptions
    from clawtune.train.run import run_training

    console.rule("[bold]5. clawtune ft train (LoRA on the bundled tiny model, on this machine's CPU or GPU)")
    config_path = write_demo_config(output, console=console)
    options = TrainOptions(config_file=config_path, max_steps=train_steps, force=True)
    show(console, "ft train", options)
    summary = run_training(options)
    losses = summary["losses"]
    console.print(
        f"loss {losses[0]['loss']:.3f} -> {losses[-1]['loss']:.3f} over {summary['steps']} steps; "
        f"{summary['this_run']['non_pad_tokens_per_s']:,} non-pad tokens/s",
        highlight=False,
    )
    return Path(summary["checkpoint"])


# Answers are cut at 160 new tokens, not 256: the longest reference answer of the demo's test split is 158 tokens,
# and a model that has not learnt to stop (the base) otherwise spends most of the evaluation's time on text past it.
DEMO_MAX_NEW_TOKENS = 160
# 16 answers at a time, not 8: the tiny model's decoding steps cost about the same for either on 2 cores (measured:
# the base's 64 test answers in 16.6 s against 19.8 s, the same tokens).
DEMO_EVAL_BATCH = 16


def quick(options: Any, eval_limit: int | None) -> Any:
    """The demo's evaluation settings; a quick run's (`--eval-limit`): fewer turns, a smaller forgetting set, shorter
    answers."""
    options.max_new_tokens = DEMO_MAX_NEW_TOKENS
    options.batch_size = DEMO_EVAL_BATCH
    if eval_limit:
        options.limit, options.forgetting_size, options.max_new_tokens = eval_limit, min(eval_limit, 60), 32
    return options


def evaluate_model(checkpoint: Path, data: Path, console: Console, eval_limit: int | None) -> None:
    """6. The base model against the fine-tuned adapter, on the held-out split."""
    from clawtune.evaluate.options import EvalOptions
    from clawtune.evaluate.run import run_evaluation

    console.rule("[bold]6. clawtune ft evaluate (the base model vs the fine-tuned adapter, on the held-out split)")
    options = quick(
        EvalOptions(test_set=data / "test.jsonl", model_dir=str(checkpoint), metrics=ALL_METRICS), eval_limit
    )
    show(console, "ft evaluate", options)
    report = run_evaluation(options)
    if not report["comparison"]["significant"] and not eval_limit:
        console.print(
            "[yellow]No significant win for the fine-tuned model in this run: the worst failures in the report show "
            "what it got wrong.[/]"
        )


def export_model(output: Path, checkpoint: Path, state: Path, console: Console) -> Path:
    """7. Every export format, each parity-checked, and the OpenClaw registration it would make (a dry run)."""
    from clawtune.export.options import ExportOptions
    from clawtune.export.run import export, print_summary
    from clawtune.openclaw.register import Registration, register

    console.rule("[bold]7. clawtune ft export (every format, each parity-checked) and clawtune openclaw register")
    options = ExportOptions(model_dir=checkpoint, output=output / "exports" / "demo-agent", format="all", force=True)
    show(console, "ft export", options)
    print_summary(export(options), options.register_endpoint)
    config = state / "openclaw.json"
    console.print(
        f"clawtune openclaw register --model-id demo-agent --endpoint http://127.0.0.1:8000/v1 --agent my-agent "
        f"--primary --context-window 32768 --max-tokens 4096 --config {config} --dry-run",
        highlight=False,
    )
    registration = register(
        Registration(
            "demo-agent",
            "http://127.0.0.1:8000/v1",
            agent="my-agent",
            primary=True,
            context_window=32768,
            max_tokens=4096,
        ),
        config,
        dry_run=True,
    )
    console.print(registration.diff, highlight=False, markup=False)
    return options.output


def serve_demo(
    output: Path,
    adapter: Path,
    console: Console,
    test_set: Path | None = None,
    production: list[dict[str, Any]] | None = None,
) -> None:
    """Start the gateway on the demo adapter, send one chat with a tool (and OpenClaw's long prompt), A/B test the base
    against the fine-tune on simulated traffic (when a held-out set is given), stop it."""
    import secrets

    from clawtune.serve.app import Gateway, Server
    from clawtune.serve.config import load

    config_path = write_models_file(output, adapter)
    console.print(f"clawtune serve --config {config_path}", highlight=False)
    config = load(config_path)
    admin_key = secrets.token_urlsafe(24)  # for this run only: never written to the file
    config.server.admin_keys = [admin_key]
    with Server(Gateway(config)) as server:
        console.print(f"serving demo-agent and tiny-base on {server.url}/v1", highlight=False)
        chat_with_a_tool(server.url, console)
        if test_set is not None:
            console.rule("[bold]9. clawtune ft ab-test: the base against the fine-tune, on simulated traffic")
            ab_test_demo(output, server.url, admin_key, test_set, console)
        if production:
            console.rule("[bold]10. The fine-tune at work: simulated traffic, rated by simulated users")
            traffic_demo(server.url, production, console)
    console.print(f"stopped; every request is in {server.gateway.log.path}", highlight=False)


def write_models_file(output: Path, adapter: Path) -> Path:
    """models.yaml: demo-agent (the base with the demo's adapter) and tiny-base, on a free port."""
    import yaml

    path = output / "models.yaml"
    models = {
        "models": [
            {
                "id": "demo-agent",
                "provider": "clawtune",
                "model": TINY_AGENT,
                "adapters": {"demo-lora": {"path": str(adapter.resolve())}},  # the file's paths are relative to it
                "tags": ["finance"],
            },
            {"id": "tiny-base", "provider": "clawtune", "model": TINY_AGENT},
        ],
        "default_model": "tiny-base",
        "server": {"port": 0, "data_dir": str((output / "serve-data").resolve())},
    }
    path.write_text(yaml.safe_dump(models, sort_keys=False), encoding="utf-8")
    return path


def chat_with_a_tool(url: str, console: Console) -> None:
    """One request as OpenClaw sends it (its long system prompt, a tool), through the official openai client."""
    import openai

    from clawtune.export.parity import SAMPLE

    client: Any = openai.OpenAI(base_url=url + "/v1", api_key="clawtune-local", max_retries=0)
    long_prompt = ("You are OpenClaw. Workspace files, skills and the tool catalog follow. " * 700)[:48000]
    messages = [
        {"role": "system", "content": long_prompt},
        {"role": "user", "content": "What was the revenue in EMEA last quarter?"},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="demo-agent", messages=messages, tools=SAMPLE["tools"], max_tokens=64
    )
    reply = raw.parse()
    message = reply.choices[0].message
    console.print(
        f"POST /v1/chat/completions model=demo-agent, with a tool and a {len(long_prompt):,}-character system "
        f"prompt -> finish_reason {reply.choices[0].finish_reason}, request id {raw.headers['x-request-id']}",
        highlight=False,
    )
    if message.content:
        console.print(f"  content: {message.content!r}", highlight=False, markup=False)
        if "<tool_call>" in message.content:
            console.print(
                "  (the model wrote a tool call the server could not read as JSON for an offered tool, so it comes "
                "back as text, logged as an invalid call, instead of being handed to the agent to run)",
                highlight=False,
                markup=False,
            )
    for call in message.tool_calls or []:
        console.print(f"  tool call: {call.function.name}({call.function.arguments})", highlight=False, markup=False)
    used = reply.usage.model_extra or {}
    console.print(
        f"  prompt tokens {reply.usage.prompt_tokens:,} (the agent's own prompt would have been "
        f"{used.get('prompt_tokens_before_policy', 0):,}: the adapter's training replaced it with a short one), "
        f"completion tokens {reply.usage.completion_tokens}",
        highlight=False,
    )


AB_DEMO_SECONDS = 12


def ab_test_demo(output: Path, url: str, admin_key: str, test_set: Path, console: Console) -> None:
    """A short A/B test: simulated users replay held-out turns asking for tiny-base (the incumbent), the gateway splits
    them between it and demo-agent, each user rates the answer against the held-out reference, and the test reports."""
    from clawtune.evaluate.backends import load_items
    from clawtune.loop.abtest import RunOptions, Settings, SimulatedUsers, reference_rater, run_ab_test

    items = load_items(test_set, Problems())
    scripts = [{"messages": i.prompt, "tools": i.tools, "reference": i.reference} for i in items]
    folder = output / "ab-test"
    console.print(
        f"clawtune ft ab-test --model-a tiny-base --model-b demo-agent --traffic-split 50:50 "
        f"--duration {AB_DEMO_SECONDS}s --metrics user_satisfaction,accuracy,latency --endpoint {url} "
        f"--admin-key ... --output {folder}",
        highlight=False,
    )
    console.print(
        f"(simulated users replay the {len(scripts)} held-out turns asking for tiny-base, and rate each answer "
        "against the held-out reference: positive when ft evaluate's scorer finds it right)",
        highlight=False,
    )
    settings = Settings(
        "tiny-base",
        "demo-agent",
        metrics=["user_satisfaction", "accuracy", "latency"],
        primary="user_satisfaction",
        duration_s=AB_DEMO_SECONDS,
    )
    with SimulatedUsers(url, "tiny-base", reference_rater(), scripts, workers=4, max_tokens=48, replay=True) as users:
        options = RunOptions(settings, url, admin_key, refresh_s=2.0, output=folder, live=console.is_terminal)
        report = run_ab_test(options, console)
    if users.errors:
        console.print(f"{len(users.errors)} simulated requests failed; the first: {users.errors[0]}", highlight=False)
    result = report["result"]
    console.print(f"A/B verdict: {result['verdict']} ({result['primary']}): {result['reason']}", highlight=False)


PRODUCTION_RANGE = "2026-05-21:2026-07-31"  # after the training data's range: the agent's later conversations
PRODUCTION_TURNS = 120  # about 0.6 s a request on 2 cores: the stage's length


def production_scripts(output: Path, state: Path, console: Console, turns: int) -> list[dict[str, Any]]:
    """The sample agent's turns after the training period, exported as the agent would have them: what simulated
    users send to the fine-tune (nothing of it was trained or evaluated on)."""
    from clawtune.data.build import export_training_data
    from clawtune.evaluate.backends import load_items

    folder = output / "ft-data-production"
    report = export_training_data(
        TrainingDataOptions(
            agent_id="my-agent",
            output=folder,
            state_dirs=[state],
            date_range=PRODUCTION_RANGE,
            split="1:0:0",
            force=True,
        )
    )
    items = load_items(folder / "raw.jsonl", Problems())[:turns]
    console.print(
        f"(later traffic: the first {len(items)} turns of the {report['examples_written']} conversations the "
        f"sample agent had in {PRODUCTION_RANGE}, after the training data's range)",
        highlight=False,
    )
    return [{"messages": i.prompt, "tools": i.tools, "reference": i.reference} for i in items]


def traffic_demo(url: str, scripts: list[dict[str, Any]], console: Console) -> None:
    """Every later turn sent once to demo-agent (the fine-tune) through the gateway; a simulated user rates each
    answer through /v1/feedback, negative when ft evaluate's scorer finds it wrong against the agent's own answer."""
    from clawtune.loop.abtest import SimulatedUsers, reference_rater

    console.print(
        f"SIMULATED: {len(scripts)} requests to demo-agent, each rated by a scripted user (not a person) through "
        "POST /v1/feedback",
        highlight=False,
    )
    ratings: list[str] = []
    rater = reference_rater()

    def rate(arm: str, script: dict[str, Any], response: dict[str, Any]) -> str | None:
        rating = rater(arm, script, response)
        ratings.append(str(rating))
        return rating

    with SimulatedUsers(url, "demo-agent", rate, scripts, workers=4, max_tokens=48, replay=True, once=True) as users:
        users.wait()
    console.print(
        f"{ratings.count('positive')} rated positive, {ratings.count('negative')} negative"
        + (f"; {len(users.errors)} requests failed, the first: {users.errors[0]}" if users.errors else ""),
        highlight=False,
    )


def improve_demo(
    output: Path,
    state: Path,
    checkpoint: Path,
    data: Path,
    console: Console,
    train_steps: int | None,
    eval_limit: int | None,
) -> None:
    """collect-failures (the gateway's negative ratings and the agent's tool errors) -> a simulated person corrects
    what the agent did not -> the seed's retraining command with replay -> the gate, against the checkpoint before."""
    failures = collect(output, state, data, console)
    retrained = retrain(output, failures, checkpoint, console, train_steps)
    gate(retrained, checkpoint, data, failures, console, eval_limit)


def collect(output: Path, state: Path, data: Path, console: Console) -> Path:
    """The failures, then the same command again with a (simulated) person's corrections."""
    from clawtune.loop.failures.collect import collect_failures, print_summary
    from clawtune.loop.failures.options import CollectOptions

    options = CollectOptions(
        agent_id="my-agent",
        output=output / "failure-cases",
        criteria="user_feedback=negative OR tool_call_error=true",
        state_dirs=[state],
        gateway_log=output / "serve-data",
        gateway_models=["demo-agent"],
        exports=[data],  # never train on a session (or an example) the evaluation holds out
        force=True,
    )
    show(console, "agent collect-failures", options)
    print_summary(collect_failures(options), options.output)
    person = output / "person-review.jsonl"
    written, unmatched = simulated_person(options.output, output / "ft-data-production" / "raw.jsonl", person)
    console.print(
        f"SIMULATED: a scripted reviewer (standing in for a person) fills in {written} corrections from the agent's "
        f"own answers to those turns ({unmatched} it could not match), written to {person}",
        highlight=False,
    )
    options.corrections = person
    show(console, "agent collect-failures", options)
    print_summary(collect_failures(options), options.output)
    return options.output


def retrain(output: Path, failures: Path, checkpoint: Path, console: Console, train_steps: int | None) -> Path:
    """The seed's retraining command: the corrected failures, continued from the checkpoint, with replay."""
    from clawtune.train.options import TrainOptions
    from clawtune.train.run import run_training

    config_path = output / "ft-config-v2.yaml"
    write_demo_config(output, config_path, "fine-tuned-model-v2", console)
    # A retrain continues a trained adapter: the first run's 5e-3 step undoes what it learned (measured: 12 test items
    # broken, none fixed); a fifth of it.
    text = re.sub(
        r"(?m)^  learning_rate: .*$",
        f"  learning_rate: {RETRAIN_LR}   # a retrain: a fifth of the first run's step",
        config_path.read_text(encoding="utf-8"),
    )
    config_path.write_text(text, encoding="utf-8")
    options = TrainOptions(
        config_file=config_path,
        data=failures,
        resume=checkpoint,
        max_steps=train_steps or RETRAIN_STEPS,
        force=True,
    )
    show(console, "ft train", options)
    console.print(
        "(training.replay: a quarter the first training's data, a quarter general conversations)", highlight=False
    )
    return Path(run_training(options)["checkpoint"])


def gate(
    retrained: Path, checkpoint: Path, data: Path, failures: Path, console: Console, eval_limit: int | None
) -> None:
    """The retrained checkpoint against the one before, on the held-out failures, the test set and forgetting."""
    from clawtune.evaluate.options import EvalOptions
    from clawtune.evaluate.run import run_evaluation

    options = EvalOptions(
        test_set=data / "test.jsonl", model_dir=str(retrained), baseline=str(checkpoint), held_out=failures
    )
    options = quick(options, eval_limit)
    show(console, "ft evaluate", options)
    run_evaluation(options)


RETRAIN_STEPS = 60
RETRAIN_LR = "1e-3"


def simulated_person(failures: Path, production: Path, out: Path) -> tuple[int, int]:
    """Corrections for every failure still without one (review.jsonl, and the held-out ones, which a gate needs a
    right answer for): the agent's own answer to the same turn in the later traffic, found by the conversation before
    it (its words and calls, without the system prompt and the call ids: a tool call and the answer after its result
    share their user message, not their context)."""
    import json

    from clawtune.evaluate.backends import load_items
    from clawtune.evaluate.run import prompt_key
    from clawtune.logs.lines import iter_json_lines

    answers = {prompt_key(i.prompt): i.reference for i in load_items(production, Problems())}
    rows, unmatched = [], 0
    for name in ("review.jsonl", "held-out.jsonl"):
        for _, row in iter_json_lines(failures / name, Problems()):
            messages = list(row.get("messages") or [])
            failure_id = row.get("failure_id") or (row.get("metadata") or {}).get("failure_id")
            if name == "held-out.jsonl" and any(m.get("weight") == 1 for m in messages):
                continue  # corrected already (the agent's own recovery)
            while messages and messages[-1].get("role") == "assistant":
                messages.pop()  # the failed answer: what came before it is the turn's context
            reference = answers.get(prompt_key(messages))
            if reference is None or not failure_id:
                unmatched += 1
                continue
            correction = {k: v for k, v in reference.items() if k in ("role", "content", "tool_calls")}
            rows.append({"failure_id": failure_id, "correction": [correction]})
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows), unmatched
