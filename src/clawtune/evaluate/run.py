"""`clawtune ft evaluate`: both sides answer the same held-out turns; every metric with its interval; a verdict
that claims a win only when McNemar's test on the paired outcomes says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from clawtune.data.recipe import CATEGORIES
from clawtune.evaluate.backends import EndpointBackend, Generation, Item, LocalBackend, example_items, load_items
from clawtune.evaluate.metrics import Score, score
from clawtune.evaluate.options import EvalError, EvalOptions
from clawtune.evaluate.stats import bootstrap_ci, mcnemar_exact, percentile
from clawtune.generation import SystemPromptPolicy
from clawtune.problems import Problems

ALPHA = 0.05


T = TypeVar("T")


@dataclass
class Side:
    """One model's answers and scores."""

    label: str
    name: str
    kind: str
    generations: list[Generation] = field(default_factory=list)
    scores: list[Score] = field(default_factory=list)
    judged: list[bool | None] = field(default_factory=list)
    forgetting: list[Score] = field(default_factory=list)
    general_generations: list[Generation] = field(default_factory=list)
    held_out: Side | None = None
    benchmark: list[bool] = field(default_factory=list)
    benchmark_generations: list[Generation] = field(default_factory=list)
    benchmark_reasons: list[str | None] = field(default_factory=list)

    def subset(self, keep: list[int]) -> Side:
        """This side on the items at `keep` (the other sets as they are)."""
        return replace(
            self,
            generations=pick(self.generations, keep),
            scores=pick(self.scores, keep),
            judged=pick(self.judged, keep) if self.judged else [],
        )


def pick(values: list[T], keep: list[int]) -> list[T]:
    """The entries of a per-item list at `keep`."""
    return [values[i] for i in keep]


def keep_answered(
    errors: dict[str, dict[str, Any]], name: str, items: list[Item], base: list[Generation], tuned: list[Generation]
) -> list[int]:
    """The items of set `name` both sides answered; what each side failed to answer is counted in `errors[name]`."""
    errors[name] = errored(items, base, tuned)
    return both_answered(base, tuned)


def both_answered(base: list[Generation], tuned: list[Generation]) -> list[int]:
    """The items both sides answered (an endpoint's failure, once its retries are spent, is no answer)."""
    return [i for i, (b, t) in enumerate(zip(base, tuned, strict=True)) if b.error is None and t.error is None]


def errored(items: list[Item], base: list[Generation], tuned: list[Generation]) -> dict[str, Any]:
    """How many items each side failed to answer, how many were left out for it, and the first few failures."""
    examples = [
        {"id": item.id, "side": label, "error": g.error}
        for item, pair in zip(items, zip(base, tuned, strict=True), strict=True)
        for label, g in zip(("baseline", "fine_tuned"), pair, strict=True)
        if g.error is not None
    ]
    return {
        "baseline": sum(g.error is not None for g in base),
        "fine_tuned": sum(g.error is not None for g in tuned),
        "excluded": len(items) - len(both_answered(base, tuned)),
        "examples": examples[:10],
    }


