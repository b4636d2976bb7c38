"""Failing turns in an agent's OpenClaw stores, read with the export's readers (every release clawtune reads).

A session's active branch is converted as the export converts it, then cut into turns (a user message and what the
agent did until the next one). A turn fails when it holds a tool error (`isError`, a non-zero exit code), an errored
or aborted assistant message, or a prompt error; when the user's next message corrects it; or when the user reacted
to it with a negative emoji (a reaction system event in the next message, or a row of a `session_reactions` table).

The agent's own recovery is found here too, since it needs the rest of the session: within the turn (a failed tool
call retried successfully, then answered) or in one of the next two turns (the user corrected, retried or asked the
same again, and that turn went through without a failure).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clawtune.data.recipe import category
from clawtune.logs.convert import ConvertOptions, convert_segment, iso
from clawtune.logs.sessions import SQLITE_BUSY_TIMEOUT_S, RawSession
from clawtune.logs.tree import active_branch, segments
from clawtune.loop.failures.model import Failure, as_context
from clawtune.loop.failures.signals import (
    Reaction,
    is_correction,
    is_retry,
    net_reactions,
    reaction_events,
    same_request,
)
from clawtune.loop.gateway import answer_key
from clawtune.messages import Message, content_text
from clawtune.problems import Problems

RECOVERY_LOOKAHEAD = 2  # turns after a failure in which the agent's recovery is looked for
STORE_FAILURE_SIGNALS = {"tool_error", "assistant_error", "assistant_aborted", "prompt_error"}


@dataclass
class Turn:
    """Indices [start, end) of one turn in a conversation, and what was found about it."""

    start: int
    end: int
    signals: list[dict[str, Any]] = field(default_factory=list)
    reactions: list[Reaction] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    response_ids: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)  # answer keys, to find the same answer in the gateway's log
    time: int | None = None


@dataclass
class Context:
    """What every session's reading shares: the export's shaping (system prompt, tools), options and counters."""

    shaper: Any  # data.build.Exporter: its system prompt policy and tool catalog, as the export applies them
    negative: frozenset[str]
    positive: frozenset[str]
    problems: Problems
    stats: Counter[str]
    store_reactions: dict[str, list[tuple[Any, str, bool, int | None]]] = field(default_factory=dict)
    flagged: set[str] = field(default_factory=set)  # request ids the gateway's log marks as failing
    flagged_answers: dict[str, list[str]] = field(default_factory=dict)  # their answer keys -> the words asked
    max_context_tokens: int = 4096


def session_failures(session: RawSession, ctx: Context) -> Iterator[Failure]:
    """Every failing turn of one session (before the criteria filter), each with its recovery if the agent made one."""
    branch = active_branch(session, ctx.problems)
    by_line = {e.line: e.obj for e in branch}
    for part in segments(branch):
        conv = convert_segment(session, part, ConvertOptions(), ctx.problems, ctx.stats)
        own = {e.line for e in part.entries}
        messages, lines = conv.messages, conv.lines
        turns = _turns(messages, lines, own)
        if not turns:
            continue
        _attach(messages, turns, conv.signals, lines, by_line, conv.times, ctx, session)
        for k, turn in enumerate(turns):
            if not _failed(turn, messages, ctx):
                continue
            yield _failure(session, turns, k, messages, lines, ctx)


def _turns(messages: list[Message], lines: list[int | None], own: set[int | None]) -> list[Turn]:
    starts = [i for i, m in enumerate(messages) if m["role"] == "user" and lines[i] in own]
    return [Turn(s, starts[j + 1] if j + 1 < len(starts) else len(messages)) for j, s in enumerate(starts)]


def _turn_of(turns: list[Turn], lines: list[int | None], line: int | None) -> Turn | None:
    """The turn whose stretch of the store holds this line (lines grow along the branch)."""
    if line is None:
        return None
    found = None
    for turn in turns:
        first = lines[turn.start]
        if first is not None and first <= line:
            found = turn
    return found


def _attach(
    messages: list[Message],
    turns: list[Turn],
    signals: list[dict[str, Any]],
    lines: list[int | None],
    by_line: dict[int | None, dict[str, Any]],
    times: list[int | None],
    ctx: Context,
    session: RawSession,
) -> None:
    messages_lines = lines
    for signal in signals:
        turn = _turn_of(turns, messages_lines, signal.get("line"))
        if turn is not None:
            turn.signals.append(dict(signal))
    for turn in turns:
        for i in range(turn.start, turn.end):
            obj = by_line.get(lines[i]) or {}
            message = _message(obj)
            if message.get("role") == "assistant":
                if isinstance(message.get("model"), str):
                    turn.models.append(message["model"])
                if isinstance(message.get("responseId"), str):
                    turn.response_ids.append(message["responseId"])
                turn.time = times[i] if times[i] is not None else turn.time
            if messages[i]["role"] == "assistant":
                turn.answers.append(answer_key(messages[i]))
        turn.time = turn.time or times[turn.start]
    # What the user says next is about the previous answer: a correction, or reactions.
    for previous, turn in itertools.pairwise(turns):
        text = content_text(_user_text(turn, lines, by_line))
        if is_correction(text):
            previous.signals.append({"type": "user_correction", "line": lines[turn.start]})
        previous.reactions += reaction_events(text)
    for target, emoji, removed, created in ctx.store_reactions.get(session.session_id, []):
        turn = _reaction_turn(turns, lines, by_line, times, target, created)
        if turn is not None:
            turn.reactions.append(Reaction(emoji, removed, None, "store"))
    for turn in turns:
        standing = net_reactions(turn.reactions)
        if any(e in ctx.negative for e in standing):
            turn.signals.append({"type": "negative_reaction", "reactions": standing})


def _message(obj: dict[str, Any]) -> dict[str, Any]:
    message = obj.get("message")
    return message if isinstance(message, dict) else {}


def _user_text(turn: Turn, lines: list[int | None], by_line: dict[int | None, dict[str, Any]]) -> Any:
    """The user's message as stored (the converted one may merge a reaction-only wake with the next message)."""
    obj = by_line.get(lines[turn.start]) or {}
    message = obj.get("message")
    return message.get("content") if isinstance(message, dict) else obj.get("content")


