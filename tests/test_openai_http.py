"""The one client for the endpoints clawtune asks (teacher, evaluation, judge): a 429 or 5xx is retried with backoff,
honouring Retry-After; what still fails raises, and a refused request is not retried. The sleep is injected: no
test waits, and none depends on timing."""

from __future__ import annotations

from typing import Any

import pytest

from clawtune import openai_http
from clawtune.data.teacher import Teacher
from clawtune.openai_http import Client, EndpointError, completions_url, retry_after_s

from .conftest import chat_server


def scripted(failures: list[dict[str, Any]], answer: str = "ok") -> Any:
    """A reply function that fails with each of `failures` in turn (one per request), then answers."""
    left = list(failures)

    def reply(body: dict[str, Any]) -> dict[str, Any]:
        return left.pop(0) if left else {"content": answer}

    return reply


BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_429_and_5xx_are_retried_honouring_retry_after() -> None:
    waits: list[float] = []
    failures = [
        {"status": 429, "headers": {"Retry-After": "7"}},
        {"status": 503},
        {"status": 500, "headers": {"Retry-After": "0"}},
        {"status": 429},
    ]
    with chat_server(scripted(failures)) as (url, seen):
        client = Client(timeout=10, retries=4, sleep=waits.append)
        reply = client.chat_completion(completions_url(url), BODY)
    assert reply["choices"][0]["message"]["content"] == "ok"
    assert client.attempts == len(seen) == 5
    assert waits[0] == 7 and waits[2] == 0  # what the server asked for
    assert 0 < waits[1] <= 60 and 0 < waits[3] <= 60 and len(waits) == 4  # backoff where it asked nothing


def test_what_still_fails_raises_and_a_refused_request_is_not_retried() -> None:
    waits: list[float] = []
    with chat_server(scripted([{"status": 502}] * 10)) as (url, seen):
        client = Client(timeout=10, retries=2, sleep=waits.append)
        with pytest.raises(EndpointError, match="HTTP 502") as raised:
            client.chat_completion(completions_url(url), BODY)
    assert raised.value.status == 502 and len(seen) == 3 and len(waits) == 2
    with chat_server(scripted([{"status": 400}, {"status": 401}])) as (url, seen):
        client = Client(timeout=10, retries=4, sleep=waits.append)
        with pytest.raises(EndpointError, match="HTTP 400"):
            client.chat_completion(completions_url(url), BODY)
    assert len(seen) == 1 and client.attempts == 1


def test_a_refused_connection_is_retried_then_reported() -> None:
    waits: list[float] = []
    with chat_server(scripted([])) as (url, _):
        pass  # the server is gone: its port refuses connections
    client = Client(timeout=5, retries=3, sleep=waits.append)
    with pytest.raises(EndpointError) as raised:
        client.chat_completion(completions_url(url), BODY)
    assert raised.value.status is None and client.attempts == 4 and len(waits) == 3


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after_s("12") == 12 and retry_after_s(" 1.5 ") == 1.5 and retry_after_s(None) is None
    assert retry_after_s("Wed, 21 Oct 2026 07:28:00 GMT", now=1792567650.0) == 30.0
    assert retry_after_s("soon") is None and retry_after_s("-3") == 0


def test_the_teacher_rides_out_a_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(openai_http, "_sleep", waits.append)  # every client made from here on records its waits
    with chat_server(scripted([{"status": 429, "headers": {"Retry-After": "3"}}] * 2, "Say it again.")) as (url, _):
        teacher = Teacher(url, "teacher")
        assert teacher.paraphrase("Say it.") == "Say it again."
    assert waits == [3, 3] and teacher.stats["failures"] == 0
