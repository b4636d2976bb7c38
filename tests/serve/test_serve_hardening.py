"""The gateway under bad input, attack and faults: one test per finding of issue 17's table (each failed on the
`http.server` gateway this replaced), on loopback only."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from clawtune.serve.app import Gateway, Server
from clawtune.serve.engine import GenRequest

from ..serve_fakes import AdapterEngine, ScriptedEngine, config, post, raw_exchange

ERROR_KEYS = {"message", "type", "param", "code"}
HELLO = {"model": "general", "messages": [{"role": "user", "content": "hello"}]}


@contextmanager
def serving(tmp_path: Path, engine: Any = None, **server: Any) -> Iterator[Server]:
    gateway = Gateway(config(tmp_path, server=server), engine=engine or ScriptedEngine())
    with Server(gateway) as running:
        yield running


def rows(server: Server, query: str = "select id, status, error from requests") -> list[tuple[Any, ...]]:
    server.gateway.log.flush()
    conn = sqlite3.connect(server.gateway.log.path)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def openai_error(body: Any) -> bool:
    return isinstance(body, dict) and set(body.get("error") or {}) == ERROR_KEYS


def chat(url: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        url + "/v1/chat/completions",
        content=content,
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=60,
    )


# ---- one request stops all logging for good -------------------------------------------------------------------


def test_a_hostile_record_never_stops_the_log(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        url = server.url
        lone = chat(url, b'{"model": "general", "messages": [{"role": "user", "content": "half an emoji \\ud83d"}]}')
        assert (
            lone.status_code == 200
            and lone.json()["choices"][0]["message"]["content"] == "You said: half an emoji \ufffd"
        )
        odd_user = chat(url, {**HELLO, "user": {"x": 1}})
        assert odd_user.status_code == 400 and odd_user.json()["error"]["param"] == "user"
        good = chat(url, HELLO)
        request_id = good.headers["x-request-id"]
        status, body = post(
            url,
            "/v1/feedback",
            b'{"request_id": "%s", "rating": "negative", "comment": "\\ud800"}' % request_id.encode(),
        )
        assert status == 200 and body["recorded"] is True
        after = chat(url, HELLO)
        logged = {r[0]: r[1] for r in rows(server)}
        assert logged == {
            lone.headers["x-request-id"]: 200,
            odd_user.headers["x-request-id"]: 400,
            request_id: 200,
            after.headers["x-request-id"]: 200,
        }
        assert rows(server, "select comment from feedback") == [("\ufffd",)]
        assert httpx.get(url + "/health").json()["status"] == "ok"


def test_the_writer_survives_any_record_and_health_tells_the_truth(tmp_path: Path) -> None:
    from clawtune.serve.log import RequestLog

    log = RequestLog(tmp_path / "requests.sqlite", max_rows=1000)
    circular: list[Any] = []
    circular.append(circular)
    hostile = [
        {"id": "user-dict", "created": 1.0, "user": {"x": 1}, "status": 200},
        {"id": "surrogates", "created": 2.0, "error": "\ud800", "request_json": {"m": "\udfff"}},
        {"id": "huge-int", "created": 3.0, "status": 2**70, "latency_ms": float("nan"), "tool_calls": "three"},
        {"id": "odd-types", "created": 4.0, "model": object(), "request_json": {"s": {1, 2}}, "stream": b"x"},
        {"id": "circular", "created": 5.0, "request_json": circular},
    ]
    for record in hostile:
        log.request(record)
    log.feedback("user-dict", "negative", "\ud800 broken")
    log.request({"id": "after", "created": 6.0, "status": 200})
    assert log.flush(30)
    conn = sqlite3.connect(tmp_path / "requests.sqlite")
    stored = dict(conn.execute("select id, status from requests").fetchall())
    assert set(stored) == {"user-dict", "surrogates", "huge-int", "odd-types", "circular", "after"}
    assert stored["after"] == 200 and stored["huge-int"] is None
    assert json.loads(conn.execute("select user from requests where id = 'user-dict'").fetchone()[0]) == {"x": 1}
    assert "could not store" in conn.execute("select error from requests where id = 'circular'").fetchone()[0]
    assert log.status()["ok"] is True

    # The disk refuses (here: the writer's connection goes read-only): health says so, nothing is lost meanwhile.
    writable = log._conn
    log._conn = sqlite3.connect(
        f"file:{tmp_path / 'requests.sqlite'}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )
    log.request({"id": "while-broken", "created": 7.0, "status": 200})
    assert not log.flush(30)
    assert log.status()["ok"] is False and "readonly" in log.status()["error"]
    log._conn.close()
    log._conn = writable
    deadline = time.monotonic() + 30
    while not log.status()["ok"] and time.monotonic() < deadline:
        time.sleep(0.1)
    log.close()
    conn = sqlite3.connect(tmp_path / "requests.sqlite")
    assert conn.execute("select status from requests where id = 'while-broken'").fetchone() == (200,)


def test_health_is_degraded_while_the_log_cannot_write(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        log = server.gateway.log
        writable = log._conn
        log._conn = sqlite3.connect(f"file:{log.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        try:
            assert chat(server.url, HELLO).status_code == 200  # answers still flow
            log.flush(10)
            health = httpx.get(server.url + "/health")
            assert health.status_code == 503 and health.json()["status"] == "degraded"
            assert "cannot be written" in health.json()["reasons"][0]
        finally:
            log._conn.close()
            log._conn = writable
        log.flush(10)
        assert httpx.get(server.url + "/health").json()["status"] == "ok"
        assert len(rows(server)) == 1


# ---- one bad request fails its whole batch ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_engine() -> Iterator[Any]:
    from clawtune.serve.engine import Engine

    engine = Engine("clawtune/tiny-agent", device="cpu", batch_size=8)
    yield engine
    engine.close()


def test_a_bad_row_fails_alone_in_the_engine(tiny_engine: Any) -> None:
    prompt = tiny_engine.render(None, [{"role": "user", "content": "What was revenue in Q3?"}], None)
    requests = [GenRequest(prompt, None, 6, temperature=0.7, seed=i) for i in range(4)]
    requests.insert(2, GenRequest(prompt, None, 6, temperature=0.7, seed=2**70))  # torch cannot seed with this
    for request in requests:
        tiny_engine.submit(request)
    outcomes = []
    for request in requests:
        while True:
            event = request.events.get(timeout=120)
            if event[0] != "text":
                outcomes.append(event[0])
                break
    assert outcomes == ["done", "done", "error", "done", "done"]


def test_a_bad_request_is_a_400_and_fails_nothing_else(tmp_path: Path, tiny_engine: Any) -> None:
    with serving(tmp_path, engine=tiny_engine, batch_size=8, max_concurrency=64) as server:
        good = {"model": "general", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        bad = [{**good, "stop": [1]}, {**good, "seed": 2**70}, {**good, "top_p": -1}]
        bodies = [good] * 5 + [bad[0]] + [good] * 5 + [bad[1]] + [good] * 5 + [bad[2]]
        with ThreadPoolExecutor(18) as pool:
            statuses = list(pool.map(lambda b: chat(server.url, b).status_code, bodies))
        assert [s for b, s in zip(bodies, statuses, strict=True) if b is not good] == [400, 400, 400]
        assert [s for b, s in zip(bodies, statuses, strict=True) if b is good] == [200] * 15


# ---- request smuggling ----------------------------------------------------------------------------------------


def test_an_unread_body_is_never_parsed_as_the_next_request(tmp_path: Path) -> None:
    smuggled = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with serving(tmp_path, api_keys=["secret"]) as server:
        for path in (b"/v1/chat/completions", b"/nope"):
            request = (
                b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer wrong\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
            ) + smuggled
            answer = raw_exchange(server.url, request, wait=5)
            assert answer.count(b"HTTP/1.1 ") == 1, answer
            assert answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 404")) and b"clawtune_" not in answer


# ---- crashes with no response, logged as 200 ------------------------------------------------------------------


def test_malformed_requests_get_a_4xx_in_openai_shape_and_are_logged_as_such(tmp_path: Path) -> None:
    with serving(tmp_path, admin_keys=["root"], adapter_dirs=[str(tmp_path)]) as server:
        url = server.url
        cases = [
            json.dumps({**HELLO, "top_p": "x"}).encode(),
            json.dumps({**HELLO, "stream": True, "stream_options": "x"}).encode(),
            b"[" * 100_000 + b"]" * 100_000,
            b'{"model": "general", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        ]
        ids = []
        for body in cases:
            response = chat(url, body)
            assert 400 <= response.status_code < 500 and openai_error(response.json()), (body[:40], response.text)
            ids.append(response.headers["x-request-id"])
        bad_length = raw_exchange(
            url,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: abc\r\n\r\n{}",
        )
        head, _, payload = bad_length.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and openai_error(json.loads(payload))
        admin = {"Authorization": "Bearer root"}
        status, body = post(url, "/admin/adapters", {"name": "x", "path": str(tmp_path), "weight": "abc"}, admin)
        assert status == 400 and openai_error(body) and body["error"]["param"] == "weight"
        status, body = post(url, "/admin/adapters/a%00b", None, admin, method="DELETE")
        assert status == 400 and openai_error(body)
        logged = {r[0]: r[1] for r in rows(server)}
        assert [logged[i] for i in ids] == [400, 400, 400, 400]
        assert sum(1 for r in rows(server) if r[1] == 400 and "invalid HTTP request" in (r[2] or "")) == 1
        assert 200 not in logged.values()
        assert httpx.get(url + "/health").json()["status"] == "ok"


# ---- validation gaps ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": -5}, "temperature"),
        ({"max_tokens": True}, "max_tokens"),
        ({"stop": {}}, "stop"),
        ({"stream": "yes"}, "stream"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "tool", "tool_call_id": "call_9", "content": "42"}]}, "messages[0].tool_call_id"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "ghost"}}}, "tool_choice"),
    ],
)
def test_openai_validation_rules(tmp_path: Path, change: dict[str, Any], param: str) -> None:
    with serving(tmp_path) as server:
        response = chat(server.url, {**HELLO, **change})
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text


def test_nan_and_a_query_string(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        nan = chat(
            server.url, b'{"model": "general", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}'
        )
        assert nan.status_code == 400 and openai_error(nan.json())
        queried = httpx.post(server.url + "/v1/chat/completions?api-version=1", json=HELLO, timeout=60)
        assert queried.status_code == 200


# ---- open admin, no Host check ----------------------------------------------------------------------------------


def test_admin_needs_an_admin_key_and_is_off_without_one(tmp_path: Path) -> None:
    (tmp_path / "adapters" / "a").mkdir(parents=True)
    target = str(tmp_path / "adapters" / "a")
    csrf = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
    with serving(tmp_path, engine=AdapterEngine(), adapter_dirs=[str(tmp_path / "adapters")]) as server:
        response = httpx.post(
            server.url + "/admin/adapters", content=json.dumps({"name": "x", "path": target}), headers=csrf
        )
        assert response.status_code == 403 and "admin" in response.json()["error"]["message"]
        assert "x" not in server.gateway.entries
    keys = {"api_keys": ["user-key"], "admin_keys": ["admin-key"]}
    with serving(tmp_path, engine=AdapterEngine(), adapter_dirs=[str(tmp_path / "adapters")], **keys) as server:
        url = server.url
        as_user = {"Authorization": "Bearer user-key"}
        as_admin = {"Authorization": "Bearer admin-key"}
        assert post(url, "/admin/adapters", {"name": "x", "path": target}, as_user)[0] == 401
        assert post(url, "/admin/adapters", {"name": "x", "path": target}, {**as_admin, **csrf})[0] == 415
        for name in ("auto", "a/b", "", "../x", "a" * 200):
            status, body = post(url, "/admin/adapters", {"name": name, "path": target}, as_admin)
            assert status == 400 and body["error"]["param"] == "name", name
        assert post(url, "/admin/adapters", {"name": "finance-ab", "path": target}, as_admin)[0] == 409
        assert post(url, "/admin/adapters", {"name": "x.v2", "path": target}, as_admin)[0] == 200
        assert post(url, "/admin/adapters/x.v2", None, as_admin, method="DELETE")[0] == 200
        assert rows(server, "select action, name, status from admin_actions where status = 200") == [
            ("load", "x.v2", 200),
            ("unload", "x.v2", 200),
        ]


def test_host_allow_list_and_unauthenticated_requests_are_counted_not_logged(tmp_path: Path) -> None:
    with serving(tmp_path, api_keys=["secret"]) as server:
        rebinding = httpx.get(server.url + "/health", headers={"Host": "attacker.example"})
        assert rebinding.status_code == 400 and openai_error(rebinding.json())
        assert (
            httpx.get(server.url + "/health", headers={"Host": f"localhost:{server.url.rsplit(':', 1)[1]}"}).status_code
            == 200
        )
        for headers in ({"Authorization": "Bearer wrong"}, {}):
            assert chat(server.url, HELLO, headers).status_code == 401
        assert chat(server.url, HELLO, {"Authorization": "Bearer secret"}).status_code == 200
        metrics = httpx.get(server.url + "/metrics").text
        assert "clawtune_unauthenticated_total 2.0" in metrics and "clawtune_disallowed_host_total 1.0" in metrics
        assert [r[1] for r in rows(server)] == [200]
        no_cors = httpx.options(
            server.url + "/v1/chat/completions",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in no_cors.headers


# ---- secrets at rest ------------------------------------------------------------------------------------------

SECRETS = ("sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123", "dana.lee@example.com", "4111 1111 1111 1111")


def test_secrets_are_scrubbed_and_files_are_private(tmp_path: Path) -> None:
    message = f"my key is {SECRETS[0]}, mail {SECRETS[1]}, card {SECRETS[2]}"
    with serving(tmp_path) as server:
        reply = chat(server.url, {"model": "general", "messages": [{"role": "user", "content": message}]})
        assert SECRETS[1] in reply.text, "the client still gets its answer as generated"
        request_id = reply.headers["x-request-id"]
        status, _ = post(
            server.url,
            "/v1/feedback",
            {"request_id": request_id, "rating": "negative", "comment": f"write to {SECRETS[1]}"},
        )
        assert status == 200
        stored = rows(server, "select request_json, response_json from requests")[0]
        comment = rows(server, "select comment from feedback")[0][0]
        text = " ".join(str(v) for v in stored) + comment
        assert not any(secret in text for secret in SECRETS), text
        folder = server.gateway.log.path.parent
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert modes["requests.sqlite"] == 0o600 and modes["requests.sqlite-wal"] == 0o600, modes
        marks = rows(server, "select scrubbed, redactions from requests")[0]
    assert "<OPENAI_KEY_1>" in stored[0] and "<EMAIL_1>" in stored[1] and "<CARD_1>" in stored[0]
    assert marks == (1, 6) and comment == "write to <EMAIL_1>"


def test_archives_are_private(tmp_path: Path) -> None:
    from clawtune.serve.log import RequestLog

    log = RequestLog(tmp_path / "requests.sqlite", max_rows=100)
    for i in range(700):
        log.request({"id": f"r{i}", "created": 1000.0 + i, "status": 200})
    log.close()
    (archive,) = tmp_path.glob("requests-*.sqlite")
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600


def test_scrubbing_can_be_turned_off(tmp_path: Path) -> None:
    with serving(tmp_path, log_scrub=False) as server:
        chat(server.url, {"model": "general", "messages": [{"role": "user", "content": SECRETS[1]}]})
        assert SECRETS[1] in rows(server, "select request_json from requests")[0][0]


# ---- no read timeouts -----------------------------------------------------------------------------------------


TIMEOUTS = {"header_timeout_s": 1, "body_timeout_s": 1, "drain_s": 2}


def test_slow_headers_and_bodies_time_out_and_shutdown_is_bounded(tmp_path: Path) -> None:
    server = Server(Gateway(config(tmp_path, server=TIMEOUTS), engine=ScriptedEngine())).start()
    try:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        threads_before = threading.active_count()
        idle = [socket.create_connection((host, int(port))) for _ in range(50)]
        for sock in idle:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finish
        assert threading.active_count() - threads_before < 5, "a half-open request costs no thread"
        half_headers = raw_exchange(server.url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n", wait=30)
        assert half_headers.startswith(b"HTTP/1.1 408") and b'"error"' in half_headers
        half_body = raw_exchange(
            server.url,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"model":',
            wait=30,
        )
        assert half_body.startswith(b"HTTP/1.1 408") and b'"error"' in half_body
        for sock in idle:
            sock.settimeout(30)
            assert sock.recv(100).startswith(b"HTTP/1.1 408")
            sock.close()
        # a stream that never ends, and two half-sent requests, while the server stops
        streaming = httpx.Client(timeout=60)
        hanging = streaming.stream(
            "POST",
            server.url + "/v1/chat/completions",
            json={**HELLO, "stream": True, "messages": [{"role": "user", "content": "hang"}]},
        )
        response = hanging.__enter__()
        lines = response.iter_lines()  # kept: a dropped iterator would close the stream (a disconnect)
        next(lines)
        stuck = [socket.create_connection((host, int(port))) for _ in range(2)]
        for sock in stuck:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50\r\n\r\n{")
        closer = threading.Thread(target=server.close)
        closer.start()
        closer.join(timeout=60)
        assert not closer.is_alive(), "shutdown waited for requests that never finish"
        for sock in stuck:
            sock.close()
        hanging.__exit__(None, None, None)
        streaming.close()
    finally:
        server.close()
    conn = sqlite3.connect(server.gateway.log.path)
    statuses = sorted(conn.execute("select status, error from requests"))
    assert 503 in [s for s, _ in statuses], statuses  # the stream cut by the drain is logged as such


# ---- metrics injection ----------------------------------------------------------------------------------------


def test_metrics_labels_are_only_known_ids(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with serving(tmp_path) as server:
        chat(server.url, HELLO)
        chat(server.url, {**HELLO, "model": 'x"} 9999\nfake_metric{a="b'})
        for i in range(30):
            chat(server.url, {**HELLO, "model": f"made-up-{i}"})
        text = httpx.get(server.url + "/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "fake_metric" not in families and "\nfake_metric" not in text
    models = {s.labels["model"] for s in families["clawtune_requests"].samples}
    assert models == {"general", "unknown"}
    unknown = [s for s in families["clawtune_requests"].samples if s.labels["model"] == "unknown"]
    assert [(s.labels["status"], s.value) for s in unknown] == [("404", 31.0)]


# ---- dropped streams hold slots -------------------------------------------------------------------------------


def test_a_dropped_stream_frees_its_slot_at_once(tmp_path: Path) -> None:
    engine = ScriptedEngine()
    with serving(tmp_path, engine=engine, max_concurrency=4) as server:
        hang = {"model": "general", "stream": True, "messages": [{"role": "user", "content": "hang on"}]}

        def drop(_: int) -> int:
            with (
                httpx.Client(timeout=60) as client,
                client.stream("POST", server.url + "/v1/chat/completions", json=hang) as response,
            ):
                if response.status_code == 200:
                    next(response.iter_lines())
                return response.status_code

        statuses = [drop(i) for i in range(12)]  # one after another: each leaves before the next arrives
        assert statuses == [200] * 12
        deadline = time.monotonic() + 30
        while server.gateway.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.gateway.in_flight == 0
        assert all(r.cancelled.is_set() for r in engine.seen)
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(lambda _: chat(server.url, HELLO).status_code, range(4))) == [200] * 4
        assert sorted(r[1] for r in rows(server)) == [200] * 4 + [499] * 12


# ---- corrupt log at start -------------------------------------------------------------------------------------


def test_a_corrupt_log_is_moved_aside_loudly(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "requests.sqlite").write_bytes(b"this is not a database" * 100)
    with serving(tmp_path) as server:
        assert chat(server.url, HELLO).status_code == 200
        health = httpx.get(server.url + "/health").json()
        assert len(rows(server)) == 1
    (moved,) = data.glob("requests.sqlite.corrupt-*")
    assert moved.read_bytes() == b"this is not a database" * 100
    assert health["status"] == "ok" and health["log"]["recovered_from_corrupt"] == str(moved)
    assert f"moved aside to {moved}" in capfd.readouterr().err


# ---- the log's schema: an older log is migrated, a newer one refused ------------------------------------------

V1 = """
CREATE TABLE requests (id TEXT PRIMARY KEY, created REAL NOT NULL, model TEXT, requested_model TEXT, provider TEXT,
  adapter TEXT, experiment TEXT, arm TEXT, session TEXT, user TEXT, status INTEGER, error TEXT, stream INTEGER,
  latency_ms REAL, prompt_tokens INTEGER, prompt_tokens_original INTEGER, completion_tokens INTEGER, finish_reason TEXT,
  tool_calls INTEGER, tool_calls_valid INTEGER, request_json TEXT, response_json TEXT);
