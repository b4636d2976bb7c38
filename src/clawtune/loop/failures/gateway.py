"""The gateway's request log (`clawtune serve`) as a source: failing requests, and whole conversations as training data.

The log is read through the gateway's own schema module (`clawtune.serve.log.iter_requests`, which migrates an older
log first), never with SQL of its own.

Which agent a request belongs to: gateway requests carry no agent id. A request is the agent's when
1. its requested or served model matches one of `--gateway-model GLOB` (the mapping a user configures), or, without
   that option,
2. OpenClaw marked it: the current user turn OpenClaw sends ends with a `Runtime: agent=<id>` line, or
3. its requested model is named after the agent (`<agent-id>` or `<agent-id>-*`, as `clawtune openclaw register`
   names a fine-tune of it).
Requests matched by none are counted in the report, not read.

Conversations: OpenClaw sends the whole conversation with every request. Requests are grouped into conversations
by the gateway's session (`X-Clawtune-Session`, `metadata.session_id`) when the client gave one, else by the first
user message (OpenClaw's carries a timestamp envelope, so it is distinct per conversation).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clawtune.chat import Message, content_text, normalize_example
from clawtune.data.recipe import category
from clawtune.logs.sessions import RawSession
from clawtune.loop.failures.model import Failure, as_context

DEFAULT_LOG = Path("clawtune-data") / "requests.sqlite"
_RUNTIME_AGENT = re.compile(r"Runtime:[^\n]*\bagent=([A-Za-z0-9_.\-]+)")


def resolve_log(path: Path | None) -> Path:
    """`--gateway-log`: the SQLite file, or the data folder holding `requests.sqlite`; default ./clawtune-data."""
    path = path or DEFAULT_LOG
    return path / "requests.sqlite" if path.is_dir() else path


@dataclass
class Request:
    """One logged request in the shapes the loop needs."""

    id: str
    created: float
    messages: list[Message]
    tools: list[dict[str, Any]] | None
    response: Message | None
    row: dict[str, Any]
    conversation: str = ""

    @property
    def ms(self) -> int:
        return int(self.created * 1000)


@dataclass
class Matcher:
    """Decides which requests are the agent's (see the module's docstring)."""

    agent_id: str
    models: list[str] = field(default_factory=list)

    def owns(self, row: dict[str, Any], messages: list[Message]) -> bool:
        names = [str(n) for n in (row.get("requested_model"), row.get("model")) if n]
        if self.models:
            return any(fnmatch.fnmatchcase(n, g) for n in names for g in self.models)
        marked = {m for msg in messages if msg.get("role") == "user" for m in _RUNTIME_AGENT.findall(_text(msg))}
        if marked:
            return self.agent_id in marked
        requested = str(row.get("requested_model") or "")
        return requested == self.agent_id or requested.startswith(self.agent_id + "-")


def _text(message: Message) -> str:
    return content_text(message.get("content"))


def iter_agent_requests(
    path: Path, matcher: Matcher, stats: dict[str, int], since: float | None = None
) -> Iterator[Request]:
    """The agent's logged requests, oldest first, each with its conversation key."""
    from clawtune.serve.log import iter_requests

    for row in iter_requests(path, since=since):
        stats["gateway_requests_read"] = stats.get("gateway_requests_read", 0) + 1
        body = row.get("request") if isinstance(row.get("request"), dict) else {}
        raw_messages = body.get("messages") if isinstance(body.get("messages"), list) else []
        if not raw_messages:
            stats["gateway_requests_without_messages"] = stats.get("gateway_requests_without_messages", 0) + 1
            continue
        messages = _canonical(raw_messages, row["id"])
        if not matcher.owns(row, messages):
            stats["gateway_requests_other_agents"] = stats.get("gateway_requests_other_agents", 0) + 1
            continue
        request = Request(
            id=str(row["id"]),
            created=float(row.get("created") or 0),
            messages=messages,
            tools=body.get("tools") if isinstance(body.get("tools"), list) else None,
            response=_response_message(row.get("response"), str(row["id"])),
            row=row,
        )
        request.conversation = conversation_key(request)
        yield request


def _canonical(raw: list[Any], request_id: str) -> list[Message]:
    """The request's messages in the one conversation type: content as text, tool calls nested with ids."""
    example = normalize_example({"messages": [m for m in raw if isinstance(m, dict)]})
    out = []
    for i, message in enumerate(example["messages"]):
        message = {k: v for k, v in message.items() if k in ("role", "content", "tool_calls", "tool_call_id", "name")}
        if isinstance(message.get("content"), list):
            message["content"] = content_text(message["content"])
        if message.get("tool_calls"):
            message["tool_calls"] = _with_ids(message["tool_calls"], f"{request_id}_{i}")
        out.append(message)
    return out


def _with_ids(calls: list[Any], prefix: str) -> list[dict[str, Any]]:
    out = []
    for j, call in enumerate(calls):
        if not isinstance(call, dict):
            continue
        fn: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
        out.append(
            {
                "id": str(call.get("id") or f"call_{prefix[-12:]}_{j}"),
                "type": "function",
                "function": {"name": fn.get("name"), "arguments": fn.get("arguments") or "{}"},
            }
        )
    return out


def _response_message(response: Any, request_id: str) -> Message | None:
    """The assistant message the gateway answered with (plain or streamed, as logged), or None (an error)."""
    if not isinstance(response, dict):
        return None
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return None
    out: Message = {"role": "assistant", "content": message.get("content") or None}
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        out["tool_calls"] = _with_ids(calls, request_id)
    if out["content"] is None and not out.get("tool_calls"):
        return None
    return out


