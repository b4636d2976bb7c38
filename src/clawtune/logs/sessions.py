"""Find an agent's sessions in every store OpenClaw has used and read each one into a `RawSession`.

Stores (see shared/reference/openclaw-formats.md): per-session JSONL files (v1-v4) with `.trajectory.jsonl` siblings and
a `sessions.json` index (2026.7 and before); cold `.jsonl.zst` archives; the per-agent SQLite store (schema 19 in
2026.8, 23 in 2026.9: whichever columns a table has are read); the JSONL originals an upgrade imported into that store
(`session-sqlite-import-archive/`); trajectory bundles written by `openclaw sessions export-trajectory`. A session
found in more than one of them is read once, from the store. Each session is read whole (one transcript is small) and
the stream of sessions is lazy, so memory stays flat however many there are.
"""

from __future__ import annotations

import errno
import functools
import glob
import json
import os
import re
import sqlite3
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawtune.logs.lines import ZSTD_MAGIC, iter_json_lines, parse_json_line
from clawtune.problems import Problems

SQLITE_MAGIC = b"SQLite format 3\x00"
STORE_NAME = "openclaw-agent.sqlite"
# Where an upgrade (`openclaw doctor --fix`) moves the JSONL sessions it imported into the store, renamed
# `<session key>.<session id>.jsonl.imported-<ms>` (and its trajectory and index the same way).
IMPORT_ARCHIVE = "session-sqlite-import-archive"
IMPORTED_SUFFIX = re.compile(r"\.imported-\d+$")
# How long to wait for OpenClaw's write lock on its store before reporting the store as locked and moving on.
SQLITE_BUSY_TIMEOUT_S = 5.0
LEGACY_STATE_DIRS = (".openclaw", ".clawdbot", ".moltbot")
# Files that live beside transcripts but are not transcripts.
NOT_TRANSCRIPT = re.compile(
    r"(\.trajectory\.jsonl|\.trajectory-path\.json|\.lock|\.reset\.[^/]*|\.jsonl\.deleted\.[^/]*)$|^\.checkpoint\."
)


@dataclass(slots=True)
class Entry:
    """One transcript event and where it came from (a file line, or an SQLite row's seq)."""

    obj: dict[str, Any]
    line: int | None


@dataclass
class RawSession:
    """One stored session: its transcript entries in storage order, plus what the store knows around them."""

    session_id: str
    source: str
    entries: list[Entry]
    agent_id: str | None = None
    session_key: str | None = None
    channel: str | None = None
    tools: list[dict[str, Any]] | None = None
    system_prompt: str | None = None
    # OpenClaw's own resolution of the active branch (SQLite store, bundles): entry seqs / ids in order.
    active_seqs: list[int] | None = None
    leaf_id: str | None = None
    header: dict[str, Any] = field(default_factory=dict)
    # OpenClaw cuts long lists in its stores with "[Truncated]" items: the recorded tool catalog may be partial.
    tools_truncated: bool = False

    @property
    def location(self) -> str:
        """The file to name in messages: the transcript, or `store.sqlite#<session id>` (lines are then row seqs)."""
        return f"{self.source}#{self.session_id}" if self.source.endswith(".sqlite") else self.source

    def report(self, problems: Problems, line: int | None, reason: str, message: str, key: str | None = None) -> None:
        """Record a problem at a line of this session."""
        problems.add(self.location, line, reason, message, key=key)

    def where(self, line: int | None) -> str:
        """A location a user can open: `file:line`, or `store.sqlite#session:seq`."""
        return self.location if line is None else f"{self.location}:{line}"


# --- discovery ---------------------------------------------------------------------------------------------------


def default_state_dirs() -> list[Path]:
    """`$OPENCLAW_STATE_DIR`, else `~/.openclaw` and the older `~/.clawdbot`, `~/.moltbot` that exist."""
    env = os.environ.get("OPENCLAW_STATE_DIR")
    if env:
        return [Path(env).expanduser()]
    home = Path.home()
    found = [home / name for name in LEGACY_STATE_DIRS if (home / name).is_dir()]
    return found or [home / ".openclaw"]


