"""The gateway's request log (`clawtune serve`) as a source of the loop: failing requests, and conversations as training data.

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
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clawtune.data.options import TrainingDataOptions
from clawtune.logs.sessions import RawSession
from clawtune.messages import Message, content_text, normalize_example
from clawtune.problems import InputError

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
        marked = {m for msg in messages if msg.get("role") == "user" for m in _RUNTIME_AGENT.findall(text_of(msg))}
        if marked:
            return self.agent_id in marked
        requested = str(row.get("requested_model") or "")
        return requested == self.agent_id or requested.startswith(self.agent_id + "-")


def text_of(message: Message) -> str:
    return content_text(message.get("content"))


def iter_agent_requests(
    path: Path, matcher: Matcher, stats: dict[str, int], since: float | None = None
) -> Iterator[Request]:
    """The agent's logged requests, oldest first, each with its conversation key."""
    import sqlite3

    from clawtune.serve.log import iter_requests

    rows = iter_requests(path, since=since)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except (sqlite3.Error, OSError, ValueError) as exc:
            # The schema module's reader stops at a row it cannot decode; say which log, rather than a traceback.
            raise InputError(f"{path}: cannot read the gateway's log: {type(exc).__name__}: {exc}") from None
        stats["gateway_requests_read"] = stats.get("gateway_requests_read", 0) + 1
        body: dict[str, Any] = row["request"] if isinstance(row.get("request"), dict) else {}
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
    first = next((text_of(m) for m in request.messages if m.get("role") == "user"), "")
    system = next((text_of(m) for m in request.messages if m.get("role") == "system"), "")
    return "gw-" + hashlib.sha256(f"{system}\x00{first}".encode()).hexdigest()[:16]


def as_session(request: Request, agent_id: str, log: Path) -> RawSession:
    """A request dressed as a session, so the export's system-prompt policy and tool catalog apply unchanged."""
    system = next((text_of(m) for m in request.messages if m.get("role") == "system"), None)
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


# --- conversations as training data --------------------------------------------------------------------------------


@dataclass
class GatewayExportOptions:
    """Which logged requests become training data."""

    log: Path
    agent_id: str
    models: list[str] = field(default_factory=list)
    since: float | None = None
    feedback: str = "not-negative"  # any | not-negative | positive


FEEDBACK_CHOICES = ("any", "not-negative", "positive")


INTERNAL_CONTEXT = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>"


def last_user_index(messages: list[Message]) -> int | None:
    """The user's last own message: OpenClaw appends an internal-context user message that the user never wrote."""
    own = [i for i, m in enumerate(messages) if m.get("role") == "user" and not text_of(m).startswith(INTERNAL_CONTEXT)]
    return own[-1] if own else None


def answer_key(message: Message) -> str:
    """What identifies an answer when it comes back in a later request's history (ids and whitespace aside)."""
    calls = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            args = json.dumps(json.loads(fn.get("arguments") or "{}"), sort_keys=True)
        except ValueError:
            args = str(fn.get("arguments"))
        calls.append((fn.get("name"), args))
    return json.dumps([content_text(message.get("content")).strip(), calls], ensure_ascii=False)


def training_conversations(options: GatewayExportOptions, stats: dict[str, int]) -> Iterator[tuple[RawSession, Any]]:
    """The agent's conversations through the gateway, one per branch of each conversation, as (session,
    conversation) pairs for the export: every answer the gateway logged (and that passes the feedback filter, went
    through with valid tool calls and no error) is trained once, in the longest conversation that holds it, with
    the context it was given; other assistant turns are context (weight 0).

    OpenClaw sends the whole conversation every time, so a request whose answer reappears in a later request's
    history is that later request's prefix: only the leaves are kept (one conversation, not one per request).
    """
    from clawtune.logs.convert import Conversation

    leaves: dict[str, list[Request]] = {}
    good: dict[str, dict[str, Request]] = {}
    for request in iter_agent_requests(options.log, Matcher(options.agent_id, options.models), stats, options.since):
        history = {answer_key(m) for m in request.messages if m.get("role") == "assistant"}
        candidates = [r for r in leaves.get(request.conversation, []) if not _subsumed(r, history)]
        reason = _unusable(request, options.feedback)
        if reason:
            stats[f"gateway_{reason}"] = stats.get(f"gateway_{reason}", 0) + 1
        else:
            assert request.response is not None
            good.setdefault(request.conversation, {})[answer_key(request.response)] = request
        leaves[request.conversation] = [*candidates, request]
    for key, branch in leaves.items():
        trained: set[str] = set()
        for leaf in branch:
            messages = [m for m in leaf.messages if m.get("role") != "system"]
            if leaf.response is not None and not _unusable(leaf, options.feedback):
                messages = [*messages, leaf.response]
            conv = Conversation()
            for m in messages:
                m = dict(m)
                answer = good.get(key, {}).get(answer_key(m)) if m["role"] == "assistant" else None
                if answer is not None and answer_key(m) not in trained:
                    trained.add(answer_key(m))
                    conv.times.append(answer.ms)
                else:
                    if m["role"] == "assistant":
                        m["weight"] = 0
                    conv.times.append(None)
                conv.messages.append(m)
                conv.lines.append(None)
            while conv.messages and conv.messages[-1]["role"] != "assistant":
                conv.messages.pop(), conv.times.pop(), conv.lines.pop()
            if not any(m["role"] == "assistant" and m.get("weight", 1) for m in conv.messages):
                continue
            stats["gateway_conversations"] = stats.get("gateway_conversations", 0) + 1
            yield as_session(leaf, options.agent_id, options.log), conv


def _subsumed(earlier: Request, history: set[str]) -> bool:
    return earlier.response is not None and answer_key(earlier.response) in history


def _unusable(request: Request, feedback: str) -> str | None:
    """Why a request's answer is not trained on: an error, an invalid tool call, or the feedback filter."""
    row = request.row
    if request.response is None or (isinstance(row.get("status"), int) and row["status"] >= 400):
        return "errors_skipped"
    if row.get("tool_calls_valid") == 0:
        return "invalid_tool_calls_skipped"
    ratings = [f.get("rating") for f in row.get("feedback") or []]
    last = ratings[-1] if ratings else None
    if feedback == "not-negative" and last == "negative":
        return "negative_feedback_skipped"
    if feedback == "positive" and last != "positive":
        return "not_rated_positive_skipped"
    return None


def add_gateway_source(options: TrainingDataOptions) -> TrainingDataOptions:
    """`export-training-data --gateway-log`: the gateway's conversations as a source of the export (read here, shaped,
    filtered and split by the export like OpenClaw's); without --state-dir/--sessions, the only source."""
    if options.gateway_log is None:
        return options
    if options.gateway_feedback not in FEEDBACK_CHOICES:
        raise InputError(
            f"--gateway-feedback {options.gateway_feedback!r}: expected one of {', '.join(FEEDBACK_CHOICES)}"
        )
    path = resolve_log(options.gateway_log)
    if not path.is_file():
        raise InputError(
            f"--gateway-log {options.gateway_log}: no request log there (clawtune serve writes DATA_DIR/requests.sqlite)"
        )
    since = None
    if options.dates:
        since = datetime.combine(options.dates[0], datetime.min.time(), UTC).timestamp()
    stats: dict[str, Any] = {"log": str(path)}
    gateway = GatewayExportOptions(path, options.agent_id, options.gateway_models, since, options.gateway_feedback)
    options.extra_conversations = training_conversations(gateway, stats)
    options.extra_stats = stats
    options.read_openclaw = bool(options.state_dirs or options.sessions)
    return options
