"""Serving benchmark: `clawtune serve` driven by concurrent clients, all scenarios in one run.

Scenarios, each with the same prompts, `--clients` concurrent clients and `--requests` requests per client:
  base            the base model only
  one-adapter     every request for the same LoRA adapter
  mixed-batched   requests spread over four adapters, batched together (the engine's default)
  mixed-serial    the same four-adapter mix, one request at a time (batch_size 1): the baseline for batching

Prints requests/s, output tokens/s and latency p50/p95 per scenario, then the two ratios the serving issue sets goals
for: adapter overhead (1 - one-adapter / base throughput; goal < 15%) and the gain of mixed-adapter batching over
one-at-a-time (goal >= 2x with 8 clients). Adapters are random LoRAs (r=16 on every linear layer) of the base, saved
with manifests as `clawtune ft train` would, so the numbers measure the serving path, not what the adapters learned.

    python bench/serve_bench.py                       # the bundled tiny model on this machine
    python bench/serve_bench.py --base Qwen/Qwen2.5-0.5B-Instruct --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

PROMPTS = [
    "What was the revenue in EMEA last quarter?",
    "Find the contact for the Lisbon office.",
    "Summarise the open invoices over 10,000 EUR.",
    "Which region grew fastest in Q3?",
    "Draft a two-line reply declining a refund request.",
    "What is the weather in Paris tomorrow?",
    "List the three largest customers by revenue.",
    "Convert 250 USD to EUR at today's rate.",
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "query_database",
            "description": "Run a read-only SQL query.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]


def make_adapters(base: str, folder: Path, count: int, rank: int) -> list[Path]:
    """Random LoRA adapters with clawtune manifests (B is non-zero, so every adapter really changes the model)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from clawtune.artifacts.manifest import write_manifest
    from clawtune.models import fingerprint, load_model, load_tokenizer, resolve

    tokenizer, _ = load_tokenizer(base)
    paths = []
    for i in range(count):
        torch.manual_seed(i)
        model = get_peft_model(
            load_model(base, dtype=torch.float32),
            LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", lora_dropout=0.0),
        )
        for name, param in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.02)
        target = folder / f"adapter-{i}"
        model.save_pretrained(str(target))
        tokenizer.save_pretrained(str(target))
        (target / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")
        base_config = model.get_base_model().config
        write_manifest(
            target,
            {
                "kind": "lora",
                "base_model": base,
                "base_model_path": resolve(base),
                "base_fingerprint": fingerprint(base_config.to_dict(), tokenizer),
            },
        )
        paths.append(target)
    return paths


def run_scenario(url: str, models: list[str], clients: int, requests: int, max_tokens: int) -> dict[str, Any]:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600)
    jobs = [(c, r) for c in range(clients) for r in range(requests)]

    def one(job: tuple[int, int]) -> tuple[float, int]:
        c, r = job
        model = models[(c + r) % len(models)]
        prompt = PROMPTS[(c * 3 + r) % len(PROMPTS)]
        started = time.perf_counter()
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], tools=TOOLS, max_tokens=max_tokens
        )
        return time.perf_counter() - started, reply.usage.completion_tokens

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, jobs))
    elapsed = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return {
        "requests": len(results),
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(results) / elapsed, 2),
        "output_tokens_per_s": round(tokens / elapsed, 1),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 3),
    }


def engine_only(base: str, adapters: list[Path], batch: int, requests: int, max_tokens: int) -> dict[str, Any]:
    """The engine without HTTP or clients: what batching gains when nothing else shares the CPU."""
    from clawtune.serve.engine import Engine, GenRequest

    engine = Engine(base, batch_size=batch)
    for i, path in enumerate(adapters):
        engine.add_adapter(f"a{i}", str(path))

    def run(names: list[str | None], size: int) -> float:
        engine.batch_size = size
        jobs = [
            GenRequest(
                engine.render(names[i % len(names)], [{"role": "user", "content": PROMPTS[i % 8]}], TOOLS),
                names[i % len(names)],
                max_tokens,
            )
            for i in range(requests)
        ]
        started = time.perf_counter()
        for job in jobs:
            engine.submit(job)
        for job in jobs:
            while job.events.get()[0] != "done":
                pass
        return requests / (time.perf_counter() - started)

    run([None], batch)  # warm-up
    mixed: list[str | None] = ["a0", "a1", "a2", "a3"]
    out = {
        "base_batched": run([None], batch),
        "base_serial": run([None], 1),
        "mixed_batched": run(mixed, batch),
        "mixed_serial": run(mixed, 1),
    }
    engine.close()
    return {k: round(v, 2) for k, v in out.items()}