def _backend(options: EvalOptions, which: str) -> Any:
    """The fine-tuned ("model") or baseline side."""
    from clawtune.models.checkpoint import load_for_inference

    key = os.environ.get(options.api_key_env)
    if which == "model":
        if options.endpoint:
            if not options.endpoint_model:
                raise EvalError("--endpoint needs --endpoint-model (the model id to ask for)")
            return EndpointBackend(options.endpoint, options.endpoint_model, key, options.max_new_tokens)
        if not options.model_dir:
            raise EvalError("give --model-dir (a checkpoint or model folder) or --endpoint")
        loaded = load_for_inference(options.model_dir, allow_base_mismatch=options.allow_base_mismatch, merge=True)
        return LocalBackend(loaded, options.batch_size, options.max_new_tokens)
    # the prompt exactly as the file holds it, in place of the test set's (check_inputs refused an empty file)
    text = options.baseline_system_prompt.read_text(encoding="utf-8") if options.baseline_system_prompt else None
    policy = SystemPromptPolicy("replace", text) if text else None
    if options.baseline_endpoint:
        if not options.baseline_model:
            raise EvalError("--baseline-endpoint needs --baseline-model")
        return EndpointBackend(options.baseline_endpoint, options.baseline_model, key, options.max_new_tokens, policy)
    name = options.baseline
    if name is None:
        from clawtune.artifacts.manifest import MANIFEST, read_manifest

        folder = Path(options.model_dir or "")
        if not options.model_dir or not (folder / MANIFEST).is_file():
            raise EvalError("no baseline: give --baseline (a model) or --baseline-endpoint with --baseline-model")
        name = read_manifest(folder)["base_model"]
    # merged as the model side is: faster, and the same answers as that checkpoint's own evaluation (the gate's case)
    return LocalBackend(load_for_inference(name, merge=True), options.batch_size, options.max_new_tokens, policy)


def check_inputs(options: EvalOptions) -> None:
    """Every file, folder and model the evaluation names, checked before any model answers anything: a typo must
    not surface after the whole baseline pass."""
    if not options.test_set.is_file():
        raise EvalError(f"--test-set {options.test_set}: no such file")
    if options.held_out is not None:
        from clawtune.evaluate.gate import held_out_file

        if not held_out_file(options.held_out).is_file():
            raise EvalError(
                f"--held-out {options.held_out}: no held-out.jsonl (give the folder collect-failures wrote, or a file)"
            )
        if not options.baseline and not options.baseline_endpoint:
            options.baseline = parent_checkpoint(options)
    if options.endpoint:
        if not options.endpoint_model:
            raise EvalError("--endpoint needs --endpoint-model (the model id to ask for)")
    elif not options.model_dir:
        raise EvalError("give --model-dir (a checkpoint or model folder) or --endpoint")
    else:
        _check_model(options.model_dir, "--model-dir", options.allow_base_mismatch)
    if options.baseline_endpoint:
        if not options.baseline_model:
            raise EvalError("--baseline-endpoint needs --baseline-model")
    elif options.baseline:
        _check_model(options.baseline, "--baseline", False)
    elif options.endpoint or not (Path(options.model_dir or "") / "clawtune-manifest.json").is_file():
        raise EvalError(
            "no baseline: --model-dir is not a clawtune checkpoint, so its base model is unknown; give --baseline "
            "(a model) or --baseline-endpoint with --baseline-model"
        )
    if options.baseline_system_prompt is not None:
        if not options.baseline_system_prompt.is_file():
            raise EvalError(f"--baseline-system-prompt {options.baseline_system_prompt}: no such file")
        if not options.baseline_system_prompt.read_text(encoding="utf-8").strip():
            raise EvalError(f"--baseline-system-prompt {options.baseline_system_prompt}: the file is empty")
    if options.benchmark:
        from clawtune.evaluate.bfcl import _package_dir, parse_spec

        parse_spec(options.benchmark)
        _package_dir()
    if bool(options.judge_endpoint) != bool(options.judge_model):
        raise EvalError("--judge-endpoint and --judge-model go together")
    training_set(options)


def parent_checkpoint(options: EvalOptions) -> str:
    """The gate's default baseline: the checkpoint the evaluated one was retrained from (its manifest's parent)."""
    from clawtune.artifacts.manifest import MANIFEST, read_manifest

    folder = Path(options.model_dir or "")
    parent = (read_manifest(folder).get("parent") or {}) if (folder / MANIFEST).is_file() else {}
    if not parent.get("path"):
        raise EvalError(
            "--held-out compares a retrained checkpoint with the one it was retrained from: give --baseline "
            f"CHECKPOINT (the manifest of {options.model_dir} names no parent)"
        )
    return str(parent["path"])


