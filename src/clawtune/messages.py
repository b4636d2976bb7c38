"""The one conversation type every stage speaks: OpenAI chat messages with tool calls, as plain dicts.

An example is `{"messages": [...], "tools": [...]?, "metadata": {...}?}`. Helpers here normalise the shapes people
actually write (the seed's flat tool calls, arguments as objects, content as block lists) into the canonical one.
"""

from __future__ import annotations

import json
from typing import Any

Message = dict[str, Any]
Example = dict[str, Any]


def content_text(content: Any) -> str:
    """The text of a message's content, whether a string, None or a list of content blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif isinstance(block, str):
                parts.append(block)
        return "".join(parts)
    return str(content)


def normalize_tool_call(call: Any, fallback_id: str) -> dict[str, Any]:
    """Return a canonical `{id, type: function, function: {name, arguments: str}}`; accepts the seed's flat form."""
    if not isinstance(call, dict):
        return call
    fn: Any = call.get("function") if isinstance(call.get("function"), dict) else call
    arguments = fn.get("arguments", "{}")
    if isinstance(arguments, dict | list):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {
        "id": call.get("id") or fallback_id,
        "type": "function",
        "function": {"name": fn.get("name"), "arguments": arguments},
    }


def normalize_example(example: Example) -> Example:
    """Canonical copy of an example: tool calls nested with ids, and unanswered `tool` messages given their call's id.

    The seed's example writes tool calls flat and its tool message has no `tool_call_id`: ids are generated per
    example (`call_<message>_<index>`) and each such tool message takes the id of the oldest call still unanswered.
    """
    out = dict(example)
    messages: list[Message] = []
    pending: list[str] = []
    for i, message in enumerate(example.get("messages") or []):
        if not isinstance(message, dict):
            messages.append(message)
            continue
        message = dict(message)
        if message.get("role") == "assistant" and isinstance(message.get("tool_calls"), list):
            calls = [normalize_tool_call(c, f"call_{i}_{j}") for j, c in enumerate(message["tool_calls"])]
            message["tool_calls"] = calls
            pending = [c["id"] for c in calls if isinstance(c, dict)]
        elif message.get("role") == "tool":
            if not message.get("tool_call_id") and pending:
                message["tool_call_id"] = pending[0]
            if message.get("tool_call_id") in pending:
                pending.remove(message["tool_call_id"])
        messages.append(message)
    out["messages"] = messages
    return out


def is_trained(message: Message) -> bool:
    """Whether an assistant message carries loss (OpenAI's `weight`, default 1)."""
    return message.get("role") == "assistant" and message.get("weight", 1) != 0