def conversation_key(request: Request) -> str:
    """The gateway session when the client named one, else the first user message (see the module's docstring)."""
    if request.row.get("session"):
        return "gw-session-" + hashlib.sha256(str(request.row["session"]).encode()).hexdigest()[:16]
    first = next((_text(m) for m in request.messages if m.get("role") == "user"), "")
    system = next((_text(m) for m in request.messages if m.get("role") == "system"), "")
    return "gw-" + hashlib.sha256(f"{system}\x00{first}".encode()).hexdigest()[:16]


def as_session(request: Request, agent_id: str, log: Path) -> RawSession:
    """A request dressed as a session, so the export's system-prompt policy and tool catalog apply unchanged."""
    system = next((_text(m) for m in request.messages if m.get("role") == "system"), None)
    from clawtune.logs.sessions import sanitize_tools

    return RawSession(
        session_id=request.conversation,
        source=f"{log}#{request.id}",
        entries=[],
        agent_id=agent_id,
        session_key=str(request.row.get("session") or "") or None,
        tools=sanitize_tools(request.tools),
        system_prompt=system,
    )


def signals_of(request: Request) -> list[dict[str, Any]]:
    """The failure signals of one logged request."""
    row = request.row
    found: list[dict[str, Any]] = []
    ratings = [f.get("rating") for f in row.get("feedback") or []]
    if ratings and ratings[-1] == "negative":
        comment = next((f.get("comment") for f in reversed(row["feedback"]) if f.get("rating") == "negative"), None)
        found.append({"type": "negative_feedback", "comment": comment})
    if row.get("tool_calls_valid") == 0:
        found.append({"type": "tool_call_invalid"})
    status = row.get("status")
    error = str(row.get("error") or "")
    if isinstance(status, int) and status >= 500:
        found.append({"type": "server_error", "status": status, "error": error[:500] or None})
    if status == 504 or re.search(r"time[d ]?\s?out", error, re.IGNORECASE):
        found.append({"type": "timeout", "status": status})
    return found


def request_failure(request: Request, shaper: Any, agent_id: str, log: Path, signals: list[dict[str, Any]]) -> Failure:
    """A failing request as a failing turn: the messages before the last user message as context, that message and
    what followed (with the gateway's answer last) as the turn."""
    session = as_session(request, agent_id, log)
    system = shaper.system_message(session)
    body = [m for m in request.messages if m.get("role") != "system"]
    last_user = max((i for i, m in enumerate(body) if m.get("role") == "user"), default=0)
    context = [as_context(m) for m in body[:last_user]]
    turn = [dict(m) for m in body[last_user:]] + ([request.response] if request.response else [])
    all_messages = ([system] if system else []) + context + turn

    class _Conv:
        messages = all_messages

    tools = shaper.tools_for(session, _Conv)
    row = request.row
    ratings = [f.get("rating") for f in row.get("feedback") or []]
    kinds = {s["type"] for s in signals}
    called = [c["function"]["name"] for c in (request.response or {}).get("tool_calls") or []]
    failure = Failure(
        source="gateway",
        session_id=request.conversation,
        context=([system] if system else []) + context,
        turn=turn,
        signals=signals,
        fields={},
        location=f"{log}#{request.id}",
        anchor=request.id,
        tools=tools,
        meta={
            "agent_id": agent_id,
            "session_key": session.session_key,
            "channel": None,
            "request_id": request.id,
            "response_ids": [request.id],
            "model": row.get("model"),
            "requested_model": row.get("requested_model"),
            "adapter": row.get("adapter"),
            "arm": row.get("arm"),
            "experiment": row.get("experiment"),
            "time": datetime.fromtimestamp(request.created, UTC).isoformat(timespec="milliseconds"),
        },
    )
    failure.fields = {
        "source": "gateway",
        "user_feedback": ratings[-1] if ratings else "none",
        "tool_call_error": False,
        "tool_call_invalid": "tool_call_invalid" in kinds,
        "aborted": False,
        "assistant_error": False,
        "prompt_error": False,
        "user_correction": False,
        "negative_reaction": False,
        "server_error": "server_error" in kinds,
        "timeout": "timeout" in kinds,
        "status": row.get("status"),
        "latency_ms": row.get("latency_ms"),
        "model": row.get("model"),
        "adapter": row.get("adapter"),
        "arm": row.get("arm"),
        "experiment": row.get("experiment"),
        "channel": None,
        "session_key": session.session_key,
        "session_id": request.conversation,
        "request_id": request.id,
        "agent_id": agent_id,
        "date": datetime.fromtimestamp(request.created, UTC).date(),
        "category": category({"messages": all_messages}),
        "signal": sorted(kinds),
        "tool": sorted(set(called)),
        "reaction": [],
    }
    return failure


def merge_into(failure: Failure, gateway: Failure) -> None:
    """A gateway failure that is the same answer as an OpenClaw turn (its request id is the turn's responseId): one
    failure, with both sources' signals, the gateway's model and adapter, and its untruncated tool schemas."""
    failure.signals += [s for s in gateway.signals if s not in failure.signals]
    for key in ("user_feedback", "tool_call_invalid", "server_error", "timeout"):
        if gateway.fields.get(key) not in (None, False, "none"):
            failure.fields[key] = gateway.fields[key]
    for key in ("status", "latency_ms", "model", "adapter", "arm", "experiment", "request_id"):
        if gateway.fields.get(key) is not None:
            failure.fields[key] = gateway.fields[key]
    failure.fields["signal"] = sorted(set(failure.fields["signal"]) | set(gateway.fields["signal"]))
    for key in ("model", "requested_model", "adapter", "arm", "experiment", "request_id"):
        if gateway.meta.get(key) is not None:
            failure.meta[key] = gateway.meta[key]
    failure.meta["sources"] = ["openclaw", "gateway"]
    failure.meta["gateway_location"] = gateway.location
    if gateway.tools:
        failure.tools = gateway.tools