def _check_model(name: str, flag: str, allow_base_mismatch: bool) -> None:
    """A checkpoint (its manifest, its files, its base model) or any model: a local folder, a bundled or hub id."""
    from clawtune.artifacts.manifest import MANIFEST, checkpoints, read_manifest
    from clawtune.models import ModelLoadError, check_base_model
    from clawtune.models.checkpoint import verify_base

    folder = Path(name).expanduser()
    try:
        if (folder / MANIFEST).is_file():
            manifest = read_manifest(folder)
            missing = [f for f in manifest.get("files") or {} if not (folder / f).is_file()]
            if missing:
                raise EvalError(f"{flag} {name}: {', '.join(missing)} listed in {MANIFEST} but missing")
            if manifest.get("kind") != "full":
                check_base_model(str(manifest.get("base_model")))
                verify_base(folder, manifest, allow_base_mismatch)
            return
        if folder.is_dir() and not (folder / "config.json").is_file():
            found = checkpoints(folder)
            hint = f"; its newest checkpoint is {found[-1]}" if found else ""
            raise EvalError(f"{flag} {name}: neither a clawtune checkpoint nor a model folder (no config.json){hint}")
        check_base_model(name)
    except ModelLoadError as exc:
        raise EvalError(f"{flag} {exc}") from None


def _judge(options: EvalOptions, item: Item, generation: Generation, client: Any = None) -> bool | None:
    """Optional LLM-as-judge: does the answer say what the reference says? None when the judge fails."""
    from clawtune.evaluate.metrics import content_text
    from clawtune.openai_http import ERRORS, Client, completions_url

    question = (
        "Reference answer:\n"
        + content_text(item.reference.get("content"))
        + "\n\nCandidate answer:\n"
        + content_text(generation.message.get("content"))
        + "\n\nDoes the candidate give the same information as the "
        "reference, with nothing false added? Reply with one word: yes or no."
    )
    body = {"model": options.judge_model, "messages": [{"role": "user", "content": question}], "temperature": 0}
    try:
        reply = (client or Client()).chat_completion(
            completions_url(options.judge_endpoint or ""), body, os.environ.get(options.api_key_env)
        )
        text = str(reply["choices"][0]["message"]["content"]).strip().lower()
    except ERRORS:
        return None
    return text.startswith("yes")


def _answer(side: Side, backend: Any, items: list[Item], options: EvalOptions, console: Any, judge: bool) -> None:
    from clawtune.progress import progress_bar

    with progress_bar(f"{side.label:<10}", console) as progress:
        task = progress.add_task(side.label, total=len(items))
        side.generations = backend.generate(items, lambda n: progress.advance(task, n))
    side.scores = [
        score(g.message, item.reference, item.prompt, item.tools, g.invalid_calls)
        for item, g in zip(items, side.generations, strict=True)
    ]
    if judge and options.judge_endpoint and options.judge_model:
        from clawtune.openai_http import Client

        client = Client()
        side.judged = [
            None if g.error else _judge(options, item, g, client) if s.kind == "text" else s.correct
            for item, g, s in zip(items, side.generations, side.scores, strict=True)
        ]


def rate(values: list[bool]) -> dict[str, Any]:
    n = len(values)
    if n == 0:
        return {"value": None, "ci": None, "n": 0}
    low, high = bootstrap_ci([float(v) for v in values])
    return {"value": sum(values) / n, "ci": [low, high], "n": n}


def mean(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"value": None, "ci": None, "n": 0}
    low, high = bootstrap_ci(values)
    return {"value": sum(values) / len(values), "ci": [low, high], "n": len(values)}


