"""Gateway benchmark: the cost of putting `clawtune serve` (or the LiteLLM proxy) between an agent and its engine.

One run, side by side, on loopback: a fast OpenAI-compatible upstream that answers at once (plain JSON, or SSE with
a role chunk, three content chunks, a finish chunk, a usage chunk and [DONE]); then, at each concurrency (default 1,
16 and 64 clients, each on one keep-alive connection, sending back to back):
  direct    clients straight to the upstream: the floor
  clawtune  through `clawtune serve` forwarding to it (provider openai), its request log on (scrubbing included)
  litellm   through the LiteLLM proxy (`litellm[proxy]`, a pinned release installed by this script into its own
            virtualenv) routing to the same upstream
Each server is its own process with one worker. Prints requests/s and latency p50/p99 per cell, and for each gateway
the throughput relative to the floor and the latency it adds (its p50/p99 minus the floor's, same cell).

    python bench/gateway_bench.py                          # installs LiteLLM on first use (a few minutes)
    python bench/gateway_bench.py --duration 10 --no-litellm

The load generator is a minimal HTTP/1.1 client on raw asyncio streams, not httpx or aiohttp: on a 2-core machine the
clients share the CPU with the servers, and a heavier client would take more of it from them (the same client drives
every target, so the comparison stays fair either way).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

LITELLM = "1.106.12"  # checked: not yanked; the last release before 1.107.0 (compromised; 1.107.x is gone); the
# `[proxy]` extra of 1.108.x-1.110.x needs companion packages (litellm-proxy, litellm-proxy-extras) the registry lacks
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clawtune" / "bench"
MODEL = "fast"
# Both gateways check this key (LiteLLM refuses to start without a master key); the upstream ignores it.
KEY = "sk-" + "5f0c1e9a7b3d4c2e8f6a1b0c9d8e7f6a5b4c3d2e1f0a9b8c"
REQUEST = {"model": MODEL, "messages": [{"role": "user", "content": "What was the revenue in EMEA last quarter?"}]}


# ---- the upstream: an OpenAI-compatible server that answers at once --------------------------------------------


def upstream_app() -> Any:
    """A raw ASGI app (no framework): the fastest answer uvicorn can give, so the floor is the HTTP stack itself."""
    created = int(time.time())
    completion = json.dumps(
        {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": created,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "EMEA revenue was 4.2M."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 14, "completion_tokens": 8, "total_tokens": 22},
        }
    ).encode()
    base = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": created, "model": MODEL}

    def chunk(choices: list[Any], **extra: Any) -> bytes:
        return b"data: " + json.dumps({**base, "choices": choices, **extra}).encode() + b"\n\n"

    deltas = [
        {"role": "assistant", "content": ""},
        {"content": "EMEA revenue "},
        {"content": "was "},
        {"content": "4.2M."},
    ]
    stream = b"".join(chunk([{"index": 0, "delta": d, "finish_reason": None}]) for d in deltas)
    stream += chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    usage = chunk([], usage={"prompt_tokens": 14, "completion_tokens": 8, "total_tokens": 22})
    models = json.dumps(
        {"object": "list", "data": [{"id": MODEL, "object": "model", "created": created, "owned_by": "bench"}]}
    ).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "GET":
            answer, kind = models, b"application/json"
        elif (request := json.loads(body or b"{}")).get("stream"):
            answer, kind = (
                stream + (usage if (request.get("stream_options") or {}).get("include_usage") else b""),
                b"text/event-stream",
            )
            answer += b"data: [DONE]\n\n"
        else:
            answer, kind = completion, b"application/json"
        head = [(b"content-type", kind), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": answer})

    return app


def run_upstream(port: int) -> None:
    import uvicorn

    uvicorn.run(
        upstream_app(),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


# ---- the load generator -----------------------------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length or chunked) to its end; returns the status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    fields = dict(line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:] if b":" in line)
    if fields.get(b"transfer-encoding", b"").strip() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return status
    if b"content-length" not in fields:
        await reader.read()  # close-delimited
        return status
    await reader.readexactly(int(fields[b"content-length"]))
    return status


async def _client(
    port: int, path: str, payload: bytes, stop_at: float, warm_until: float, out: list[float], errors: list[int]
) -> None:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                return
            writer.write(request)
            status = await _read_response(reader)
            ended = time.perf_counter()
            if status != 200:
                errors.append(status)
            elif started >= warm_until:
                out.append(ended - started)
    finally:
        writer.close()


async def _load(
    port: int, path: str, body: dict[str, Any], clients: int, duration: float, warmup: float
) -> dict[str, Any]:
    payload = json.dumps(body).encode()
    latencies: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    warm_until = start + warmup
    stop_at = warm_until + duration
    await asyncio.gather(
        *(_client(port, path, payload, stop_at, warm_until, latencies, errors) for _ in range(clients))
    )
    latencies.sort()
    n = len(latencies)
    return {
        "rps": n / duration,
        "p50": latencies[n // 2] * 1000 if n else float("nan"),
        "p99": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
        "n": n,
        "errors": len(errors),
        "error_statuses": sorted(set(errors)),
    }


def measure(port: int, path: str, body: dict[str, Any], clients: int, duration: float, warmup: float) -> dict[str, Any]:
    import uvloop

    return uvloop.run(_load(port, path, body, clients, duration, warmup))


# ---- the gateways -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def start_clawtune(folder: Path, upstream: int) -> tuple[subprocess.Popen[bytes], int]:
    import yaml

    port = free_port()
    config = {
        "models": [{"id": MODEL, "provider": "openai", "model": MODEL, "endpoint": f"http://127.0.0.1:{upstream}/v1"}],
        "server": {"port": port, "data_dir": str(folder / "clawtune-data"), "max_concurrency": 4096, "api_keys": [KEY]},
    }
    (folder / "models.yaml").write_text(yaml.safe_dump(config))
    clawtune = Path(sys.executable).with_name("clawtune")
    process = subprocess.Popen(
        [str(clawtune), "serve", "--config", str(folder / "models.yaml")], stdout=subprocess.DEVNULL
    )
    wait_ready(f"http://127.0.0.1:{port}/health", process)
    return process, port


def litellm_python(version: str) -> Path:
    """A virtualenv with `litellm[proxy]==version`, made once (checked first: a yanked release is refused)."""
    venv = CACHE / f"litellm-{version}"
    python = venv / "bin" / "python"
    if (venv / ".installed").exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    report = venv / "report.json"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--dry-run",
            "--no-deps",
            "--ignore-installed",
            "--report",
            str(report),
            f"litellm=={version}",
        ],
        check=True,
    )
    if any(item.get("is_yanked") for item in json.loads(report.read_text())["install"]):
        raise SystemExit(f"litellm {version} is yanked on PyPI: pick another release")
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"litellm[proxy]=={version}"], check=True)
    (venv / ".installed").touch()
    return python


def start_litellm(folder: Path, upstream: int, version: str) -> tuple[subprocess.Popen[bytes], int]:
    import yaml

    python = litellm_python(version)
    port = free_port()
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"http://127.0.0.1:{upstream}/v1",
                    "api_key": "sk-bench",
                },
            }
        ],
        "litellm_settings": {"telemetry": False},
        "general_settings": {"master_key": KEY},
    }
    (folder / "litellm.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"}
    process = subprocess.Popen(
        [
            str(python.with_name("litellm")),
            "--config",
            str(folder / "litellm.yaml"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    wait_ready(f"http://127.0.0.1:{port}/health/liveliness", process)
    return process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


# ---- the run ------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["bench", "upstream"], default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--clients", default="1,16,64", help="Concurrency levels (default 1,16,64).")
    parser.add_argument("--duration", type=float, default=6.0, help="Measured seconds per cell (default 6).")
    parser.add_argument("--warmup", type=float, default=1.5, help="Unmeasured seconds before each cell.")
    parser.add_argument("--litellm", default=LITELLM, help=f"LiteLLM release (default {LITELLM}).")
    parser.add_argument("--no-litellm", action="store_true", help="Measure only the floor and clawtune.")
    args = parser.parse_args(argv)
    if args.role == "upstream":
        run_upstream(args.port)
        return 0

    levels = [int(c) for c in args.clients.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        up_port = free_port()
        upstream = subprocess.Popen([sys.executable, __file__, "--role", "upstream", "--port", str(up_port)])
        processes.append(upstream)
        wait_ready(f"http://127.0.0.1:{up_port}/v1/models", upstream)
        targets = {"direct": up_port}
        claw, targets["clawtune"] = start_clawtune(folder, up_port)
        processes.append(claw)
        if not args.no_litellm:
            print(f"starting LiteLLM {args.litellm} (installing it into {CACHE} on first use)", flush=True)
            lite, targets["litellm"] = start_litellm(folder, up_port, args.litellm)
            processes.append(lite)
        print(
            f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}; {args.duration:g} s per cell after {args.warmup:g} s warm-up",
            flush=True,
        )
        for port in targets.values():  # first requests are slow (LiteLLM imports lazily): not measured
            for body in (REQUEST, {**REQUEST, "stream": True, "stream_options": {"include_usage": True}}):
                measure(port, "/v1/chat/completions", body, 4, 3.0, 0.0)
        results: dict[tuple[str, str, int], dict[str, Any]] = {}
        for clients in levels:
            for mode in ("plain", "stream"):
                body = (
                    {**REQUEST, "stream": True, "stream_options": {"include_usage": True}}
                    if mode == "stream"
                    else REQUEST
                )
                for name, port in targets.items():
                    results[(name, mode, clients)] = cell = measure(
                        port, "/v1/chat/completions", body, clients, args.duration, args.warmup
                    )
                    print(
                        f"  {mode:6} {clients:3} clients  {name:8} {cell['rps']:8.1f} req/s  p50 {cell['p50']:7.2f} ms  p99 {cell['p99']:7.2f} ms  errors {cell['errors']}",
                        flush=True,
                    )
        rows = log_rows(folder / "clawtune-data" / "requests.sqlite")
    finally:
        for process in reversed(processes):
            stop(process)
    print()
    print(table(results, levels, list(targets)))
    print(f"\nclawtune's request log: {rows} rows written during the run")
    shutil.rmtree(folder, ignore_errors=True)
    return 0


def log_rows(path: Path) -> int:
    import sqlite3

    time.sleep(1.0)  # the writer commits in the background
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("select count(*) from requests").fetchone()[0])
    finally:
        conn.close()


def table(results: dict[tuple[str, str, int], dict[str, Any]], levels: list[int], names: list[str]) -> str:
    lines = [
        "| mode | clients | target | req/s | vs floor | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in ("plain", "stream"):
        for clients in levels:
            floor = results[("direct", mode, clients)]
            for name in names:
                cell = results[(name, mode, clients)]
                ratio = cell["rps"] / floor["rps"] if floor["rps"] else float("nan")
                added = (
                    "" if name == "direct" else f"{cell['p50'] - floor['p50']:.2f} | {cell['p99'] - floor['p99']:.2f}"
                )
                lines.append(
                    f"| {mode} | {clients} | {name} | {cell['rps']:.0f} | {ratio:.0%} | {cell['p50']:.2f} | {cell['p99']:.2f} | "
                    + (added or " | ")
                    + f" | {cell['errors']} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
