"""Tool-call scoring against BFCL's own AST checker on BFCL's cases, and the refusal phrasings."""

from __future__ import annotations

import json
from typing import Any

import numpy
import pytest

from clawtune.evaluate import bfcl
from clawtune.evaluate.metrics import call_mismatch, calls_mismatch, is_refusal, score


def call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def test_bfcl_is_installed_without_touching_numpy() -> None:
    assert numpy.__version__.startswith("2."), "bfcl-eval's numpy 1.26 pin must not reach the environment"
    assert bfcl.load_cases("simple_python", 3)


def first(accepted: list[Any]) -> Any:
    """The first accepted value, with BFCL's nested answers (dicts of accepted lists) resolved the same way."""
    value = accepted[0]
    if isinstance(value, dict):
        return {k: first(v) for k, v in value.items() if isinstance(v, list) and "" not in v}
    if isinstance(value, list):
        return [first([item]) if isinstance(item, dict) else item for item in value]
    return value


def reference_and_variants(case: bfcl.Case) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """Our single reference call for a BFCL answer, and predicted calls whose verdict both checkers must share."""
    ((name, accepted),) = case.possible_answer[0].items()
    name = name.replace(".", "_")
    schema = case.tools[[f["name"] for f in case.functions].index(next(iter(case.possible_answer[0])))]["function"]
    properties = schema["parameters"].get("properties", {})
    required = schema["parameters"].get("required", [])
    reference = {k: first(v) for k, v in accepted.items() if "" not in v}
    variants: list[tuple[str, dict[str, Any]]] = [("same", dict(reference))]
    for key, value in reference.items():
        if isinstance(value, str) and value:
            variants.append(("quoted", {**reference, key: f"'{value}'"}))
            variants.append(("case and spaces", {**reference, key: f" {value.upper()}"}))
        if isinstance(value, int) and not isinstance(value, bool):
            variants.append(("wrong number", {**reference, key: value + 7}))
        if key in required:
            variants.append(("missing required", {k: v for k, v in reference.items() if k != key}))
    for key, values in accepted.items():
        default = properties.get(key, {}).get("default", object())
        if "" in values and key not in required and default in values and not isinstance(default, bool):
            variants.append(("optional at its default", {**reference, key: default}))
    return {"name": name, "args": reference, "schema": schema["parameters"]}, variants


def test_tool_call_scoring_agrees_with_bfcls_checker() -> None:
    compared: dict[str, int] = {}
    disagreements = []
    for category, limit in (("simple_python", 150), ("multiple", 80)):
        for case in bfcl.load_cases(category, limit):
            reference, variants = reference_and_variants(case)
            for kind, args in variants:
                ours = call_mismatch(
                    call(reference["name"], args), call(reference["name"], reference["args"]), reference["schema"]
                )
                theirs, error = bfcl.check(case, [call(reference["name"], args)])
                compared[kind] = compared.get(kind, 0) + 1
                if (ours is None) != theirs:
                    disagreements.append(f"{case.id} {kind} {args}: ours {ours!r}, BFCL {error!r}")
    assert compared["quoted"] > 50 and compared["optional at its default"] > 10 and compared["missing required"] > 100
    assert not disagreements, "\n".join(disagreements[:20])


def test_quoted_strings_and_defaults() -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "default": "celsius"}},
        "required": ["city"],
    }
    ref = call("weather", {"city": "Delhi"})
    assert (
        call_mismatch(call("weather", {"city": "'Delhi'"}), ref, schema)
        == "argument 'city' is \"'Delhi'\", expected 'Delhi'"
    )
    assert call_mismatch(call("weather", {"city": "new delhi"}), call("weather", {"city": "New-Delhi"}), schema) is None
    assert call_mismatch(call("weather", {"city": "Delhi", "unit": "celsius"}), ref, schema) is None
    assert (
        call_mismatch(call("weather", {"city": "Delhi"}), call("weather", {"city": "Delhi", "unit": "celsius"}), schema)
        is None
    )
    assert (
        call_mismatch(call("weather", {"city": "Delhi", "unit": "kelvin"}), ref, schema)
        == "argument 'unit' is not in the reference call"
    )
    assert calls_mismatch([call("weather", {"city": "Delhi", "unit": "celsius"})], [ref], {"weather": schema}) is None


@pytest.mark.parametrize(
    "text",
    [
        "I'm unable to help with that.",
        "None of the available functions can do that.",
        "I\u2019m not able to book flights.",
        "There is no function that can book a flight.",
        "I don't have a tool for that.",
        "Sorry, I can't help with that.",
        "抱歉,这超出了我的能力范围。",
    ],
)
def test_refusals_are_recognised(text: str) -> None:
    reply = {"role": "assistant", "content": text}
    assert is_refusal(reply)
    assert score(reply, {"role": "assistant", "content": "Sorry, I can't help with that."}, [], None).predicted_refusal


@pytest.mark.parametrize(
    "text",
    [
        "Total sales were $451,965.",
        "I can help with that: here is the chart.",
        "None of the rows matched.",
        "Sorry for the wait: 12 rows.",
    ],
)
def test_answers_are_not_refusals(text: str) -> None:
    assert not is_refusal({"role": "assistant", "content": text})


def test_make_install_installs_the_pinned_bfcl() -> None:
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert f"--no-deps {bfcl.PIN}" in makefile