def summarize(side: Side, items: list[Item], options: EvalOptions) -> dict[str, Any]:
    scores, gens = side.scores, side.generations
    tool_items = [s for s in scores if s.kind == "tool_call"]
    ref_refusals = [s for s in scores if s.reference_refusal]
    pred_refusals = [s for s in scores if s.predicted_refusal]
    out: dict[str, Any] = {"name": side.name, "kind": side.kind, "items": len(scores)}
    out["accuracy"] = rate([s.correct for s in scores])
    out["per_category"] = {
        c: rate([s.correct for s, i in zip(scores, items, strict=True) if i.category == c]) for c in CATEGORIES
    }
    out["f1"] = mean([s.f1 for s in scores])
    out["tool_name_accuracy"] = rate([bool(s.tool_name_correct) for s in tool_items])
    out["tool_call_accuracy"] = rate([bool(s.tool_args_correct) for s in tool_items])
    out["refusal_precision"] = rate([s.reference_refusal for s in pred_refusals])
    out["refusal_recall"] = rate([s.predicted_refusal for s in ref_refusals])
    out["hallucination_rate"] = rate([bool(s.hallucinations) for s in scores])
    latencies = [g.latency_s for g in gens]
    out["latency_p50_s"] = percentile(latencies, 50)
    out["latency_p95_s"] = percentile(latencies, 95)
    out["prompt_tokens_per_request"] = sum(g.prompt_tokens for g in gens) / max(len(gens), 1)
    out["completion_tokens_per_request"] = sum(g.completion_tokens for g in gens) / max(len(gens), 1)
    out["cost_per_request"] = cost(side, options)
    if side.judged:
        out["judge_accuracy"] = rate([bool(j) for j in side.judged if j is not None])
    if side.forgetting:
        out["general_accuracy"] = rate([s.correct for s in side.forgetting])
    return out


def cost(side: Side, options: EvalOptions) -> dict[str, Any] | None:
    gens = side.generations
    if not gens:
        return None
    if side.kind == "endpoint":
        if options.price_in_per_1k is None or options.price_out_per_1k is None:
            return None
        total = sum(
            g.prompt_tokens / 1000 * options.price_in_per_1k + g.completion_tokens / 1000 * options.price_out_per_1k
            for g in gens
        )
        return {
            "value": total / len(gens),
            "basis": f"{options.price_in_per_1k}/{options.price_out_per_1k} per 1K tokens in/out",
        }
    seconds = sum(g.compute_s for g in gens)  # a batch's time is shared by its requests
    return {
        "value": seconds / 3600 * options.gpu_hour_price / len(gens),
        "basis": f"{options.gpu_hour_price} per GPU-hour",
    }


def compare(base: list[Score], tuned: list[Score]) -> dict[str, Any]:
    """McNemar's exact test on the paired accuracy outcomes."""
    only_tuned = sum(t.correct and not b.correct for b, t in zip(base, tuned, strict=True))
    only_base = sum(b.correct and not t.correct for b, t in zip(base, tuned, strict=True))
    p = mcnemar_exact(only_tuned, only_base)
    significant = p < ALPHA
    if not significant:
        verdict = (
            f"no significant difference in accuracy (McNemar p = {p:.3g}, {only_tuned + only_base} discordant pairs)"
        )
    elif only_tuned > only_base:
        verdict = f"the fine-tuned model is more accurate (McNemar p = {p:.3g})"
    else:
        verdict = f"the fine-tuned model is LESS accurate than the baseline (McNemar p = {p:.3g})"
    # the paired bootstrap: the same resampled turns for both models, so the interval is of the paired difference
    low, high = bootstrap_ci([float(t.correct) - float(b.correct) for b, t in zip(base, tuned, strict=True)])
    return {
        "fine_tuned_only_correct": only_tuned,
        "baseline_only_correct": only_base,
        "accuracy_difference": {
            "value": (only_tuned - only_base) / len(base) if base else None,
            "ci": [low, high] if base else None,
            "method": "paired bootstrap, 2000 resamples",
        },
        "mcnemar_p": p,
        "significant": significant,
        "alpha": ALPHA,
        "verdict": verdict,
    }