def agent_sources(state_dir: Path, agent_id: str, problems: Problems | None = None) -> list[Path]:
    """Every session source of one agent under a state folder: JSONL files, cold archives, the SQLite store, the JSONL
    originals an upgrade imported into the store.

    What cannot be read is reported, never raised nor passed over in silence: an unreadable folder, a symbolic link
    that loops or points nowhere, a FIFO or a folder where a transcript's name is (a FIFO is never opened: reading it
    would block the export)."""
    problems = problems if problems is not None else Problems()
    agent_dir = state_dir / "agents" / agent_id
    sources: list[Path] = []
    names = _listing(agent_dir, problems)
    if "sessions" in names:
        sessions_dir = agent_dir / "sessions"
        listed = _listing(sessions_dir, problems)
        sources += [p for p in (sessions_dir / n for n in listed if is_transcript_name(n)) if _regular(p, problems)]
        if "cold" in listed:
            cold = sessions_dir / "cold"
            zst = (cold / n for n in _listing(cold, problems) if n.endswith(".jsonl.zst"))
            sources += [p for p in zst if _regular(p, problems)]
    if "agent" in names and STORE_NAME in _listing(agent_dir / "agent", problems):
        store = agent_dir / "agent" / STORE_NAME
        if _regular(store, problems):
            sources.append(store)
    if IMPORT_ARCHIVE in names:
        archive = agent_dir / IMPORT_ARCHIVE
        imported = (archive / n for n in _listing(archive, problems) if is_transcript_name(n))
        sources += [p for p in imported if _regular(p, problems)]
    return sources


def _listing(folder: Path, problems: Problems) -> list[str]:
    """The sorted names in a folder; none when it does not exist, and a report when it cannot be read."""
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        problems.add(str(folder), None, "unreadable-folder", f"cannot list this folder: {exc.strerror or exc}")
        return []


