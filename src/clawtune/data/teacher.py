"""A teacher model behind any OpenAI-compatible endpoint, asked to paraphrase user turns for augmentation.

Plain HTTP (urllib): the data stage needs no client library. Failures (network, HTTP errors, odd replies) are counted
and the example falls back to the offline transformations; nothing from the teacher is kept unchecked.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

INSTRUCTION = (
    "Rewrite the user's message below so it asks for exactly the same thing in different words. Keep every name, "
    "number, date, code and quoted value exactly as written, keep the language, and reply with the rewritten "
    "message only."
)


class Teacher:
    """Paraphrases text through `POST {endpoint}/chat/completions`."""

    def __init__(self, endpoint: str, model: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.url = endpoint.rstrip("/") + (
            "/chat/completions" if endpoint.rstrip("/").endswith("/v1") else "/v1/chat/completions"
        )
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.stats: dict[str, Any] = {"requests": 0, "failures": 0, "last_error": None}

    def paraphrase(self, text: str) -> str | None:
        """The teacher's rewrite of `text`, or None when the endpoint fails."""
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": text}],
            "temperature": 0.7,
            "max_tokens": max(64, len(text)),
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        self.stats["requests"] += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read())
            content = reply["choices"][0]["message"]["content"]
        except (urllib.error.URLError, TimeoutError, ValueError, KeyError, IndexError, TypeError) as exc:
            self.stats["failures"] += 1
            self.stats["last_error"] = f"{type(exc).__name__}: {exc}"[:300]
            return None
        return content.strip() if isinstance(content, str) else None
