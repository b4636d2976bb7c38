import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hashlib
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from clawtune.sample import make_state_dir


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs the session's trained LoRA run (directly or through a fixture) is slow: `make test-fast`
    leaves it out, with the tests marked slow by hand (those that train, generate, or run the README or the demo)."""
    for item in items:
        if "tiny_lora" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def on_ci() -> bool:
    """Under CI (`CI=true`, as .ci/run is started) every tool the tests need is installed by .ci/run itself."""
    return os.environ.get("CI", "").lower() in ("true", "1")


def missing(what: str) -> NoReturn:
    """A test whose tool is missing: skipped on a developer's machine, a failure under CI, where it must not be
    missing (a skip there would let the suite pass without ever running the test)."""
    if on_ci():
        pytest.fail(f"{what}, and CI=true: .ci/run installs it, so its absence is a failure here, not a skip")
    pytest.skip(what, allow_module_level=True)


def chromium() -> str:
    """Debian's Chromium (what .ci/run installs), or a skip (a failure under CI)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    missing("no Chromium on this machine (.ci/run installs Debian's chromium)")


@pytest.fixture(scope="session")
def sample_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample agent's state folder, generated once per test run."""
    return make_state_dir(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory, sample_state: Path) -> Iterator[Path]:
    """The sample agent exported once (`--date-range 2026-04-01:2026-05-20`, what every training test exports):
    raw.jsonl, the train/validation/test splits and the reports. Shared: never write here; `copy_sample` gives a
    module a folder of its own with the same files (the export is deterministic, so a copy is what a fresh export
    would write); the session's end checks that no test wrote into it."""
    out = tmp_path_factory.mktemp("sample-data")
    assert export_sample(out, sample_state, "--date-range", "2026-04-01:2026-05-20") == 0
    before = _digest(out)
    yield out
    assert _digest(out) == before, f"a test wrote into the shared sample export {out}: copy it first (copy_sample)"


def copy_sample(folder: Path, sample_data: Path) -> Path:
    """`sample_data`'s files in `folder` (made if needed), for a test that writes slices or outputs beside them."""
    shutil.copytree(sample_data, folder, dirs_exist_ok=True)
    return folder


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def train_tiny_lora(folder: Path, name: str, rows: list[dict[str, Any]], steps: int, **training: Any) -> Path:
    """`ft train` of a LoRA on every linear layer of the tiny model with a large step (so the adapter matters), on
    `rows`, for `steps` steps, into `folder/name` (its data and config beside it); `training` adds to the config's
    training section. Returns the run's folder."""
    from clawtune.cli import main

    write_jsonl(folder / f"{name}.jsonl", rows)
    config = {
        "base_model": "clawtune/tiny-agent",
        "method": "lora",
        "data": {"train": str(folder / f"{name}.jsonl")},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "training": {"batch_size": 2, "epochs": 1, "learning_rate": 0.01, "warmup_steps": 0, **training},
        "output_dir": str(folder / name),
        "tracking": {"tensorboard": False},
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["ft", "train", "--config", str(folder / f"{name}.yaml"), "--max-steps", str(steps)]) == 0
    return folder / name


@pytest.fixture(scope="session")
def tiny_lora(tmp_path_factory: pytest.TempPathFactory, sample_data: Path) -> Iterator[Path]:
    """One tiny LoRA run, trained once for the tests that need a trained adapter (export, evaluation, serving): four
    steps on every linear layer of the tiny model with a large step, so the adapter matters. Yields its last
    checkpoint (`<run>/checkpoint-4`). Shared: copy the run (`copy_run`) before writing into it (`ft evaluate` writes
    eval/ into the model folder); the session's end checks that no test wrote into it."""
    folder = tmp_path_factory.mktemp("tiny-lora")
    run = train_tiny_lora(folder, "out", read_jsonl(sample_data / "raw.jsonl")[:12], steps=4, save_steps=100)
    before = _digest(run)
    yield run / "checkpoint-4"
    assert _digest(run) == before, f"a test wrote into the shared tiny LoRA run {run}: copy it first (copy_run)"


def copy_run(checkpoint: Path, folder: Path) -> Path:
    """A copy of the run holding `checkpoint` (its folder with every checkpoint) at `folder`; returns the copy's
    checkpoint."""
    shutil.copytree(checkpoint.parent, folder)
    return folder / checkpoint.name


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
