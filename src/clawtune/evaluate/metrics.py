"""Scoring one generated assistant turn against the reference turn.

- Text answers: normalised exact match (Unicode NFKC, case, punctuation and spacing ignored) and token F1 (SQuAD's,
  with CJK characters as tokens).
- Tool calls, the field's AST rules (Berkeley Function Calling Leaderboard): same function name; every required
  parameter present; no parameter outside the schema; types checked (an int passes for a float); string values
  compared after BFCL's own standardisation (spaces and `,./-_*^` removed, lower case, single quotes as double: so
  "April 1, 2024" equals "april 1 2024", but "'Delhi'" does not equal "Delhi", since a real API would get the quotes);
  parallel calls matched in any order. A parameter the reference does not pass is a mismatch too (a different call),
  unless it is optional and absent from both, or optional and equal to its schema `default` (the same call as leaving
  it out, as BFCL's optional answers allow).
- Refusals: the recipe's refusal phrasing, in a reply without tool calls.
- Hallucination, without a judge: a call to a tool that was not offered, an argument the tool's schema does not have,
  arguments that are not valid JSON, or a number in the answer that appears nowhere in the conversation or tool
  results (nor follows from two of them by one arithmetic step, as a converted amount does).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from clawtune.data.recipe import REFUSAL
from clawtune.messages import Message, content_text

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?![\w])")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c).startswith("P") or c in "$€£¥`^|~<>=+" else c for c in text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    out: list[str] = []
    for word in normalize(text).split():
        if CJK.search(word):
            out.extend(c for c in word if not c.isspace())
        else:
            out.append(word)
    return out


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    if not pred and not ref:
        return 1.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def is_refusal(message: Message) -> bool:
    return not message.get("tool_calls") and bool(REFUSAL.search(content_text(message.get("content"))))


# ------------------------------------------------------------------------------------------------ tool calls

JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def _arguments(call: dict[str, Any]) -> dict[str, Any] | None:
    raw = call.get("function", {}).get("arguments")
    if isinstance(raw, dict):
        return raw
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _name(call: dict[str, Any]) -> str:
    return str(call.get("function", {}).get("name") or "")


BFCL_STRIPPED = re.compile(r"[ ,./\-_*^]")


def standardize_string(text: str) -> str:
    """BFCL's standardisation of a string argument (its ast_checker's `standardize_string`)."""
    return BFCL_STRIPPED.sub("", text).lower().replace("'", '"')


def values_equal(pred: Any, ref: Any) -> bool:
    if isinstance(ref, bool) or isinstance(pred, bool):
        return pred is ref
    if isinstance(ref, int | float) and isinstance(pred, int | float):
        return math.isclose(
            pred, ref, rel_tol=1e-9, abs_tol=1e-12
        )  # BFCL compares exactly; this forgives float noise only
    if isinstance(ref, str) and isinstance(pred, str):
        return standardize_string(pred) == standardize_string(ref)
    if isinstance(ref, list) and isinstance(pred, list):
        return len(pred) == len(ref) and all(values_equal(p, r) for p, r in zip(pred, ref, strict=True))
    if isinstance(ref, dict) and isinstance(pred, dict):
        return pred.keys() == ref.keys() and all(values_equal(pred[k], ref[k]) for k in ref)
    return bool(pred == ref)


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    expected = schema.get("type")
    if not isinstance(expected, str) or expected not in JSON_TYPES:
        return True
    if expected in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, JSON_TYPES[expected])


def _is_default(value: Any, key: str, properties: Any, required: set[str]) -> bool:
    """An optional argument passed with its schema's default value: the same call as leaving it out."""
    if key in required or not isinstance(properties, dict):
        return False
    schema = properties.get(key)
    return isinstance(schema, dict) and "default" in schema and values_equal(value, schema["default"])


def call_mismatch(pred: dict[str, Any], ref: dict[str, Any], schema: dict[str, Any] | None) -> str | None:
    """Why `pred` is not the reference call `ref` (None when it matches)."""
    if _name(pred) != _name(ref):
        return f"called {_name(pred)!r} instead of {_name(ref)!r}"
    args, want = _arguments(pred), _arguments(ref) or {}
    if args is None:
        return "arguments are not a JSON object"
    properties = (schema or {}).get("properties")
    required = (schema or {}).get("required")
    for key in required if isinstance(required, list) else list(want):
        if key not in args:
            return f"missing required argument {key!r}"
    if isinstance(properties, dict):
        for key, value in args.items():
            if key not in properties:
                return f"argument {key!r} is not in the schema"
            if isinstance(properties[key], dict) and not _type_ok(value, properties[key]):
                return f"argument {key!r} has the wrong type"
    required_keys = set(required) if isinstance(required, list) else set(want)
    for key in args:
        if key not in want and not _is_default(args[key], key, properties, required_keys):
            return f"argument {key!r} is not in the reference call"
    for key, value in want.items():
        if key not in args:
            if _is_default(value, key, properties, required_keys):
                continue
            return f"missing argument {key!r}"
        if not values_equal(args[key], value):
            return f"argument {key!r} is {args[key]!r}, expected {value!r}"
    return None


