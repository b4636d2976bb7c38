"""Render an example with the model's chat template and its tools, and mark which tokens carry loss.

Two ways to find each trained assistant message's characters:

- **generation markers**, where the template has them (clawtune's training templates, `artifacts/templates/`): the
  conversation is rendered once and the template reports where each `{% generation %}` block starts and ends (the
  same spans transformers turns into `return_assistant_tokens_mask`). Blocks map one to one, in order, onto the
  assistant messages, so a `weight: 0` turn's block stays untrained;
- **prefixes**, for templates without markers: the conversation up to each trained message is rendered twice, once
  ending in the generation prompt and once including the message; what the second adds is the turn.

Either way each trained turn is then checked: the text before it must be exactly the prompt a server renders for
that turn (a template that rewrites earlier turns depending on what follows cannot be trained on, and is refused with
the rule `history-dependent`), and its tool calls and text must be in what is trained (a template that drops them
is refused rather than training an empty turn). Messages are adapted to the template's rules first (see
`template_profile.py`), the same way in training, in the parity check and in serving.

Tokens overlapping a trained span are supervised; every other token (system, user, tool results, scaffolding such as
the generation prompt, `weight: 0` turns, whitespace after a turn's end token) gets the label -100. A token that
straddles the start of an assistant turn (QwQ's prompt ends in "<think>\\n" and the turn starts with "\\n</think>":
Qwen's tokenizers merge the two newlines) is split there, so a turn starts from exactly the tokens of its prompt.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clawtune.artifacts.template_profile import TemplateError, TemplateProfile, profile, raw_render
from clawtune.messages import Example, Message, content_text, is_trained

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE = -100

__all__ = ["IGNORE", "Rendered", "TemplateError", "render_example", "render_text", "template_messages", "trained_spans"]


@dataclass(slots=True)
class Rendered:
    """One tokenized example: ids and labels (IGNORE where no loss), and how many labels are trained."""

    input_ids: list[int]
    labels: list[int]
    adapted: list[str] = field(default_factory=list)  # data adaptations the template's rules made (templates.py)

    @property
    def trained(self) -> int:
        return sum(label != IGNORE for label in self.labels)

    def truncated(self, length: int) -> Rendered:
        return Rendered(self.input_ids[:length], self.labels[:length], self.adapted)


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
    """The chat template applied to already-converted messages (see `template_messages`), adapted to its rules."""
    adapted, _ = profile(tokenizer).adapt(messages)
    return raw_render(tokenizer, adapted, tools, add_generation_prompt)


def _marked(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], tools: Any
) -> tuple[str, list[tuple[int, int]]]:
    """The rendering and its `{% generation %}` spans.

    transformers' `render_jinja_template` is what `apply_chat_template(return_assistant_tokens_mask=True)` calls; it
    is used directly because the token mask it returns merges the blocks, and each block must map to its message.
    """
    from transformers.utils.chat_template_utils import render_jinja_template

    special: dict[str, Any] = dict(tokenizer.special_tokens_map)
    result: Any = render_jinja_template(  # annotated as returning str; it returns (texts, spans per text)
        conversations=[messages],
        tools=tools or None,
        chat_template=tokenizer.get_chat_template(None, tools or None),
        return_assistant_tokens_mask=True,
        add_generation_prompt=False,
        **special,
    )
    rendered, spans = result
    return rendered[0], [(int(a), int(b)) for a, b in spans[0]]


@dataclass
class _Turns:
    text: str
    spans: list[tuple[int, int]]  # trained characters, in order
    starts: list[int]  # where each trained turn starts
    adapted: list[str]


def _turns(tokenizer: PreTrainedTokenizerBase, example: Example) -> _Turns:
    original = example["messages"]
    rules = profile(tokenizer)
    refused = rules.refusal(example)
    if refused is not None:
        raise refused
    messages, adapted = rules.adapt(template_messages(original))
    tools = example.get("tools")
    assistants = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if rules.markers:
        full, blocks = _marked(tokenizer, messages, tools)
        if len(blocks) != len(assistants):
            raise TemplateError(
                f"{rules.name}: {len(blocks)} {{% generation %}} blocks for {len(assistants)} assistant messages; "
                "each assistant message needs exactly one",
                "markers",
            )
    else:
        full = raw_render(tokenizer, messages, tools, False)
        blocks = []
        for i in assistants:
            if not is_trained(original[i]) or i == 0:
                blocks.append((0, 0))  # not trained: its place in the text is not needed
                continue
            before = raw_render(tokenizer, messages[:i], tools, True)
            through = raw_render(tokenizer, messages[: i + 1], tools, False)
            if not through.startswith(before):
                raise _history(rules, i, before, through)
            if not full.startswith(through):
                raise _history(rules, i, through, full)
            blocks.append((len(before), len(through)))
    spans = []
    starts = []
    for (start, end), i in zip(blocks, assistants, strict=True):
        if not is_trained(original[i]) or i == 0:
            continue
        if rules.markers:
            prompt = raw_render(tokenizer, messages[:i], tools, True)
            if full[:start] != prompt:
                raise _history(rules, i, prompt, full[:start])
        turn = full[start:end].rstrip()
        _check_said(rules, i, messages[i], turn)
        starts.append(start)
        if turn:
            spans.append((start, start + len(turn)))
    return _Turns(full, spans, starts, adapted)


def _history(rules: TemplateProfile, index: int, expected: str, found: str) -> TemplateError:
    """`found` should start with `expected` (the prompt of message `index`) but does not."""
    at = next(
        (k for k, (a, b) in enumerate(zip(expected, found, strict=False)) if a != b), min(len(expected), len(found))
    )
    return rules.refuse(
        "history-dependent",
        f"message {index}: the text trained on would differ from what the model sees when serving; around character "
        f"{at}, {expected[max(0, at - 30) : at + 30]!r} in one rendering, {found[max(0, at - 30) : at + 30]!r} in the "
        "other",
    )


def _check_said(rules: TemplateProfile, index: int, message: Message, turn: str) -> None:
    """Refuse a trained turn whose tool calls or text the template did not render."""
    calls = message.get("tool_calls") or []
    names = [str((call.get("function") or {}).get("name")) for call in calls]
    for call in calls:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                arguments = None
        keys = list(arguments) if isinstance(arguments, dict) else []
        name = str(function.get("name"))
        missing = [w for w in [name, *(str(k) for k in keys)] if w not in turn]
        if not missing and turn.count(name) < names.count(name):
            missing = [f"{names.count(name)} calls of {name}"]  # a template writing one call per turn
        if missing:
            raise rules.refuse(
                "calls-dropped",
                f"message {index} calls {name} but its rendered turn lacks {', '.join(repr(w) for w in missing)}: "
                f"{turn[:120]!r}",
            )
    text = content_text(message.get("content"))
    visible = text.split("</think>")[-1].strip()
    if visible and visible not in turn:
        raise rules.refuse("content-dropped", f"message {index}: its rendered turn lacks {visible[:60]!r}")


def trained_spans(tokenizer: PreTrainedTokenizerBase, example: Example) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its trained assistant messages."""
    turns = _turns(tokenizer, example)
    return turns.text, turns.spans