def prompt_key(prompt: list[dict[str, Any]]) -> str:
    """A conversation's words and calls, without the system prompt and the call ids (which differ per session)."""
    import json

    from clawtune.messages import content_text

    parts = []
    for message in prompt:
        if message["role"] == "system":
            continue
        calls = []
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            arguments = fn.get("arguments")
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except ValueError:
                    pass
            calls.append([fn.get("name"), arguments])
        parts.append([message["role"], content_text(message.get("content")), calls])
    return json.dumps(parts, sort_keys=True, ensure_ascii=False)


def training_set(options: EvalOptions) -> Path | None:
    """--train-set, or the training file named in the checkpoint's manifest when it is still there."""
    if options.train_set is not None:
        if not options.train_set.is_file():
            raise EvalError(f"--train-set {options.train_set}: no such file")
        return options.train_set
    if not options.model_dir:
        return None
    from clawtune.artifacts.manifest import MANIFEST, read_manifest, training_file

    folder = Path(options.model_dir)
    return training_file(read_manifest(folder)) if (folder / MANIFEST).is_file() else None


def overlap(items: list[Item], base: Side, tuned: Side, train: Path) -> dict[str, Any]:
    """Which held-out turns were asked, word for word, in the training data, and the comparison without them: a
    win that holds only on turns the model has seen is memory, not skill."""
    from clawtune.data.validate import iter_examples

    seen_prompts = {
        prompt_key(item.prompt)
        for n, example in iter_examples(train, Problems(keep=0))
        for item in example_items(example, str(n))
    }
    seen = [prompt_key(item.prompt) in seen_prompts for item in items]
    unseen = [i for i, s in enumerate(seen) if not s]
    base_unseen, tuned_unseen = [base.scores[i] for i in unseen], [tuned.scores[i] for i in unseen]
    return {
        "train_set": str(train),
        "items_seen": sum(seen),
        "items_unseen": len(unseen),
        "seen_ids": [item.id for item, s in zip(items, seen, strict=True) if s],
        "unseen": {
            "baseline_accuracy": rate([s.correct for s in base_unseen]),
            "fine_tuned_accuracy": rate([s.correct for s in tuned_unseen]),
            "comparison": compare(base_unseen, tuned_unseen),
        },
    }


def forgetting_items(size: int) -> list[Item]:
    from clawtune.models.general import forgetting_set

    return [item for n, example in enumerate(forgetting_set(size)) for item in example_items(example, f"general:{n}")]


def worst_failures(items: list[Item], base: Side, tuned: Side, n: int = 10) -> list[dict[str, Any]]:
    """The fine-tuned model's failures, the ones the baseline got right first, then the lowest F1."""
    from clawtune.messages import content_text

    rows = []
    for i, (item, b, t) in enumerate(zip(items, base.scores, tuned.scores, strict=True)):
        if t.correct:
            continue
        rows.append((not b.correct, t.f1, i, item, t))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    out = []
    for _, _, i, item, s in rows[:n]:
        last_user = next((content_text(m.get("content")) for m in reversed(item.prompt) if m["role"] == "user"), "")
        out.append(
            {
                "id": item.id,
                "category": item.category,
                "input": last_user,
                "reference": _show(item.reference),
                "fine_tuned": _show(tuned.generations[i].message),
                "baseline": _show(base.generations[i].message),
                "why": s.reason,
                "hallucinations": s.hallucinations,
                "baseline_correct": base.scores[i].correct,
            }
        )
    return out


VERDICTS = {
    (True, True): "both right",
    (False, False): "both wrong",
    (False, True): "fine-tuned only",
    (True, False): "baseline only",
}


