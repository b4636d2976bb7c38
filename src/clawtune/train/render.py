"""Render an example with the model's own chat template and its tools, and mark which tokens carry loss.

The mask does not rely on `{% generation %}` markers (most templates have none). Each trained assistant message's
characters are found by rendering the conversation up to it twice: once ending in the generation prompt, once
including the message. What the second adds to the first is exactly what the model must produce at serving time
(the content, the tool calls, the end-of-turn token); trailing whitespace after it is left untrained. Tokens that
overlap those character spans are supervised; every other token (system, user, tool results, the template's
scaffolding, assistant messages with `weight: 0`) gets the label -100.

A template that rewrites earlier turns depending on what follows (some reasoning templates drop old thinking) breaks
the prefix property this relies on; it is detected and reported instead of producing silently wrong masks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clawtune.chat import Example, Message, content_text, is_trained
from clawtune.problems import InputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE = -100


class TemplateError(InputError):
    """The chat template cannot render this conversation so that training matches serving."""


@dataclass(slots=True)
class Rendered:
    """One tokenized example: ids and labels (IGNORE where no loss), and how many labels are trained."""

    input_ids: list[int]
    labels: list[int]

    @property
    def trained(self) -> int:
        return sum(label != IGNORE for label in self.labels)

    def truncated(self, length: int) -> Rendered:
        return Rendered(self.input_ids[:length], self.labels[:length])


def template_messages(messages: list[Message]) -> list[Message]:
    """Messages as Hugging Face chat templates expect them: text content, tool-call arguments as objects.

    OpenAI data carries arguments as JSON strings; Hugging Face templates (Qwen, Llama 3, Mistral...) apply `tojson`
    to them, which would double-encode a string. Arguments that are not valid JSON stay strings.
    """
    out = []
    for message in messages:
        converted: Message = {"role": message["role"], "content": content_text(message.get("content"))}
        calls = message.get("tool_calls")
        if calls:
            converted["tool_calls"] = [_template_call(call) for call in calls]
        for key in ("tool_call_id", "name"):
            if key in message:
                converted[key] = message[key]
        out.append(converted)
    return out


def _template_call(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function", call)
    arguments = fn.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    return {"id": call.get("id"), "type": "function", "function": {"name": fn.get("name"), "arguments": arguments}}


def render_text(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], tools: Any, add_generation_prompt: bool
) -> str:
    """The chat template applied to already-converted messages (see `template_messages`)."""
    text = tokenizer.apply_chat_template(
        messages, tools=tools or None, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return str(text)


def trained_spans(tokenizer: PreTrainedTokenizerBase, example: Example) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its trained assistant messages."""
    original = example["messages"]
    messages = template_messages(original)
    tools = example.get("tools")
    full = render_text(tokenizer, messages, tools, False)
    spans = []
    for i, message in enumerate(original):
        if not is_trained(message) or i == 0:
            continue
        before = render_text(tokenizer, messages[:i], tools, True)
        through = render_text(tokenizer, messages[: i + 1], tools, False)
        if not through.startswith(before) or not full.startswith(through):
            raise TemplateError(
                f"message {i}: the chat template renders earlier turns differently depending on what follows, "
                "so the text trained on would differ from what the model sees when serving; use a template whose "
                "renderings extend each other (set chat_template in the config)"
            )
        added = through[len(before) :].rstrip()
        if added:
            spans.append((len(before), len(before) + len(added)))
    return full, spans


def render_example(tokenizer: PreTrainedTokenizerBase, example: Example, train_on_inputs: bool = False) -> Rendered:
    """Tokenize an example with assistant-only labels (every token's, with `train_on_inputs`)."""
    text, spans = trained_spans(tokenizer, example)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = encoding["input_ids"]
    if train_on_inputs:
        return Rendered(ids, list(ids))
    labels = [IGNORE] * len(ids)
    j = 0
    for t, (start, end) in enumerate(encoding["offset_mapping"]):
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        if j == len(spans):
            break
        if end > spans[j][0] and start < spans[j][1]:
            labels[t] = ids[t]
    return Rendered(ids, labels)
