"""What a chat template can say, and the rules the data adapts to, found by rendering small probe conversations.

Templates differ in what they accept: Mistral's raise on tool-call ids that are not 9 alphanumerics, the R1 distills
render a tool-call turn only when its content is None (not ""), DeepSeek's concatenate arguments as strings, most drop
the text written next to tool calls, and some have no system role (Gemma 2), no tool role or no tool-call syntax
(Phi-3.5, Granite 3.3 renders tool results but never the assistant's calls). Rather than a list of model names,
clawtune renders a few probe conversations through the template once and records:

- the adaptations it needs, applied the same way in training, parity checks and serving (`TemplateProfile.adapt`):
  tool-call ids rewritten to 9 alphanumerics (consistently within a conversation), empty content as None next to tool
  calls, arguments as JSON strings, text next to tool calls dropped where the template cannot say both;
- what it cannot say at all (a system prompt, tool results, tool calls, the tool list), so that an example needing it
  is refused up front with the reason and the fix (`TemplateProfile.refusal`), never trained as an empty turn.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clawtune.artifacts import chat_templates
from clawtune.messages import Example, Message, content_text, is_trained
from clawtune.problems import InputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SOURCE_ATTRIBUTE = "clawtune_template_source"  # set by models.load_tokenizer: where the chat template came from
GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
SHORT_ID = re.compile(r"^[A-Za-z0-9]{9}$")

# Words no template writes by itself: finding one in a rendering proves the probe's part of it was rendered.
SYSTEM = "probe-system-3306"
ARGUMENT = "probe-argument-4419"
RESULT = "probe-result-9917"
DESCRIPTION = "probe-description-5512"
PREAMBLE = "probe-preamble-6650"
ANSWER = "probe-answer-2281"
PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": f"Current weather in a city ({DESCRIPTION}).",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "The city."}},
                "required": ["city"],
            },
        },
    }
]


class TemplateError(InputError):
    """The chat template cannot render this conversation so that training matches serving; `rule` says which check
    refused it (see RULES), the message names the template and says how to fix it."""

    def __init__(self, message: str, rule: str = "template-error") -> None:
        super().__init__(message)
        self.rule = rule


# Each rule that refuses an example: what it means, and what to do about it.
RULES: dict[str, tuple[str, str]] = {
    "no-system-role": (
        "has no system role",
        "use a training template that places the system prompt (chat_template: clawtune:gemma-2 for Gemma 2), export "
        "the data without system prompts (--system-prompt drop), or set chat_template to a template that renders one",
    ),
    "no-tool-role": (
        "cannot render tool results",
        "train a base whose template has a tool role (Qwen2.5, Qwen3, Llama 3.1+, Mistral, Hermes, gpt-oss), or set "
        "chat_template to a template that renders them",
    ),
    "no-tool-calls": (
        "never renders the assistant's tool calls (the turn would be trained empty)",
        "train a base whose template renders tool calls, or set chat_template to a template that renders "
        "message.tool_calls in the model's own syntax",
    ),
    "tools-not-shown": (
        "never shows the tools offered (the model would learn to call tools it never saw)",
        "use a template that lists the tools (chat_template: clawtune:deepseek-r1-distill for the R1 distills), or "
        "set chat_template to one",
    ),
    "calls-dropped": (
        "dropped a trained turn's tool calls (one call per turn only, for example)",
        "split such turns in the data, or set chat_template to a template that renders every call",
    ),
    "content-dropped": (
        "dropped a trained turn's text",
        "set chat_template to a template that renders it",
    ),
    "history-dependent": (
        "renders earlier turns differently depending on what follows",
        "use a training template with {% generation %} markers whose renderings extend each other (clawtune ships "
        "some: `clawtune ft check-template` lists them), or set chat_template",
    ),
    "markers": (
        "has {% generation %} blocks that do not map one to one onto the assistant messages",
        "put exactly one {% generation %} block around each assistant message's output",
    ),
    "template-error": (
        "raised on the conversation",
        "fix the data to the template's rules (the message says which), or set chat_template",
    ),
}


def describe(rule: str) -> str:
    return RULES.get(rule, RULES["template-error"])[0]


def fix(rule: str) -> str:
    return RULES.get(rule, RULES["template-error"])[1]


@dataclass
class TemplateProfile:
    """What one chat template can say and the adaptations the data needs for it (see the module docstring)."""

    name: str
    markers: bool
    error: str | None = None  # cannot render even a user/assistant exchange
    needs_tools: str | None = None  # cannot render a conversation without tools (why)
    system: str | None = None  # why it cannot render a system prompt, or None
    tool_results: str | None = None
    tool_calls: str | None = None
    tools_list: str | None = None
    short_ids: bool = False
    none_content: bool = False
    string_arguments: bool = False
    drop_text_with_calls: bool = False
    alternative: tuple[str, TemplateProfile] | None = None  # clawtune's training template for this stock template

    def adaptations(self) -> list[str]:
        """The data adaptations this template needs, in words."""
        found = []
        if self.short_ids:
            found.append("tool-call ids rewritten to 9 alphanumerics")
        if self.none_content:
            found.append("empty content next to tool calls passed as None")
        if self.string_arguments:
            found.append("tool-call arguments passed as JSON strings")
        if self.drop_text_with_calls:
            found.append("text next to tool calls dropped (the template cannot say both)")
        return found

    def adapt(self, messages: list[Message]) -> tuple[list[Message], list[str]]:
        """Messages (already in template form, see render.template_messages) rewritten to the template's rules, and
        which adaptations changed something. Idempotent."""
        ids: dict[str, str] = {}
        changed: set[str] = set()
        out = []
        for message in messages:
            message = dict(message)
            calls = message.get("tool_calls")
            if message.get("role") == "assistant" and calls:
                if self.drop_text_with_calls and content_text(message.get("content")):
                    message["content"] = ""
                    changed.add("text next to tool calls dropped")
                if self.none_content and not message.get("content"):
                    message["content"] = None
                new_calls = []
                for call in calls:
                    call = dict(call)
                    function = dict(call.get("function") or {})
                    if self.short_ids:
                        short = _short_id(call.get("id"), ids)
                        if short != call.get("id"):
                            changed.add("tool-call ids rewritten")
                        call["id"] = short
                    if self.string_arguments and not isinstance(function.get("arguments"), str):
                        function["arguments"] = json.dumps(function.get("arguments"), ensure_ascii=False)
                    call["function"] = function
                    new_calls.append(call)
                message["tool_calls"] = new_calls
            elif message.get("role") == "tool" and self.short_ids and "tool_call_id" in message:
                message["tool_call_id"] = _short_id(message["tool_call_id"], ids)
            out.append(message)
        return out, sorted(changed)

    def refusal(self, example: Example) -> TemplateError | None:
        """The reason this template cannot express the example at all, found without rendering it, or None."""
        messages = [m for m in example.get("messages") or [] if isinstance(m, dict)]
        if self.error:
            return self.refuse("template-error", f"it cannot render a user/assistant exchange: {self.error}")
        if self.needs_tools and not example.get("tools"):
            return self.refuse("template-error", f"it cannot render a conversation without tools: {self.needs_tools}")
        if self.system and any(m.get("role") == "system" and content_text(m.get("content")) for m in messages):
            return self.refuse("no-system-role", self.system)
        if self.tool_results and any(m.get("role") == "tool" for m in messages):
            return self.refuse("no-tool-role", self.tool_results)
        calls = any(is_trained(m) and m.get("tool_calls") for m in messages)
        if calls and self.tool_calls:
            return self.refuse("no-tool-calls", self.tool_calls)
        if calls and self.tools_list and example.get("tools"):
            return self.refuse("tools-not-shown", self.tools_list)
        return None

    def refuse(self, rule: str, detail: str) -> TemplateError:
        """The error for an example this template cannot train, naming the template, the reason and the fix."""
        return TemplateError(f"{self.name}: {describe(rule)} ({detail}); fix: {self.fix(rule)}", rule)

    def fix(self, rule: str) -> str:
        """How to fix what `rule` refused: clawtune's training template for this family where it can, else the rule's
        general advice."""
        if self.alternative is not None:
            reference, other = self.alternative
            can = {
                "template-error": other.error is None,
                "no-system-role": other.system is None,
                "no-tool-role": other.tool_results is None,
                "no-tool-calls": other.tool_calls is None,
                "tools-not-shown": other.tools_list is None,
                "history-dependent": other.markers,
            }.get(rule, False)
            if can:
                return f"train with clawtune's training template for this family (chat_template: {reference})"
        return fix(rule)


def _short_id(original: Any, taken: dict[str, str]) -> str:
    """A 9-alphanumeric id for `original`, the same for the same id within one conversation."""
    key = str(original)
    if key in taken:
        return taken[key]
    if SHORT_ID.match(key):
        short = key
    else:
        salt = 0
        short = hashlib.sha256(key.encode()).hexdigest()[:9]
        while short in taken.values():
            salt += 1
            short = hashlib.sha256(f"{key}#{salt}".encode()).hexdigest()[:9]
    taken[key] = short
    return short


# ---- probing ------------------------------------------------------------------------------------------------


def raw_render(tokenizer: PreTrainedTokenizerBase, messages: list[Message], tools: Any, generation: bool) -> str:
    """The chat template applied as is (no adaptation)."""
    text = tokenizer.apply_chat_template(
        messages, tools=tools or None, tokenize=False, add_generation_prompt=generation
    )
    return str(text)


def _try(tokenizer: PreTrainedTokenizerBase, messages: list[Message], tools: Any) -> tuple[str | None, str | None]:
    try:
        return raw_render(tokenizer, messages, tools, False), None
    except Exception as exc:  # a template's raise_exception, or a TypeError on data it does not expect
        return None, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _tool_conversation(content: Any, call_id: str, arguments: Any) -> list[Message]:
    return [
        {"role": "user", "content": "What is the weather in the probe city?"},
        {
            "role": "assistant",
            "content": content,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": f'{{"result": "{RESULT}"}}'},
        {"role": "assistant", "content": ANSWER},
    ]


def probe(tokenizer: PreTrainedTokenizerBase, name: str) -> TemplateProfile:
    """Render the probe conversations through `tokenizer`'s chat template and record what it can say."""
    template = tokenizer.get_chat_template(None, PROBE_TOOLS)
    profile = TemplateProfile(name=name, markers=bool(GENERATION_TAG.search(template)))
    plain = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": ANSWER}]
    text, error = _try(tokenizer, plain, None)
    tools: Any = None
    if text is None or ANSWER not in text:
        tools = PROBE_TOOLS  # some tool-use templates (Hermes' tool_use variant) need a tool list
        with_tools, _ = _try(tokenizer, plain, tools)
        if with_tools is None or ANSWER not in with_tools:
            profile.error = error or "the assistant's answer is not in the rendering"
            return profile
        profile.needs_tools = error or "the assistant's answer is not in the rendering"
    text, error = _try(tokenizer, [{"role": "system", "content": SYSTEM}, *plain], tools)
    if text is None:
        profile.system = f"it raises: {error}"
    elif SYSTEM not in text:
        profile.system = "it drops the system prompt"

    # Tool calls: the fewest adaptations under which the call is rendered.
    first_error = None
    chosen: tuple[bool, bool, bool, str] | None = None
    fallback: tuple[bool, bool, bool, str] | None = None
    for short, none, string in [(s, n, a) for s in (False, True) for n in (False, True) for a in (False, True)]:
        call_id = "a1b2c3d4e" if short else "call_probe_0001"
        arguments: Any = {"city": ARGUMENT}
        messages = _tool_conversation(None if none else "", call_id, json.dumps(arguments) if string else arguments)
        text, error = _try(tokenizer, messages, PROBE_TOOLS)
        if text is None:
            first_error = first_error or error
            continue
        if fallback is None:
            fallback = (short, none, string, text)
        if ARGUMENT in text:
            chosen = (short, none, string, text)
            break
    if chosen is None and fallback is None:
        profile.tool_calls = profile.tool_results = f"it raises: {first_error}"
        profile.tools_list = None
        return profile
    short, none, string, text = chosen or fallback  # type: ignore[misc]
    profile.short_ids, profile.none_content, profile.string_arguments = short, none, string
    if chosen is None:
        profile.tool_calls = "message.tool_calls is not in the rendering"
    if RESULT not in text:
        profile.tool_results = "tool messages are not in the rendering"
    if DESCRIPTION not in text:
        profile.tools_list = "the tools offered are not in the rendering"
    if chosen is not None:
        call_id = "a1b2c3d4e" if short else "call_probe_0001"
        arguments = {"city": ARGUMENT}
        messages = _tool_conversation(PREAMBLE, call_id, json.dumps(arguments) if string else arguments)
        text, _ = _try(tokenizer, messages, PROBE_TOOLS)
        if text is None or PREAMBLE not in text or ARGUMENT not in text:
            profile.drop_text_with_calls = True
    return profile


