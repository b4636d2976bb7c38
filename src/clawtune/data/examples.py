"""Shaping conversations into training examples: token estimates, splitting at turn boundaries, duplicate keys."""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import orjson

from clawtune.messages import Example, Message, content_text

_SLICE = 1 << 20  # long texts are measured and hashed a slice at a time, never copied whole


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate: about 4 ASCII characters a token, one token per other character (CJK)."""
    if text.isascii():  # constant time in CPython
        return len(text) // 4 + 1
    ascii_chars = sum(len(text[i : i + _SLICE].encode("ascii", "ignore")) for i in range(0, len(text), _SLICE))
    return ascii_chars // 4 + (len(text) - ascii_chars) + 1


def _parts(message: Message) -> tuple[list[str], int]:
    """The texts a message puts in front of the model (content, tool names and arguments) and its call count."""
    texts = [content_text(message.get("content"))]
    calls = message.get("tool_calls") or []
    for call in calls:
        fn = call.get("function") or {}
        texts += [str(fn.get("name", "")), str(fn.get("arguments", ""))]
    return texts, len(calls)


def message_tokens(message: Message) -> int:
    """Estimated tokens of one message, with a few for the role markers of any chat template."""
    texts, calls = _parts(message)
    return 4 + 4 * calls + sum(approx_tokens(t) for t in texts)


def _char_bound(message: Message) -> int:
    """Characters of a message plus its overheads: never fewer than `message_tokens` counts (a token here never
    covers less than one character, and approx_tokens adds one per text)."""
    texts, calls = _parts(message)
    return 4 + 4 * calls + sum(len(t) + 1 for t in texts)


def turn_starts(messages: list[Message]) -> list[int]:
    """Indices where turns start: each turn opens at a user message and runs to the next one."""
    starts = [i for i, m in enumerate(messages) if m["role"] == "user"]
    return [0, *starts] if not starts or starts[0] != 0 else starts


def as_context(message: Message) -> Message:
    """A message repeated as context for a later piece: seen again, not trained again."""
    return {**message, "weight": 0} if message["role"] == "assistant" else message


Piece = tuple[list[int], range]


def chunk_indices(messages: list[Message], budget: int) -> tuple[list[Piece], int]:
    """Split a conversation at turn boundaries into pieces of at most `budget` tokens, as (context, body) indices.

    Each later piece opens with as many preceding turns as fit in half the budget, as untrained context, so every
    answer keeps the context it was given. Also returns how many single turns exceed the budget on their own (kept
    whole: training truncates or drops them, by its own flag).
    """
    # Fast path: a token never covers less than one character here, so characters bound tokens from above.
    chars = sum(_char_bound(m) for m in messages)
    if chars <= budget:
        return [([], range(len(messages)))], 0
    starts = [*turn_starts(messages), len(messages)]
    sizes = [sum(message_tokens(m) for m in messages[a:b]) for a, b in itertools.pairwise(starts)]
    pieces: list[Piece] = []
    oversized = 0
    first = 0
    while first < len(sizes):
        last, used = first, 0
        while last < len(sizes) and (last == first or used + sizes[last] <= budget):
            used += sizes[last]
            last += 1
        if last == first + 1 and sizes[first] > budget:
            oversized += 1
        room = min(max(budget - used, 0), budget // 2) if first else 0
        back = first
        while back > 0 and sizes[back - 1] <= room:
            back -= 1
            room -= sizes[back]
        pieces.append((list(range(starts[back], starts[first])), range(starts[first], starts[last])))
        first = last
    return pieces, oversized


# ASCII punctuation and white space, deleted (with case folded) for the near-duplicate key.
_NOISE = bytes(c for c in range(128) if not chr(c).isalnum())


def duplicate_keys(example: Example) -> tuple[bytes, bytes]:
    """(exact, near) keys of what a model sees in an example: the messages (system prompt included) and the names of
    the offered tools in order, ignoring tool-call ids (they differ between sessions, not in meaning).

    Near duplicates are equal after folding ASCII case and deleting ASCII punctuation and white space.
    """
    parts: list[Any] = [[(t.get("function") or {}).get("name") for t in example.get("tools") or []]]
    for m in example.get("messages") or []:
        calls = [[c["function"].get("name"), c["function"].get("arguments")] for c in m.get("tool_calls") or []]
        parts.append([m["role"], content_text(m.get("content")), calls, m.get("weight", 1)])
    data = orjson.dumps(parts)
    exact = hashlib.blake2b(data, digest_size=12).digest()
    near = hashlib.blake2b(digest_size=12)
    for i in range(0, len(data), _SLICE):  # byte-wise folding, a slice at a time: the same key, no whole copies
        near.update(data[i : i + _SLICE].lower().translate(None, _NOISE))
    return exact, near.digest()


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
