"""The request log: every request and response the gateway handles, in SQLite (WAL). What the improvement loop reads.

This module is the one place that knows the log's schema. The schema has a version (SQLite's `user_version`) and a
list of migrations, one per version: a log written by an older clawtune is migrated in one transaction when it is
opened, never treated as corrupt, and archives are brought to the same version before rows move into them. A later
feature that needs a column or a table (the improvement loop's labels, the A/B tests' experiments) appends a
`Migration` to `MIGRATIONS`; readers go through `connect_readonly` / `iter_requests`, which migrate first.

Writing: handlers put records on a queue; one writer thread owns the connection, so a slow disk never blocks a request.
The writer survives any record: each field is coerced to its column's type (a dict for a text column is stored as
JSON, a number too large for SQLite as NULL, a lone UTF-16 surrogate as U+FFFD), and a record that still cannot be
stored is replaced by a stub row that says so. When the disk refuses (full, read-only, locked), records wait in a
bounded buffer and the writer retries; `status()` says the log is degraded until a write succeeds again. A file that
is not a SQLite database (or is damaged) is moved aside as `requests.sqlite.corrupt-<time>` and a fresh log is started,
loudly.

Privacy: requests, responses, errors and feedback comments are scrubbed with the training export's scrubber
(`clawtune.data.scrub`: API keys, tokens, emails, card numbers, phones become typed placeholders) unless the config
opts out; the folder is 0700 and the database, its WAL and the archives are 0600.

The log is capped at `max_rows` requests: beyond it the oldest rows (and their feedback) move to a monthly archive
file (`requests-2026-11.sqlite`) beside it.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from clawtune.problems import InputError
from clawtune.serve.protocol import replace_surrogates

logger = logging.getLogger("clawtune.serve")


class LogError(InputError):
    """The log cannot be opened as it is (a newer schema, a folder that cannot be written); says why."""


# ---- the schema ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    """The statements that take the log from `version - 1` to `version`."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "requests and feedback, as clawtune 0.1 wrote them (those logs have user_version 0)",
        (
            """CREATE TABLE IF NOT EXISTS requests (
                id TEXT PRIMARY KEY,
                created REAL NOT NULL,
                model TEXT,            -- the model id that served it
                requested_model TEXT,  -- what the client asked for (an id, "auto", an experiment)
                provider TEXT,
                adapter TEXT,
                experiment TEXT,
                arm TEXT,
                session TEXT,
                user TEXT,
                status INTEGER,
                error TEXT,
                stream INTEGER,
                latency_ms REAL,
                prompt_tokens INTEGER,
                prompt_tokens_original INTEGER,  -- before the system-prompt policy (the savings)
                completion_tokens INTEGER,
                finish_reason TEXT,
                tool_calls INTEGER,
                tool_calls_valid INTEGER,
                request_json TEXT,
                response_json TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS requests_created ON requests(created)",
            """CREATE TABLE IF NOT EXISTS feedback (
                request_id TEXT NOT NULL,
                created REAL NOT NULL,
                rating TEXT NOT NULL CHECK (rating IN ('positive', 'negative')),
                comment TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS feedback_request ON feedback(request_id)",
        ),
    ),
    Migration(
        2,
        "scrubbing recorded per row; an audit of admin actions; the history of migrations",
        (
            "ALTER TABLE requests ADD COLUMN scrubbed INTEGER",  # 1: stored after scrubbing, 0: as sent, NULL: before
            "ALTER TABLE requests ADD COLUMN redactions INTEGER",  # how many values the scrubber replaced
            """CREATE TABLE IF NOT EXISTS admin_actions (
                created REAL NOT NULL,
                action TEXT NOT NULL,  -- load | unload
                name TEXT,
                path TEXT,
                status INTEGER,
                error TEXT
            )""",
            """CREATE TABLE IF NOT EXISTS schema_history (
                version INTEGER NOT NULL,
                description TEXT NOT NULL,
                applied REAL NOT NULL
            )""",
        ),
    ),
    Migration(
        3,
        "each request's output budget: what it asked for, what it was allowed, why that is less (a clamp)",
        (
            "ALTER TABLE requests ADD COLUMN max_tokens_requested INTEGER",  # what the client asked to generate
            "ALTER TABLE requests ADD COLUMN max_tokens INTEGER",  # what the server let it generate
            "ALTER TABLE requests ADD COLUMN max_tokens_clamp TEXT",  # why that is less than asked (NULL: it is not)
        ),
    ),
    Migration(
        4,
        "A/B experiments: their definitions and state, every refresh's figures, the key each request's arm was drawn by",
        (
            # the key the arm was drawn by (the client's session, OpenClaw's prompt_cache_key, or one derived from
            # the conversation): the A/B test's unit
            "ALTER TABLE requests ADD COLUMN unit TEXT",
            "CREATE INDEX IF NOT EXISTS requests_experiment ON requests(experiment, created)",
            """CREATE TABLE IF NOT EXISTS experiments (
                id TEXT PRIMARY KEY,
                model TEXT NOT NULL,      -- the model id whose requests are split (an incumbent's, or its own id)
                arms TEXT NOT NULL,       -- JSON {model id: weight}, in order: the first is A (the incumbent)
                sticky TEXT NOT NULL,     -- session | user
                status TEXT NOT NULL,     -- running | stopped
                source TEXT NOT NULL,     -- config | admin
                created REAL NOT NULL,
                stopped REAL,
                settings TEXT,            -- JSON: what the test was asked (metrics, primary, duration, mode, ...)
                result TEXT               -- JSON: the verdict and figures it ended with
            )""",
            """CREATE TABLE IF NOT EXISTS experiment_refreshes (
                experiment TEXT NOT NULL,
                created REAL NOT NULL,
                figures TEXT NOT NULL     -- JSON: every arm's metrics and the test's state at that refresh
            )""",
            "CREATE INDEX IF NOT EXISTS experiment_refreshes_id ON experiment_refreshes(experiment, created)",
        ),
    ),
    Migration(
        5,
        "gray release: an experiment's canary ramp and promotion, and every decision taken on it with its figures",
        (
            # experiments.status gains two values: rolled_back (a guardrail breach, a worse primary metric, or
            # `ft ab-test rollback`: every request for the split id goes to the incumbent again) and promoted (every
            # request for the split id goes to B; arms is then {B: 100}). A rollback event's figures say why:
            # {"cause": "guardrail" | "primary" | "manual", "guardrail": {metric, threshold, B - A and its
            # confidence sequence}, ...}
            # JSON {"steps": [10, 50, 100], "step": index of the step in force, "since": when it began (epoch s)};
            # NULL for a fixed split. The step in force is also what `arms` says: B's share is steps[step] percent.
            "ALTER TABLE experiments ADD COLUMN canary TEXT",
            # JSON: what the promotion changed, so that a rollback can undo it: {"at", "model" (the id now served by
            # B), "config": {"path", "backup", "entry"} (models.yaml, the copy taken before, the experiment entry
            # written), "register": {...} (OpenClaw's config, when `--register` switched its primary model)}
            "ALTER TABLE experiments ADD COLUMN promotion TEXT",
            """CREATE TABLE IF NOT EXISTS experiment_events (
                experiment TEXT NOT NULL,
                created REAL NOT NULL,
                kind TEXT NOT NULL,       -- start | step | stop | rollback | promote
                arms TEXT,                -- JSON {model id: weight} in force after the event (the canary's share)
                reason TEXT,              -- in words: which check passed or failed, and by how much
                figures TEXT              -- JSON: the figures the decision was taken on (the guardrail's test, ...)
            )""",
            "CREATE INDEX IF NOT EXISTS experiment_events_id ON experiment_events(experiment, created)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version

# The columns of each table at SCHEMA_VERSION, with the type each value is coerced to before it is bound.
REQUEST_COLUMNS: dict[str, str] = {
    "id": "text",
    "created": "real",
    "model": "text",
    "requested_model": "text",
    "provider": "text",
    "adapter": "text",
    "experiment": "text",
    "arm": "text",
    "session": "text",
    "user": "text",
    "status": "int",
    "error": "text",
    "stream": "int",
    "latency_ms": "real",
    "prompt_tokens": "int",
    "prompt_tokens_original": "int",
    "completion_tokens": "int",
    "finish_reason": "text",
    "tool_calls": "int",
    "tool_calls_valid": "int",
    "request_json": "json",
    "response_json": "json",
    "scrubbed": "int",
    "redactions": "int",
    "max_tokens_requested": "int",
    "max_tokens": "int",
    "max_tokens_clamp": "text",
    "unit": "text",
}
FEEDBACK_COLUMNS = {"request_id": "text", "created": "real", "rating": "text", "comment": "text"}
ADMIN_COLUMNS = {"created": "real", "action": "text", "name": "text", "path": "text", "status": "int", "error": "text"}


def _insert(table: str, columns: dict[str, str], verb: str = "INSERT") -> str:
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


INSERT = {
    "request": _insert("requests", REQUEST_COLUMNS, "INSERT OR REPLACE"),
    "feedback": _insert("feedback", FEEDBACK_COLUMNS),
    "admin": _insert("admin_actions", ADMIN_COLUMNS),
}


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, where: str = "the log") -> list[int]:
    """Bring an open log (autocommit connection) to SCHEMA_VERSION in one transaction; the versions applied."""
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise LogError(
            f"{where} has schema version {current}, written by a newer clawtune (this one knows up to "
            f"{SCHEMA_VERSION}): upgrade clawtune, or set another server.data_dir"
        )
    steps = MIGRATIONS[current:]
    if not steps:
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for step in steps:
            for statement in step.statements:
                conn.execute(statement)
        now = time.time()
        conn.executemany(
            "INSERT INTO schema_history (version, description, applied) VALUES (?, ?, ?)",
            [(s.version, s.description, now) for s in steps],
        )
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return [s.version for s in steps]


# ---- values -------------------------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        try:  # orjson: several times faster on the writer thread, which shares the GIL with the event loop
            value = orjson.dumps(value, default=str).decode()
        except TypeError:  # a lone surrogate, an integer past 64 bits, a cycle: the standard library, or its error
            value = json.dumps(value, ensure_ascii=False, default=str)
    return replace_surrogates(value)


def _coerce(value: Any, kind: str) -> Any:
    """A value SQLite can bind to a column of this kind, whatever the caller passed."""
    if value is None:
        return None
    if kind == "int":
        if isinstance(value, float) and math.isfinite(value):
            value = int(value)
        if isinstance(value, bool | int) and -(2**63) <= int(value) < 2**63:
            return int(value)
        return None
    if kind == "real":
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value)):
            return float(value)
        return None
    return _text(value)  # text, and json (a string as given, anything else serialised)


