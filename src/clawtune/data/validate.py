"""`clawtune ft validate`: check OpenAI chat fine-tuning JSONL and list every problem at once, like OpenAI's
validator (file:line, message index, key) but without stopping at the first.

The seed's flat tool calls (`{"name", "arguments"}`) and tool messages without `tool_call_id` are accepted: they are
normalised first (ids added) and `--output` writes the normalised file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawtune.logs.lines import iter_json_lines
from clawtune.messages import Example, normalize_example
from clawtune.problems import Problems

ROLES = {"system", "user", "assistant", "tool"}
OPENAI_MIN_EXAMPLES = 10


@dataclass
class ValidationResult:
    """What one validation run found."""

    examples: int = 0
    valid: int = 0
    problems: Problems = field(default_factory=Problems)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return len(self.problems) == 0 and self.examples > 0


def check_example(example: Example, file: str, line: int | None, problems: Problems) -> bool:
    """Add every problem of one (already normalised) example to `problems`; True if there was none."""
    before = len(problems)

    def bad(message: str, key: str | None = None, index: int | None = None) -> None:
        problems.add(file, line, "invalid-example", message, key=key, message_index=index)

    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        bad("expected a non-empty list", key="messages")
        return False
    tool_names = _check_tools(example.get("tools"), bad)
    pending: list[str] = []
    trained = 0
    seen_non_system = False
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            bad("expected an object", index=i)
            continue
        role = message.get("role")
        if role not in ROLES:
            bad(f"expected one of {sorted(ROLES)}, got {role!r}", key="role", index=i)
            continue
        if role == "system":
            if seen_non_system:
                bad("a system message must come before every other message", key="role", index=i)
        elif not seen_non_system and role != "user":
            bad(f"the first message after the system prompt must be from the user, got {role!r}", key="role", index=i)
        if role != "system":
            seen_non_system = True
        if pending and role != "tool":
            bad(
                f"tool call(s) {pending} are not answered by tool messages before this {role} message",
                key="tool_calls",
                index=i,
            )
            pending = []
        _check_content(message, role, bad, i)
        if "weight" in message:
            if role != "assistant":
                bad("only assistant messages take a weight", key="weight", index=i)
            elif message["weight"] not in (0, 1):
                bad(f"expected 0 or 1, got {message['weight']!r}", key="weight", index=i)
        if role == "assistant":
            trained += message.get("weight", 1) == 1
            pending = _check_calls(message.get("tool_calls"), tool_names, bad, i)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                bad("expected the id of the tool call this answers", key="tool_call_id", index=i)
            elif call_id not in pending:
                bad(f"answers no pending tool call (id {call_id!r})", key="tool_call_id", index=i)
            else:
                pending.remove(call_id)
    if trained == 0:
        bad("no assistant message is trained (none, or all have weight 0)", key="messages")
    return len(problems) == before


def _check_tools(tools: Any, bad: Any) -> set[str] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        bad("expected a list of tool definitions", key="tools")
        return None
    names = set()
    for j, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            bad('expected {"type": "function", "function": {...}}', key=f"tools[{j}]")
            continue
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            bad("expected a name", key=f"tools[{j}].function.name")
            continue
        names.add(fn["name"])
        params = fn.get("parameters")
        if params is not None and (not isinstance(params, dict) or params.get("type", "object") != "object"):
            bad("expected a JSON Schema object", key=f"tools[{j}].function.parameters")
    return names


def _check_content(message: dict[str, Any], role: str, bad: Any, i: int) -> None:
    content = message.get("content")
    if role == "assistant" and message.get("tool_calls"):
        if content is not None and not isinstance(content, str):
            bad("expected a string or null", key="content", index=i)
        return
    if isinstance(content, list):
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            bad("expected a string or a list of text parts", key="content", index=i)
    elif not isinstance(content, str):
        bad(f"expected a string, got {type(content).__name__}", key="content", index=i)
    elif not content.strip() and role in ("user", "assistant"):
        bad("empty content", key="content", index=i)


def _check_calls(calls: Any, tool_names: set[str] | None, bad: Any, i: int) -> list[str]:
    if calls is None:
        return []
    if not isinstance(calls, list) or not calls:
        bad("expected a non-empty list", key="tool_calls", index=i)
        return []
    ids = []
    for j, call in enumerate(calls):
        key = f"tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            bad("expected {id, type, function: {name, arguments}}", key=key, index=i)
            continue
        if not isinstance(call.get("id"), str) or not call["id"]:
            bad("expected a string id", key=f"{key}.id", index=i)
        elif call["id"] in ids:
            bad(f"duplicate id {call['id']!r}", key=f"{key}.id", index=i)
        else:
            ids.append(call["id"])
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            bad("expected a function name", key=f"{key}.function.name", index=i)
        elif tool_names is not None and name not in tool_names:
            bad(f"calls {name!r}, which is not in `tools`", key=f"{key}.function.name", index=i)
        arguments = fn.get("arguments")
        if not isinstance(arguments, str):
            bad("expected a JSON-encoded string", key=f"{key}.function.arguments", index=i)
            continue
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError as exc:
            bad(f"not valid JSON: {exc.msg} at column {exc.colno}", key=f"{key}.function.arguments", index=i)
            continue
        if not isinstance(parsed, dict):
            bad("expected a JSON object", key=f"{key}.function.arguments", index=i)
    return ids


def iter_examples(path: Path, problems: Problems) -> Iterator[tuple[int, Example]]:
    """(line, normalised example) for each JSON line of a file; unreadable lines go to `problems`."""
    for lineno, obj in iter_json_lines(path, problems):
        yield lineno, normalize_example(obj)


def validate_files(paths: list[Path], output: Path | None = None, strict: bool = False) -> ValidationResult:
    """Validate files (optionally writing the normalised examples to `output`)."""
    result = ValidationResult(problems=Problems(strict=strict, keep=10_000))
    out = open(output, "w", encoding="utf-8") if output else None  # noqa: SIM115 - closed below
    try:
        for path in paths:
            if not path.is_file():
                result.problems.add(str(path), None, "missing-file", "no such file")
                continue
            for lineno, example in iter_examples(path, result.problems):
                result.examples += 1
                if check_example(example, str(path), lineno, result.problems):
                    result.valid += 1
                if out:
                    out.write(json.dumps(example, ensure_ascii=False) + "\n")
    finally:
        if out:
            out.close()
    if 0 < result.examples < OPENAI_MIN_EXAMPLES:
        result.warnings.append(
            f"{result.examples} examples: OpenAI's fine-tuning API refuses fewer than {OPENAI_MIN_EXAMPLES}"
        )
    return result


def validate_command(files: list[Path], output: Path | None, strict: bool) -> int:
    """`ft validate`: every problem on stderr, then OK (exit 0) or the count (exit 1)."""
    import typer

    result = validate_files(files, output, strict)
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
        return 0
    typer.secho(
        f"{len(result.problems)} problems; {result.valid} of {result.examples} examples valid", fg="red", err=True
    )
    return 1