def per_item(items: list[Item], base: Side, tuned: Side, limit: int = 500) -> list[dict[str, Any]]:
    """Every held-out turn's outcome on both sides (what the dashboard filters by category, verdict and tool); texts
    are cut at `limit` characters so a large test set keeps a readable report."""
    from clawtune.messages import content_text

    def cut(text: str) -> str:
        return text if len(text) <= limit else text[: limit - 1] + "…"

    out = []
    for i, item in enumerate(items):
        b, t = base.scores[i], tuned.scores[i]
        last_user = next((content_text(m.get("content")) for m in reversed(item.prompt) if m["role"] == "user"), "")
        tools = [str((c.get("function") or {}).get("name")) for c in item.reference.get("tool_calls") or []]
        out.append(
            {
                "id": item.id,
                "category": item.category,
                "tools": tools,
                "verdict": VERDICTS[(b.correct, t.correct)],
                "baseline_correct": b.correct,
                "fine_tuned_correct": t.correct,
                "why": t.reason,
                "input": cut(last_user),
                "reference": cut(_show(item.reference)),
                "fine_tuned": cut(_show(tuned.generations[i].message)),
                "baseline": cut(_show(base.generations[i].message)),
            }
        )
    return out


def _show(message: dict[str, Any]) -> str:
    from clawtune.messages import content_text

    parts = [content_text(message.get("content"))] if message.get("content") else []
    for call in message.get("tool_calls") or []:
        fn = call.get("function", {})
        parts.append(f"{fn.get('name')}({fn.get('arguments')})")
    return " ".join(parts) or "(empty)"