CREATE INDEX requests_created ON requests(created);
CREATE TABLE feedback (request_id TEXT NOT NULL, created REAL NOT NULL,
  rating TEXT NOT NULL CHECK (rating IN ('positive', 'negative')), comment TEXT);
CREATE INDEX feedback_request ON feedback(request_id);
INSERT INTO requests (id, created, model, status, request_json) VALUES ('old-1', 1.0, 'general', 200, '{"messages": []}');
INSERT INTO feedback VALUES ('old-1', 2.0, 'positive', 'kept');
"""


def test_a_log_written_before_schema_versions_is_migrated(tmp_path: Path) -> None:
    from clawtune.serve.log import SCHEMA_VERSION, LogError, RequestLog, iter_requests

    path = tmp_path / "data" / "requests.sqlite"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.executescript(V1)
    conn.close()
    with serving(tmp_path) as server:
        new = chat(server.url, HELLO).headers["x-request-id"]
        status, _ = post(server.url, "/v1/feedback", {"request_id": "old-1", "rating": "negative"})
        assert status == 200
        server.gateway.log.flush()
    assert not list(path.parent.glob("*.corrupt-*"))
    got = {r["id"]: r for r in iter_requests(path)}
    assert set(got) == {"old-1", new}
    assert got["old-1"]["request"] == {"messages": []} and got["old-1"]["scrubbed"] is None
    assert [f["rating"] for f in got["old-1"]["feedback"]] == ["positive", "negative"]
    assert got[new]["scrubbed"] == 1
    conn = sqlite3.connect(path)
    assert conn.execute("pragma user_version").fetchone() == (SCHEMA_VERSION,)
    assert [v for (v,) in conn.execute("select version from schema_history")] == list(range(1, SCHEMA_VERSION + 1))
    conn.execute(f"pragma user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(LogError, match="newer clawtune"):
        RequestLog(path)
    assert path.read_bytes() == before and not list(path.parent.glob("*.corrupt-*"))
    assert os.path.exists(path)
