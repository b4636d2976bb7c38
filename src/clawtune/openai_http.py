"""The one client for OpenAI-compatible endpoints that clawtune asks (not the gateway's forwarding, which has its own
pooled client and answers its caller at once): a POST to `/v1/chat/completions` with retries and backoff, and a GET
of `/v1/models`.

Shared by the augmentation teacher, the evaluation's endpoint backends, the evaluation judge, the gateway (model
limits) and `openclaw register`. httpx makes the requests; tenacity retries what is worth retrying: a 429, a 5xx
(and 408), a dropped connection or a timeout, up to `retries` more times, waiting what the server's `Retry-After`
asks (capped) or else an exponential backoff with jitter. A 4xx other than 408 and 429 is the caller's mistake and
fails at once. The sleep is injectable, so tests never depend on timing.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class EndpointError(Exception):
    """An endpoint did not answer usefully: an HTTP status, a network failure or a reply that is not JSON."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Worth asking again: rate limited, a server error, a timeout or a dropped connection (no status)."""
        return self.status is None or self.status in RETRY_STATUSES


RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
RETRIES = 4  # after the first attempt: 5 in all
MAX_WAIT_S = 60.0  # the longest a Retry-After (or the backoff) makes one wait
# What a caller catches: the client's own error, and a reply of the wrong shape (read by the caller).
ERRORS = (EndpointError, ValueError, KeyError, IndexError, TypeError)


def completions_url(endpoint: str) -> str:
    """`http://host:8000` or `http://host:8000/v1` -> the chat completions URL."""
    base = endpoint.rstrip("/")
    return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")


def models_url(endpoint: str) -> str:
    """`http://host:8000` or `http://host:8000/v1` (or a chat completions URL) -> the `/v1/models` URL."""
    base = endpoint.rstrip("/")
    if base.endswith("/chat/completions"):
        base = base[: -len("/chat/completions")]
    return base + ("/models" if base.endswith("/v1") else "/v1/models")


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """A `Retry-After` header in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


class Client:
    """Requests with one retry policy. `sleep` is what waits between attempts (by default `_sleep`, looked up when
    the client is made, so a test can replace it); `attempts` counts every request sent, retries included."""

    def __init__(
        self, timeout: float = 60.0, retries: int = RETRIES, sleep: Callable[[float], None] | None = None
    ) -> None:
        self.timeout = timeout
        self.retries = retries
        self.sleep = sleep or _sleep
        self.attempts = 0

    def chat_completion(self, url: str, body: dict[str, Any], api_key: str | None = None) -> dict[str, Any]:
        """The decoded JSON reply of a POST to a chat completions URL; raises `EndpointError` once retries are
        spent (or at once for a request the server refuses)."""
        reply = self._with_retries(lambda: self._send("POST", url, api_key, body))
        if not isinstance(reply, dict):
            raise EndpointError(f"{url}: the reply is not a JSON object")
        return reply

    def get_json(self, url: str, api_key: str | None = None) -> Any:
        return self._with_retries(lambda: self._send("GET", url, api_key, None))

    def _with_retries(self, call: Callable[[], Any]) -> Any:
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

        backoff = wait_exponential_jitter(multiplier=0.5, max=MAX_WAIT_S, jitter=0.5)

        def wait(state: Any) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, EndpointError) and error.retry_after is not None:
                return min(error.retry_after, MAX_WAIT_S)
            return float(backoff(state))

        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait,
            retry=retry_if_exception(lambda e: isinstance(e, EndpointError) and e.retryable),
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(call)

    def _send(self, method: str, url: str, api_key: str | None, body: dict[str, Any] | None) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.attempts += 1
        try:
            response = httpx.request(method, url, json=body, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:  # refused, reset, timed out, a bad URL
            raise EndpointError(f"{url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            detail = response.text.strip().replace("\n", " ")[:200]
            raise EndpointError(
                f"{url}: HTTP {response.status_code}{f': {detail}' if detail else ''}",
                response.status_code,
                retry_after_s(response.headers.get("retry-after")),
            )
        try:
            return response.json()
        except ValueError as exc:
            raise EndpointError(f"{url}: the reply is not JSON ({response.text[:80]!r})") from exc


def list_models(endpoint: str, api_key: str | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The model cards of an OpenAI-compatible server's `GET /v1/models`; raises one of `ERRORS` when it cannot.
    Asked once (no retries): a server that is down is reported at once."""
    body = Client(timeout, retries=0).get_json(models_url(endpoint), api_key)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ValueError("the reply has no `data` list of models")
    return [card for card in data if isinstance(card, dict)]


@dataclass(frozen=True)
class ModelLimits:
    """How many tokens a model takes in all (prompt and answer), and the most it answers with; None where unknown."""

    context_window: int | None = None
    max_output_tokens: int | None = None


# The names servers give these numbers in `/v1/models`: clawtune's own, vLLM's `max_model_len`, OpenRouter's and
# LM Studio's context length, OpenRouter's per-provider completion limit.
CONTEXT_FIELDS = ("context_window", "max_model_len", "context_length", "max_context_length")
OUTPUT_FIELDS = ("max_output_tokens", "max_completion_tokens")


def limits_of(card: dict[str, Any]) -> ModelLimits:
    """A model card's context window and output limit, from whichever field the server uses."""

    def first(obj: Any, names: tuple[str, ...]) -> int | None:
        if not isinstance(obj, dict):
            return None
        for name in names:
            value = obj.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    output = first(card, OUTPUT_FIELDS) or first(card.get("top_provider"), OUTPUT_FIELDS)
    return ModelLimits(first(card, CONTEXT_FIELDS), output)
