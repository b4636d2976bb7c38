"""The fields the `--criteria` language tests, and its help text (kept apart from the parser so `--help` is cheap)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """One name the criteria can test: its kind (bool, text, number, date) and what it means."""

    kind: str
    help: str
    choices: tuple[str, ...] = ()
    many: bool = False  # a turn can have several values (any of them may match)


FIELDS: dict[str, Field] = {
    "user_feedback": Field(
        "text",
        "the user's verdict on the answer: negative or positive (from /v1/feedback or an emoji reaction), else none",
        ("negative", "positive", "none"),
    ),
    "tool_call_error": Field("bool", "a tool call of the turn failed (isError, or a non-zero exit code)"),
    "tool_call_invalid": Field(
        "bool", "the gateway caught an invalid tool call (a tool not offered, arguments not JSON)"
    ),
    "aborted": Field("bool", "the assistant turn was aborted (stopReason aborted)"),
    "assistant_error": Field("bool", "the model call ended in an error (stopReason error)"),
    "prompt_error": Field("bool", "OpenClaw recorded a prompt error for the turn (openclaw:prompt-error)"),
    "user_correction": Field("bool", "the user's next message corrects this answer (English or Chinese)"),
    "negative_reaction": Field("bool", "the user reacted to the answer with a negative emoji"),
    "eval_wrong": Field(
        "bool", "the evaluated model answered an evaluation item wrong (--eval-items: ft evaluate's eval-items.jsonl)"
    ),
    "server_error": Field("bool", "the gateway answered 5xx"),
    "timeout": Field("bool", "the gateway or its upstream timed out (504, or a timeout error)"),
    "status": Field("number", "the gateway's HTTP status (gateway turns only)"),
    "latency_ms": Field("number", "the gateway's latency in milliseconds (gateway turns only)"),
    "model": Field("text", "the model that produced the answer (gateway: the served id; OpenClaw: its model id)"),
    "adapter": Field("text", "the adapter that produced the answer (gateway)"),
    "arm": Field("text", "the A/B arm the request went to (gateway)"),
    "experiment": Field("text", "the A/B experiment the request belonged to (gateway)"),
    "channel": Field("text", "the channel of the session (telegram, discord, ...)"),
    "session_key": Field("text", "OpenClaw's session key, e.g. agent:my-agent:telegram:direct:412"),
    "session_id": Field("text", "the session's id"),
    "request_id": Field("text", "the gateway's request id (chatcmpl-...)"),
    "agent_id": Field("text", "the agent"),
    "date": Field("date", "the day (UTC) of the failing answer"),
    "category": Field(
        "text",
        "the recipe category of the turn: normal, edge, refusal, multi-turn, tool-call",
        ("normal", "edge", "refusal", "multi-turn", "tool-call"),
    ),
    "source": Field(
        "text", "where the turn was found: openclaw, gateway or eval (--eval-items)", ("openclaw", "gateway", "eval")
    ),
    "signal": Field(
        "text",
        "any failure signal of the turn: tool_error, assistant_error, assistant_aborted, prompt_error, "
        "user_correction, negative_reaction, negative_feedback, tool_call_invalid, server_error, timeout, eval_wrong",
        many=True,
    ),
    "tool": Field("text", "any tool the turn called", many=True),
    "reaction": Field("text", "any emoji the user reacted to the answer with", many=True),
}

DEFAULT_CRITERIA = (
    "user_feedback=negative OR tool_call_error=true OR tool_call_invalid=true OR aborted=true OR "
    "assistant_error=true OR prompt_error=true OR user_correction=true OR server_error=true OR timeout=true OR "
    "eval_wrong=true"
)


def known_fields() -> str:
    return ", ".join(FIELDS)


def grammar_help() -> str:
    """The grammar and every field, for `--help`."""
    lines = [
        'Criteria: comparisons `FIELD OP VALUE` with OP one of = != < <= > >= ~ (a glob: model ~ "finance-*"), '
        "joined by AND, OR, NOT and parentheses (NOT binds tightest, then AND, then OR). Values: bare words, numbers, "
        "ISO dates (2026-04-01), quoted strings. A field a turn lacks fails every test but !=. Fields:"
    ]
    for name, spec in FIELDS.items():
        choices = f"; one of {', '.join(spec.choices)}" if spec.choices else ""
        lines.append(f"{name} ({spec.kind}{', any of several' if spec.many else ''}): {spec.help}{choices}.")
    return "\n\n".join(lines)
