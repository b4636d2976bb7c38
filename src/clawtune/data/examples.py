"""Shaping conversations into training examples: token estimates, splitting at turn boundaries, duplicate keys."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import orjson

from clawtune.chat import Message, content_text


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate: about 4 ASCII characters a token, one token per other character (CJK)."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return ascii_chars // 4 + (len(text) - ascii_chars) + 1


def message_tokens(message: Message) -> int:
    """Estimated tokens of one message, with a few for the role markers of any chat template."""
    total = 4 + approx_tokens(content_text(message.get("content")))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        total += 4 + approx_tokens(str(fn.get("name", ""))) + approx_tokens(str(fn.get("arguments", "")))
    return total


def split_turns(messages: list[Message]) -> list[list[Message]]:
    """Turns: each starts at a user message and runs to the next one (assistant replies, tool calls and results)."""
    turns: list[list[Message]] = []
    for message in messages:
        if message["role"] == "user" or not turns:
            turns.append([])
        turns[-1].append(message)
    return turns


def as_context(turn: list[Message]) -> list[Message]:
    """A turn repeated as context for a later example: seen again, not trained again."""
    return [{**m, "weight": 0} if m["role"] == "assistant" else m for m in turn]


def chunk_messages(messages: list[Message], budget: int) -> tuple[list[list[Message]], int]:
    """Split a conversation at turn boundaries into pieces of at most `budget` tokens.

    Each later piece opens with as many preceding turns as fit in half the budget, untrained, so every answer keeps
    the context it was given. Returns the pieces and how many single turns were over the budget on their own (kept
    whole: training truncates or drops them, by its own flag).
    """
    turns = split_turns(messages)
    sizes = [sum(message_tokens(m) for m in t) for t in turns]
    pieces: list[list[Message]] = []
    oversized = 0
    start = 0
    while start < len(turns):
        end, used = start, 0
        while end < len(turns) and (end == start or used + sizes[end] <= budget):
            used += sizes[end]
            end += 1
        if end == start + 1 and sizes[start] > budget:
            oversized += 1
        context: list[Message] = []
        room = max(budget - used, 0) if start else 0
        room = min(room, budget // 2)
        back = start - 1
        while back >= 0 and sizes[back] <= room:
            context = as_context(turns[back]) + context
            room -= sizes[back]
            back -= 1
        pieces.append(context + [m for t in turns[start:end] for m in t])
        start = end
    return pieces, oversized


_PUNCT = re.compile(r"[^\w]+", re.UNICODE)


def duplicate_keys(messages: list[Message]) -> tuple[bytes, bytes]:
    """(exact, near) keys of an example's conversation, ignoring tool-call ids (they differ between sessions).

    Near duplicates are equal after lower-casing and removing punctuation and white space.
    """
    parts: list[Any] = []
    for m in messages:
        if m["role"] == "system":
            continue
        calls = [[c["function"].get("name"), c["function"].get("arguments")] for c in m.get("tool_calls") or []]
        parts.append([m["role"], content_text(m.get("content")), calls, m.get("weight", 1)])
    data = orjson.dumps(parts)
    exact = hashlib.blake2b(data, digest_size=12).digest()
    near = hashlib.blake2b(_PUNCT.sub("", data.decode().lower()).encode(), digest_size=12).digest()
    return exact, near


JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array", dict: "object"}


def called_tools(messages: list[Message]) -> dict[str, list[dict[str, Any]]]:
    """Tool name -> the parsed arguments of each call to it, in order of first call."""
    calls: dict[str, list[dict[str, Any]]] = {}
    for m in messages:
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except ValueError:
                args = {}
            calls.setdefault(str(fn.get("name")), []).append(args if isinstance(args, dict) else {})
    return calls


def infer_tool_schema(name: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """A JSON Schema for a tool whose schema the store did not keep, from the arguments it was called with."""
    properties: dict[str, Any] = {}
    for args in calls:
        for key, value in args.items():
            properties.setdefault(key, {"type": JSON_TYPES.get(type(value), "string")})
    required = sorted(k for k in properties if all(k in args for args in calls))
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": "Schema inferred by clawtune from the recorded calls (the store did not keep this tool's schema).",
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }
