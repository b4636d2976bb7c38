"""Helpers for the gateway's tests: a scripted engine (the protocol without a model), configs, raw HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from clawtune.serve.config import parse
from clawtune.serve.engine import GenRequest


class ScriptedEngine:
    """Answers by the last user message: "call X" -> a Hermes tool call to X, "hang" -> one chunk, then nothing until
    cancelled (or 120 s), else an echo after `delay` seconds. Honours cancellation between chunks, as the real engine
    does between tokens."""

    base_name = "scripted"
    max_context = 2000

    def __init__(self, delay: float = 0.0) -> None:
        self.adapters: dict[str, Any] = {}
        self.delay = delay
        self.seen: list[GenRequest] = []
        self._rendered: dict[int, list[dict[str, Any]]] = {}
        self._last: list[dict[str, Any]] = []
        self.batches = 0
        self.batched_requests = 0

    def render(self, adapter: str | None, messages: list[dict[str, Any]], tools: Any) -> list[int]:
        text = json.dumps(messages) + json.dumps(tools)
        self._last = messages
        ids = [1] * (len(text) // 4 + 1)
        self._rendered[id(ids)] = messages
        return ids

    def submit(self, request: GenRequest) -> None:
        self.seen.append(request)
        messages = self._rendered.pop(id(request.prompt_ids), self._last)
        last = next(m for m in reversed(messages) if m["role"] in ("user", "tool"))
        content = str(last.get("content"))
        hang = content.startswith("hang")
        if content.startswith("call "):
            name = content.split()[1]
            reply = f'Let me look.<tool_call>\n{{"name": "{name}", "arguments": {{"q": "x<y"}}}}\n</tool_call>'
        else:
            reply = f"You said: {content}"

        def run() -> None:
            if request.cancelled.wait(self.delay):
                return
            pieces = [reply[i : i + 5] for i in range(0, len(reply), 5)]
            for n, piece in enumerate(pieces):
                if request.cancelled.is_set():
                    return
                request.events.put(("text", piece))
                if hang and n == 0 and request.cancelled.wait(120):
                    return
            request.events.put(("done", "stop", len(pieces)))

        threading.Thread(target=run, daemon=True).start()

    def pending(self) -> int:
        return 0

    def close(self) -> None:
        pass


def config(tmp_path: Path, **extra: Any) -> Any:
    """Three scripted models, an experiment, a default; `server={...}` overrides server settings."""
    data = {
        "models": [
            {"id": "general", "provider": "clawtune", "model": "scripted", "tags": ["general"]},
            {"id": "finance", "provider": "clawtune", "model": "scripted", "tags": ["finance", "domestic"]},
            {
                "id": "finance-v2",
                "provider": "clawtune",
                "model": "scripted",
                "system_prompt": "replace",
                "system_prompt_text": "Short.",
            },
        ],
        "experiments": [{"id": "finance-ab", "arms": {"finance": 70, "finance-v2": 30}}],
        "default_model": "general",
        "server": {"port": 0, "data_dir": str(tmp_path / "data"), "max_tokens_limit": 1000},
    }
    for key, value in extra.items():
        if key == "server":
            data["server"].update(value)  # type: ignore[attr-defined]
        else:
            data[key] = value
    return parse(data, str(tmp_path / "models.yaml"))


def raw_exchange(url: str, payload: bytes, wait: float = 10.0) -> bytes:
    """Send raw bytes on one connection and return everything the server sends back until it closes or goes quiet."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(payload)
        out = b""
        deadline = time.monotonic() + wait
        sock.settimeout(1.0)
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                if out:
                    break
                continue
            if not data:
                break
            out += data
        return out


def post(url: str, path: str, body: Any, headers: dict[str, str] | None = None, method: str = "POST") -> tuple[int, Any]:
    """(status, decoded JSON or text) for one request with urllib (no client-side validation in the way)."""
    import urllib.error
    import urllib.request

    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data, {"Content-Type": "application/json", **(headers or {})}, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")