def _reaction_turn(
    turns: list[Turn],
    lines: list[int | None],
    by_line: dict[int | None, dict[str, Any]],
    times: list[int | None],
    target: Any,
    created: int | None,
) -> Turn | None:
    """The turn a store's reaction row points at: by event seq, by entry id, else the last answer before it."""
    if isinstance(target, int) and target in by_line:
        return _turn_of(turns, lines, target)
    if isinstance(target, str):
        for line, obj in by_line.items():
            message = _message(obj)
            if target in (obj.get("id"), message.get("responseId"), message.get("idempotencyKey")):
                return _turn_of(turns, lines, line)
    if created is not None:
        before = [t for t in turns if t.time is not None and t.time <= created]
        return before[-1] if before else None
    return None


def _failed(turn: Turn, messages: list[Message], ctx: Context) -> bool:
    """A failure signal of its own, or the gateway flagged the answer (by id, or the same answer to the same words)."""
    if turn.signals or any(r in ctx.flagged for r in turn.response_ids):
        return True
    asked = content_text(messages[turn.start].get("content")).strip()
    return bool(asked) and any(asked in p for key in turn.answers for p in ctx.flagged_answers.get(key, ()))


def _failure(
    session: RawSession, turns: list[Turn], k: int, messages: list[Message], lines: list[int | None], ctx: Context
) -> Failure:
    turn = turns[k]
    shaper = ctx.shaper
    system = shaper.system_message(session)
    context = _fit([as_context(m) for m in messages[: turn.start]], ctx.max_context_tokens)
    body = [dict(m) for m in messages[turn.start : turn.end]]
    example_messages = ([system] if system else []) + context + body
    tools = shaper.tools_for(session, _Conv(example_messages))
    kinds = {s["type"] for s in turn.signals}
    standing = net_reactions(turn.reactions)
    feedback = (
        "negative"
        if any(e in ctx.negative for e in standing)
        else "positive"
        if any(e in ctx.positive for e in standing)
        else "none"
    )
    when = turn.time
    failure = Failure(
        source="openclaw",
        session_id=session.session_id,
        context=([system] if system else []) + context,
        turn=body,
        signals=[{k2: v for k2, v in s.items()} for s in turn.signals],
        fields={},
        location=session.where(lines[turn.start]),
        anchor=str(lines[turn.start]),
        tools=tools,
        meta={
            "agent_id": session.agent_id,
            "session_key": session.session_key,
            "channel": session.channel,
            "request_id": None,
            "response_ids": turn.response_ids,
            "model": turn.models[-1] if turn.models else None,
            "adapter": None,
            "time": iso(when),
        },
    )
    called = [c["function"]["name"] for m in body for c in m.get("tool_calls") or []]
    failure.fields = {
        "source": "openclaw",
        "user_feedback": feedback,
        "tool_call_error": "tool_error" in kinds,
        "tool_call_invalid": False,
        "aborted": "assistant_aborted" in kinds,
        "assistant_error": "assistant_error" in kinds,
        "prompt_error": "prompt_error" in kinds,
        "user_correction": "user_correction" in kinds,
        "negative_reaction": "negative_reaction" in kinds,
        "server_error": False,
        "timeout": False,
        "model": failure.meta["model"],
        "channel": session.channel,
        "session_key": session.session_key,
        "session_id": session.session_id,
        "request_id": None,
        "agent_id": session.agent_id,
        "date": datetime.fromtimestamp(when / 1000, UTC).date() if when is not None else None,
        "category": category({"messages": example_messages}),
        "signal": sorted(kinds),
        "tool": sorted(set(called)),
        "reaction": standing,
    }
    failure.links = turn.answers
    failure.asked = content_text(body[0].get("content")) if body else ""
    recovery = _recovery(turns, k, messages, lines, ctx)
    if recovery is not None:
        failure.correction, failure.correction_from = recovery
        failure.correction_how = "recovery"
    return failure