def run_evaluation(options: EvalOptions) -> dict[str, Any]:
    import transformers
    from rich.console import Console

    from clawtune.evaluate.gate import gate, held_out_file, item_rows, print_gate, write_items
    from clawtune.evaluate.report import print_table, write_reports

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    console = None if options.quiet else Console(soft_wrap=True)
    problems = Problems(strict=options.strict, keep=1000)
    check_inputs(options)
    items = load_items(options.test_set, problems, options.limit)
    if not items:
        raise EvalError(f"{options.test_set}: no valid example with a trained assistant turn to evaluate")
    if console and problems.items:
        for problem in problems.items[:10]:
            console.print(f"[yellow]skipped[/] {problem}", highlight=False)

    sides = {}
    general = forgetting_items(options.forgetting_size) if "forgetting" in options.metric_names else []
    cases = benchmark_cases(options)
    bench_items = [
        Item(f"bfcl:{c.id}", f"bfcl:{c.category}", c.messages, c.tools, {"role": "assistant", "content": ""})
        for c in cases
    ]
    failures: list[Item] = []
    if options.held_out is not None:
        from clawtune.evaluate.gate import held_out_file

        failures = load_items(held_out_file(options.held_out), problems, options.limit)
        if not failures:
            raise EvalError(f"--held-out {held_out_file(options.held_out)}: no valid example to evaluate")
    for which, label in (("baseline", "baseline"), ("model", "fine-tuned")):
        backend = _backend(options, which)
        side = Side(label, backend.name, backend.kind)
        if console:
            console.print(f"{label}: {backend.name} on {len(items)} held-out turns", highlight=False)
        _answer(side, backend, items, options, console, judge=True)
        if general:
            answered = Side(label, backend.name, backend.kind)
            _answer(answered, backend, general, options, console, judge=False)
            side.forgetting, side.general_generations = answered.scores, answered.generations
        if bench_items:
            answered = Side(label, backend.name, backend.kind)
            _answer(answered, backend, bench_items, options, console, judge=False)
            side.benchmark_generations = answered.generations
            verdicts = [
                bfcl_check(c, g.message.get("tool_calls")) for c, g in zip(cases, answered.generations, strict=True)
            ]
            side.benchmark, side.benchmark_reasons = [v[0] for v in verdicts], [v[1] for v in verdicts]
        if failures:
            side.held_out = Side(label, backend.name, backend.kind)
            _answer(side.held_out, backend, failures, options, console, judge=False)
        if console and backend.reused:
            console.print(
                f"{label}: {backend.reused} answers reused from this checkpoint's evaluation earlier in this process "
                "(same files, prompts and settings; greedy)",
                highlight=False,
            )
        sides[which] = side
        del backend
    base, tuned = sides["baseline"], sides["model"]
    # An endpoint that still failed after its retries gave no answer: the item is counted under "errors" and left
    # out of every figure of both sides (the pairs stay paired), never scored as a wrong answer.
    errors: dict[str, dict[str, Any]] = {}
    keep = keep_answered(errors, "test", items, base.generations, tuned.generations)
    items, base, tuned = pick(items, keep), base.subset(keep), tuned.subset(keep)
    if general:
        keep = keep_answered(errors, "general", general, base.general_generations, tuned.general_generations)
        general = pick(general, keep)
        for side in (base, tuned):
            side.forgetting = pick(side.forgetting, keep)
            side.general_generations = pick(side.general_generations, keep)
    if base.held_out is not None and tuned.held_out is not None:
        keep = keep_answered(errors, "held_out", failures, base.held_out.generations, tuned.held_out.generations)
        failures, base.held_out, tuned.held_out = (
            pick(failures, keep),
            base.held_out.subset(keep),
            tuned.held_out.subset(keep),
        )
    if cases:
        keep = keep_answered(errors, "benchmark", bench_items, base.benchmark_generations, tuned.benchmark_generations)
        cases = pick(cases, keep)
        for side in (base, tuned):
            side.benchmark = pick(side.benchmark, keep)
            side.benchmark_reasons = pick(side.benchmark_reasons, keep)
            side.benchmark_generations = pick(side.benchmark_generations, keep)
    if not items:
        first = errors["test"]["examples"][0]
        raise EvalError(
            f"{options.test_set}: no held-out turn was answered by both sides (the {first['side']} failed: "
            f"{first['error']})"
        )
    report: dict[str, Any] = {
        "test_set": str(options.test_set),
        "items": len(items),
        "errors": errors,
        "examples_skipped": len(problems),
        "metrics": list(options.metric_names),
        "baseline": {**summarize(base, items, options), "errors": errors["test"]["baseline"]},
        "fine_tuned": {**summarize(tuned, items, options), "errors": errors["test"]["fine_tuned"]},
        "comparison": compare(base.scores, tuned.scores),
        "worst_failures": worst_failures(items, base, tuned),
        "per_item": per_item(items, base, tuned),
    }
    if general:
        before = report["baseline"]["general_accuracy"]["value"]
        after = report["fine_tuned"]["general_accuracy"]["value"]
        drop = before - after
        report["forgetting"] = {
            "general_items": len(general),
            "before": before,
            "after": after,
            "drop": drop,
            "threshold": options.forgetting_threshold,
            "flagged": drop > options.forgetting_threshold,
        }
    train = training_set(options)
    report["overlap"] = overlap(items, base, tuned, train) if train else None
    output = options.output or (Path(options.model_dir) / "eval" if options.model_dir else Path("eval-report"))
    rows = item_rows("test", items, base, tuned, (base.scores, tuned.scores))
    if general:
        rows += item_rows(
            "general", general, _general_side(base), _general_side(tuned), (base.forgetting, tuned.forgetting)
        )
    if base.held_out is not None and tuned.held_out is not None:
        rows += item_rows(
            "held_out", failures, base.held_out, tuned.held_out, (base.held_out.scores, tuned.held_out.scores)
        )
        held = compare(base.held_out.scores, tuned.held_out.scores)
        report["held_out"] = {
            "file": str(held_out_file(options.held_out)),  # type: ignore[arg-type]
            "items": len(failures),
            "baseline_accuracy": rate([s.correct for s in base.held_out.scores]),
            "fine_tuned_accuracy": rate([s.correct for s in tuned.held_out.scores]),
            "comparison": held,
        }
        report["gate"] = gate(
            held,
            report["comparison"],
            compare(base.forgetting, tuned.forgetting) if general else None,
            options.forgetting_threshold,
        )
    if cases:
        report["benchmark"] = benchmark_report(options.benchmark or "", cases, base, tuned)
        rows += benchmark_rows(cases, base, tuned)
    items_file = write_items(rows, output)
    report["files"] = {**write_reports(report, output), "items": str(items_file)}
    if console:
        print_table(report, console)
        if "benchmark" in report:
            print_benchmark(report["benchmark"], console)
        if "gate" in report:
            print_gate(report["gate"], console)
    return report


