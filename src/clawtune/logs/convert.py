"""OpenClaw transcript entries -> OpenAI chat messages, with the failure signals and times kept beside them."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clawtune.logs.sessions import Entry, RawSession
from clawtune.logs.tree import COMPACTION_PREFIX, Segment
from clawtune.messages import Message
from clawtune.problems import Problems

KNOWN_ENTRY_TYPES = {
    "message",
    "model_change",
    "thinking_level_change",
    "compaction",
    "branch_summary",
    "label",
    "session_info",
    "reset",
    "custom",
    "custom_message",
    "session",
}
FAILED_STOPS = {"error", "aborted"}


@dataclass
class ConvertOptions:
    """What to keep of the parts a model cannot or should not learn from by default."""

    keep_thinking: bool = False
    keep_images: bool = False


@dataclass
class Conversation:
    """Messages as the model saw them, each with its time (ms, or None) and source location."""

    messages: list[Message] = field(default_factory=list)
    times: list[int | None] = field(default_factory=list)
    lines: list[int | None] = field(default_factory=list)
    signals: list[dict[str, Any]] = field(default_factory=list)

    def add(self, message: Message, entry: Entry) -> None:
        self.messages.append(message)
        self.times.append(entry_time(entry))
        self.lines.append(entry.line)


def entry_time(entry: Entry) -> int | None:
    """An entry's time in Unix ms: the message's own `timestamp` (ms) or the entry's ISO-8601 one."""
    message = entry.obj.get("message")
    if isinstance(message, dict) and isinstance(message.get("timestamp"), int | float):
        return int(message["timestamp"])
    stamp = entry.obj.get("timestamp")
    if isinstance(stamp, str):
        try:
            return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return None
    if isinstance(stamp, int | float):
        return int(stamp)
    return None


