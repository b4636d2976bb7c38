"""Train/serve parity: the exported templates must produce, token for token, the prompts training produced.

The field's most common complaint is a fine-tune that loses tool calling once served: the serving stack renders the
conversation (above all the tool signatures and earlier tool calls) differently from the training template, and the
model sees a prompt it never saw. Before an export is written, every prompt the model will be asked to continue (each
conversation cut before each assistant turn, with the generation prompt) is rendered through the training renderer
and through each exported template, tokenized with the training tokenizer, and compared. The first difference is
reported with the text around it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clawtune.artifacts.render import render_text, template_messages
from clawtune.messages import Example, Message
from clawtune.problems import InputError


class ParityError(InputError):
    """An exported template renders different tokens than training did."""


# A conversation that exercises what templates get wrong: a system prompt, tools with nested schemas, two calls in one
# turn, arguments with a list, characters JSON writers escape differently (<, >, &, quotes, non-ASCII), tool results.
SAMPLE: Example = {
    "messages": [
        {"role": "system", "content": "You are the finance agent. Answer briefly."},
        {"role": "user", "content": "Compare Q3 revenue for EMEA & APAC (in €) and flag anything < 5%."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "query_database",
                        "arguments": '{"query": "SELECT region, revenue FROM q3 WHERE region IN (\'EMEA\', \'APAC\')", "limit": 10}',
                    },
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_fx_rate", "arguments": '{"pair": "USD/EUR", "tags": ["spot", "q3"]}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '[{"region": "EMEA", "revenue": 1200000}]'},
        {"role": "tool", "tool_call_id": "call_2", "content": '{"rate": 0.92}'},
        {"role": "assistant", "content": "EMEA: €1.10M. APAC is missing from Q3; nothing under 5%."},
        {"role": "user", "content": 'Thanks — and "APAC" alone?'},
        {"role": "assistant", "content": "No APAC rows in Q3."},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "query_database",
                "description": "Run a read-only SQL query on the finance warehouse.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": "SQL <SELECT only>"},
                        "limit": {"type": "integer", "description": "Max rows"},
                    },
                    "required": ["query"],
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "get_fx_rate",
                "description": "Exchange rate for a currency pair.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "pair": {"type": "string", "enum": ["USD/EUR", "EUR/USD"]},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["pair"],
                },
            },
        },
    ],
}


@dataclass
class ParityReport:
    renderer: str
    prompts: int
    tokens: int


Renderer = Callable[[list[Message], list[dict[str, Any]] | None], str]


def prompts(example: Example) -> list[list[Message]]:
    """Each conversation prefix a model is asked to continue: the messages before each assistant turn."""
    messages = example["messages"]
    return [messages[:i] for i, m in enumerate(messages) if m.get("role") == "assistant" and i > 0]


def training_renderer(tokenizer: Any) -> Renderer:
    return lambda messages, tools: render_text(tokenizer, template_messages(messages), tools, True)


def check(name: str, tokenizer: Any, reference: Renderer, candidate: Renderer, examples: list[Example]) -> ParityReport:
    """Compare the tokens `candidate` renders with `reference`'s over every prompt of `examples`; raise on the first
    difference."""
    count = tokens = 0
    for number, example in enumerate(examples, 1):
        tools = example.get("tools")
        for prefix in prompts(example):
            expected_text = reference(prefix, tools)
            found_text = candidate(prefix, tools)
            expected = tokenizer(expected_text, add_special_tokens=False)["input_ids"]
            found = tokenizer(found_text, add_special_tokens=False)["input_ids"]
            if expected != found:
                raise ParityError(_describe(name, number, len(prefix), expected_text, found_text, expected, found))
            count += 1
            tokens += len(expected)
    return ParityReport(name, count, tokens)


def _describe(name: str, number: int, turns: int, expected: str, found: str, ids: list[int], other: list[int]) -> str:
    at = next((i for i, (a, b) in enumerate(zip(ids, other, strict=False)) if a != b), min(len(ids), len(other)))
    char = next(
        (i for i, (a, b) in enumerate(zip(expected, found, strict=False)) if a != b), min(len(expected), len(found))
    )
    return (
        f"{name} does not render what training rendered (conversation {number}, prompt before message {turns}): "
        f"token {at} differs ({len(ids)} tokens in training, {len(other)} here). Around character {char}:\n"
        f"  training: {expected[max(0, char - 60) : char + 60]!r}\n"
        f"  {name}: {found[max(0, char - 60) : char + 60]!r}\n"
        "A model served with a template it was not trained with loses tool calling; fix the template or retrain."
    )
