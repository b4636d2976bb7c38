"""A served model's token limits, and how many tokens one request may generate: plain functions, apart from HTTP.

The gateway publishes each model's limits in `/v1/models` (as vLLM does with `max_model_len`), so a client such as
`clawtune openclaw register` can configure an agent that never asks for more than the server gives. A request that
still asks for too much is clamped to what the server's limit and the context left after the prompt allow, and the
clamp is recorded in the log; `server.strict_max_tokens` answers OpenAI's 400 instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from clawtune.openai_http import ModelLimits
from clawtune.serve.config import ModelEntry, ServerSettings


def own_limits(max_context: int, settings: ServerSettings) -> ModelLimits:
    """A model this process runs: its context (the model's own, capped by `server.max_context`) and the output cap."""
    return ModelLimits(max_context, min(settings.max_tokens_limit, max_context))


def forwarded_limits(entry: ModelEntry, upstream: ModelLimits | None, settings: ServerSettings) -> ModelLimits:
    """A forwarded model: the context the engine's `/v1/models` states, else `context_window` from models.yaml; the
    output cap is the server's, lowered to the engine's own output limit or context where those are known."""
    context = (upstream.context_window if upstream else None) or entry.context_window
    caps = [settings.max_tokens_limit, upstream.max_output_tokens if upstream else None, context]
    return ModelLimits(context, min(c for c in caps if c))


def combined(limits: Iterable[ModelLimits]) -> ModelLimits:
    """What every one of several models can take (the arms of an experiment): the smallest of each known limit."""
    items = list(limits)
    contexts = [x.context_window for x in items if x.context_window]
    outputs = [x.max_output_tokens for x in items if x.max_output_tokens]
    return ModelLimits(min(contexts, default=None), min(outputs, default=None))


def card_fields(limits: ModelLimits) -> dict[str, Any]:
    """The limits as fields of a `/v1/models` card: clawtune's names, and vLLM's `max_model_len` for its readers."""
    fields: dict[str, Any] = {}
    if limits.context_window:
        fields["context_window"] = fields["max_model_len"] = limits.context_window
    if limits.max_output_tokens:
        fields["max_output_tokens"] = limits.max_output_tokens
    return fields


class BudgetError(ValueError):
    """A request the server answers with 400: says why, with OpenAI's `param` and `code`."""

    def __init__(self, message: str, param: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


@dataclass(frozen=True)
class OutputBudget:
    """How many tokens one request may generate, what it asked for, and why that was lowered (None if it was not)."""

    max_tokens: int
    requested: int | None
    clamp: str | None = None


def output_budget(
    requested: int | None,
    prompt_tokens: int | None,
    limits: ModelLimits,
    settings: ServerSettings,
    field: str = "max_tokens",
) -> OutputBudget:
    """The output budget of one request: at most the server's limit, the model's output limit, and what its context
    leaves after the prompt (`prompt_tokens` None: not counted here, as for a forwarded model). Without `requested`,
    the server's default within those caps. Over a cap: clamped and the reason given, or with `strict_max_tokens`
    the 400 OpenAI answers."""
    context = limits.context_window
    room = context - prompt_tokens if context is not None and prompt_tokens is not None else None
    if room is not None and room < 1:
        raise BudgetError(
            f"This model's maximum context length is {context} tokens. However, your messages resulted in "
            f"{prompt_tokens} tokens. Please reduce the length of the messages.",
            "messages",
            "context_length_exceeded",
        )
    limit = min(x for x in (settings.max_tokens_limit, limits.max_output_tokens) if x)
    cap = min(limit, room if room is not None else context or limit)
    if requested is None:
        return OutputBudget(min(settings.default_max_tokens, cap), None)
    if requested <= cap:
        return OutputBudget(requested, requested)
    if settings.strict_max_tokens:
        if requested > limit:
            raise BudgetError(f"max_tokens is limited to {limit} on this server", field)
        if room is not None:
            raise BudgetError(
                f"This model's maximum context length is {context} tokens. However, you requested "
                f"{(prompt_tokens or 0) + requested} tokens ({prompt_tokens} in the messages, {requested} in the "
                "completion). Please reduce the length of the messages or completion.",
                "messages",
                "context_length_exceeded",
            )
        raise BudgetError(f"max_tokens is limited to {cap} by this model's context of {context} tokens", field)
    if cap == room:
        why = f"the context of {context} tokens leaves {room} after the prompt of {prompt_tokens}"
    elif cap == limit:
        why = f"the server's output limit is {limit}"
    else:
        why = f"the model's context is {context} tokens"
    return OutputBudget(cap, requested, f"{field} {requested} -> {cap}: {why}")