_PROFILES: dict[tuple[str, str], TemplateProfile] = {}


def template_name(tokenizer: PreTrainedTokenizerBase) -> str:
    """How messages name the tokenizer's chat template: a shipped template, a recognised stock one, or the model's."""
    template = getattr(tokenizer, "chat_template", None)
    shipped = chat_templates.shipped_name(template)
    if shipped:
        return shipped
    family = chat_templates.stock_family(template)
    if family is not None:
        return f"the stock {family} template"
    source = getattr(tokenizer, SOURCE_ATTRIBUTE, None)
    if source and source not in ("model", chat_templates.DEFAULT_NAME):
        return f"the chat template {source}"
    where = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
    return f"the chat template of {where}"


def profile(tokenizer: PreTrainedTokenizerBase) -> TemplateProfile:
    """The tokenizer's template profile, probed once per template text and special tokens; for a recognised stock
    template, with the profile of clawtune's training template for it (to name it as the fix)."""
    template = getattr(tokenizer, "chat_template", None)
    key = (json.dumps(template, sort_keys=True), json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str))
    found = _PROFILES.get(key)
    if found is None:
        found = probe(tokenizer, template_name(tokenizer))
        shipped = chat_templates.for_stock(template)
        if shipped is not None:
            other = copy.copy(tokenizer)
            other.chat_template = shipped.text()
            found.alternative = (shipped.reference, profile(other))
        _PROFILES[key] = found
    return found