class _Conv:
    """The one attribute of a Conversation that the export's tool catalog reads."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages


def _fit(context: list[Message], budget: int) -> list[Message]:
    """The latest earlier turns that fit in the token budget (whole turns, from a user message on)."""
    from clawtune.data.examples import message_tokens

    used = 0
    start = len(context)
    for i in range(len(context) - 1, -1, -1):
        used += message_tokens(context[i])
        if used > budget:
            break
        if context[i]["role"] == "user":
            start = i
    return context[start:]


def _recovery(
    turns: list[Turn], k: int, messages: list[Message], lines: list[int | None], ctx: Context
) -> tuple[list[Message], str] | None:
    """The agent's own fix: within the turn (a failed call retried, then answered), or a later turn that served the
    same request after a correction, a retry or a repeat, without failing."""
    turn = turns[k]
    kinds = {s["type"] for s in turn.signals}
    if kinds == {"tool_error"}:
        fixed = _within_turn(turn, messages, lines)
        if fixed is not None:
            return fixed, "the same turn, after the failed call"
    asked = content_text(messages[turn.start].get("content"))
    for later in turns[k + 1 : k + 1 + RECOVERY_LOOKAHEAD]:
        text = content_text(messages[later.start].get("content"))
        if not (is_correction(text) or is_retry(text) or same_request(asked, text)):
            continue
        if later.signals or any(e in ctx.negative for e in net_reactions(later.reactions)):
            continue
        response = [dict(m) for m in messages[later.start + 1 : later.end]]
        if _answers(response):
            return response, f"a later turn ({lines[later.start]})"
    return None


def _within_turn(turn: Turn, messages: list[Message], lines: list[int | None]) -> list[Message] | None:
    """The turn without its failed calls, when the agent recovered: every failed call's message and results go."""
    failed_lines = {s.get("line") for s in turn.signals if s["type"] == "tool_error"}
    failed_ids = {
        m.get("tool_call_id")
        for i, m in enumerate(messages[turn.start : turn.end], turn.start)
        if lines[i] in failed_lines
    }
    drop_ids: set[str] = set()
    response: list[Message] = []
    for m in messages[turn.start + 1 : turn.end]:
        calls = m.get("tool_calls") or []
        if m["role"] == "assistant" and any(c["id"] in failed_ids for c in calls):
            drop_ids |= {c["id"] for c in calls}
            continue
        if m["role"] == "tool" and m.get("tool_call_id") in drop_ids:
            continue
        response.append(dict(m))
    # A recovery retries: a call that went through stays. An answer that only reports the failure is no fix.
    retried = any(m.get("tool_calls") for m in response)
    return response if drop_ids and retried and _answers(response) else None