def calls_mismatch(
    preds: list[dict[str, Any]], refs: list[dict[str, Any]], schemas: dict[str, dict[str, Any]]
) -> str | None:
    """Why the predicted calls are not the reference calls, matched in any order (None when they match)."""
    if len(preds) != len(refs):
        return f"{len(preds)} tool call(s) instead of {len(refs)}"
    if len(refs) > 6:  # beyond 720 orderings: match greedily
        remaining = list(preds)
        for ref in refs:
            hit = next((p for p in remaining if call_mismatch(p, ref, schemas.get(_name(ref))) is None), None)
            if hit is None:
                return f"no call matches {_name(ref)!r}"
            remaining.remove(hit)
        return None
    first_reason = None
    for order in itertools.permutations(preds):
        reasons = [call_mismatch(p, r, schemas.get(_name(r))) for p, r in zip(order, refs, strict=True)]
        reason = next((r for r in reasons if r), None)
        if reason is None:
            return None
        first_reason = first_reason or reason
    return first_reason


# ------------------------------------------------------------------------------------------------ hallucination


def _numbers(text: str) -> list[float]:
    out = []
    for match in NUMBER.finditer(text):
        try:
            out.append(float(match.group().replace(",", "")))
        except ValueError:
            pass
    return out


def _derivable(value: float, known: set[float]) -> bool:
    def close(a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=1e-4, abs_tol=0.006)

    if any(close(value, k) for k in known):
        return True
    small = sorted(known)[:200]
    for a, b in itertools.combinations(small, 2):
        for result in (a + b, a - b, b - a, a * b, a / b if b else math.nan, b / a if a else math.nan):
            if close(value, result):
                return True
    return False


def hallucinations(
    prediction: Message,
    invalid_calls: list[str],
    prompt: list[Message],
    tools: list[dict[str, Any]] | None,
    reference: Message,
) -> list[str]:
    """What in `prediction` has no ground in what the model was given."""
    found = []
    offered = {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools or [] if "function" in t}
    if invalid_calls:
        found.append("invalid JSON arguments")
    for call in prediction.get("tool_calls") or []:
        name = _name(call)
        if name not in offered:
            found.append(f"tool {name!r} was not offered")
            continue
        args = _arguments(call)
        if args is None:
            if "invalid JSON arguments" not in found:
                found.append("invalid JSON arguments")
            continue
        properties = offered[name].get("properties")
        if isinstance(properties, dict):
            found.extend(f"argument {k!r} is not in {name}'s schema" for k in args if k not in properties)
    answer = content_text(prediction.get("content"))
    if answer:
        context = " ".join(content_text(m.get("content")) for m in prompt)
        context += " " + " ".join(
            str(c.get("function", {}).get("arguments", "")) for m in prompt for c in m.get("tool_calls") or []
        )
        known = set(_numbers(context)) | set(_numbers(content_text(reference.get("content"))))
        for value in _numbers(answer):
            if not _derivable(value, known):
                found.append(f"number {value:g} appears nowhere in the conversation")
                break
    return found


# ------------------------------------------------------------------------------------------------ one item


@dataclass
class Score:
    """How one generated turn compares with the reference turn."""

    kind: str  # "tool_call" or "text"
    correct: bool
    f1: float
    reason: str | None = None
    tool_name_correct: bool | None = None
    tool_args_correct: bool | None = None
    reference_refusal: bool = False
    predicted_refusal: bool = False
    hallucinations: list[str] = field(default_factory=list)


def _canonical_calls(calls: list[dict[str, Any]]) -> str:
    parts = []
    for call in calls:
        args = _arguments(call)
        values = " ".join(f"{k} {json.dumps(v, ensure_ascii=False)}" for k, v in sorted((args or {}).items()))
        parts.append(f"{_name(call)} {values}")
    return " ".join(sorted(parts))


def score(
    prediction: Message,
    reference: Message,
    prompt: list[Message],
    tools: list[dict[str, Any]] | None,
    invalid_calls: list[str] | None = None,
) -> Score:
    schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools or [] if "function" in t}
    ref_calls = reference.get("tool_calls") or []
    pred_calls = prediction.get("tool_calls") or []
    flags = hallucinations(prediction, invalid_calls or [], prompt, tools, reference)
    ref_refusal, pred_refusal = is_refusal(reference), is_refusal(prediction)
    if ref_calls:
        reason = calls_mismatch(pred_calls, ref_calls, schemas)
        names_ok = sorted(map(_name, pred_calls)) == sorted(map(_name, ref_calls))
        return Score(
            kind="tool_call",
            correct=reason is None,
            f1=token_f1(_canonical_calls(pred_calls), _canonical_calls(ref_calls)),
            reason=reason,
            tool_name_correct=names_ok,
            tool_args_correct=reason is None,
            reference_refusal=ref_refusal,
            predicted_refusal=pred_refusal,
            hallucinations=flags,
        )
    predicted, expected = content_text(prediction.get("content")), content_text(reference.get("content"))
    text_reason: str | None
    if pred_calls:
        text_reason = f"called {', '.join(map(_name, pred_calls))} where the reference answers in text"
    elif normalize(predicted) != normalize(expected):
        text_reason = "the answer differs from the reference"
    else:
        text_reason = None
    return Score(
        kind="text",
        correct=text_reason is None,
        f1=0.0 if pred_calls else token_f1(predicted, expected),
        reason=text_reason,
        reference_refusal=ref_refusal,
        predicted_refusal=pred_refusal,
        hallucinations=flags,
    )
