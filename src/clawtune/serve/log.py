"""Every request and response the gateway handles, in SQLite (WAL): what the improvement loop reads.

One writer thread owns the connection; handlers put records on a queue, so a slow disk never blocks a request and
concurrent requests never contend for the database. `close()` drains the queue before returning, so nothing is lost
on shutdown. The log is capped at `max_rows` requests: beyond it the oldest rows (and their feedback) move to a monthly archive file.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
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
    response_json TEXT,
    max_tokens_requested INTEGER,  -- what the client asked to generate at most
    max_tokens INTEGER,            -- what the server let it generate
    max_tokens_clamp TEXT          -- why that is less than asked (NULL: not clamped)
);
CREATE INDEX IF NOT EXISTS requests_created ON requests(created);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT NOT NULL,
    created REAL NOT NULL,
    rating TEXT NOT NULL CHECK (rating IN ('positive', 'negative')),
    comment TEXT
);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback(request_id);
"""

COLUMNS = [
    "id",
    "created",
    "model",
    "requested_model",
    "provider",
    "adapter",
    "experiment",
    "arm",
    "session",
    "user",
    "status",
    "error",
    "stream",
    "latency_ms",
    "prompt_tokens",
    "prompt_tokens_original",
    "completion_tokens",
    "finish_reason",
    "tool_calls",
    "tool_calls_valid",
    "request_json",
    "response_json",
    "max_tokens_requested",
    "max_tokens",
    "max_tokens_clamp",
]
# Columns added since the first release of the log, with their types: a log written before gets them on open.
ADDED_COLUMNS = {"max_tokens_requested": "INTEGER", "max_tokens": "INTEGER", "max_tokens_clamp": "TEXT"}


def add_missing_columns(conn: sqlite3.Connection, schema: str = "main") -> None:
    """Bring a `requests` table written by an older clawtune up to `COLUMNS` (SQLite adds columns in place)."""
    have = {row[1] for row in conn.execute(f"PRAGMA {schema}.table_info(requests)")}
    for name, kind in ADDED_COLUMNS.items():
        if have and name not in have:
            conn.execute(f"ALTER TABLE {schema}.requests ADD COLUMN {name} {kind}")


class RequestLog:
    def __init__(self, path: Path, max_rows: int = 1_000_000) -> None:
        self.path = path
        self.max_rows = max_rows
        path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clawtune-log", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        self.written = 0

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _run(self) -> None:
        conn = self._connect()
        conn.executescript(SCHEMA)
        add_missing_columns(conn)
        self._ready.set()
        since_trim = 0
        while True:
            item = self._queue.get()
            batch = [item]
            while True:  # write whatever else is waiting in the same transaction
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = False
            flushed: list[threading.Event] = []
            with conn:
                for entry in batch:
                    if entry is None:
                        stop = True
                        continue
                    kind, payload = entry
                    if kind == "request":
                        conn.execute(
                            f"INSERT OR REPLACE INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                            [payload.get(c) for c in COLUMNS],
                        )
                        self.written += 1
                        since_trim += 1
                    elif kind == "feedback":
                        conn.execute(
                            "INSERT INTO feedback (request_id, created, rating, comment) VALUES (?, ?, ?, ?)", payload
                        )
                    elif kind == "flush":
                        flushed.append(payload)
            for event in flushed:
                event.set()
            if since_trim >= 500:
                self._trim(conn)
                since_trim = 0
            if stop:
                self._trim(conn)
                conn.close()
                return

    def _trim(self, conn: sqlite3.Connection) -> None:
        """Past `max_rows`, the oldest rows (with their feedback) move to an archive file beside the log, one per
        month (`requests-2026-11.sqlite`): the live log stays small, and nothing the improvement loop reads is lost."""
        (count,) = conn.execute("SELECT count(*) FROM requests").fetchone()
        if count <= self.max_rows:
            return
        cutoff = conn.execute(
            "SELECT created FROM requests ORDER BY created DESC LIMIT 1 OFFSET ?", (self.max_rows - 1,)
        ).fetchone()[0]
        archive = self.path.with_name(f"{self.path.stem}-{time.strftime('%Y-%m', time.gmtime())}.sqlite")
        conn.execute("ATTACH DATABASE ? AS archive", (str(archive),))
        try:
            with conn:
                for table in ("requests", "feedback"):
                    (ddl,) = conn.execute("SELECT sql FROM main.sqlite_master WHERE name = ?", (table,)).fetchone()
                    conn.execute(ddl.replace(f"CREATE TABLE {table}", f"CREATE TABLE IF NOT EXISTS archive.{table}", 1))
                add_missing_columns(conn, "archive")  # an archive of this month begun by an older clawtune
                old = "SELECT id FROM main.requests WHERE created < ?"
                # feedback whose request was archived earlier goes along too
                stray = "request_id NOT IN (SELECT id FROM main.requests)"
                columns = ", ".join(COLUMNS)
                conn.execute(
                    f"INSERT OR REPLACE INTO archive.requests ({columns}) SELECT {columns} FROM main.requests "
                    f"WHERE id IN ({old})",
                    (cutoff,),
                )
                conn.execute(
                    f"INSERT INTO archive.feedback SELECT * FROM main.feedback WHERE request_id IN ({old}) OR {stray}",
                    (cutoff,),
                )
                conn.execute(f"DELETE FROM main.feedback WHERE request_id IN ({old}) OR {stray}", (cutoff,))
                conn.execute("DELETE FROM main.requests WHERE created < ?", (cutoff,))
        finally:
            conn.execute("DETACH DATABASE archive")

    def request(self, record: dict[str, Any]) -> None:
        record = dict(record)
        for key in ("request_json", "response_json"):
            if record.get(key) is not None and not isinstance(record[key], str):
                record[key] = json.dumps(record[key], ensure_ascii=False)
        record.setdefault("created", time.time())
        self._queue.put(("request", record))

    def feedback(self, request_id: str, rating: str, comment: str | None) -> None:
        self._queue.put(("feedback", (request_id, time.time(), rating, comment)))

    def flush(self, timeout: float = 30) -> None:
        """Wait until everything queued so far is committed."""
        done = threading.Event()
        self._queue.put(("flush", done))
        done.wait(timeout)

    def has_request(self, request_id: str) -> bool:
        self.flush()
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT 1 FROM requests WHERE id = ?", (request_id,)).fetchone() is not None
        finally:
            conn.close()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)
