"""A transcript is a tree: resolve the active branch, then cut it where compactions changed what the model saw."""

from __future__ import annotations

from dataclasses import dataclass, field

from clawtune.logs.sessions import Entry, RawSession
from clawtune.problems import Problems

COMPACTION_PREFIX = "The conversation history before this point was compacted into the following summary:\n\n"


def active_branch(session: RawSession, problems: Problems) -> list[Entry]:
    """The entries on the path from the root to the leaf, in order; abandoned branches are left out.

    v1 files without ids are a plain list. The leaf is the bundle's `leafId` or else the last entry written. Where
    the SQLite store has already resolved the branch, its answer is used and a disagreement with the walk reported.
    """
    entries = session.entries
    by_id = {e.obj["id"]: e for e in entries if isinstance(e.obj.get("id"), str)}
    if not by_id:
        return list(entries)
    walked = _walk(session, by_id, problems)
    if session.active_seqs:
        by_seq = {e.line: e for e in entries}
        table = [by_seq[s] for s in session.active_seqs if s in by_seq]
        if [e.line for e in table] != [e.line for e in walked]:
            session.report(
                problems,
                None,
                "branch-mismatch",
                "the store's active-branch table disagrees with the parentId walk; using the table",
            )
        return table
    return walked


def _walk(session: RawSession, by_id: dict[str, Entry], problems: Problems) -> list[Entry]:
    leaf_id = session.leaf_id if isinstance(session.leaf_id, str) else ""
    leaf = by_id.get(leaf_id) or next(e for e in reversed(session.entries) if isinstance(e.obj.get("id"), str))
    path = []
    seen: set[str] = set()
    current: Entry | None = leaf
    while current is not None:
        path.append(current)
        seen.add(current.obj["id"])
        parent = current.obj.get("parentId")
        if parent is None:
            break
        if not isinstance(parent, str):
            session.report(
                problems,
                current.line,
                "bad-entry",
                f"parentId {parent!r} is not a string",
                key="parentId",
            )
            break
        if parent in seen:
            session.report(
                problems,
                current.line,
                "parent-cycle",
                f"parentId {parent!r} makes a cycle",
                key="parentId",
            )
            break
        current = by_id.get(parent)
        if current is None:
            session.report(
                problems,
                path[-1].line,
                "dangling-parent",
                f"parentId {parent!r} names no entry; the branch starts here",
                key="parentId",
            )
    path.reverse()
    return path


@dataclass
class Segment:
    """A stretch of the branch under one context: `context` was seen (not trained again), `entries` are new."""

    entries: list[Entry]
    summary: str | None = None
    context: list[Entry] = field(default_factory=list)


def segments(branch: list[Entry]) -> list[Segment]:
    """Split the branch at compactions: after one, the model saw the summary plus entries from `firstKeptEntryId` on."""
    out: list[Segment] = []
    current = Segment(entries=[])
    for index, entry in enumerate(branch):
        if entry.obj.get("type") != "compaction":
            current.entries.append(entry)
            continue
        out.append(current)
        first_kept = entry.obj.get("firstKeptEntryId")
        start = next((i for i, e in enumerate(branch[:index]) if e.obj.get("id") == first_kept), index)
        summary = entry.obj.get("summary")
        current = Segment(entries=[], summary=summary if isinstance(summary, str) else "", context=branch[start:index])
    out.append(current)
    return [s for s in out if s.entries]
