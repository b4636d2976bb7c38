import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from clawtune.sample import make_state_dir


@pytest.fixture(scope="session")
def sample_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample agent's state folder, generated once per test run."""
    return make_state_dir(tmp_path_factory.mktemp("sample"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, objs: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


def export_sample(out: Path, state: Path, *extra: str, agent: str = "my-agent") -> int:
    """Run `clawtune agent export-training-data` in-process on a state folder; returns the exit code."""
    from clawtune.cli import main

    return main(
        ["agent", "export-training-data", "--agent-id", agent, "--output", str(out), "--state-dir", str(state), *extra]
    )


# OpenClaw transcript entries for hand-made sessions (v3 JSONL lines).
HEADER: dict[str, Any] = {"type": "session", "version": 3, "id": "s1", "timestamp": "2026-04-02T10:00:00Z", "cwd": "/w"}


def msg(i, parent, role, content, **extra):
    """A `message` entry."""
    return {
        "type": "message",
        "id": i,
        "parentId": parent,
        "timestamp": "2026-04-02T10:00:01Z",
        "message": {"role": role, "content": content, **extra},
    }


def call(i, parent, call_id, name, args, stop="toolUse"):
    """An assistant entry with one tool call."""
    return msg(
        i, parent, "assistant", [{"type": "toolCall", "id": call_id, "name": name, "arguments": args}], stopReason=stop
    )


def result(i, parent, call_id, text, **extra):
    """A toolResult entry."""
    return msg(
        i,
        parent,
        "toolResult",
        [{"type": "text", "text": text}],
        toolCallId=call_id,
        toolName="query_database",
        **extra,
    )


def text(i, parent, t, **extra):
    """An assistant entry with text."""
    return msg(i, parent, "assistant", [{"type": "text", "text": t}], stopReason="stop", **extra)


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """An OpenAI-format assistant message calling one tool (`arguments` is the JSON string)."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
    }


@contextmanager
def chat_server(reply: Callable[[dict[str, Any]], dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A non-streaming OpenAI-compatible chat server on a free loopback port: `reply(body)` gives the assistant
    message (plus optional "usage"), or `{"status": 429, "headers": {...}}` for a failure; yields the base URL and
    the list of request bodies it saw."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            message = dict(reply(body))
            if "status" in message:  # a scripted failure: the status, its headers, an OpenAI-shaped error body
                error = json.dumps({"error": {"message": f"scripted {message['status']}"}}).encode()
                self.send_response(message["status"])
                for name, value in (message.get("headers") or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                self.wfile.write(error)
                return
            usage = message.pop("usage", {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110})
            finish = "tool_calls" if message.get("tool_calls") else "stop"
            data = json.dumps(
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
                    "usage": usage,
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
