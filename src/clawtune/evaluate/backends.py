"""The held-out items, and the two ways of answering them: a local model (batched greedy generation) or an
OpenAI-compatible endpoint (what the agent used before, or a served fine-tune).

An item is one trained assistant turn of a test example: the conversation before it is the prompt, the turn is the
reference. Local generation renders the prompt with the model's own chat template and tools (as training did),
generates greedily in batches of similar length, and reads tool calls back with the template family's parser.
Latency per request is the wall time of the batch it was in (what that request waited); `--batch-size 1` gives
unbatched latencies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawtune.data.recipe import category
from clawtune.generation import KEEP, SystemPromptPolicy, stop_token_ids
from clawtune.messages import Message, is_trained
from clawtune.models.toolcalls import parse_reply
from clawtune.problems import Problems


@dataclass
class Item:
    id: str
    category: str
    prompt: list[Message]
    tools: list[dict[str, Any]] | None
    reference: Message
    session: str | None = None  # the example's metadata.session_id, where it has one


@dataclass
class Generation:
    message: Message
    raw: str
    invalid_calls: list[str] = field(default_factory=list)
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    compute_s: float = 0.0  # the device time this request used: its share of its batch


def load_items(path: Path, problems: Problems, limit: int | None = None) -> list[Item]:
    """Every trained assistant turn of every valid example in `path` (invalid lines are reported and skipped)."""
    from clawtune.data.validate import check_example, iter_examples

    items: list[Item] = []
    for lineno, example in iter_examples(path, problems):
        if not check_example(example, str(path), lineno, problems):
            continue
        items += example_items(example, f"{path.name}:{lineno}")
        if limit and len(items) >= limit:
            return items[:limit]
    return items


def example_items(example: dict[str, Any], name: str) -> list[Item]:
    """One item per trained assistant turn that answers a user or tool message, named `name#index`."""
    kind = category(example)
    messages = example["messages"]
    session = (example.get("metadata") or {}).get("session_id")
    return [
        Item(f"{name}#{i}", kind, messages[:i], example.get("tools"), message, str(session) if session else None)
        for i, message in enumerate(messages)
        if i and is_trained(message) and messages[i - 1]["role"] in ("user", "tool")
    ]


# The greedy answers each checkpoint gave in this process, by its files, merge state, token limit and stop tokens,
# then by rendered prompt. The gate (`ft evaluate --baseline` a checkpoint) asks the checkpoint a retrain resumed from
# the same test and general turns that checkpoint's own evaluation asked, in the same process in `clawtune demo`:
# those answers are reused, not generated again. Only checkpoints with a manifest (sha256 of every file) are cached;
# a model id or folder without one may change on disk.
ANSWERS: dict[str, dict[str, Generation]] = {}


def answers_key(loaded: Any, max_new_tokens: int, stop: frozenset[int], device: str) -> str | None:
    import hashlib
    import json

    manifest = loaded.manifest
    if not manifest or not manifest.get("files"):
        return None
    identity = [
        manifest["files"],
        manifest.get("base_fingerprint"),
        loaded.merged,
        max_new_tokens,
        sorted(stop),
        device,
    ]
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


class LocalBackend:
    """Greedy batched generation with a locally loaded model (see `models.checkpoint`), as the gateway would serve
    it: the same system-prompt policy (the checkpoint's, unless `policy` is given), the same stop tokens, the same
    decoding of the reply (`clawtune.generation`)."""

    def __init__(
        self, loaded: Any, batch_size: int = 8, max_new_tokens: int = 256, policy: SystemPromptPolicy | None = None
    ) -> None:
        self.loaded = loaded
        self.name = loaded.name
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        if policy is None and loaded.manifest is not None:
            from clawtune.data.provenance import trained_policy

            policy = trained_policy(loaded.manifest)
        self.policy = policy or KEEP
        self.stop_ids = stop_token_ids(loaded.tokenizer, getattr(loaded.model, "generation_config", None))
        self.kind = "local"
        device = str(next(loaded.model.parameters()).device)
        self.answers_key = answers_key(loaded, max_new_tokens, self.stop_ids, device)
        self.reused = 0  # answers taken from an earlier evaluation of this checkpoint in this process

    def prompt_text(self, item: Item) -> str:
        from clawtune.artifacts.render import render_text, template_messages

        messages = template_messages(self.policy.apply(item.prompt))
        return render_text(self.loaded.tokenizer, messages, item.tools, True)

    def generate(self, items: list[Item], progress: Any = None) -> list[Generation]:
        import torch

        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        tokenizer.padding_side = "left"
        texts = [self.prompt_text(item) for item in items]
        known = ANSWERS.setdefault(self.answers_key, {}) if self.answers_key else {}
        results: list[Generation | None] = [known.get(t) for t in texts]
        reused = sum(r is not None for r in results)
        self.reused += reused
        if progress is not None and reused:
            progress(reused)
        encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        order = sorted((i for i in range(len(items)) if results[i] is None), key=lambda i: len(encoded[i]))
        stop = self.stop_ids
        device = next(model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]) :] = 1
            began = time.perf_counter()
            with torch.no_grad():
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    eos_token_id=sorted(stop),
                    pad_token_id=tokenizer.pad_token_id,
                )
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - began
            for row, i in enumerate(batch):
                # what the engine sends: the tokens before the first stop token, decoded with special tokens kept
                new = out[row, width:].tolist()
                ends = [k for k, t in enumerate(new) if t in stop]
                new = new[: ends[0]] if ends else new
                raw = tokenizer.decode(new, skip_special_tokens=False)
                parsed = parse_reply(raw)
                results[i] = known[texts[i]] = Generation(
                    parsed.message, raw, parsed.invalid, elapsed, len(encoded[i]), len(new), None, elapsed / len(batch)
                )
            if progress is not None:
                progress(len(batch))
        return [r for r in results if r is not None]


class EndpointBackend:
    """Any OpenAI-compatible chat completions endpoint (non-streaming, tools passed through)."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        api_key: str | None = None,
        max_new_tokens: int = 256,
        policy: SystemPromptPolicy | None = None,
        timeout: float = 120.0,
    ) -> None:
        from clawtune.openai_http import Client, completions_url

        self.url = completions_url(endpoint)
        self.client = Client(timeout)  # a 429 or 5xx is retried; what still fails is an error, not a wrong answer
        self.model = model
        self.name = f"{model} @ {endpoint}"
        self.api_key = api_key
        self.max_new_tokens = max_new_tokens
        self.policy = policy or KEEP  # a served fine-tune applies its own; a baseline may need one
        self.timeout = timeout
        self.kind = "endpoint"
        self.reused = 0  # an endpoint's answers are never reused (see ANSWERS)

    def generate(self, items: list[Item], progress: Any = None) -> list[Generation]:
        from clawtune.openai_http import ERRORS

        results = []
        for item in items:
            body: dict[str, Any] = {
                "model": self.model,
                "messages": self.policy.apply(item.prompt),
                "temperature": 0,
                "max_tokens": self.max_new_tokens,
            }
            if item.tools:
                body["tools"] = item.tools
            began = time.perf_counter()
            try:
                reply = self.client.chat_completion(self.url, body, self.api_key)
                message = reply["choices"][0]["message"]
                usage = reply.get("usage") or {}
                message = {
                    "role": "assistant",
                    "content": message.get("content"),
                    **({"tool_calls": message["tool_calls"]} if message.get("tool_calls") else {}),
                }
                results.append(
                    Generation(
                        message,
                        str(message.get("content") or ""),
                        latency_s=time.perf_counter() - began,
                        prompt_tokens=int(usage.get("prompt_tokens", 0)),
                        completion_tokens=int(usage.get("completion_tokens", 0)),
                    )
                )
            except ERRORS as exc:
                results.append(
                    Generation(
                        {"role": "assistant", "content": None},
                        "",
                        latency_s=time.perf_counter() - began,
                        error=f"{type(exc).__name__}: {exc}"[:300],
                    )
                )
            if progress is not None:
                progress(1)
        return results