def _regular(path: Path, problems: Problems) -> bool:
    """Whether a source is a regular file (through symbolic links); anything else is reported and skipped."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            problems.add(str(path), None, "symlink-loop", "a symbolic link that loops back on itself; skipped")
        elif exc.errno == errno.ENOENT:
            problems.add(str(path), None, "broken-symlink", "a symbolic link to nothing; skipped")
        else:
            problems.add(str(path), None, "unreadable-file", f"cannot read: {exc.strerror or exc}")
        return False
    if stat.S_ISREG(mode):
        return True
    if stat.S_ISDIR(mode):
        what = "a folder named like a transcript, not a file"
    elif stat.S_ISFIFO(mode):
        what = "a FIFO (named pipe), not a file: never opened (reading it would block)"
    else:
        what = "a socket or device, not a file"
    problems.add(str(path), None, "not-a-file", f"{what}; skipped")
    return False


def is_transcript_name(name: str) -> bool:
    """Whether a file name in a sessions folder is a transcript (`<id>.jsonl`, `<id>-topic-<t>.jsonl`, `.jsonl.zst`,
    or one of these archived by an upgrade with an `.imported-<ms>` suffix)."""
    name = IMPORTED_SUFFIX.sub("", name)
    if NOT_TRANSCRIPT.search(name):
        return False
    return name.endswith(".jsonl") or name.endswith(".jsonl.zst")


def expand_paths(paths: Iterable[Path], problems: Problems) -> list[Path]:
    """Explicit `--sessions` arguments: files as they are, folders searched for transcripts, stores and bundles."""
    out: list[Path] = []

    def unreadable(exc: OSError) -> None:
        problems.add(str(exc.filename), None, "unreadable-folder", f"cannot list this folder: {exc.strerror or exc}")

    for path in paths:
        if not path.exists() and not path.is_symlink():
            problems.add(str(path), None, "missing-path", "no such file or folder")
        elif path.is_dir() and (path / "session-branch.json").is_file():
            out.append(path)
        elif not path.is_dir():
            if _regular(path, problems):
                out.append(path)
        else:
            for root, dirs, files in os.walk(path, onerror=unreadable):
                root_path = Path(root)
                bundles = sorted(d for d in dirs if (root_path / d / "session-branch.json").is_file())
                out += [root_path / d for d in bundles]
                dirs[:] = sorted(d for d in dirs if d not in bundles)
                for name in sorted(files):
                    # OpenClaw keeps lock databases beside its store (`openclaw-agent.sqlite.reindex-lock.sqlite`).
                    lock = name.startswith(STORE_NAME + ".")
                    wanted = is_transcript_name(name) or (name.endswith(".sqlite") and not lock)
                    if wanted and _regular(root_path / name, problems):
                        out.append(root_path / name)
    return out


# --- reading -----------------------------------------------------------------------------------------------------


def iter_sessions(
    sources: Iterable[Path],
    problems: Problems,
    index: dict[str, dict[str, Any]] | None = None,
    duplicates: Counter[str] | None = None,
) -> Iterator[RawSession]:
    """Read each source (file, archive, SQLite store, bundle folder) lazily into sessions, in the order given. A session
    read before, or held by one of the SQLite stores among the sources (an upgrade leaves the JSONL it imported beside
    the store; the store's copy is the one that went on), is skipped and counted in `duplicates` by source."""
    sources = list(sources)
    in_stores = {key for source in sources if source.suffix == ".sqlite" for key in store_sessions(source)}
    seen: set[tuple[str | None, str]] = set()
    for session in _read_sources(sources, problems, index):
        key = (session.agent_id, session.session_id)
        from_store = session.source.endswith(".sqlite")
        if key in seen or (key in in_stores and not from_store):
            if duplicates is not None:
                duplicates[session.source] += 1
            continue
        seen.add(key)
        yield session


def _read_sources(
    sources: Iterable[Path], problems: Problems, index: dict[str, dict[str, Any]] | None
) -> Iterator[RawSession]:
    for source in sources:
        if source.is_dir():
            session = read_bundle(source, problems)
            if session:
                yield session
            continue
        head = _head(source, problems)
        if head is None:
            continue
        if head.startswith(SQLITE_MAGIC):
            yield from read_sqlite_store(source, problems)
        elif not head.strip():
            problems.add(str(source), None, "empty-file", "empty file")
        elif head.startswith(ZSTD_MAGIC) or head.lstrip()[:1] == b"{":
            session = read_jsonl_session(source, problems, index or {})
            if session:
                yield session
        else:
            problems.add(
                str(source), 1, "unknown-format", "neither a JSONL transcript, a zstd archive nor an SQLite store"
            )


def _head(path: Path, problems: Problems) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(64)
    except OSError as exc:
        problems.add(str(path), None, "unreadable-file", f"cannot open: {exc.strerror or exc}")
        return None


def session_id_from_name(path: Path) -> str:
    """`<sessionId>.jsonl`, `<sessionId>-topic-<t>.jsonl` and `<sha>.jsonl.zst` all name their session (an archived
    `<key>.<sessionId>.jsonl.imported-<ms>` its key and session)."""
    name = IMPORTED_SUFFIX.sub("", path.name)
    for suffix in (".jsonl.zst", ".jsonl"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_jsonl_session(path: Path, problems: Problems, index: dict[str, dict[str, Any]]) -> RawSession | None:
    """One JSONL transcript (header line first in v2+, v1 may have none) plus its `.trajectory.jsonl` sibling."""
    entries: list[Entry] = []
    header: dict[str, Any] = {}
    for lineno, obj in iter_json_lines(path, problems):
        if obj.get("type") == "session" and not header and not entries:
            header = obj
            continue
        entries.append(Entry(obj, lineno))
    if not entries:
        if header or path.stat().st_size:
            problems.add(str(path), None, "no-entries", "transcript has no readable entries")
        return None
    session_id = str(header.get("id") or session_id_from_name(path))
    info = index.get(session_id, {})
    session = RawSession(
        session_id=session_id,
        source=str(path),
        entries=entries,
        agent_id=_agent_from_path(path),
        session_key=info.get("sessionKey"),
        channel=info.get("channel") or info.get("lastChannel"),
        header=header,
    )
    sibling = trajectory_of(path)
    if sibling is not None:
        apply_runtime_events((obj for _, obj in iter_json_lines(sibling, problems)), session)
    return session


def trajectory_of(path: Path) -> Path | None:
    """A transcript's `.trajectory.jsonl` sibling; archived by an upgrade, it has its own `.imported-<ms>` suffix."""
    stem = session_id_from_name(path)
    sibling = path.with_name(stem + ".trajectory.jsonl")
    if sibling.is_file():
        return sibling
    if IMPORTED_SUFFIX.search(path.name):
        return next(iter(sorted(path.parent.glob(glob.escape(stem) + ".trajectory.jsonl.imported-*"))), None)
    return None


def _agent_from_path(path: Path) -> str | None:
    return _agent_from_folder(str(path.parent))


@functools.lru_cache(maxsize=256)
def _agent_from_folder(folder: str) -> str | None:
    parts = Path(folder).resolve().parts
    for i in range(len(parts) - 2):
        if parts[i] == "agents":
            return parts[i + 1]
    return None


def load_index(state_dir: Path, agent_id: str, problems: Problems) -> dict[str, dict[str, Any]]:
    """`sessions.json` (sessionKey -> {sessionId, ...}) turned into sessionId -> entry with its key; also the one an
    upgrade archived beside the JSONL it imported."""
    agent_dir = state_dir / "agents" / agent_id
    out: dict[str, dict[str, Any]] = {}
    try:
        archive = agent_dir / IMPORT_ARCHIVE
        if archive.is_dir():
            for path in sorted(archive.glob("*sessions.json.imported-*")):
                out.update(_read_index(path, problems))
        path = agent_dir / "sessions" / "sessions.json"
        if path.is_file():
            out.update(_read_index(path, problems))
    except OSError:  # an unreadable folder, reported by agent_sources
        pass
    return out


def _read_index(path: Path, problems: Problems) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.add(str(path), None, "bad-index", f"session index unreadable: {exc}")
        return {}
    out: dict[str, dict[str, Any]] = {}
    if isinstance(data, dict):
        for key, entry in data.items():
            if isinstance(entry, dict) and entry.get("sessionId"):
                out[str(entry["sessionId"])] = {**entry, "sessionKey": key}
    return out


def apply_runtime_events(events: Iterable[dict[str, Any]], session: RawSession) -> None:
    """Take the tool schemas and system prompt from the latest `context.compiled` runtime event, and the key."""
    for event in events:
        if event.get("type") != "context.compiled":
            if event.get("sessionKey") and not session.session_key:
                session.session_key = event["sessionKey"]
            continue
        data = event.get("data") or {}
        session.session_key = session.session_key or event.get("sessionKey")
        tools = sanitize_tools(data.get("tools"))
        if tools:
            session.tools = tools
            session.tools_truncated = is_truncated_list(data.get("tools"))
        prompt = data.get("systemPrompt")
        if isinstance(prompt, str) and prompt:
            session.system_prompt = prompt


def is_truncated_list(raw: Any) -> bool:
    """Whether OpenClaw cut this stored list (it replaces dropped items with "[Truncated]" strings)."""
    return isinstance(raw, list) and any(isinstance(x, str) and x.startswith("[Truncated") for x in raw)


def sanitize_tools(raw: Any) -> list[dict[str, Any]] | None:
    """Tool schemas in OpenAI's `{type: function, function: {...}}` form, with OpenClaw's truncation stubs removed.

    OpenClaw's trajectories write tools flat (`{name, description, parameters}`) and cut deep schemas with
    `{"truncated": true, "reason": "trajectory-depth-limit"}` objects: those become `{}` (any value), so the schema
    stays valid JSON Schema rather than describing a field that must equal the stub.
    """
    if not isinstance(raw, list):
        return None
    tools = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        fn: Any = item.get("function") if isinstance(item.get("function"), dict) else item
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            continue
        spec: dict[str, Any] = {"name": name}
        if isinstance(fn.get("description"), str):
            spec["description"] = fn["description"]
        params = _strip_truncated(fn.get("parameters"))
        spec["parameters"] = params if isinstance(params, dict) else {"type": "object", "properties": {}}
        tools.append({"type": "function", "function": spec})
    return tools or None


def _strip_truncated(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("truncated") is True and "reason" in value:
            return {}
        return {k: _strip_truncated(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_truncated(v) for v in value if not (isinstance(v, str) and v.startswith("[Truncated"))]
    return value


def read_bundle(folder: Path, problems: Problems) -> RawSession | None:
    """A trajectory bundle: `session-branch.json` {header, leafId, entries}, `tools.json`, `events.jsonl`, prompts."""
    branch_path = folder / "session-branch.json"
    try:
        branch = json.loads(branch_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.add(str(branch_path), None, "bad-bundle", f"session-branch.json unreadable: {exc}")
        return None
    raw_entries: Any = branch.get("entries") if isinstance(branch, dict) else branch
    if not isinstance(raw_entries, list):
        problems.add(str(branch_path), None, "bad-bundle", "session-branch.json has no `entries` list", key="entries")
        return None
    header: dict[str, Any] = (
        branch["header"] if isinstance(branch, dict) and isinstance(branch.get("header"), dict) else {}
    )
    entries = []
    for i, obj in enumerate(raw_entries):
        if isinstance(obj, dict):
            entries.append(Entry(obj, i + 1))
        elif isinstance(obj, str) and obj.startswith("[Truncated"):
            problems.add(
                str(branch_path),
                None,
                "truncated-by-openclaw",
                f"entry {i} was cut by OpenClaw's bundle size limit; export the SQLite store for the whole session",
                key=f"entries[{i}]",
            )
        else:
            problems.add(str(branch_path), None, "not-an-object", f"entry {i} is not an object", key=f"entries[{i}]")
    session = RawSession(
        session_id=str(header.get("id") or folder.name),
        source=str(branch_path),
        entries=entries,
        header=header,
        leaf_id=branch.get("leafId") if isinstance(branch, dict) else None,
    )
    events_path = folder / "events.jsonl"
    if events_path.is_file():
        apply_runtime_events((obj for _, obj in iter_json_lines(events_path, problems)), session)
    tools_path = folder / "tools.json"
    if tools_path.is_file():
        try:
            raw_tools = json.loads(tools_path.read_text(encoding="utf-8"))
            if sanitize_tools(raw_tools):
                session.tools = sanitize_tools(raw_tools)
                session.tools_truncated = is_truncated_list(raw_tools)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.add(str(tools_path), None, "bad-bundle", f"tools.json unreadable: {exc}")
    prompt_path = folder / "system-prompt.txt"
    if prompt_path.is_file():
        session.system_prompt = prompt_path.read_text(encoding="utf-8", errors="replace")
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            session.session_key = (
                json.loads(manifest.read_text(encoding="utf-8")).get("sessionKey") or session.session_key
            )
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            pass
    return session


def read_sqlite_store(path: Path, problems: Problems) -> Iterator[RawSession]:
    """Sessions of OpenClaw's per-agent SQLite store, opened read-only (OpenClaw may be running and hold locks).

    The columns differ by release (schema 19 in 2026.8 has `event_json` only; 23 in 2026.9 adds `event_zstd`,
    `event_utf8_bytes`, `navigation_json`), so every table is read by the columns `PRAGMA table_info` lists."""
    import zstandard

    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S)
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        columns = {table: _columns(conn, table) for table in TABLES if table in tables}
    except sqlite3.Error as exc:
        problems.add(str(path), None, "bad-sqlite", f"cannot read the SQLite store: {exc}")
        return
    events = columns.get("transcript_events", set())
    missing = [c for c in ("session_id", "seq") if c not in events]
    if not events or missing or not events & {"event_json", "event_zstd"}:
        why = "no transcript_events table" if not events else "transcript_events has no session_id, seq or event_json"
        problems.add(str(path), None, "bad-sqlite", f"not an OpenClaw session store ({why})")
        conn.close()
        return
    dctx = zstandard.ZstdDecompressor()
    agent_id = _store_agent(conn, columns) or _agent_from_path(path)
    # A column this release lacks reads as NULL: one query shape for every schema.
    event_query = "select seq, {}, {}, {} from transcript_events where session_id=? order by seq".format(
        *(c if c in events else "NULL" for c in ("event_json", "event_zstd", "event_utf8_bytes"))
    )
    active = columns.get("session_transcript_active_events", set())
    active_query = (
        "select event_seq from session_transcript_active_events where session_id=? order by active_position"
        if {"session_id", "event_seq", "active_position"} <= active
        else None
    )
    runtime = columns.get("trajectory_runtime_events", set())
    runtime_query = (
        "select event_json from trajectory_runtime_events where session_id=? order by "
        + ("seq" if "seq" in runtime else "rowid")
        if {"session_id", "event_json"} <= runtime
        else None
    )
    try:
        windows = _session_windows(conn, columns)
        session_ids = [
            r[0] for r in conn.execute("select distinct session_id from transcript_events order by session_id")
        ]
        for session_id in session_ids:
            entries: list[Entry] = []
            header: dict[str, Any] = {}
            for seq, event_json, event_zstd, size in conn.execute(event_query, (session_id,)):
                obj = _decode_event(path, session_id, seq, event_json, event_zstd, size, dctx, problems)
                if obj is None:
                    continue
                if obj.get("type") == "session" and not header and not entries:
                    header = obj
                    continue
                entries.append(Entry(obj, seq))
            if not entries:
                continue
            window = windows.get(session_id, {})
            session = RawSession(
                session_id=session_id,
                source=str(path),
                entries=entries,
                agent_id=agent_id,
                session_key=window.get("session_key"),
                channel=window.get("channel"),
                header=header,
            )
            if active_query:
                session.active_seqs = [r[0] for r in conn.execute(active_query, (session_id,))] or None
            if runtime_query:
                apply_runtime_events(_json_rows(conn.execute(runtime_query, (session_id,))), session)
            yield session
    except sqlite3.Error as exc:
        problems.add(str(path), None, "bad-sqlite", f"stopped reading the SQLite store: {exc}")
    finally:
        conn.close()


def store_sessions(path: Path) -> set[tuple[str | None, str]]:
    """(agent, session id) of every session in an SQLite store; empty if it cannot be read (the reader reports why)."""
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S)
    except sqlite3.Error:
        return set()
    try:
        columns = {table: _columns(conn, table) for table in ("transcript_events", "schema_meta")}
        if "session_id" not in columns["transcript_events"]:
            return set()
        agent_id = _store_agent(conn, columns) or _agent_from_path(path)
        return {(agent_id, r[0]) for r in conn.execute("select distinct session_id from transcript_events")}
    except sqlite3.Error:
        return set()
    finally:
        conn.close()


# The tables read, each by the columns it has.
TABLES = (
    "transcript_events",
    "session_windows",
    "session_transcript_active_events",
    "trajectory_runtime_events",
    "schema_meta",
)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"pragma table_info({table})")}


def _json_rows(rows: Iterable[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    for (text,) in rows:
        try:
            obj = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(obj, dict):
            yield obj


def _decode_event(
    path: Path, session_id: str, seq: int, event_json: Any, event_zstd: Any, size: Any, dctx: Any, problems: Problems
) -> dict[str, Any] | None:
    where = f"{path}#{session_id}"
    raw: bytes
    if event_json is not None:
        raw = event_json.encode("utf-8", "surrogatepass") if isinstance(event_json, str) else bytes(event_json)
    elif event_zstd is not None:
        try:
            raw = dctx.decompress(bytes(event_zstd), max_output_size=max(int(size or 0), 1 << 20))
        except Exception as exc:
            problems.add(where, seq, "bad-zstd", f"event_zstd does not decompress: {exc}", key="event_zstd")
            return None
    else:
        problems.add(where, seq, "empty-event", "row has neither event_json nor event_zstd", key="event_json")
        return None
    return parse_json_line(raw, where, seq, problems, what="event")


def _session_windows(conn: sqlite3.Connection, columns: dict[str, set[str]]) -> dict[str, dict[str, Any]]:
    have = columns.get("session_windows", set())
    wanted = [c for c in ("session_id", "session_key", "channel", "reason") if c in have]
    if "session_id" not in wanted:
        return {}
    rows = conn.execute(f"select {', '.join(wanted)} from session_windows")
    return {r[0]: dict(zip(wanted, r, strict=True)) for r in rows}


def _store_agent(conn: sqlite3.Connection, columns: dict[str, set[str]]) -> str | None:
    if "agent_id" not in columns.get("schema_meta", set()):
        return None
    row = conn.execute("select agent_id from schema_meta limit 1").fetchone()
    return row[0] if row and isinstance(row[0], str) else None
