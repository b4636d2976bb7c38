"""Reading tool calls back out of a model's generated text, in the formats open chat templates use.

- Hermes / Qwen / clawtune's template: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks;
- Llama 3.x JSON: the whole reply is `{"name": ..., "parameters": {...}}` (or a list of them);
- Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`.

A reasoning block the reply opens with (`<think>...</think>`, as Qwen3, QwQ and the R1 distills write it, empty when
they do not reason) is split off as `reasoning`, so the answer and the calls are read from what follows it.

Calls come back in OpenAI's shape (`arguments` a JSON string). A call whose arguments are not valid JSON is kept,
with its raw text, and flagged: evaluation counts it as a hallucination, serving reports it instead of dropping it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
MISTRAL = "[TOOL_CALLS]"


@dataclass
class ParsedReply:
    """Generated text split into the visible answer and the tool calls."""

    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # raw text of calls that could not be read as JSON
    reasoning: str | None = None

    @property
    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message


def _as_call(obj: Any, index: int) -> dict[str, Any] | None:
    if not isinstance(obj, dict):
        return None
    fn: dict[str, Any] = obj["function"] if isinstance(obj.get("function"), dict) else obj
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        return None
    arguments = fn.get("arguments", fn.get("parameters", {}))
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {"id": f"call_{index}", "type": "function", "function": {"name": name, "arguments": arguments}}


def _raw_call(raw: str, index: int) -> dict[str, Any]:
    """A call whose JSON is broken: keep the name if it can be seen, and the raw arguments."""
    name = re.search(r'"name"\s*:\s*"([^"]+)"', raw)
    arguments = re.search(r'"(?:arguments|parameters)"\s*:\s*(.*?)\}?\s*$', raw, re.DOTALL)
    return {
        "id": f"call_{index}",
        "type": "function",
        "function": {"name": name.group(1) if name else "", "arguments": arguments.group(1) if arguments else raw},
    }


def parse_reply(text: str) -> ParsedReply:
    """The answer text and the tool calls in a generated reply (any of the formats above, or plain text)."""
    # QwQ and the R1 distills: the prompt opened the block, so the reply holds only its end.
    if "</think>" in text and (text.lstrip().startswith("<think>") or "<think>" not in text):
        thought, _, text = text.partition("</think>")
        reply = parse_reply(text)
        reply.reasoning = thought.strip().removeprefix("<think>").strip() or None
        return reply
    calls: list[dict[str, Any]] = []
    invalid: list[str] = []

    def take(raw: str) -> None:
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            invalid.append(raw)
            calls.append(_raw_call(raw, len(calls)))
            return
        for item in obj if isinstance(obj, list) else [obj]:
            call = _as_call(item, len(calls))
            if call is None:
                invalid.append(json.dumps(item, ensure_ascii=False))
            else:
                calls.append(call)

    if "<tool_call>" in text:
        for match in HERMES.finditer(text):
            take(match.group(1))
        content = HERMES.sub("", text).strip()
        return ParsedReply(content or None, calls, invalid)
    if MISTRAL in text:
        before, _, after = text.partition(MISTRAL)
        take(after.strip())
        return ParsedReply(before.strip() or None, calls, invalid)
    stripped = text.strip()
    if stripped.startswith(("{", "[")) and ('"name"' in stripped):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError:
            obj = None
        items = obj if isinstance(obj, list) else [obj]
        parsed = [_as_call(item, i) for i, item in enumerate(items)]
        if obj is not None and all(parsed):
            return ParsedReply(None, [c for c in parsed if c], [])
    return ParsedReply(stripped or None, [], [])
