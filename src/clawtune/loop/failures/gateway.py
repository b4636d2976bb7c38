"""Failing requests of the gateway's log as failing turns (the log is read by `clawtune.loop.gateway`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clawtune.data.recipe import category
from clawtune.loop.failures.model import Failure, as_context
from clawtune.loop.gateway import Request, answer_key, as_session, last_user_index, text_of


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
    last_user = last_user_index(body) or 0
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
    if request.response is not None:
        failure.links = [answer_key(request.response)]
    failure.asked = text_of(turn[0]) if turn else ""
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


def same_answer(failure: Failure, gateway: Failure) -> bool:
    """Whether an OpenClaw turn is the answer a gateway request logged: OpenClaw kept the gateway's response id as
    the answer's responseId (the gateway's own answers), or, for forwarded streams (whose chunks carry the upstream's
    id, which the log does not keep), the answer is the same and the user's words are in the request's last message."""
    if gateway.anchor in (failure.meta.get("response_ids") or []):
        return True
    if not set(gateway.links) & set(failure.links):
        return False
    words = failure.asked.strip()
    return bool(words) and words in gateway.asked


def merge_into(failure: Failure, gateway: Failure) -> None:
    """A gateway failure that is the same answer as an OpenClaw turn (see `same_answer`): one failure, with both
    sources' signals, the gateway's model and adapter, and its untruncated tool schemas."""
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