class RecordScrubber:
    """Every string of a request, response or comment through the export's scrubber, with one placeholder numbering
    per record (the same email is `<EMAIL_1>` in the question and in the tool call). Tool definitions are the
    agent's catalogue, not user data, and are kept as they are."""

    def __init__(self) -> None:
        from clawtune.data.scrub import RULES, Scrubber

        self.rules = RULES
        self.scrubber = Scrubber()
        self.mapping: dict[tuple[str, str], str] = {}
        self.active: list[Any] = []

    def prepare(self, *values: Any) -> None:
        """Find the rules that match anywhere in these values once (most records match none)."""
        strings: list[str] = []
        for value in values:
            _collect(value, strings)
        joined = "\x00".join(strings)
        self.active = [
            r for r in self.rules if (not r.guards or any(g in joined for g in r.guards)) and r.pattern.search(joined)
        ]

    def text(self, value: Any) -> Any:
        if not isinstance(value, str) or not self.active:
            return value
        return self.scrubber.scrub_text(value, self.mapping, self.active)

    def value(self, value: Any, key: str | None = None) -> Any:
        if not self.active:
            return value
        if isinstance(value, str):
            if key == "arguments":  # a JSON string: scrub its values, so a placeholder never breaks the JSON
                try:
                    parsed = json.loads(value)
                except ValueError:
                    return self.text(value)
                scrubbed = self.value(parsed)
                return value if scrubbed == parsed else json.dumps(scrubbed, ensure_ascii=False)
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {k: (v if k == "tools" else self.value(v, k)) for k, v in value.items()}
        return value

    @property
    def redactions(self) -> int:
        return sum(self.scrubber.counts.values())


