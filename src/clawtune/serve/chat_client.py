"""`clawtune chat`: talk to a served model, once (`--message`) or interactively with streaming and slash commands.

Uses the official `openai` client against any OpenAI-compatible endpoint (`clawtune serve` by default). Interactive
commands: `/model ID` switches model, `/reset` starts over, `/feedback positive|negative [comment]` rates the last
answer (recorded by `clawtune serve` for the improvement loop), `/quit`.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Callable
from typing import Any, TextIO

from clawtune.extras import require
from clawtune.problems import InputError

DEFAULT_ENDPOINT = "http://127.0.0.1:8000/v1"


class ChatError(InputError):
    """The server cannot be reached or refused the request; says which and why."""


def _client(endpoint: str, api_key: str | None) -> Any:
    openai = require("openai", "serve", "clawtune chat")

    base = endpoint.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return openai.OpenAI(base_url=base, api_key=api_key or "clawtune-local", max_retries=0, timeout=600)


def _explain(exc: Exception, endpoint: str) -> ChatError:
    openai = require("openai", "serve", "clawtune chat")

    if isinstance(exc, openai.APIConnectionError):
        return ChatError(f"cannot reach {endpoint}: is `clawtune serve` running? ({exc.__cause__ or exc})")
    if isinstance(exc, openai.APIStatusError):
        return ChatError(f"{endpoint} answered {exc.status_code}: {exc.message}")
    return ChatError(str(exc))


def once(
    endpoint: str, model: str, message: str, api_key: str | None = None, system: str | None = None
) -> dict[str, Any]:
    """One question, one answer: the reply message, the request id and the usage."""
    openai = require("openai", "serve", "clawtune chat")

    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]
    try:
        raw = _client(endpoint, api_key).chat.completions.with_raw_response.create(model=model, messages=messages)
    except openai.OpenAIError as exc:
        raise _explain(exc, endpoint) from None
    reply = raw.parse()
    return {
        "request_id": raw.headers.get("x-request-id") or reply.id,
        "message": reply.choices[0].message.model_dump(exclude_none=True),
        "finish_reason": reply.choices[0].finish_reason,
        "usage": reply.usage.model_dump() if reply.usage else None,
    }


def feedback(endpoint: str, request_id: str, rating: str, comment: str | None, api_key: str | None = None) -> None:
    base = endpoint.rstrip("/").removesuffix("/v1")
    body = json.dumps({"request_id": request_id, "rating": rating, "comment": comment}).encode()
    request = urllib.request.Request(
        base + "/v1/feedback",
        body,
        {"Content-Type": "application/json", "Authorization": f"Bearer {api_key or 'clawtune-local'}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30):
            pass
    except OSError as exc:
        raise ChatError(f"feedback not recorded: {exc}") from None


def interactive(
    endpoint: str,
    model: str,
    api_key: str | None = None,
    read: Callable[[str], str] = input,
    out: TextIO = sys.stdout,
) -> None:
    """A streaming chat loop with slash commands; ends on /quit or end of input."""
    openai = require("openai", "serve", "clawtune chat")

    client = _client(endpoint, api_key)
    messages: list[dict[str, Any]] = []
    last_id: str | None = None
    out.write(
        f"chatting with {model} at {endpoint} (/model ID, /reset, /feedback positive|negative [comment], /quit)\n"
    )
    while True:
        try:
            line = read("> ").strip()
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return
        if not line:
            continue
        if line.startswith("/"):
            command, _, rest = line.partition(" ")
            if command in ("/quit", "/exit"):
                return
            if command == "/reset":
                messages, last_id = [], None
                out.write("(conversation reset)\n")
            elif command == "/model" and rest.strip():
                model = rest.strip()
                out.write(f"(now talking to {model})\n")
            elif command == "/feedback" and rest.split(" ", 1)[0] in ("positive", "negative"):
                if last_id is None:
                    out.write("(no answer to rate yet)\n")
                    continue
                rating, _, comment = rest.partition(" ")
                try:
                    feedback(endpoint, last_id, rating, comment or None, api_key)
                    out.write(f"(recorded {rating} feedback on {last_id})\n")
                except ChatError as exc:
                    out.write(f"({exc})\n")
            else:
                out.write("(commands: /model ID, /reset, /feedback positive|negative [comment], /quit)\n")
            continue
        messages.append({"role": "user", "content": line})
        try:
            with client.chat.completions.with_streaming_response.create(
                model=model, messages=messages, stream=True
            ) as response:
                last_id = response.headers.get("x-request-id")
                text, calls = _print_stream(response.parse(), out)
        except openai.OpenAIError as exc:
            messages.pop()
            out.write(f"error: {_explain(exc, endpoint)}\n")
            continue
        reply: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            reply["tool_calls"] = calls
        messages.append(reply)


def _print_stream(stream: Any, out: TextIO) -> tuple[str, list[dict[str, Any]]]:
    text, calls = [], []
    for chunk in stream:
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                text.append(delta.content)
                out.write(delta.content)
                out.flush()
            for call in delta.tool_calls or []:
                calls.append(
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": call.function.arguments},
                    }
                )
                out.write(f"\n[tool call] {call.function.name}({call.function.arguments})")
    out.write("\n")
    return "".join(text), calls


def chat_command(
    model: str, message: str | None, endpoint: str, api_key: str | None, system: str | None, json_output: bool
) -> None:
    """`clawtune chat`: without --message an interactive chat; with it, the answer (or the whole reply as JSON)."""
    import typer

    if message is None:
        interactive(endpoint, model, api_key)
        return
    reply = once(endpoint, model, message, api_key, system)
    if json_output:
        typer.echo(json.dumps(reply, ensure_ascii=False, indent=2))
        return
    content = reply["message"].get("content")
    if content:
        typer.echo(content)
    for call in reply["message"].get("tool_calls") or []:
        typer.echo(f"[tool call] {call['function']['name']}({call['function']['arguments']})")
