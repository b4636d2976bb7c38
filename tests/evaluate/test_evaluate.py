"""Evaluation: every metric on hand-made cases, the statistics, the tool-call parser, and the reports."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clawtune.evaluate.metrics import calls_mismatch, hallucinations, normalize, score, token_f1
from clawtune.models.toolcalls import parse_reply

from ..conftest import tool_call

SCHEMA = {
    "type": "object",
    "properties": {
        "base": {"type": "string"},
        "quote": {"type": "string"},
        "amount": {"type": "number"},
        "date": {"type": "string"},
    },
    "required": ["base", "quote"],
}
TOOLS = [{"type": "function", "function": {"name": "get_exchange_rate", "parameters": SCHEMA}}]


def call(arguments: Any, name: str = "get_exchange_rate", call_id: str = "c1") -> dict[str, Any]:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return tool_call(call_id, name, raw)["tool_calls"][0]


def test_text_normalisation_and_f1() -> None:
    assert normalize("  Total sales: $451,965!  ") == "total sales 451 965"
    assert normalize("Ｔｏｔａｌ") == "total"  # NFKC folds full-width letters
    assert token_f1("the North region", "North region") == pytest.approx(0.8)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
    assert token_f1("毛利率是多少", "毛利率") == pytest.approx(2 * 1 * 0.5 / 1.5)  # CJK characters are tokens


@pytest.mark.parametrize(
    ("pred", "expected"),
    [
        ({"base": "EUR", "quote": "USD"}, None),
        ({"quote": "usd ", "base": "eur"}, None),  # order-free keys, normalised strings
        ({"base": "EUR", "quote": "USD", "amount": 100}, "argument 'amount' is not in the reference call"),
        ({"base": "EUR"}, "missing required argument 'quote'"),
        ({"base": "EUR", "quote": "USD", "note": "x"}, "argument 'note' is not in the schema"),
        ({"base": "EUR", "quote": 5}, "argument 'quote' has the wrong type"),
        ({"base": "EUR", "quote": "GBP"}, "argument 'quote' is 'GBP', expected 'USD'"),
        ("{not json", "arguments are not a JSON object"),
    ],
)
def test_tool_call_rules(pred: Any, expected: str | None) -> None:
    schemas = {"get_exchange_rate": SCHEMA}
    assert calls_mismatch([call(pred)], [call({"base": "EUR", "quote": "USD"})], schemas) == expected


def test_int_passes_for_float_and_parallel_calls_match_in_any_order() -> None:
    schemas = {"get_exchange_rate": SCHEMA}
    ref = [call({"base": "EUR", "quote": "USD", "amount": 100.0})]
    assert calls_mismatch([call({"base": "EUR", "quote": "USD", "amount": 100})], ref, schemas) is None
    first, second = call({"base": "EUR", "quote": "USD"}), call({"base": "GBP", "quote": "JPY"}, call_id="c2")
    assert calls_mismatch([second, first], [first, second], schemas) is None
    assert calls_mismatch([first], [first, second], schemas) == "1 tool call(s) instead of 2"
    assert calls_mismatch([call({"base": "EUR", "quote": "USD"}, name="convert")], [first], schemas) == (
        "called 'convert' instead of 'get_exchange_rate'"
    )


def test_hallucination_checks() -> None:
    prompt = [
        {"role": "user", "content": "Convert 100 EUR to USD."},
        tool_call("c1", "get_exchange_rate", '{"base": "EUR", "quote": "USD"}'),
        {"role": "tool", "tool_call_id": "c1", "content": '{"rate": 1.0842}'},
    ]
    reference = {"role": "assistant", "content": "At a rate of 1.0842, 100 EUR is 108.42 USD."}

    def flags(message: dict[str, Any], invalid: list[str] | None = None) -> list[str]:
        return hallucinations(message, invalid or [], prompt, TOOLS, reference)

    assert flags({"role": "assistant", "content": "100 EUR is 108.42 USD at 1.0842."}) == []  # 108.42 = 100 x 1.0842
    assert flags({"role": "assistant", "content": "100 EUR is 131.77 USD."}) == [
        "number 131.77 appears nowhere in the conversation"
    ]
    assert flags({"role": "assistant", "content": None, "tool_calls": [call({"x": 1}, name="book_flight")]}) == [
        "tool 'book_flight' was not offered"
    ]
    assert flags({"role": "assistant", "content": None, "tool_calls": [call({"base": "EUR", "fee": 1})]}) == [
        "argument 'fee' is not in get_exchange_rate's schema"
    ]
    assert flags({"role": "assistant", "content": None, "tool_calls": [call("{oops")]}, ["{oops"]) == [
        "invalid JSON arguments"
    ]


def test_score_text_tool_and_refusal_items() -> None:
    prompt = [{"role": "user", "content": "Book me a flight to Paris."}]
    refusal = {"role": "assistant", "content": "Sorry, I can't help with that. I'm a finance data agent."}
    got = score(
        {"role": "assistant", "content": "sorry, I can't help with that. I'm a finance data agent"},
        refusal,
        prompt,
        TOOLS,
    )
    assert got.correct and got.kind == "text" and got.reference_refusal and got.predicted_refusal
    wrong = score(
        {"role": "assistant", "content": None, "tool_calls": [call({"base": "EUR", "quote": "USD"})]},
        refusal,
        prompt,
        TOOLS,
    )
    assert not wrong.correct and not wrong.predicted_refusal and wrong.f1 == 0.0
    ref_call = {"role": "assistant", "content": None, "tool_calls": [call({"base": "EUR", "quote": "USD"})]}
    near = score(
        {"role": "assistant", "content": None, "tool_calls": [call({"base": "EUR", "quote": "GBP"})]},
        ref_call,
        prompt,
        TOOLS,
    )
    assert near.kind == "tool_call" and near.tool_name_correct and not near.tool_args_correct and 0 < near.f1 < 1


@pytest.mark.parametrize(
    ("text", "content", "calls", "invalid"),
    [
        ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>', None, [("f", '{"a": 1}')], 0),
        ('Let me check.\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>', "Let me check.", [("f", "{}")], 0),
        ('<tool_call>\n{"name": "f", "arguments": {"a": </tool_call>', None, [("f", '{"a":')], 1),
        ('{"name": "f", "parameters": {"a": "x"}}', None, [("f", '{"a": "x"}')], 0),
        ('[TOOL_CALLS][{"name": "f", "arguments": {"a": 2}}]', None, [("f", '{"a": 2}')], 0),
        ("Total sales were $5.", "Total sales were $5.", [], 0),
    ],
)
def test_tool_call_parser(text: str, content: str | None, calls: list[tuple[str, str]], invalid: int) -> None:
    parsed = parse_reply(text)
    assert parsed.content == content
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in parsed.tool_calls] == calls
    assert len(parsed.invalid) == invalid


# ----------------------------------------------------------------------------------------------- end to end


def test_overlap_finds_turns_asked_in_training_and_judges_the_rest_alone(tmp_path: Any) -> None:
    """A held-out turn whose conversation so far was in the training data (other call id, other system prompt) is
    counted as seen; the verdict on the unseen turns is computed from them alone."""
    from clawtune.evaluate.backends import example_items
    from clawtune.evaluate.run import Side, overlap

    from ..conftest import tool_call

    question = {"role": "user", "content": "Convert 100 EUR to USD."}
    answer = tool_call("call_a", "get_exchange_rate", '{"base": "EUR", "quote": "USD"}')
    train = tmp_path / "train.jsonl"
    seen = {"messages": [{"role": "system", "content": "short"}, question, answer], "tools": TOOLS}
    train.write_text(json.dumps(seen) + "\n")
    again = tool_call("call_b", "get_exchange_rate", '{"quote": "USD", "base": "EUR"}')  # same call, other id/order
    test = [
        {"messages": [{"role": "system", "content": "a long prompt"}, question, again], "tools": TOOLS},
        *(
            {"messages": [{"role": "user", "content": f"Convert {n} GBP to JPY."}, answer], "tools": TOOLS}
            for n in range(7)
        ),
    ]
    items = [item for n, example in enumerate(test) for item in example_items(example, f"t{n}")]
    right = score(answer, answer, [question], TOOLS)
    wrong = score({"role": "assistant", "content": "no idea"}, answer, [question], TOOLS)
    base = Side("baseline", "b", "local", scores=[right] + [wrong] * 7)
    tuned = Side("fine-tuned", "t", "local", scores=[right] * 8)
    got = overlap(items, base, tuned, train)
    assert got["items_seen"] == 1 and got["items_unseen"] == 7 and got["seen_ids"] == ["t0#2"]
    assert got["unseen"]["fine_tuned_accuracy"]["value"] == 1.0 and got["unseen"]["baseline_accuracy"]["value"] == 0
    assert got["unseen"]["comparison"]["fine_tuned_only_correct"] == 7 and got["unseen"]["comparison"]["significant"]
    tuned.scores = [right] + [wrong] * 7  # right only where it was trained: no win on the unseen turns
    assert not overlap(items, base, tuned, train)["unseen"]["comparison"]["significant"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, sample_data: Any, tiny_lora: Any) -> dict[str, Any]:
    """The session's tiny LoRA run (a few steps on the tiny model), then the seed's evaluate command on held-out
    turns."""
    from pathlib import Path

    from clawtune.cli import main

    from ..conftest import copy_run, copy_sample

    root = copy_sample(Path(tmp_path_factory.mktemp("evaluate")), sample_data)
    copy_run(tiny_lora, root / "out")  # evaluate writes its report into the model folder
    code = main(
        [
            "ft",
            "evaluate",
            "--model-dir",
            str(root / "out" / "checkpoint-4"),
            "--test-set",
            str(root / "test.jsonl"),
            "--limit",
            "12",
            "--max-new-tokens",
            "24",
            "--batch-size",
            "4",
            "--forgetting-size",
            "8",
        ]
    )
    assert code == 0
    report = json.loads((root / "out" / "checkpoint-4" / "eval" / "eval-report.json").read_text())
    return {"root": root, "report": report}


def test_evaluate_end_to_end_on_the_tiny_model(evaluated: dict[str, Any]) -> None:
    report = evaluated["report"]
    assert report["items"] == 12
    for side in ("baseline", "fine_tuned"):
        summary = report[side]
        assert summary["items"] == 12 and summary["errors"] == 0
        assert 0 <= summary["accuracy"]["value"] <= 1 and len(summary["accuracy"]["ci"]) == 2
        assert summary["latency_p95_s"] >= summary["latency_p50_s"] > 0
        assert summary["prompt_tokens_per_request"] > 100 and summary["completion_tokens_per_request"] > 0
        assert summary["cost_per_request"]["value"] > 0
        assert summary["general_accuracy"]["n"] >= 8  # the forgetting set was scored on both sides
    assert report["baseline"]["name"] == "clawtune/tiny-agent"
    assert 0 <= report["comparison"]["mcnemar_p"] <= 1 and "McNemar" in report["comparison"]["verdict"]
    assert "flagged" in report["forgetting"]
    verdicts = [i["verdict"] for i in report["per_item"]]  # every turn's outcome, for the dashboard's filters
    assert len(verdicts) == 12 and verdicts.count("fine-tuned only") == report["comparison"]["fine_tuned_only_correct"]
    assert verdicts.count("baseline only") == report["comparison"]["baseline_only_correct"]
    overlap = report["overlap"]  # checked against the training file named in the checkpoint's manifest
    assert overlap["items_seen"] + overlap["items_unseen"] == 12
    items = (evaluated["root"] / "out" / "checkpoint-4" / "eval" / "eval-items.jsonl").read_text().splitlines()
    sets = [json.loads(line)["set"] for line in items]  # every item, not only the ten worst
    assert sets.count("test") == 12 and sets.count("general") == report["forgetting"]["general_items"]
    md = (evaluated["root"] / "out" / "checkpoint-4" / "eval" / "eval-report.md").read_text()
    assert "| metric | baseline | fine-tuned | change |" in md and "| accuracy |" in md


def test_html_report_renders_its_charts_in_a_headless_browser(evaluated: dict[str, Any], tmp_path: Any) -> None:
    import subprocess

    from ..conftest import chromium

    browser = chromium()
    page = evaluated["root"] / "out" / "checkpoint-4" / "eval" / "eval-report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    flags += ["--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    for chart in ("chart-metrics", "chart-categories", "chart-latency"):
        assert f'id="{chart}"' in dom
    assert dom.count('class="bar"') >= 6 and 'id="verdict"' in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1000,1600", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    blue = ((abs(pixels[..., 0] - 0x25 / 255) < 0.02) & (abs(pixels[..., 2] - 0xEB / 255) < 0.02)).sum()
    assert blue > 200, "the fine-tuned bars (#2563eb) are drawn"


def test_endpoint_baseline_with_prices_system_prompt_and_judge(evaluated: dict[str, Any], tmp_path: Any) -> None:
    """A general model behind an OpenAI-compatible endpoint that always answers right: the report must say the
    fine-tune is worse, price the endpoint by tokens, send the long system prompt, and use the judge."""
    from pathlib import Path

    from clawtune.evaluate.backends import load_items
    from clawtune.evaluate.run import EvalOptions, run_evaluation
    from clawtune.problems import Problems

    from ..conftest import chat_server

    root = evaluated["root"]
    test_set = root / "test.jsonl"
    answers = {json.dumps(item.prompt[1:], sort_keys=True): item.reference for item in load_items(test_set, Problems())}

    def oracle(body: dict[str, Any]) -> dict[str, Any]:
        if body["model"] == "judge":
            return {"content": "yes"}
        reference = answers[json.dumps(body["messages"][1:], sort_keys=True)]
        return {k: v for k, v in reference.items() if k in ("content", "tool_calls")}

    prompt = tmp_path / "general-prompt.txt"
    prompt.write_text("You are a general assistant. " * 50)
    with chat_server(oracle) as (url, seen):
        report = run_evaluation(
            EvalOptions(
                test_set=test_set,
                model_dir=str(root / "out" / "checkpoint-4"),
                baseline_endpoint=f"{url}/v1",
                baseline_model="big-general-model",
                baseline_system_prompt=prompt,
                metrics="accuracy,f1,tool_calls,latency,tokens,cost",
                limit=12,
                max_new_tokens=24,
                price_in_per_1k=0.0025,
                price_out_per_1k=0.01,
                judge_endpoint=url,
                judge_model="judge",
                output=Path(tmp_path / "report"),
                quiet=True,
            )
        )
    base = report["baseline"]
    assert base["kind"] == "endpoint" and base["accuracy"]["value"] == 1.0 and base["errors"] == 0
    assert base["cost_per_request"]["value"] == pytest.approx(100 / 1000 * 0.0025 + 10 / 1000 * 0.01)
    assert base["prompt_tokens_per_request"] == 100  # the endpoint's own usage figures
    asked = [b for b in seen if b["model"] == "big-general-model"]
    assert len(asked) == 12 and all(b["messages"][0]["content"] == prompt.read_text() for b in asked)
    assert any("tools" in b for b in asked) and all(b["temperature"] == 0 for b in asked)
    assert base["judge_accuracy"]["value"] == 1.0
    comparison = report["comparison"]
    if comparison["significant"]:
        assert "LESS accurate" in comparison["verdict"]
    assert comparison["fine_tuned_only_correct"] == 0


def test_checkpoint_manifest_refuses_a_changed_file_or_another_base(evaluated: dict[str, Any], tmp_path: Any) -> None:
    import shutil

    from clawtune.models import ModelLoadError
    from clawtune.models.checkpoint import load_for_inference

    source = evaluated["root"] / "out" / "checkpoint-4"
    other_base = tmp_path / "other-base"
    shutil.copytree(source, other_base)
    manifest = json.loads((other_base / "clawtune-manifest.json").read_text())
    manifest["base_fingerprint"] = "sha256:" + "0" * 64  # trained on some other build of the base
    (other_base / "clawtune-manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=r"trained on a different clawtune/tiny-agent.*retrain"):
        load_for_inference(str(other_base))
    assert load_for_inference(str(other_base), allow_base_mismatch=True).manifest is not None

    changed = tmp_path / "changed"
    shutil.copytree(source, changed)
    with open(changed / "adapter_model.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelLoadError, match="sha256 no longer matches"):
        load_for_inference(str(changed), allow_base_mismatch=True)


def test_an_endpoints_failures_are_retried_and_then_counted_as_errors_not_wrong_answers(
    evaluated: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A baseline endpoint that rate-limits every turn once (Retry-After: 2) and fails two turns for good (HTTP 500):
    the rate limit is ridden out, the two failures are "errors", left out of both sides' figures, never scored as
    wrong answers (the baseline, right on every turn it answered, keeps an accuracy of 1). No test time is spent
    waiting: the client's sleep is replaced."""
    from clawtune import openai_http
    from clawtune.evaluate.backends import load_items
    from clawtune.evaluate.run import EvalOptions, run_evaluation
    from clawtune.problems import Problems

    from ..conftest import chat_server

    waits: list[float] = []
    monkeypatch.setattr(openai_http, "_sleep", waits.append)
    test_set = evaluated["root"] / "test.jsonl"
    items = load_items(test_set, Problems(), 12)
    answers = {json.dumps(item.prompt, sort_keys=True): item.reference for item in items}
    broken = {json.dumps(item.prompt, sort_keys=True) for item in items[3:5]}
    asked: dict[str, int] = {}

    def flaky(body: dict[str, Any]) -> dict[str, Any]:
        key = json.dumps(body["messages"], sort_keys=True)
        asked[key] = asked.get(key, 0) + 1
        if key in broken:
            return {"status": 500}
        if asked[key] == 1:
            return {"status": 429, "headers": {"Retry-After": "2"}}
        return {k: v for k, v in answers[key].items() if k in ("content", "tool_calls")}

    with chat_server(flaky) as (url, _):
        report = run_evaluation(
            EvalOptions(
                test_set=test_set,
                model_dir=str(evaluated["root"] / "out" / "checkpoint-4"),
                baseline_endpoint=url,
                baseline_model="big-general-model",
                metrics="accuracy,tool_calls",
                limit=12,
                max_new_tokens=16,
                output=tmp_path / "report",
                quiet=True,
            )
        )
    errors = report["errors"]["test"]
    assert errors["baseline"] == 2 and errors["fine_tuned"] == 0 and errors["excluded"] == 2
    assert {e["id"] for e in errors["examples"]} == {items[3].id, items[4].id}
    assert all("HTTP 500" in e["error"] for e in errors["examples"])
    assert report["items"] == 10 and report["baseline"]["errors"] == 2
    assert report["baseline"]["accuracy"] == {**report["baseline"]["accuracy"], "value": 1.0, "n": 10}
    assert report["fine_tuned"]["accuracy"]["n"] == 10  # the pairs stay paired
    assert report["comparison"]["fine_tuned_only_correct"] == 0  # the baseline is right on all ten
    assert {asked[key] for key in broken} == {1 + openai_http.RETRIES}  # retried, then given up
    assert waits.count(2) == 10  # each answered turn waited once, as its Retry-After asked
    md = (tmp_path / "report" / "eval-report.md").read_text()
    assert "errors: test: baseline 2, fine-tuned 0 without an answer; 2 items left out" in md
    assert 'id="errors">errors: test: baseline 2' in (tmp_path / "report" / "eval-report.html").read_text()


