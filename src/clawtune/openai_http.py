"""One POST to an OpenAI-compatible `/v1/chat/completions`, with plain urllib (no client library).

Shared by the augmentation teacher and the evaluation's endpoint backend.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
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