def render_example(tokenizer: PreTrainedTokenizerBase, example: Example, train_on_inputs: bool = False) -> Rendered:
    """Tokenize an example with assistant-only labels (every token's, with `train_on_inputs`)."""
    turns = _turns(tokenizer, example)
    ids, offsets = _tokenize(tokenizer, turns.text, turns.starts)
    if train_on_inputs:
        return Rendered(ids, list(ids), turns.adapted)
    labels = [IGNORE] * len(ids)
    spans = turns.spans
    j = 0
    for t, (start, end) in enumerate(offsets):
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        if j == len(spans):
            break
        if end > spans[j][0] and start < spans[j][1]:
            labels[t] = ids[t]
    return Rendered(ids, labels, turns.adapted)


def _tokenize(
    tokenizer: PreTrainedTokenizerBase, text: str, starts: list[int]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of `text`; a token straddling a turn's start is re-tokenized as two pieces
    (when each piece round-trips to its own text), so the turn starts on a token boundary as it does at serving."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoding["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(o) for o in encoding["offset_mapping"]]  # type: ignore[misc]
    cuts = sorted(set(starts))
    if not cuts:
        return ids, offsets
    out_ids: list[int] = []
    out_offsets: list[tuple[int, int]] = []
    c = 0
    for token, (start, end) in zip(ids, offsets, strict=True):
        while c < len(cuts) and cuts[c] <= start:
            c += 1
        inner = [cut for cut in cuts[c:] if cut < end]
        if not inner:
            out_ids.append(token)
            out_offsets.append((start, end))
            continue
        pieces = [start, *inner, end]
        split_ids: list[int] = []
        split_offsets: list[tuple[int, int]] = []
        for a, b in itertools.pairwise(pieces):
            piece = tokenizer(text[a:b], add_special_tokens=False, return_offsets_mapping=True)
            if tokenizer.decode(piece["input_ids"], clean_up_tokenization_spaces=False) != text[a:b]:
                break
            split_ids += piece["input_ids"]
            split_offsets += [(a + s, a + e) for s, e in piece["offset_mapping"]]
        else:
            out_ids += split_ids
            out_offsets += split_offsets
            continue
        out_ids.append(token)
        out_offsets.append((start, end))
    return out_ids, out_offsets
