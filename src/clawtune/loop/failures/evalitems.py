"""Wrong answers of an evaluation (`ft evaluate`'s `eval-items.jsonl`) as failing turns, each corrected by its item's
reference answer.

An item is one assistant turn of a test example: the conversation before it (`prompt`), the tool schemas, the
reference; the evaluated model (`fine_tuned`: the `--model-dir` of `ft evaluate`) answered it, and the answer was
judged. An item it got wrong becomes a failure: the prompt as context and the model's answer as the failing turn,
with the reference as the correction (checked like any other correction). Only the `test` set's items are read: the
`held_out` items judge a retrain (training on them would make the gate measure memory), the `general` items are the
forgetting set (the same), and BFCL's cases have no reference answer to train on; each is counted as dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clawtune.data.recipe import category
from clawtune.logs.lines import iter_json_lines
from clawtune.loop.failures.model import Failure, as_context
from clawtune.problems import InputError, Problems

ITEMS_FILE = "eval-items.jsonl"  # evaluate.gate.ITEMS_FILE (a higher layer: not imported)
TRAINABLE_SETS = ("test",)
WHY_NOT = {
    "held_out": "its items judge a retrain",
    "general": "the forgetting set: its items measure what the model keeps",
    "bfcl": "BFCL's cases carry no reference answer to train on",
}


def items_file(path: Path) -> Path:
    """--eval-items: the file, or the folder `ft evaluate` wrote it into."""
    if path.is_dir():
        path = path / ITEMS_FILE
    if not path.is_file():
        raise InputError(f"--eval-items {path}: no such file (ft evaluate writes {ITEMS_FILE} beside its report)")
    return path


def _bad(problems: Problems, path: Path, lineno: int, key: str, message: str) -> None:
    problems.add(str(path), lineno, "bad-eval-item", message, key=key)


def _message_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and m.get("role") for m in value)


def eval_failures(path: Path, agent_id: str, problems: Problems, dropped: Counter[str]) -> Iterator[Failure]:
    """The failures of one eval-items.jsonl: the test items the evaluated model answered wrong."""
    when = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    for lineno, row in iter_json_lines(path, problems):
        which = row.get("set")
        if which not in TRAINABLE_SETS:
            if which in WHY_NOT:
                dropped[f"eval_items_{which}_set"] += 1
            else:
                _bad(problems, path, lineno, "set", f"expected one of test, held_out, general, bfcl; got {which!r}")
            continue
        side = row.get("fine_tuned")
        if not isinstance(side, dict) or not isinstance(side.get("correct"), bool):
            _bad(problems, path, lineno, "fine_tuned", 'expected {"correct": true|false, "message": {...}, ...}')
            continue
        if side["correct"]:
            continue
        prompt: Any = row.get("prompt")
        reference: Any = row.get("reference_message")
        answer: Any = side.get("message")
        if prompt is None and reference is None:
            _bad(problems, path, lineno, "prompt", "no prompt: written by an older clawtune; run ft evaluate again")
            continue
        if not _message_list(prompt) or prompt[-1].get("role") not in ("user", "tool"):
            _bad(problems, path, lineno, "prompt", "expected the messages before the answer, ending with user or tool")
            continue
        if not isinstance(reference, dict) or reference.get("role") != "assistant":
            _bad(problems, path, lineno, "reference_message", "expected the reference assistant message")
            continue
        if not isinstance(answer, dict) or answer.get("role") != "assistant":
            _bad(problems, path, lineno, "fine_tuned.message", "expected the evaluated model's assistant message")
            continue
        tools = row.get("tool_schemas")
        if tools is not None and not isinstance(tools, list):
            _bad(problems, path, lineno, "tool_schemas", "expected a list of tool definitions")
            continue
        item = str(row.get("id") or f"line-{lineno}")
        session = str(row.get("session_id") or f"{path.name}:{item}")
        signal = {"type": "eval_wrong", "set": which, "item": item, "reason": side.get("reason")}
        all_messages = [*prompt, answer]
        failure = Failure(
            source="eval",
            session_id=session,
            context=[as_context(m) for m in prompt[:-1]],
            turn=[dict(prompt[-1]), {k: v for k, v in answer.items() if k != "weight"}],
            signals=[signal],
            fields={
                "source": "eval",
                "eval_wrong": True,
                "user_feedback": "none",
                "tool_call_error": False,
                "tool_call_invalid": False,
                "aborted": False,
                "assistant_error": False,
                "prompt_error": False,
                "user_correction": False,
                "negative_reaction": False,
                "server_error": False,
                "timeout": False,
                "session_id": session,
                "agent_id": agent_id,
                "date": when.date(),
                "category": row.get("category") or category({"messages": all_messages}),
                "signal": ["eval_wrong"],
                "tool": sorted(str((c.get("function") or {}).get("name")) for c in answer.get("tool_calls") or [] if c),
                "reaction": [],
            },
            location=f"{path}:{lineno}",
            anchor=item,
            tools=tools or None,
            meta={"agent_id": agent_id, "eval_item": item, "eval_set": which, "time": when.isoformat()},
        )
        failure.correction = [{k: v for k, v in reference.items() if k != "weight"}]
        failure.correction_how = "reference"
        failure.correction_from = f"{path}:{lineno} (the item's reference answer)"
        yield failure
