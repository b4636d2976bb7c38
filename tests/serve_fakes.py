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


class Prompt(list[int]):
    """Token ids that remember the messages they were rendered from: a request carries its own conversation to
    `submit`, with no state shared between the gateway's threads (the gateway passes render's list on unchanged)."""

    messages: list[dict[str, Any]]


class ScriptedEngine:
    """Answers by the last user message: "call X" -> a Hermes tool call to X, "hang" -> one chunk, then nothing until
    cancelled (or 120 s), else an echo after `delay` seconds. Honours cancellation between chunks, as the real engine
    does between tokens. Thread safe: the gateway renders and submits on many threads at once."""

    base_name = "scripted"
    max_context = 2000

    def __init__(self, delay: float = 0.0) -> None:
        self.adapters: dict[str, Any] = {}
        self.delay = delay
        self._lock = threading.Lock()
        self._seen: list[GenRequest] = []

    @property
    def seen(self) -> list[GenRequest]:
        """The requests submitted so far, in order (a copy)."""
        with self._lock:
            return list(self._seen)

    def render(self, adapter: str | None, messages: list[dict[str, Any]], tools: Any) -> list[int]:
        text = json.dumps(messages) + json.dumps(tools)
        ids = Prompt([1] * (len(text) // 4 + 1))
        ids.messages = messages
        return ids

    @staticmethod
    def messages_of(request: GenRequest) -> list[dict[str, Any]]:
        """The messages `request`'s prompt was rendered from."""
        prompt = request.prompt_ids
        assert isinstance(prompt, Prompt), "the gateway submitted prompt ids that render() did not return"
        return prompt.messages

    def record(self, request: GenRequest) -> None:
        """Add `request` to `seen` (for subclasses that answer it themselves)."""
        with self._lock:
            self._seen.append(request)

    def submit(self, request: GenRequest) -> None:
        self.record(request)
        self.answer(request)

    def answer(self, request: GenRequest) -> None:
        """Stream the scripted reply to `request` from a thread of its own."""
        messages = self.messages_of(request)
        last = next((m for m in reversed(messages) if m["role"] in ("user", "tool")), {"content": ""})
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


class AdapterEngine(ScriptedEngine):
    """The scripted engine, able to "load" adapters (what the admin endpoints drive)."""

    def add_adapter(self, name: str, path: str, weight: float = 1.0, extra: Any = None) -> Any:
        from clawtune.serve.engine import LoadedAdapter

        self.adapters[name] = LoadedAdapter(name, path, weight, "", {})
        return self.adapters[name]

    def remove_adapter(self, name: str) -> None:
        del self.adapters[name]


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


def post(
    url: str, path: str, body: Any, headers: dict[str, str] | None = None, method: str = "POST"
) -> tuple[int, Any]:
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


def fuzz(url: str, key: str, examples: int, models: list[str], derandomize: bool = True) -> dict[str, Any]:
    """schemathesis against the server's own OpenAPI schema: `examples` schema-valid and as many schema-breaking
    cases per operation (no shrinking), every response checked (no 5xx; status code, content type and body as the
    schema says). Half the schema-valid chat requests name a served model and half the feedback a logged request,
    so the fuzzer gets past routing. Returns the counts, the failures, and every chat completion's status by id."""
    import collections
    import zlib

    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    report: dict[str, Any] = {
        "cases": 0,
        "statuses": collections.Counter(),
        "failures": [],
        "chat": {},
        "ok": [],
        "operations": [],
    }

    def runner(operation: Any, mode: Any) -> Any:
        label = f"{operation.method.upper()} {operation.path} [{mode}]"

        @settings(
            max_examples=examples,
            derandomize=derandomize,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            if mode == GenerationMode.POSITIVE and isinstance(case.body, dict):
                steer = zlib.crc32(repr(case.body).encode()) % 4  # not hash(): the same in every process
                if operation.path == "/v1/chat/completions" and steer < 2:
                    case.body["model"] = models[steer % len(models)]
                if operation.path == "/v1/feedback" and steer < 2 and report["ok"]:
                    case.body["request_id"] = report["ok"][-1]
            response = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=60)
            report["cases"] += 1
            report["statuses"][response.status_code] += 1
            request_id = response.headers.get("x-request-id")
            if operation.path == "/v1/chat/completions" and request_id:
                request_id = request_id[0] if isinstance(request_id, list) else request_id
                report["chat"][request_id] = response.status_code
                if response.status_code == 200:
                    report["ok"].append(request_id)
            try:
                case.validate_response(response, checks=checks)
            except Exception as exc:  # collected, so one finding does not hide the others
                report["failures"].append(f"{label}: {exc}"[:2000])

        return run

    for result in schema.get_all_operations():
        operation = result.ok()
        report["operations"].append(f"{operation.method.upper()} {operation.path}")
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                runner(operation, mode)()
            except Exception as exc:
                if "Unsatisfiable" in type(exc).__name__:  # no schema-breaking case for an operation without inputs
                    continue
                report["failures"].append(f"{operation.method.upper()} {operation.path} [{mode}]: {exc}"[:4000])
    return report
