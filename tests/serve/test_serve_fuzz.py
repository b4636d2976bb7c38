"""The gateway fuzzed against its own OpenAPI schema with schemathesis (bounded here; `bench/serve_fuzz.py` runs
longer), and under a bounded load of plain and streaming clients that disconnect: no 5xx, the server stays up, and
every answered chat request is in the log exactly once with the status its client saw."""

from __future__ import annotations

import random
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from clawtune.serve.app import Gateway, Server

from ..serve_fakes import AdapterEngine, ScriptedEngine, config, fuzz

KEY = "fuzz-key"  # in api_keys and admin_keys: the fuzzer reaches every endpoint


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_every_answered_chat_is_logged(tmp_path: Path) -> None:
    (tmp_path / "adapters").mkdir()
    key = "fuzz-key"  # in api_keys and admin_keys: the fuzzer reaches every endpoint
    server_settings = {"api_keys": [key], "admin_keys": [key], "adapter_dirs": [str(tmp_path / "adapters")]}
    server = Server(Gateway(config(tmp_path, server=server_settings), engine=AdapterEngine())).start()
    try:
        report = fuzz(server.url, key, examples=25, models=["general", "finance-ab", "auto"])
        health = httpx.get(server.url + "/health", timeout=30)
        server.gateway.log.flush()
        conn = sqlite3.connect(server.gateway.log.path)
        logged = dict(conn.execute("select id, status from requests").fetchall())
        conn.close()
    finally:
        server.close()
    assert report["failures"] == []
    assert not [s for s in report["statuses"] if s >= 500]
    assert len(report["operations"]) == 19 and report["cases"] >= 200  # 8, and the 11 of the experiments API
    assert len(report["chat"]) >= 25 and 200 in report["chat"].values(), "the fuzzer got through to completions"
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert {i: logged.get(i) for i in report["chat"]} == report["chat"]


# ---- bounded load ---------------------------------------------------------------------------------------------


def test_bounded_load_with_streams_and_disconnects(tmp_path: Path) -> None:
    """16 clients, 12 requests each: plain, streamed, and streams dropped after the first chunk, on loopback."""
    server = Server(
        Gateway(config(tmp_path, server={"max_concurrency": 12}), engine=ScriptedEngine(delay=0.02))
    ).start()
    outcomes: list[tuple[str, int, str]] = []  # (request id, status, kind)
    lock = threading.Lock()

    def client(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for i in range(12):
                kind = rng.choice(["plain", "stream", "drop"])
                body = {"model": rng.choice(["general", "finance", "finance-ab", "auto"]), "user": f"u{n}"}
                body["messages"] = [{"role": "user", "content": f"client {n} request {i}"}]
                if kind == "plain":
                    response = http.post("/v1/chat/completions", json=body)
                    outcome = (response.headers.get("x-request-id", ""), response.status_code, kind)
                else:
                    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
                        lines = response.iter_lines()
                        if response.status_code == 200:
                            if kind == "drop":
                                next(lines)  # then leave: the `with` closes the connection mid-stream
                            else:
                                assert "data: [DONE]" in list(lines)
                        outcome = (response.headers.get("x-request-id", ""), response.status_code, kind)
                with lock:
                    outcomes.append(outcome)

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(client, range(16)))
        health = httpx.get(server.url + "/health", timeout=30).json()
    finally:
        server.close()
    statuses = [status for _, status, _ in outcomes]
    assert len(outcomes) == 16 * 12 and not [s for s in statuses if s >= 500], statuses
    assert statuses.count(200) > len(statuses) // 2 and set(statuses) <= {200, 429}
    assert health["status"] == "ok"
    conn = sqlite3.connect(server.gateway.log.path)
    logged = conn.execute("select id, status from requests").fetchall()
    conn.close()
    by_id = dict(logged)
    assert len(logged) == len(by_id) == len(outcomes), "one row per answered request"
    for request_id, status, kind in outcomes:
        expected = {status} if kind != "drop" or status != 200 else {200, 499}  # a dropped stream may have finished
        assert by_id[request_id] in expected, (kind, status, by_id[request_id])