def scrub_value(value: Any) -> Any:
    """One value (a comment, a request) scrubbed on its own."""
    scrubber = RecordScrubber()
    scrubber.prepare(value)
    return scrubber.value(value)


def _collect(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for v in value:
            _collect(v, out)
    elif isinstance(value, dict):
        for k, v in value.items():
            if k != "tools":
                _collect(v, out)


def prepare_request(record: dict[str, Any], scrub: bool) -> list[Any]:
    """The row for a request record: scrubbed (unless opted out) and coerced, column by column."""
    record = dict(record)
    record.setdefault("created", time.time())
    if not record.get("id"):
        record["id"] = f"unknown-{time.time_ns()}"
    if scrub:
        scrubber = RecordScrubber()
        keys = ("request_json", "response_json", "error", "user", "session")
        scrubber.prepare(*(record.get(k) for k in keys))
        for key in keys:
            record[key] = scrubber.value(record.get(key))
        record["scrubbed"], record["redactions"] = 1, scrubber.redactions
    else:
        record["scrubbed"], record["redactions"] = 0, 0
    return [_coerce(record.get(c), kind) for c, kind in REQUEST_COLUMNS.items()]


def _stub(record: Any, exc: BaseException) -> list[Any]:
    """What is stored for a record that cannot be: its id, time and status, and why."""
    record = record if isinstance(record, dict) else {}
    stub = {
        "id": _coerce(record.get("id"), "text") or f"unknown-{time.time_ns()}",
        "created": _coerce(record.get("created"), "real") or time.time(),
        "status": _coerce(record.get("status"), "int"),
        "error": f"the log could not store this record: {type(exc).__name__}: {exc}"[:500],
    }
    return [_coerce(stub.get(c), kind) for c, kind in REQUEST_COLUMNS.items()]


# ---- files --------------------------------------------------------------------------------------------------------


def _private_folder(folder: Path, log_name: str) -> None:
    """0700 for a folder clawtune made, or one that already holds its log; another folder is only warned about."""
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise LogError(f"{folder}: cannot create the log folder: {exc.strerror}") from None
    mode = folder.stat().st_mode & 0o777
    if mode & 0o077:
        if created or (folder / log_name).exists() or not any(folder.iterdir()):
            folder.chmod(0o700)
        else:
            logger.warning("%s is readable by other users; the request log inside it is private (0600)", folder)


def _private_file(path: Path) -> None:
    """Create the file 0600 before SQLite opens it (SQLite gives its WAL and shared-memory files the same mode)."""
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if candidate.exists() and candidate.stat().st_mode & 0o077:
            candidate.chmod(0o600)


def _is_corrupt(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc).lower()
    return code in (11, 26) or "malformed" in text or "not a database" in text or "corrupt" in text


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


QUICK_CHECK_BYTES = 64 << 20  # a full-file check at start-up up to this size; larger logs are checked as they are used


def open_log(path: Path) -> sqlite3.Connection:
    """Open (creating or migrating) a log file; raises sqlite3.DatabaseError if it is not a healthy SQLite file."""
    _private_file(path)
    conn = _connect(path)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if path.stat().st_size <= QUICK_CHECK_BYTES:
            (result,) = conn.execute("PRAGMA quick_check(1)").fetchone()
            if result != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({result})")
        migrate(conn, str(path))
    except BaseException:
        conn.close()
        raise
    _private_file(path)
    return conn


def move_aside(path: Path) -> Path:
    """Rename a damaged log (with its WAL and shared-memory files) to `NAME.corrupt-<UTC time>`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(target.with_name(target.name + suffix))
    return target


# ---- the writer ---------------------------------------------------------------------------------------------------


class RequestLog:
    """The gateway's log: `request()`, `feedback()` and `admin()` queue records; one thread writes them."""

    MAX_PENDING = 100_000  # records kept in memory while the disk refuses them; the oldest are dropped beyond
    RECENT = 100_000  # request ids remembered for feedback lookups without touching the disk

    def __init__(self, path: Path, max_rows: int = 1_000_000, scrub: bool = True) -> None:
        self.path = path
        self.max_rows = max_rows
        self.scrub = scrub
        self.written = 0
        self.dropped = 0
        self.failed_records = 0
        self.error: str | None = None
        self.recovered: str | None = None
        self.warnings: list[str] = []
        _private_folder(path.parent, path.name)
        self._conn: sqlite3.Connection | None = self._open()
        # SimpleQueue: put() is one C call, no Python-level lock and condition on the request path
        self._queue: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self._pending: collections.deque[tuple[str, list[Any]]] = collections.deque()
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._recent_lock = threading.Lock()
        self._since_trim = 0
        self._thread = threading.Thread(target=self._run, name="clawtune-log", daemon=True)
        self._thread.start()

    # -- opening --
    def _open(self) -> sqlite3.Connection:
        try:
            return open_log(self.path)
        except LogError:
            raise
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise LogError(f"{self.path}: cannot open the request log: {exc}") from None
            return self._recover(exc)
        except OSError as exc:
            raise LogError(f"{self.path}: cannot open the request log: {exc.strerror}") from None

    def _recover(self, exc: BaseException) -> sqlite3.Connection:
        moved = move_aside(self.path)
        self.recovered = str(moved)
        message = (
            f"WARNING: the request log {self.path} is damaged ({exc}); it was moved aside to {moved} and a new, "
            "empty log was started. The old rows are still in that file (sqlite3 .recover can salvage them)."
        )
        self.warnings.append(message)
        logger.error(message)
        print(message, file=sys.stderr, flush=True)
        return open_log(self.path)

    # -- the queue side (any thread) --
    def request(self, record: dict[str, Any]) -> None:
        """Queue one request record (any values: they are scrubbed and coerced on the writer thread)."""
        request_id = record.get("id")
        if isinstance(request_id, str):
            with self._recent_lock:
                self._recent[request_id] = None
                while len(self._recent) > self.RECENT:
                    self._recent.popitem(last=False)
        self._queue.put(("request", dict(record)))

    def feedback(self, request_id: str, rating: str, comment: str | None) -> None:
        self._queue.put(
            ("feedback", {"request_id": request_id, "created": time.time(), "rating": rating, "comment": comment})
        )

    def admin(self, action: str, name: str | None, path: str | None, status: int, error: str | None = None) -> None:
        self._queue.put(
            (
                "admin",
                {
                    "created": time.time(),
                    "action": action,
                    "name": name,
                    "path": path,
                    "status": status,
                    "error": error,
                },
            )
        )

    def flush(self, timeout: float = 30) -> bool:
        """Wait until everything queued so far has been tried; True when it is on disk."""
        done = threading.Event()
        self._queue.put(("flush", done))
        return done.wait(timeout) and not self._pending

    def has_request(self, request_id: str) -> bool:
        """Whether a request id is in the log (recent ones from memory, older ones from the file)."""
        with self._recent_lock:
            if request_id in self._recent:
                return True
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error:
            return False
        try:
            return conn.execute("SELECT 1 FROM requests WHERE id = ?", (request_id,)).fetchone() is not None
        except sqlite3.Error:
            return False
        finally:
            conn.close()

    def status(self) -> dict[str, Any]:
        """The truth for /health: whether the last write succeeded, what is waiting, what was lost or recovered."""
        out: dict[str, Any] = {
            "ok": self.error is None and self._thread.is_alive(),
            "path": str(self.path),
            "written": self.written,
            "pending": len(self._pending) + self._queue.qsize(),
        }
        if not self._thread.is_alive():
            out["error"] = "the log writer has stopped"
        elif self.error:
            out["error"] = self.error
        if self.dropped:
            out["dropped"] = self.dropped
        if self.failed_records:
            out["stub_records"] = self.failed_records
        if self.recovered:
            out["recovered_from_corrupt"] = self.recovered
        return out

    def close(self, timeout: float = 60) -> None:
        self._queue.put(None)
        self._thread.join(timeout=timeout)

    # -- the writer thread --
    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                item = self._queue.get(timeout=1.0 if self._pending else None)
            except queue.Empty:
                item = ("retry", None)
            batch = [item]
            while len(batch) < 2000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            flushes: list[threading.Event] = []
            for entry in batch:
                if entry is None:
                    stop = True
                elif entry[0] == "flush":
                    flushes.append(entry[1])
                elif entry[0] in ("request", "feedback", "admin"):
                    self._prepare(entry[0], entry[1])
            try:
                self._commit()
                if self._since_trim >= 500 or (stop and not self._pending):
                    self._trim_safely()
            except BaseException as exc:  # the writer never dies: say so, and keep going
                self.error = f"{type(exc).__name__}: {exc}"
                logger.exception("request log writer")
            finally:
                for event in flushes:
                    event.set()
            if stop and self._pending:
                # the disk still refuses: a few more tries before giving up on shutdown
                for _ in range(3):
                    time.sleep(0.5)
                    self._commit()
                    if not self._pending:
                        break
                if self._pending:
                    logger.error("request log: %d records could not be written at shutdown", len(self._pending))
        if self._conn is not None:
            self._conn.close()

    def _prepare(self, kind: str, payload: dict[str, Any]) -> None:
        try:
            if kind == "request":
                row = prepare_request(payload, self.scrub)
            elif kind == "feedback":
                if self.scrub:
                    payload = {**payload, "comment": scrub_value(payload.get("comment"))}
                row = [_coerce(payload.get(c), t) for c, t in FEEDBACK_COLUMNS.items()]
            else:
                row = [_coerce(payload.get(c), t) for c, t in ADMIN_COLUMNS.items()]
        except Exception as exc:  # a record no coercion could store: keep a stub that says so
            self.failed_records += 1
            if kind != "request":
                logger.error("request log: a %s record could not be stored: %s", kind, exc)
                return
            kind, row = "request", _stub(payload, exc)
        if len(self._pending) >= self.MAX_PENDING:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append((kind, row))

    def _commit(self) -> None:
        """Write what is pending in one transaction; a row SQLite refuses is replaced by its stub, a refusing disk
        leaves everything pending (and the log degraded) until the next try."""
        if not self._pending:
            return
        try:
            if self._conn is None:
                self._conn = self._open()
            conn = self._conn
            rows = list(self._pending)
            conn.execute("BEGIN")
            try:
                for kind, row in rows:
                    try:
                        conn.execute(INSERT[kind], row)
                    except (
                        sqlite3.InterfaceError,
                        sqlite3.IntegrityError,
                        sqlite3.ProgrammingError,
                        ValueError,
                    ) as exc:
                        self.failed_records += 1
                        if kind == "request":
                            conn.execute(INSERT[kind], _stub(dict(zip(REQUEST_COLUMNS, row, strict=False)), exc))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            if _is_corrupt(exc) and self._conn is not None:
                self._conn.close()
                self._conn = None
                try:
                    self._conn = self._recover(exc)
                except (sqlite3.Error, OSError) as again:
                    self.error = f"the log is damaged and a new one cannot be started: {again}"
                    return
                self._commit()
                return
            self.error = f"cannot write {self.path}: {exc}"
            return
        except OSError as exc:
            self.error = f"cannot write {self.path}: {exc.strerror or exc}"
            return
        written = sum(1 for kind, _ in rows if kind == "request")
        self.written += written
        self._since_trim += written
        self._pending.clear()
        self.error = None

    def _trim_safely(self) -> None:
        if self._conn is None:
            return
        try:
            self._trim(self._conn)
            self._since_trim = 0
        except (sqlite3.Error, OSError) as exc:
            self.error = f"cannot archive old rows of {self.path}: {exc}"

    def _trim(self, conn: sqlite3.Connection) -> None:
        """Past `max_rows`, the oldest rows (with their feedback) move to an archive file beside the log, one per
        month: the live log stays small, and nothing the improvement loop reads is lost."""
        (count,) = conn.execute("SELECT count(*) FROM requests").fetchone()
        if count <= self.max_rows:
            return
        cutoff = conn.execute(
            "SELECT created FROM requests ORDER BY created DESC LIMIT 1 OFFSET ?", (self.max_rows - 1,)
        ).fetchone()[0]
        archive = self.path.with_name(f"{self.path.stem}-{time.strftime('%Y-%m', time.gmtime())}.sqlite")
        open_log(archive).close()  # created or migrated to this schema, 0600, before rows move in
        conn.execute("ATTACH DATABASE ? AS archive", (str(archive),))
        try:
            requests, feedback = ", ".join(REQUEST_COLUMNS), ", ".join(FEEDBACK_COLUMNS)
            old = "SELECT id FROM main.requests WHERE created < ?"
            stray = "request_id NOT IN (SELECT id FROM main.requests)"  # feedback whose request went earlier
            conn.execute("BEGIN")
            try:
                conn.execute(
                    f"INSERT OR REPLACE INTO archive.requests ({requests}) "
                    f"SELECT {requests} FROM main.requests WHERE id IN ({old})",
                    (cutoff,),
                )
                conn.execute(
                    f"INSERT INTO archive.feedback ({feedback}) SELECT {feedback} FROM main.feedback "
                    f"WHERE request_id IN ({old}) OR {stray}",
                    (cutoff,),
                )
                conn.execute(f"DELETE FROM main.feedback WHERE request_id IN ({old}) OR {stray}", (cutoff,))
                conn.execute("DELETE FROM main.requests WHERE created < ?", (cutoff,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute("DETACH DATABASE archive")
        _private_file(archive)


# ---- reading ------------------------------------------------------------------------------------------------------


def log_files(path: Path) -> list[Path]:
    """The live log and its monthly archives, oldest archive first."""
    archives = sorted(path.parent.glob(f"{path.stem}-[0-9][0-9][0-9][0-9]-[0-9][0-9].sqlite"))
    return [*archives, path] if path.exists() else archives


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to a log file at SCHEMA_VERSION (an older file is migrated first)."""
    probe = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        version = schema_version(probe)
    finally:
        probe.close()
    if version != SCHEMA_VERSION:
        open_log(path).close()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def iter_requests(path: Path, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Every logged request (archives included), oldest first, with `request`/`response` decoded and `feedback`
    the list of ratings given to it."""
    for file in log_files(path):
        conn = connect_readonly(file)
        try:
            ratings: dict[str, list[dict[str, Any]]] = {}
            for row in conn.execute("SELECT request_id, created, rating, comment FROM feedback ORDER BY created"):
                ratings.setdefault(row["request_id"], []).append(dict(row))
            query = (
                "SELECT * FROM requests" + (" WHERE created >= ?" if since is not None else "") + " ORDER BY created"
            )
            for row in conn.execute(query, () if since is None else (since,)):
                item = dict(row)
                for key, target in (("request_json", "request"), ("response_json", "response")):
                    raw = item.pop(key)
                    item[target] = json.loads(raw) if raw else None
                item["feedback"] = ratings.get(item["id"], [])
                yield item
        finally:
            conn.close()


# ---- experiments --------------------------------------------------------------------------------------------------
# Experiments are few and their changes must be on disk before the admin API answers, so they are written here on a
# short connection of their own (WAL lets it share the file with the writer thread), not through the queue.

EXPERIMENT_COLUMNS = (
    "id",
    "model",
    "arms",
    "sticky",
    "status",
    "source",
    "created",
    "stopped",
    "settings",
    "result",
    "canary",
    "promotion",
)
_EXPERIMENT_JSON = ("arms", "settings", "result", "canary", "promotion")


def _experiment_row(row: sqlite3.Row) -> dict[str, Any]:
    item = dict(row)
    for key in _EXPERIMENT_JSON:
        item[key] = json.loads(item[key]) if item[key] else None
    return item


class ExperimentStore:
    """The experiments table and their refreshes, in the log's file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn = _connect(self.path)
        conn.row_factory = sqlite3.Row
        return conn

    def save(self, experiment: dict[str, Any]) -> None:
        """Insert or replace one experiment (every column given)."""
        values = [_text(experiment.get(c)) if c in _EXPERIMENT_JSON else experiment.get(c) for c in EXPERIMENT_COLUMNS]
        with self._lock:
            conn = self._conn()
            try:
                conn.execute(_insert("experiments", dict.fromkeys(EXPERIMENT_COLUMNS, ""), "INSERT OR REPLACE"), values)
            finally:
                conn.close()

    def all(self) -> list[dict[str, Any]]:
        conn = self._conn()
        try:
            return [_experiment_row(r) for r in conn.execute("SELECT * FROM experiments ORDER BY created")]
        finally:
            conn.close()

    def get(self, experiment_id: str) -> dict[str, Any] | None:
        conn = self._conn()
        try:
            row = conn.execute("SELECT * FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
            return _experiment_row(row) if row else None
        finally:
            conn.close()

    def add_refresh(self, experiment_id: str, figures: dict[str, Any], created: float | None = None) -> float:
        created = time.time() if created is None else created
        with self._lock:
            conn = self._conn()
            try:
                conn.execute(
                    "INSERT INTO experiment_refreshes (experiment, created, figures) VALUES (?, ?, ?)",
                    (experiment_id, created, _text(figures)),
                )
            finally:
                conn.close()
        return created

    def add_event(
        self,
        experiment_id: str,
        kind: str,
        arms: dict[str, float] | None,
        reason: str | None = None,
        figures: dict[str, Any] | None = None,
        created: float | None = None,
    ) -> dict[str, Any]:
        """Record one decision (start, step, breach, stop, rollback, promote) with the figures it was taken on."""
        created = time.time() if created is None else created
        with self._lock:
            conn = self._conn()
            try:
                conn.execute(
                    "INSERT INTO experiment_events (experiment, created, kind, arms, reason, figures) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (experiment_id, created, kind, _text(arms), reason, _text(figures)),
                )
            finally:
                conn.close()
        return {"created": created, "kind": kind, "arms": arms, "reason": reason, "figures": figures}

    def events(self, experiment_id: str) -> list[dict[str, Any]]:
        """The experiment's decisions, oldest first."""
        conn = self._conn()
        try:
            rows = conn.execute(
                "SELECT created, kind, arms, reason, figures FROM experiment_events WHERE experiment = ? "
                "ORDER BY created, rowid",
                (experiment_id,),
            )
            return [
                {
                    "created": r["created"],
                    "kind": r["kind"],
                    "arms": json.loads(r["arms"]) if r["arms"] else None,
                    "reason": r["reason"],
                    "figures": json.loads(r["figures"]) if r["figures"] else None,
                }
                for r in rows
            ]
        finally:
            conn.close()

    def refreshes(self, experiment_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The experiment's refreshes, oldest first (the last `limit` of them when given)."""
        conn = self._conn()
        try:
            query = "SELECT created, figures FROM experiment_refreshes WHERE experiment = ? ORDER BY created DESC"
            rows = conn.execute(query + (" LIMIT ?" if limit else ""), (experiment_id, *([limit] if limit else [])))
            return [{"created": r["created"], "figures": json.loads(r["figures"])} for r in reversed(list(rows))]
        finally:
            conn.close()


def experiment_requests(path: Path, experiment_id: str) -> list[dict[str, Any]]:
    """The figures of every logged request of one experiment (archives included), oldest first: what the A/B test
    aggregates per unit, without the requests' and responses' bodies."""
    out: list[dict[str, Any]] = []
    columns = "id, created, arm, unit, session, user, status, latency_ms, prompt_tokens, completion_tokens, "
    columns += "tool_calls, tool_calls_valid"
    for file in log_files(path):
        conn = connect_readonly(file)
        try:
            ratings: dict[str, list[str]] = {}
            query = "SELECT f.request_id, f.rating FROM feedback f JOIN requests r ON r.id = f.request_id "
            for row in conn.execute(query + "WHERE r.experiment = ? ORDER BY f.created", (experiment_id,)):
                ratings.setdefault(row["request_id"], []).append(row["rating"])
            rows = conn.execute(
                f"SELECT {columns} FROM requests WHERE experiment = ? ORDER BY created", (experiment_id,)
            )
            for row in rows:
                item = dict(row)
                item["ratings"] = ratings.get(item["id"], [])
                out.append(item)
        finally:
            conn.close()
    return out


# ---- browsing (the dashboard): paged, filtered reads over the log and its archives, newest first ------------------

LIST_COLUMNS = (
    "id, created, model, requested_model, adapter, experiment, arm, session, status, error, stream, latency_ms, "
    "prompt_tokens, prompt_tokens_original, completion_tokens, finish_reason, tool_calls, tool_calls_valid"
)


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _search_clause(query: str | None, model: str | None) -> tuple[str, list[Any]]:
    """A WHERE clause: `query` anywhere in the ids, names, error, request or response (as logged, scrubbed), and an
    exact model (served or requested)."""
    clauses: list[str] = []
    args: list[Any] = []
    if query:
        fields = ("id", "model", "requested_model", "adapter", "arm", "session", "error", "request_json")
        clauses.append("(" + " OR ".join(f"{f} LIKE ? ESCAPE '\\'" for f in (*fields, "response_json")) + ")")
        args += [_like(query)] * (len(fields) + 1)
    if model:
        clauses.append("(model = ? OR requested_model = ?)")
        args += [model, model]
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def search_requests(
    path: Path, query: str | None = None, model: str | None = None, offset: int = 0, limit: int = 50
) -> dict[str, Any]:
    """One page of requests (without their bodies), newest first across the log and its archives, and the total."""
    where, args = _search_clause(query, model)
    files = list(reversed(log_files(path)))
    rows: list[dict[str, Any]] = []
    total = 0
    skip = offset
    for file in files:
        conn = connect_readonly(file)
        try:
            (count,) = conn.execute(f"SELECT count(*) FROM requests{where}", args).fetchone()
            total += count
            if len(rows) >= limit or skip >= count:
                skip = max(0, skip - count)
                continue
            ratings = "(SELECT group_concat(rating) FROM feedback WHERE request_id = requests.id) AS ratings"
            found = conn.execute(
                f"SELECT {LIST_COLUMNS}, {ratings} FROM requests{where} ORDER BY created DESC LIMIT ? OFFSET ?",
                [*args, limit - len(rows), skip],
            )
            rows += [{**dict(r), "archive": file.name if file != path else None} for r in found]
            skip = 0
        finally:
            conn.close()
    return {"total": total, "offset": offset, "limit": limit, "requests": rows}


def read_request(path: Path, request_id: str) -> dict[str, Any] | None:
    """One request as logged (bodies decoded), with its feedback, from the log or an archive."""
    for file in reversed(log_files(path)):
        conn = connect_readonly(file)
        try:
            row = conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
            if row is None:
                continue
            item = dict(row)
            for key, target in (("request_json", "request"), ("response_json", "response")):
                raw = item.pop(key)
                try:
                    item[target] = json.loads(raw) if raw else None
                except ValueError:  # a stub row's text, shown as it is
                    item[target] = raw
            feedback = conn.execute(
                "SELECT created, rating, comment FROM feedback WHERE request_id = ? ORDER BY created", (request_id,)
            )
            item["feedback"] = [dict(f) for f in feedback]
            item["archive"] = file.name if file != path else None
            return item
        finally:
            conn.close()
    return None


def traffic_span(path: Path) -> tuple[float, float, int] | None:
    """The first and last request times and the number of requests, over the log and its archives."""
    first, last, total = math.inf, -math.inf, 0
    for file in log_files(path):
        conn = connect_readonly(file)
        try:
            low, high, count = conn.execute("SELECT min(created), max(created), count(*) FROM requests").fetchone()
        finally:
            conn.close()
        if count:
            first, last, total = min(first, low), max(last, high), total + count
    return (first, last, total) if total else None


def traffic_groups(path: Path, start: float, bucket: float) -> Iterator[dict[str, Any]]:
    """The requests counted in SQL per time bucket (`start` + i * `bucket` seconds), model, adapter and arm: errors,
    tokens, what the system-prompt policy saved, tool calls and feedback. Nothing is read row by row."""
    query = """
        SELECT CAST((created - :start) / :bucket AS INTEGER) AS bucket, model, adapter, experiment, arm,
               count(*) AS requests, sum(status >= 400) AS errors,
               sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
               sum(max(coalesce(prompt_tokens_original, prompt_tokens) - prompt_tokens, 0)) AS tokens_saved,
               sum(tool_calls) AS tool_calls, sum(tool_calls_valid) AS tool_calls_valid,
               sum(f.positive) AS positive, sum(f.negative) AS negative
        FROM requests LEFT JOIN (
            SELECT request_id, sum(rating = 'positive') AS positive, sum(rating = 'negative') AS negative
            FROM feedback GROUP BY request_id
        ) AS f ON f.request_id = requests.id
        GROUP BY 1, model, adapter, experiment, arm"""
    for file in log_files(path):
        conn = connect_readonly(file)
        try:
            for row in conn.execute(query, {"start": start, "bucket": bucket}):
                yield dict(row)
        finally:
            conn.close()


def traffic_latencies(path: Path) -> Iterator[tuple[float, str | None, float]]:
    """(time, model, latency in ms) of every answered request, streamed (percentiles need the values)."""
    for file in log_files(path):
        conn = connect_readonly(file)
        try:
            yield from conn.execute("SELECT created, model, latency_ms FROM requests WHERE latency_ms IS NOT NULL")
        finally:
            conn.close()