def iso(ms: int | None) -> str | None:
    """Unix ms as an ISO-8601 UTC string."""
    return (
        None
        if ms is None
        else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def convert_segment(
    session: RawSession, segment: Segment, options: ConvertOptions, problems: Problems, stats: Counter[str]
) -> Conversation:
    """One segment as a conversation: its context (summary and kept entries) untrained, then its own entries."""
    conv = Conversation()
    if segment.summary is not None:
        first = segment.context[0] if segment.context else segment.entries[0]
        conv.add({"role": "user", "content": COMPACTION_PREFIX + segment.summary}, first)
    for entry in segment.context:
        _convert_entry(session, entry, conv, options, problems, stats, context=True)
    for entry in segment.entries:
        _convert_entry(session, entry, conv, options, problems, stats, context=False)
    _tidy(conv, stats)
    return conv


def _convert_entry(
    session: RawSession,
    entry: Entry,
    conv: Conversation,
    options: ConvertOptions,
    problems: Problems,
    stats: Counter[str],
    context: bool,
) -> None:
    obj = entry.obj
    kind = obj.get("type")
    if not isinstance(kind, str):
        session.report(problems, entry.line, "bad-entry", f"entry type {kind!r} is not a string", key="type")
        return
    if kind == "message":
        message = obj.get("message")
        if not isinstance(message, dict):
            session.report(
                problems,
                entry.line,
                "bad-entry",
                "message entry without a message object",
                key="message",
            )
            return
        converted = _convert_message(session, entry, message, conv, options, problems, stats)
    elif kind == "custom_message":
        converted = {"role": "user", "content": _blocks_text(obj.get("content"), options, stats)}
    elif kind == "branch_summary":
        converted = {
            "role": "user",
            "content": "Summary of an earlier branch of this conversation:\n\n" + str(obj.get("summary") or ""),
        }
    elif kind == "custom":
        if obj.get("customType") == "openclaw:prompt-error":
            data: dict[str, Any] = obj["data"] if isinstance(obj.get("data"), dict) else {}
            conv.signals.append({"type": "prompt_error", "error": str(data.get("error", ""))[:500], "line": entry.line})
        return
    else:
        if kind not in KNOWN_ENTRY_TYPES:
            session.report(
                problems,
                entry.line,
                "unknown-entry-type",
                f"unknown entry type {kind!r}, skipped",
                key="type",
            )
        return
    if converted is None:
        return
    if context and converted.get("role") == "assistant":
        converted["weight"] = 0
    conv.add(converted, entry)


def _convert_message(
    session: RawSession,
    entry: Entry,
    message: dict[str, Any],
    conv: Conversation,
    options: ConvertOptions,
    problems: Problems,
    stats: Counter[str],
) -> Message | None:
    role = message.get("role")
    if role == "user":
        return {"role": "user", "content": _blocks_text(message.get("content"), options, stats)}
    if role == "assistant":
        return _assistant(entry, message, conv, options, stats)
    if role == "toolResult":
        call_id = message.get("toolCallId")
        if not isinstance(call_id, str):
            session.report(
                problems,
                entry.line,
                "bad-entry",
                "toolResult without toolCallId",
                key="message.toolCallId",
            )
            return None
        text = _blocks_text(message.get("content"), options, stats)
        details: dict[str, Any] = message["details"] if isinstance(message.get("details"), dict) else {}
        exit_code = details.get("exitCode")
        if message.get("isError") or (isinstance(exit_code, int) and exit_code != 0):
            conv.signals.append(
                {
                    "type": "tool_error",
                    "tool": message.get("toolName"),
                    "exit_code": exit_code,
                    "is_error": bool(message.get("isError")),
                    "line": entry.line,
                }
            )
        return {"role": "tool", "tool_call_id": call_id, "content": text}
    if role in ("branchSummary", "compactionSummary"):
        return {"role": "user", "content": "Summary of earlier conversation:\n\n" + str(message.get("summary") or "")}
    if role == "bashExecution":
        output = str(message.get("output") or "")
        return {"role": "user", "content": f"Ran `{message.get('command', '')}`:\n{output}"}
    stats["unknown_role"] += 1
    return None


def _assistant(
    entry: Entry, message: dict[str, Any], conv: Conversation, options: ConvertOptions, stats: Counter[str]
) -> Message | None:
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    content = message.get("content")
    blocks = (
        content
        if isinstance(content, list)
        else [{"type": "text", "text": content}]
        if isinstance(content, str)
        else []
    )
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking":
            stats["thinking_blocks_dropped" if not options.keep_thinking else "thinking_blocks_kept"] += 1
            if options.keep_thinking and isinstance(block.get("thinking"), str):
                thinking.append(block["thinking"])
        elif kind == "toolCall":
            arguments = block.get("arguments")
            if isinstance(arguments, str):  # some providers store the raw string; keep it if it is JSON
                try:
                    arguments = json.loads(arguments)
                except ValueError:
                    stats["tool_calls_bad_arguments"] += 1
                    continue
            calls.append(
                {
                    "id": str(block.get("id") or f"call_{entry.line}_{len(calls)}"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": json.dumps(arguments if arguments is not None else {}, ensure_ascii=False),
                    },
                }
            )
        elif kind == "image":
            stats["images_dropped"] += 1
    out: Message = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        out["tool_calls"] = calls
    if thinking:
        out["reasoning_content"] = "\n".join(thinking)
    stop = message.get("stopReason")
    if stop in FAILED_STOPS:
        # Errored or aborted turns show the model's failure: kept as context, never trained on.
        out["weight"] = 0
        conv.signals.append(
            {"type": f"assistant_{stop}", "error": str(message.get("errorMessage") or "")[:500], "line": entry.line}
        )
        stats[f"assistant_{stop}"] += 1
    if out["content"] is None and not calls:
        return None
    return out


def _blocks_text(content: Any, options: ConvertOptions, stats: Counter[str]) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif block.get("type") == "image":
            if options.keep_images:
                stats["images_kept_as_placeholder"] += 1
                parts.append("[image]")
            else:
                stats["images_dropped"] += 1
    return "\n".join(parts)


def _tidy(conv: Conversation, stats: Counter[str]) -> None:
    """Make the messages a valid chat: tool calls all answered, results all asked for, user turns merged, no tail."""
    answered = {m.get("tool_call_id") for m in conv.messages if m["role"] == "tool"}
    asked: set[str] = set()
    keep: list[int] = []
    for i, m in enumerate(conv.messages):
        if m["role"] == "assistant" and m.get("tool_calls"):
            calls = [c for c in m["tool_calls"] if c["id"] in answered and c["id"] not in asked]
            stats["unanswered_tool_calls_dropped"] += len(m["tool_calls"]) - len(calls)
            asked.update(c["id"] for c in calls)
            if calls:
                m["tool_calls"] = calls
            else:
                m.pop("tool_calls")
                if not m.get("content"):
                    continue
        if m["role"] == "tool":
            if m["tool_call_id"] not in asked:
                stats["orphan_tool_results_dropped"] += 1
                continue
            asked.discard(m["tool_call_id"])
        if m["role"] == "user" and keep and conv.messages[keep[-1]]["role"] == "user":
            prev = conv.messages[keep[-1]]
            prev["content"] = f"{prev['content']}\n\n{m['content']}".strip()
            continue
        keep.append(i)
    while keep and conv.messages[keep[-1]]["role"] != "assistant":
        keep.pop()
    conv.messages = [conv.messages[i] for i in keep]
    conv.times = [conv.times[i] for i in keep]
    conv.lines = [conv.lines[i] for i in keep]
