"""One POST to an OpenAI-compatible `/v1/chat/completions`, and one GET of its `/v1/models`, with plain urllib.

Shared by the augmentation teacher, the evaluation's endpoint backend, the gateway and `openclaw register`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, ValueError, KeyError, IndexError, TypeError)


def completions_url(endpoint: str) -> str:
    """`http://host:8000` or `http://host:8000/v1` -> the chat completions URL."""
    base = endpoint.rstrip("/")
    return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")


def chat_completion(
    url: str, body: dict[str, Any], api_key: str | None = None, timeout: float = 60.0
) -> dict[str, Any]:
    """The decoded JSON reply; raises one of `ERRORS` on network, HTTP or decoding failure."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply: dict[str, Any] = json.loads(response.read())
    return reply


def models_url(endpoint: str) -> str:
    """`http://host:8000` or `http://host:8000/v1` (or a chat completions URL) -> the `/v1/models` URL."""
    base = endpoint.rstrip("/")
    if base.endswith("/chat/completions"):
        base = base[: -len("/chat/completions")]
    return base + ("/models" if base.endswith("/v1") else "/v1/models")


def list_models(endpoint: str, api_key: str | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The model cards of an OpenAI-compatible server's `GET /v1/models`; raises one of `ERRORS` when it cannot."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(models_url(endpoint), headers=headers, method="GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.loads(response.read())
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