def _answers(response: list[Message]) -> bool:
    """Whether a response ends in a text answer from the assistant."""
    return bool(
        response
        and response[-1]["role"] == "assistant"
        and not response[-1].get("tool_calls")
        and content_text(response[-1].get("content")).strip()
    )


# --- reactions stored as rows --------------------------------------------------------------------------------------

_SESSION_COLUMNS = ("session_id", "session")
_TARGET_COLUMNS = ("event_seq", "seq", "message_seq", "event_id", "entry_id", "message_id", "target_id", "response_id")
_EMOJI_COLUMNS = ("emoji", "reaction", "value", "reaction_emoji")
_TIME_COLUMNS = ("created_at", "created", "timestamp", "reacted_at")
_REMOVED_COLUMNS = ("removed", "removed_at", "deleted_at", "is_removed")


def store_reactions(path: Path, problems: Problems) -> dict[str, list[tuple[Any, str, bool, int | None]]]:
    """Rows of a store's `session_reactions` table, if it has one: session -> (target, emoji, removed, time ms).

    No OpenClaw release up to 2026.9.6 has this table (none of 2026.9.6's 263 CREATE TABLE statements names one;
    reactions reach the agent as system events instead), so its columns are found by name (PRAGMA table_info) and a
    table without a session and an emoji column is reported and skipped.
    """
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S)
    except sqlite3.Error:
        return {}
    try:
        if not conn.execute("select 1 from sqlite_master where type='table' and name='session_reactions'").fetchone():
            return {}
        columns = [r[1] for r in conn.execute("pragma table_info(session_reactions)")]
        pick = lambda names: next((c for c in names if c in columns), None)  # noqa: E731
        session_col, emoji_col = pick(_SESSION_COLUMNS), pick(_EMOJI_COLUMNS)
        target_col, time_col, removed_col = pick(_TARGET_COLUMNS), pick(_TIME_COLUMNS), pick(_REMOVED_COLUMNS)
        if session_col is None or emoji_col is None:
            problems.add(
                f"{path}#session_reactions",
                None,
                "unknown-reactions-table",
                f"no session or emoji column among {columns}; reactions skipped",
            )
            return {}
        wanted = [session_col, emoji_col, target_col, time_col, removed_col]
        select = ", ".join(c if c else "NULL" for c in wanted)
        out: dict[str, list[tuple[Any, str, bool, int | None]]] = {}
        for session_id, emoji, target, created, removed in conn.execute(f"select {select} from session_reactions"):
            if not isinstance(emoji, str) or not session_id:
                continue
            out.setdefault(str(session_id), []).append(
                (target, emoji, bool(removed), int(created) if isinstance(created, int | float) else None)
            )
        return out
    except sqlite3.Error as exc:
        problems.add(str(path), None, "bad-sqlite", f"cannot read session_reactions: {exc}")
        return {}
    finally:
        conn.close()


def store_paths(sources: list[Path]) -> list[Path]:
    """The SQLite stores among the sources (where reaction rows may live)."""
    out = []
    for source in sources:
        if source.is_file():
            try:
                with open(source, "rb") as fh:
                    if fh.read(16) == b"SQLite format 3\x00":
                        out.append(source)
            except OSError:
                continue
    return out
