"""A small scripted OpenAI-compatible chat server for driving the real OpenClaw in tests.

OpenClaw always streams, so this answers `stream: true` with server-sent events and a usage chunk. The script is keyed
on the last user message: a message containing ``read FILE`` gets a ``read`` tool call, ``run CMD`` an ``exec`` call;
after a tool result the model answers in text quoting the result; anything else gets a plain answer.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INTERNAL_PREFIX = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def plan_reply(messages: list[dict[str, Any]], tool_names: set[str]) -> dict[str, Any]:
    """Decide the next assistant message from the conversation so far."""
    real = [m for m in messages if not _text(m.get("content")).startswith(INTERNAL_PREFIX)]
    last = real[-1] if real else {"role": "user", "content": ""}
    if last.get("role") == "tool":
        return {"content": f"Done. The tool said: {_text(last.get('content')).strip()[:200]}"}
    prompt = _text(last.get("content"))
    m = re.search(r"\bread (\S+)", prompt)
    if m and "read" in tool_names:
        return {"tool_call": ("read", {"path": m.group(1)})}
    m = re.search(r"\brun (.+?)(?:\s*Runtime:|$)", prompt, re.S)
    if m and "exec" in tool_names:
        return {"tool_call": ("exec", {"command": m.group(1).strip()})}
    return {"content": "Hello from the fake model. You said: " + prompt.strip()[:120]}


class FakeOpenAI:
    """Run the fake server on a free loopback port; records every request body in ``requests`` and every tool call it
    made in ``calls``. Streamed tool-call ids are ``call_<prefix><request number>``: give each server of one recording
    its own prefix and no two calls share an id."""

    def __init__(self, call_prefix: str = "", card: dict[str, Any] | None = None) -> None:
        self.card = card or {}  # extra fields of the model's card in /v1/models (e.g. vLLM's max_model_len)
        self.requests: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.call_prefix = call_prefix
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = json.dumps(
                    {
                        "object": "list",
                        "data": [
                            {"id": "fake-model", "object": "model", "created": 0, "owned_by": "test", **server.card}
                        ],
                    }
                )
                self._send(200, body.encode(), "application/json")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                req = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append(req)
                tools = {t.get("function", {}).get("name") for t in req.get("tools") or []}
                reply = plan_reply(req.get("messages") or [], tools)
                if req.get("stream"):
                    self._stream(req, reply)
                else:
                    self._send(200, json.dumps(self._completion(req, reply)).encode(), "application/json")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _completion(self, req: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
                msg: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
                finish = "stop"
                if "tool_call" in reply:
                    name, args = reply["tool_call"]
                    msg["tool_calls"] = [
                        {
                            "id": "call_fake1",
                            "type": "function",
                            "function": {"name": name, "arguments": json.dumps(args)},
                        }
                    ]
                    finish = "tool_calls"
                return {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": req.get("model"),
                    "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }

            def _stream(self, req: dict[str, Any], reply: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                base = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": req.get("model"),
                }

                def emit(obj: dict[str, Any]) -> None:
                    self.wfile.write(b"data: " + json.dumps({**base, **obj}).encode() + b"\n\n")
                    self.wfile.flush()

                emit({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
                if "tool_call" in reply:
                    name, args = reply["tool_call"]
                    call = {
                        "index": 0,
                        "id": f"call_{server.call_prefix}{len(server.requests):04d}",
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(args)},
                    }
                    server.calls.append({"id": call["id"], **call["function"]})
                    emit({"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]})
                    finish = "tool_calls"
                else:
                    emit({"choices": [{"index": 0, "delta": {"content": reply["content"]}, "finish_reason": None}]})
                    finish = "stop"
                emit({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
                if (req.get("stream_options") or {}).get("include_usage"):
                    emit({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