def benchmark_cases(options: EvalOptions) -> list[Any]:
    if not options.benchmark:
        return []
    from clawtune.evaluate.bfcl import load_cases, parse_spec

    return [
        case for category in parse_spec(options.benchmark) for case in load_cases(category, options.benchmark_limit)
    ]


def bfcl_check(case: Any, calls: Any) -> tuple[bool, str | None]:
    from clawtune.evaluate.bfcl import check

    return check(case, calls)


def benchmark_report(spec: str, cases: list[Any], base: Side, tuned: Side) -> dict[str, Any]:
    """BFCL's verdicts per category and overall, each side, with McNemar's test on the paired cases."""

    def scores(side: Side, keep: list[int]) -> list[Score]:
        return [Score("tool_call", side.benchmark[i], 0.0) for i in keep]

    out: dict[str, Any] = {"spec": spec, "checker": "BFCL's own AST checker (bfcl-eval)", "categories": {}}
    groups = {"all": list(range(len(cases)))}
    for i, case in enumerate(cases):
        groups.setdefault(case.category, []).append(i)
    for name, keep in groups.items():
        entry = {
            "cases": len(keep),
            "baseline_accuracy": rate([base.benchmark[i] for i in keep]),
            "fine_tuned_accuracy": rate([tuned.benchmark[i] for i in keep]),
            "comparison": compare(scores(base, keep), scores(tuned, keep)),
        }
        if name == "all":
            out.update(entry)
        else:
            out["categories"][name] = entry
    return out


def print_benchmark(bench: dict[str, Any], console: Any) -> None:
    def line(name: str, entry: dict[str, Any]) -> str:
        before, after = entry["baseline_accuracy"]["value"], entry["fine_tuned_accuracy"]["value"]
        return f"{name} {before:.1%} -> {after:.1%} ({entry['cases']} cases)"

    parts = [line(name, entry) for name, entry in bench["categories"].items()]
    console.print(
        f"BFCL ({bench['checker']}): {line('all', bench)}; {'; '.join(parts)}; {bench['comparison']['verdict']}",
        highlight=False,
    )


def benchmark_rows(cases: list[Any], base: Side, tuned: Side) -> list[dict[str, Any]]:
    rows = []
    for i, case in enumerate(cases):
        b, t = base.benchmark[i], tuned.benchmark[i]
        rows.append(
            {
                "set": "bfcl",
                "id": case.id,
                "category": case.category,
                "tools": sorted(tool["function"]["name"] for tool in case.tools),
                "input": next((str(m.get("content")) for m in reversed(case.messages) if m.get("role") == "user"), ""),
                "reference": json.dumps(case.possible_answer, ensure_ascii=False)
                if case.possible_answer
                else "(no call)",
                "baseline": {
                    "answer": _show(base.benchmark_generations[i].message),
                    "correct": b,
                    "reason": base.benchmark_reasons[i],
                },
                "fine_tuned": {
                    "answer": _show(tuned.benchmark_generations[i].message),
                    "correct": t,
                    "reason": tuned.benchmark_reasons[i],
                },
                "change": "fixed" if t and not b else "broken" if b and not t else "same",
            }
        )
    return rows


def _general_side(side: Side) -> Side:
    return Side(side.label, side.name, side.kind, generations=side.general_generations)


def gate_exit_code(report: dict[str, Any]) -> int:
    """`ft evaluate`'s exit code: 3 when a gate (`--held-out`) was run and did not pass, else 0."""
    return 3 if report.get("gate", {}).get("verdict", "PASSED") != "PASSED" else 0