def test_a_checkpoints_answers_are_reused_within_a_process_only_for_the_same_settings(
    tiny_lora: Any, sample_data: Any
) -> None:
    """The gate asks the resumed checkpoint what its own evaluation asked: same files, merge, limit -> same answers."""
    from clawtune.evaluate import backends
    from clawtune.evaluate.backends import LocalBackend, load_items
    from clawtune.models.checkpoint import load_for_inference
    from clawtune.problems import Problems

    items = load_items(sample_data / "test.jsonl", Problems(), limit=6)
    backends.ANSWERS.clear()
    first = LocalBackend(load_for_inference(str(tiny_lora), merge=True), 4, 16)
    answered = first.generate(items)
    again = LocalBackend(load_for_inference(str(tiny_lora), merge=True), 4, 16)
    assert [g.message for g in again.generate(items)] == [g.message for g in answered]
    assert first.reused == 0 and again.reused == len(items)
    for other in (
        LocalBackend(load_for_inference(str(tiny_lora), merge=True), 4, 8),  # another token limit
        LocalBackend(load_for_inference(str(tiny_lora)), 4, 16),  # not merged
        LocalBackend(load_for_inference("clawtune/tiny-agent"), 4, 16),  # no manifest: never cached
        LocalBackend(load_for_inference("clawtune/tiny-agent"), 4, 16),
    ):
        other.generate(items)
        assert other.reused == 0
    backends.ANSWERS.clear()
    fresh = LocalBackend(load_for_inference(str(tiny_lora), merge=True), 4, 16)
    assert [g.message for g in fresh.generate(items)] == [g.message for g in answered]  # what generating again gives