def engine_counts(url: str) -> tuple[int, int]:
    """(batches, requests batched) from the server's /metrics."""
    import urllib.request

    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("clawtune_engine_"))
    batches, batched = values["clawtune_engine_batches_total"], values["clawtune_engine_batched_requests_total"]
    return int(float(batches)), int(float(batched))  # prometheus_client writes counters as floats


@contextlib.contextmanager
def serving(folder: Path, models: list[dict[str, Any]], batch: int, args: Any) -> Iterator[str]:
    """`clawtune serve` in its own process (the clients here must not share its interpreter lock)."""
    import socket
    import subprocess
    import urllib.request

    import yaml

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = {"port": port, "data_dir": str(folder / f"data-{batch}"), "batch_size": batch, "max_concurrency": 64}
    if args.device:
        server["device"] = args.device
    config = folder / f"models-{batch}.yaml"
    config.write_text(yaml.safe_dump({"models": models, "server": server}))
    process = subprocess.Popen(
        [sys.executable, "-m", "clawtune", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("clawtune serve did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="clawtune/tiny-agent")
    parser.add_argument("--device", default=None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=6, help="requests per client per scenario")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--engine-only", action="store_true", help="also time the engine alone (no HTTP, no clients)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        adapters = make_adapters(args.base, folder, 4, args.rank)
        models = [{"id": "base", "provider": "clawtune", "model": args.base}] + [
            {"id": f"a{i}", "provider": "clawtune", "model": args.base, "adapters": {f"a{i}": {"path": str(p)}}}
            for i, p in enumerate(adapters)
        ]
        results = {}
        for batch, scenarios in (
            (args.clients, [("base", ["base"]), ("one-adapter", ["a0"]), ("mixed-batched", ["a0", "a1", "a2", "a3"])]),
            (1, [("mixed-serial", ["a0", "a1", "a2", "a3"])]),
        ):
            with serving(folder, models, batch, args) as url:
                run_scenario(url, ["base", "a0"], args.clients, 1, args.max_tokens)  # warm-up
                for name, ids in scenarios:
                    before = engine_counts(url)
                    results[name] = run_scenario(url, ids, args.clients, args.requests, args.max_tokens)
                    after = engine_counts(url)
                    batches = after[0] - before[0]
                    results[name]["mean_batch_size"] = round((after[1] - before[1]) / batches, 2) if batches else None
                    print(f"{name:14s} {json.dumps(results[name])}", flush=True)
        engine = None
        if args.engine_only:
            engine = engine_only(args.base, adapters, args.clients, args.clients * args.requests, args.max_tokens)
            print(f"engine only (requests/s): {json.dumps(engine)}", flush=True)
    overhead = 1 - results["one-adapter"]["requests_per_s"] / results["base"]["requests_per_s"]
    gain = results["mixed-batched"]["requests_per_s"] / results["mixed-serial"]["requests_per_s"]
    summary = {
        "base_model": args.base,
        "clients": args.clients,
        "requests_per_client": args.requests,
        "max_tokens": args.max_tokens,
        "rank": args.rank,
        "scenarios": results,
        "adapter_overhead": round(overhead, 3),
        "mixed_batching_gain": round(gain, 2),
        "engine_only_requests_per_s": engine,
    }
    print(
        f"\nadapter overhead: {overhead:+.1%} throughput vs the base model (goal: under 15%)\n"
        f"mixed-adapter batching: {gain:.2f}x the one-at-a-time throughput with {args.clients} clients (goal: 2x)"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    raise SystemExit(main())
