"""`clawtune serve`: an OpenAI-compatible gateway for one base model and many adapters, and for remote engines.

Endpoints: `POST /v1/chat/completions` (plain and SSE streaming, tools, usage), `GET /v1/models` (with each model's
context window and output limit, see `serve/limits.py`), `GET /health`,
`GET /metrics` (Prometheus), `POST /v1/feedback`, and `GET/POST/DELETE /admin/adapters` for loading adapters at
run time from the folders the config allows. Every response carries `X-Request-Id`; responses also say which model,
adapter and experiment arm served them (`X-Clawtune-*` headers and a `clawtune` object in the body).

Routing: `model` is an id from the config; `"auto"` picks the model whose tags best match the request's tags
(`X-Clawtune-Tags` header or `metadata.tags`), else `default_model`; an experiment id splits traffic between arms by
weight, sticky per session or user (a hash, so a conversation never switches model midway).

Built on the standard library's threading HTTP server: each connection has a thread, generation happens on the
engine's scheduler thread, and a concurrency limit answers 429 instead of queueing without bound.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from clawtune.models.toolcalls import parse_reply
from clawtune.openai_http import ERRORS, ModelLimits, completions_url, limits_of, list_models
from clawtune.serve.config import ModelEntry, ServeConfig, resolve_path
from clawtune.serve.engine import Engine, EngineError, GenRequest
from clawtune.serve.limits import (
    BudgetError,
    OutputBudget,
    card_fields,
    combined,
    forwarded_limits,
    output_budget,
    own_limits,
)
from clawtune.serve.log import RequestLog

TOOL_MARKERS = ("<tool_call>", "[TOOL_CALLS]")
# How long a forwarded engine's `/v1/models` may take, and how long to wait before asking an unreachable one again.
UPSTREAM_MODELS_TIMEOUT_S = 5.0
UPSTREAM_RETRY_S = 60.0


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Route:
    entry: ModelEntry
    requested: str
    experiment: str | None = None
    arm: str | None = None
    session: str | None = None
    user: str | None = None


@dataclass
class Metrics:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    tokens: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    latency_sum: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    latency_count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    buckets: dict[tuple[str, float], int] = field(default_factory=lambda: defaultdict(int))
    rejected: int = 0
    in_flight: int = 0

    BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))

    def observe(self, model: str, status: int, latency: float, prompt: int, completion: int) -> None:
        with self.lock:
            self.requests[(model, status)] += 1
            self.tokens[(model, "prompt")] += prompt
            self.tokens[(model, "completion")] += completion
            self.latency_sum[model] += latency
            self.latency_count[model] += 1
            for bound in self.BOUNDS:
                if latency <= bound:
                    self.buckets[(model, bound)] += 1

    def render(self, queued: int, engine: Any = None) -> str:
        lines = [
            "# HELP clawtune_requests_total Chat completion requests by model and HTTP status.",
            "# TYPE clawtune_requests_total counter",
        ]
        with self.lock:
            lines += [
                f'clawtune_requests_total{{model="{m}",status="{s}"}} {n}'
                for (m, s), n in sorted(self.requests.items())
            ]
            lines += ["# HELP clawtune_tokens_total Tokens by model and kind.", "# TYPE clawtune_tokens_total counter"]
            lines += [
                f'clawtune_tokens_total{{model="{m}",kind="{k}"}} {n}' for (m, k), n in sorted(self.tokens.items())
            ]
            lines += [
                "# HELP clawtune_request_seconds Request latency.",
                "# TYPE clawtune_request_seconds histogram",
            ]
            for model in sorted(self.latency_count):
                for bound in self.BOUNDS:
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append(
                        f'clawtune_request_seconds_bucket{{model="{model}",le="{le}"}} {self.buckets[(model, bound)]}'
                    )
                lines.append(f'clawtune_request_seconds_sum{{model="{model}"}} {self.latency_sum[model]:.6f}')
                lines.append(f'clawtune_request_seconds_count{{model="{model}"}} {self.latency_count[model]}')
            lines += [
                "# TYPE clawtune_rejected_total counter",
                f"clawtune_rejected_total {self.rejected}",
                "# TYPE clawtune_in_flight gauge",
                f"clawtune_in_flight {self.in_flight}",
                "# TYPE clawtune_queued gauge",
                f"clawtune_queued {queued}",
            ]
            if engine is not None:
                lines += [
                    "# HELP clawtune_engine_batches_total Batches the engine ran (requests / batches = mean batch size).",
                    "# TYPE clawtune_engine_batches_total counter",
                    f"clawtune_engine_batches_total {engine.batches}",
                    "# TYPE clawtune_engine_batched_requests_total counter",
                    f"clawtune_engine_batched_requests_total {engine.batched_requests}",
                ]
        return "\n".join(lines) + "\n"


class Gateway:
    """Everything a request needs: config, engine, routing, log, metrics, limits."""

    def __init__(self, config: ServeConfig, engine: Engine | None = None, data_dir: Path | None = None) -> None:
        self.config = config
        self.settings = config.server
        self.base_dir = Path(config.source).parent if config.source else Path()
        self.engine = engine
        base = config.base_model()
        if self.engine is None and base is not None:
            self.engine = Engine(
                base,
                device=self.settings.device,
                batch_size=self.settings.batch_size,
                max_context=self.settings.max_context,
            )
        self.entries: dict[str, ModelEntry] = {m.id: m for m in config.models}
        self.policies: dict[str, tuple[str, str | None]] = {}
        if self.engine is not None:
            for entry in config.models:
                if entry.provider == "clawtune":
                    self._load_entry(entry)
        folder = data_dir or resolve_path(self.settings.data_dir, self.base_dir)
        self.log = RequestLog(folder / "requests.sqlite", self.settings.log_max_rows)
        self.metrics = Metrics()
        self.slots = threading.BoundedSemaphore(self.settings.max_concurrency)
        self.created = int(time.time())
        self.connections: set[Any] = set()
        self.connections_lock = threading.Lock()
        self.closing = False
        # A forwarded engine's limits as its /v1/models states them: asked once; an unreachable one again after a while.
        self.upstream: dict[str, ModelLimits] = {}
        self.upstream_failed: dict[str, float] = {}

    # ---- models --------------------------------------------------------------------------------------------------

    def _load_entry(self, entry: ModelEntry) -> None:
        """An entry's adapters (several are served together as one model) and its system-prompt policy."""
        assert self.engine is not None
        sources = [(str(resolve_path(a.path, self.base_dir)), a.weight) for a in entry.adapters.values()]
        if sources:
            self.engine.add_adapter(entry.id, sources[0][0], sources[0][1], sources[1:])
        self.policies[entry.id] = self._policy(entry)

    def _policy(self, entry: ModelEntry) -> tuple[str, str | None]:
        """(keep|drop|replace, the short prompt): the config's choice, else what the adapter's training data did."""
        recorded: dict[str, Any] = {}
        if self.engine is not None and entry.id in self.engine.adapters:
            from clawtune.export.run import training_system_prompt

            manifest = self.engine.adapters[entry.id].manifest
            recorded = manifest.get("system_prompt") or training_system_prompt(manifest) or {}
        policy = entry.system_prompt or recorded.get("policy") or "keep"
        text = entry.system_prompt_text or recorded.get("prompt")
        if policy == "replace" and not text:
            policy = "keep"
        return policy, text

    def adapter_of(self, entry: ModelEntry) -> str | None:
        return entry.id if entry.provider == "clawtune" and entry.adapters else None

    def load_adapter(self, name: str, path: str, weight: float) -> dict[str, Any]:
        """Admin: load an adapter at run time as a new model id, only from a folder the config allows."""
        if self.engine is None:
            raise APIError(400, "no clawtune provider in this server's config: nothing to load adapters into")
        allowed = [resolve_path(d, self.base_dir).resolve() for d in self.settings.adapter_dirs]
        target = resolve_path(path, self.base_dir).resolve()
        if not any(target.is_relative_to(d) for d in allowed):
            raise APIError(403, f"{path} is outside the folders server.adapter_dirs allows", "permission_error", "path")
        if name in self.entries:
            raise APIError(409, f"a model named {name!r} already exists", param="name")
        entry = ModelEntry(
            id=name,
            provider="clawtune",
            model=self.engine.base_name,
            adapters={name: {"path": str(target), "weight": weight}},
        )  # type: ignore[dict-item]
        try:
            self._load_entry(entry)
        except EngineError as exc:
            raise APIError(400, str(exc), param="path") from None
        self.entries[name] = entry
        return {"id": name, "path": str(target), "weight": weight}

    def unload_adapter(self, name: str) -> None:
        entry = self.entries.get(name)
        if entry is None or self.engine is None or name not in self.engine.adapters:
            raise APIError(404, f"no adapter model named {name!r} is loaded", code="model_not_found")
        self.engine.remove_adapter(name)
        del self.entries[name]

    # ---- limits ----------------------------------------------------------------------------------------------------

    def limits(self, model_id: str) -> ModelLimits:
        """A model's (or an experiment's: every arm's) context window and output limit, as `/v1/models` publishes."""
        experiment = next((e for e in self.config.experiments if e.id == model_id), None)
        if experiment is not None:
            return combined(self.limits(arm) for arm in experiment.arms)
        entry = self.entries[model_id]
        if entry.provider == "clawtune":
            assert self.engine is not None
            return own_limits(self.engine.max_context, self.settings)
        return forwarded_limits(entry, self.upstream_limits(entry), self.settings)

    def upstream_limits(self, entry: ModelEntry) -> ModelLimits | None:
        """What the engine's own `/v1/models` says of the model (vLLM: `max_model_len`); None if it cannot be asked."""
        if entry.id in self.upstream:
            return self.upstream[entry.id]
        if time.monotonic() - self.upstream_failed.get(entry.id, -UPSTREAM_RETRY_S) < UPSTREAM_RETRY_S:
            return None
        try:
            cards = list_models(entry.endpoint or "", _api_key(entry), min(entry.timeout_s, UPSTREAM_MODELS_TIMEOUT_S))
        except ERRORS:
            self.upstream_failed[entry.id] = time.monotonic()
            return None
        name = upstream_model(entry)
        card = next((c for c in cards if c.get("id") == name), None)
        self.upstream[entry.id] = limits_of(card) if card else ModelLimits()
        return self.upstream[entry.id]

    # ---- routing ---------------------------------------------------------------------------------------------------

    def route(self, body: dict[str, Any], headers: dict[str, str]) -> Route:
        requested = body.get("model")
        if not isinstance(requested, str) or not requested:
            raise APIError(400, "you must provide a model parameter", param="model")
        found = body.get("metadata")
        metadata: dict[str, Any] = found if isinstance(found, dict) else {}
        session = headers.get("x-clawtune-session") or metadata.get("session_id") or metadata.get("session")
        user = body.get("user") or metadata.get("user_id") or headers.get("x-clawtune-user")
        if requested == "auto":
            raw = headers.get("x-clawtune-tags") or metadata.get("tags") or []
            tags = {t.strip() for t in (raw.split(",") if isinstance(raw, str) else raw) if str(t).strip()}
            scored = [(len(tags & set(m.tags)), i, m) for i, m in enumerate(self.entries.values())]
            best = max(scored, key=lambda s: (s[0], -s[1]), default=None)
            if best and best[0] > 0:
                return Route(best[2], requested, session=session, user=user)
            if self.config.default_model:
                return Route(self.entries[self.config.default_model], requested, session=session, user=user)
            raise APIError(
                404,
                "model auto: no model's tags match and no default_model is set",
                param="model",
                code="model_not_found",
            )
        for experiment in self.config.experiments:
            if experiment.id == requested:
                key = (user if experiment.sticky == "user" else session) or user or session or uuid.uuid4().hex
                arm = choose_arm(experiment.id, str(key), experiment.arms)
                return Route(self.entries[arm], requested, experiment.id, arm, session, user)
        entry = self.entries.get(requested)
        if entry is None:
            served = [*self.entries, *(e.id for e in self.config.experiments)]
            raise APIError(
                404,
                f"The model `{requested}` does not exist; this server has: {', '.join(served)} (and auto)",
                param="model",
                code="model_not_found",
            )
        return Route(entry, requested, session=session, user=user)

    # ---- the system-prompt policy -------------------------------------------------------------------------------

    def apply_policy(self, entry: ModelEntry, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        policy, text = self.policies.get(entry.id, (entry.system_prompt or "keep", entry.system_prompt_text))
        if policy == "keep":
            return messages
        rest = [m for m in messages if m.get("role") not in ("system", "developer")]
        if policy == "drop":
            return rest
        return [{"role": "system", "content": text}, *rest]


def choose_arm(experiment: str, key: str, arms: dict[str, float]) -> str:
    """Sticky weighted assignment: the same (experiment, key) always gets the same arm."""
    digest = hashlib.sha256(f"{experiment}\0{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(arms.values())
    for arm, weight in arms.items():
        if point < weight:
            return arm
        point -= weight
    return next(reversed(arms))


# ---- chat completions -------------------------------------------------------------------------------------------


def _validate(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
        ):
            raise APIError(
                400,
                f"messages[{i}]: a message needs a role of system, user, assistant or tool",
                param=f"messages[{i}].role",
            )
    if body.get("n", 1) != 1:
        raise APIError(400, "only n=1 is supported", param="n")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise APIError(400, "tools must be an array", param="tools")
    field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    limit = body.get(field)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise APIError(400, f"{field} must be a positive integer", param=field)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    return {
        "messages": messages,
        "tools": tools or None,
        "max_tokens": limit,  # None: the server's default
        "max_tokens_field": field,
        "stop": stop or [],
    }


def budget(
    requested: int | None, prompt_tokens: int | None, limits: ModelLimits, settings: Any, field: str
) -> OutputBudget:
    """`limits.output_budget`, its refusals answered as OpenAI's 400."""
    try:
        return output_budget(requested, prompt_tokens, limits, settings, field)
    except BudgetError as exc:
        raise APIError(400, exc.message, param=exc.param, code=exc.code) from None


def budget_record(allowed: OutputBudget | None) -> dict[str, Any]:
    """The log's columns for a request's output budget."""
    if allowed is None:
        return {}
    return {
        "max_tokens_requested": allowed.requested,
        "max_tokens": allowed.max_tokens,
        "max_tokens_clamp": allowed.clamp,
    }


def _normalise_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI request messages as clawtune's renderer expects them (developer -> system)."""
    out = []
    for m in messages:
        m = dict(m)
        if m.get("role") == "developer":
            m["role"] = "system"
        out.append(m)
    return out


@dataclass
class Completion:
    request_id: str
    created: int
    route: Route
    adapter: str | None
    prompt_tokens: int
    prompt_tokens_original: int
    text: str = ""
    finish: str = "stop"
    completion_tokens: int = 0
    offered: set[str] = field(default_factory=set)  # tool names the request offered
    budget: OutputBudget | None = None

    def parsed(self) -> tuple[str | None, list[dict[str, Any]], int]:
        """(content, tool calls, invalid calls). A call that cannot be read (broken JSON, no name) or names a tool the
        request did not offer is not passed to the client as a call (an agent would try to run it): the raw text comes
        back as content, and the log counts it as an invalid tool call."""
        reply = parse_reply(self.text)
        calls: list[dict[str, Any]] = []
        for call in reply.tool_calls:
            name = call["function"]["name"]
            if name and name in self.offered and _is_json(call["function"]["arguments"]):
                calls.append({**call, "id": f"call_{self.request_id[-12:]}_{len(calls)}"})
        invalid = len(reply.tool_calls) - len(calls) + (len(reply.invalid) if not reply.tool_calls else 0)
        if reply.tool_calls and not calls:
            return self.text.strip() or None, [], invalid
        return reply.content, calls, invalid


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def local_completion(
    gateway: Gateway, route: Route, body: dict[str, Any], request_id: str
) -> tuple[Completion, GenRequest]:
    engine = gateway.engine
    assert engine is not None
    checked = _validate(body)
    entry = route.entry
    adapter = gateway.adapter_of(entry)
    original = _normalise_messages(checked["messages"])
    messages = gateway.apply_policy(entry, original)
    try:
        # what the agent's own prompt would have cost, for the savings in usage and the log
        before = len(engine.render(adapter, original, checked["tools"])) if messages is not original else None
        ids = engine.render(adapter, messages, checked["tools"])
    except Exception as exc:
        raise APIError(
            400, f"the messages cannot be rendered with this model's chat template: {exc}", param="messages"
        ) from None
    before = before or len(ids)
    allowed = budget(
        checked["max_tokens"], len(ids), gateway.limits(entry.id), gateway.settings, checked["max_tokens_field"]
    )
    temperature = body.get("temperature")
    request = GenRequest(
        prompt_ids=ids,
        adapter=adapter,
        max_new_tokens=allowed.max_tokens,
        temperature=float(temperature) if isinstance(temperature, int | float) else 0.0,
        top_p=float(body.get("top_p") or 1.0),
        stop=checked["stop"],
        seed=body.get("seed") if isinstance(body.get("seed"), int) else None,
    )
    completion = Completion(request_id, int(time.time()), route, adapter, len(ids), before, budget=allowed)
    completion.offered = {
        str((t.get("function") or t).get("name")) for t in checked["tools"] or [] if isinstance(t, dict)
    }
    return completion, request


def wait_events(request: GenRequest, timeout: float) -> Iterator[tuple[Any, ...]]:
    import queue

    deadline = time.monotonic() + timeout
    while True:
        try:
            event = request.events.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            request.cancelled.set()
            raise APIError(504, "generation timed out", "timeout_error") from None
        if event[0] == "error":
            raise APIError(500, f"generation failed: {event[1]}", "server_error")
        yield event
        if event[0] == "done":
            return


def completion_body(c: Completion, model_name: str) -> dict[str, Any]:
    content, calls, _ = c.parsed()
    message: dict[str, Any] = {"role": "assistant", "content": content}
    finish = c.finish
    if calls:
        message["tool_calls"] = calls
        finish = "tool_calls"
    return {
        "id": c.request_id,
        "object": "chat.completion",
        "created": c.created,
        "model": model_name,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage(c),
        "clawtune": clawtune_info(c),
    }


def usage(c: Completion) -> dict[str, Any]:
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
        "prompt_tokens_before_policy": c.prompt_tokens_original,
    }


def clawtune_info(c: Completion) -> dict[str, Any]:
    route = c.route
    return {"model": route.entry.id, "adapter": c.adapter, "experiment": route.experiment, "arm": route.arm}


def stream_chunks(
    c: Completion, request: GenRequest, model_name: str, include_usage: bool, timeout: float
) -> Iterator[dict[str, Any]]:
    """The SSE chunks of a local completion: text as it is decoded, tool calls once complete."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": c.request_id,
            "object": "chat.completion.chunk",
            "created": c.created,
            "model": model_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    yield chunk({"role": "assistant", "content": ""})
    sent = 0  # characters of c.text already streamed as content
    holding = False  # a tool-call marker started: buffer the rest
    for event in wait_events(request, timeout):
        if event[0] == "text":
            c.text += event[1]
            if holding:
                continue
            marker = min((c.text.find(m) for m in TOOL_MARKERS if m in c.text), default=-1)
            if marker >= 0:
                holding = True
                safe = marker
            else:
                safe = len(c.text) - _partial_marker(c.text)
                if c.text.lstrip().startswith(("{", "[")):
                    safe = sent  # a Llama-3-style JSON call may be starting: hold it until the end
            if safe > sent:
                yield chunk({"content": c.text[sent:safe]})
                sent = safe
        elif event[0] == "done":
            c.finish, c.completion_tokens = event[1], event[2]
    _, calls, _ = c.parsed()
    if calls:
        for i, call in enumerate(calls):
            function = {"name": call["function"]["name"], "arguments": call["function"]["arguments"]}
            yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function", "function": function}]})
        yield chunk({}, "tool_calls")
    else:
        if len(c.text) > sent:  # what was held back: a partial marker, or text that looked like a JSON call
            yield chunk({"content": c.text[sent:]})
        yield chunk({}, "length" if c.finish == "length" else "stop")
    if include_usage:
        final = chunk({})
        final["choices"] = []
        final["usage"] = usage(c)
        yield final


def _partial_marker(text: str) -> int:
    """How many trailing characters could be the start of a tool-call marker (held back until known)."""
    for marker in TOOL_MARKERS:
        for size in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:size]):
                return size
    return 0


# ---- forwarding to remote engines -------------------------------------------------------------------------------


def upstream_model(entry: ModelEntry) -> str:
    """The model name to ask the engine for: for an Ollama entry with adapters, the model made from its Modelfile."""
    if entry.provider == "ollama" and entry.adapters:
        adapter = next(iter(entry.adapters.values()))
        manifest = Path(adapter.path).expanduser() / "clawtune-manifest.json"
        if manifest.is_file():
            return str(json.loads(manifest.read_text(encoding="utf-8")).get("name") or entry.id)
        return entry.id
    return str(entry.model)


def _api_key(entry: ModelEntry) -> str | None:
    import os

    key = entry.api_key
    if key and key.startswith("${") and key.endswith("}"):
        return os.environ.get(key[2:-1])
    return key


def forward(entry: ModelEntry, body: dict[str, Any]) -> Any:
    """Open the upstream request; returns the urllib response (the caller streams or reads it)."""
    payload = {**body, "model": upstream_model(entry)}
    payload.pop("metadata", None)
    headers = {"Content-Type": "application/json"}
    key = _api_key(entry)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        completions_url(entry.endpoint or ""), json.dumps(payload).encode(), headers, method="POST"
    )
    try:
        return urllib.request.urlopen(request, timeout=entry.timeout_s)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:500]
        if entry.provider == "ollama" and exc.code == 404 and entry.adapters:
            name = upstream_model(entry)
            raise APIError(
                404,
                f"Ollama has no model {name!r} (made from the exported Modelfile). Create it: cd into the export's "
                f"ollama folder and run `ollama create {name} -f Modelfile` (or -f Modelfile.merged).",
                code="model_not_found",
            ) from None
        raise APIError(
            exc.code, f"the {entry.provider} engine at {entry.endpoint} answered {exc.code}: {detail}", "upstream_error"
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        status = 504 if isinstance(reason, TimeoutError) or "timed out" in str(reason) else 502
        raise APIError(
            status, f"the {entry.provider} engine at {entry.endpoint} cannot be reached: {reason}", "upstream_error"
        ) from None


# ---- HTTP ---------------------------------------------------------------------------------------------------------


def make_handler(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    settings = gateway.settings

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "clawtune"
        busy = False

        def log_message(self, format: str, *args: Any) -> None:  # the SQLite log is the record
            pass

        # Keep-alive connections wait in readline between requests; on shutdown the idle ones are closed for
        # reading (see Server.close) and the busy ones finish their response, then close.
        def setup(self) -> None:
            super().setup()
            with gateway.connections_lock:
                gateway.connections.add(self)

        def finish(self) -> None:
            with gateway.connections_lock:
                gateway.connections.discard(self)
            super().finish()

        def parse_request(self) -> bool:
            self.busy = True
            return super().parse_request()

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            except (ConnectionResetError, BrokenPipeError):  # a client that went away: nothing to answer
                self.close_connection = True
            self.busy = False
            if gateway.closing:
                self.close_connection = True

        # -- plumbing --
        def _headers(self) -> dict[str, str]:
            return {k.lower(): v for k, v in self.headers.items()}

        def _send_json(self, status: int, body: Any, extra: dict[str, str] | None = None) -> None:
            data = json.dumps(body, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_text(self, status: int, text: str, ctype: str = "text/plain; version=0.0.4") -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, error: APIError, extra: dict[str, str] | None = None) -> None:
            self._send_json(error.status, error.body(), extra)

        def _auth(self, admin: bool = False) -> None:
            keys = settings.admin_keys if admin else settings.api_keys
            if admin and not keys:
                keys = settings.api_keys
            if not keys:
                return
            header = self.headers.get("Authorization", "")
            if not header.startswith("Bearer ") or header[7:] not in keys:
                raise APIError(401, "Incorrect API key provided", "invalid_request_error", code="invalid_api_key")

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            if length > settings.max_body_bytes:
                self.close_connection = True
                raise APIError(413, f"the request body is larger than {settings.max_body_bytes} bytes")
            raw = self.rfile.read(length) if length else b""
            try:
                return json.loads(raw or b"null")
            except json.JSONDecodeError as exc:
                raise APIError(400, f"the body is not valid JSON: {exc.msg} at character {exc.pos}") from None

        # -- routes --
        def do_GET(self) -> None:
            try:
                if self.path == "/health":
                    engine = gateway.engine
                    self._send_json(
                        200,
                        {
                            "status": "ok",
                            "models": sorted(gateway.entries),
                            "queued": engine.pending() if engine else 0,
                        },
                    )
                elif self.path == "/metrics":
                    engine = gateway.engine
                    self._send_text(200, gateway.metrics.render(engine.pending() if engine else 0, engine))
                elif self.path == "/v1/models":
                    self._auth()
                    owners: dict[str, str] = {m: gateway.entries[m].provider for m in sorted(gateway.entries)}
                    owners.update({e.id: "clawtune-experiment" for e in gateway.config.experiments})
                    data = [
                        {
                            "id": m,
                            "object": "model",
                            "created": gateway.created,
                            "owned_by": owner,
                            **card_fields(gateway.limits(m)),
                        }
                        for m, owner in owners.items()
                    ]
                    self._send_json(200, {"object": "list", "data": data})
                elif self.path == "/admin/adapters":
                    self._auth(admin=True)
                    engine = gateway.engine
                    adapters = [
                        {"id": a.name, "path": a.path, "weight": a.weight}
                        for a in (engine.adapters.values() if engine else [])
                    ]
                    self._send_json(200, {"adapters": adapters})
                else:
                    raise APIError(404, f"no route for GET {self.path}", code="not_found")
            except APIError as error:
                self._error(error)

        def do_DELETE(self) -> None:
            try:
                if not self.path.startswith("/admin/adapters/"):
                    raise APIError(404, f"no route for DELETE {self.path}", code="not_found")
                self._auth(admin=True)
                gateway.unload_adapter(self.path.rsplit("/", 1)[-1])
                self._send_json(200, {"deleted": self.path.rsplit("/", 1)[-1]})
            except APIError as error:
                self._error(error)

        def do_POST(self) -> None:
            request_id = f"chatcmpl-{uuid.uuid4().hex}"
            try:
                if self.path in ("/v1/chat/completions", "/chat/completions"):
                    self._auth()
                    self._chat(self._body(), request_id)
                elif self.path == "/v1/feedback":
                    self._auth()
                    self._feedback(self._body())
                elif self.path == "/admin/adapters":
                    self._auth(admin=True)
                    body = self._body()
                    if not isinstance(body, dict) or not body.get("name") or not body.get("path"):
                        raise APIError(400, "name and path are required", param="path")
                    self._send_json(
                        200, gateway.load_adapter(str(body["name"]), str(body["path"]), float(body.get("weight", 1.0)))
                    )
                else:
                    raise APIError(404, f"no route for POST {self.path}", code="not_found")
            except APIError as error:
                self._error(error, {"X-Request-Id": request_id})

        def _feedback(self, body: Any) -> None:
            if not isinstance(body, dict):
                raise APIError(400, "the body must be a JSON object")
            request_id, rating = body.get("request_id"), body.get("rating")
            if rating not in ("positive", "negative"):
                raise APIError(400, "rating must be positive or negative", param="rating")
            if not isinstance(request_id, str) or not gateway.log.has_request(request_id):
                raise APIError(404, f"no request with id {request_id!r} in the log", param="request_id")
            comment = body.get("comment")
            gateway.log.feedback(request_id, rating, comment if isinstance(comment, str) else None)
            self._send_json(200, {"request_id": request_id, "rating": rating, "recorded": True})

        def _commit(self, record: dict[str, Any]) -> None:
            """Log the request now, before its last bytes go out: a client that has its answer finds it in the log
            (feedback right after an answer must not miss it)."""
            if not record.get("_logged"):
                latency = time.monotonic() - self._started
                record["latency_ms"] = round(latency * 1000, 2)
                gateway.log.request(record)
                gateway.metrics.observe(
                    str(record.get("model") or record["request_json"].get("model")),
                    int(record.get("status") or 200),
                    latency,
                    int(record.get("prompt_tokens") or 0),
                    int(record.get("completion_tokens") or 0),
                )
                record["_logged"] = True

        def _chat(self, body: Any, request_id: str) -> None:
            self._started = time.monotonic()
            record: dict[str, Any] = {"id": request_id, "created": time.time(), "request_json": body, "status": 200}
            if not isinstance(body, dict):
                raise APIError(400, "the request body must be a JSON object")
            acquired = gateway.slots.acquire(blocking=False)
            try:
                if not acquired:
                    with gateway.metrics.lock:
                        gateway.metrics.rejected += 1
                    raise APIError(
                        429,
                        "too many requests in flight on this server; retry shortly",
                        "rate_limit_error",
                        code="rate_limit_exceeded",
                    )
                with gateway.metrics.lock:
                    gateway.metrics.in_flight += 1
                route = gateway.route(body, self._headers())
                record.update(
                    model=route.entry.id,
                    requested_model=route.requested,
                    provider=route.entry.provider,
                    experiment=route.experiment,
                    arm=route.arm,
                    session=route.session,
                    user=route.user,
                    stream=int(bool(body.get("stream"))),
                )
                extra = {"X-Request-Id": request_id, "X-Clawtune-Model": route.entry.id}
                if route.arm:
                    extra["X-Clawtune-Arm"] = route.arm
                    extra["X-Clawtune-Experiment"] = str(route.experiment)
                if route.entry.provider == "clawtune":
                    self._local(route, body, request_id, record, extra)
                else:
                    self._remote(route, body, record, extra)
            except APIError as error:
                record.update(status=error.status, error=error.message)
                self._commit(record)  # logged before the client can see the error
                self._error(error, {"X-Request-Id": request_id})
            except (BrokenPipeError, ConnectionResetError):
                record.update(status=499, error="the client disconnected")
            finally:
                self._commit(record)  # logged and counted (if nothing did it before the answer went out)
                if acquired:
                    with gateway.metrics.lock:
                        gateway.metrics.in_flight -= 1
                    gateway.slots.release()

        def _local(
            self, route: Route, body: dict[str, Any], request_id: str, record: dict[str, Any], extra: dict[str, str]
        ) -> tuple[int, int]:
            completion, request = local_completion(gateway, route, body, request_id)
            if completion.adapter:
                extra["X-Clawtune-Adapter"] = completion.adapter
            record.update(
                adapter=completion.adapter,
                prompt_tokens=completion.prompt_tokens,
                prompt_tokens_original=completion.prompt_tokens_original,
                **budget_record(completion.budget),
            )
            assert gateway.engine is not None
            gateway.engine.submit(request)
            model_name = route.requested if route.experiment else route.entry.id
            try:
                if body.get("stream"):
                    include = bool((body.get("stream_options") or {}).get("include_usage"))
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-cache")
                    self.send_header("Transfer-Encoding", "chunked")
                    for key, value in extra.items():
                        self.send_header(key, value)
                    self.end_headers()
                    try:
                        for chunk in stream_chunks(completion, request, model_name, include, settings.timeout_s):
                            self._sse(json.dumps(chunk, ensure_ascii=False))
                    except APIError as error:
                        self._sse(json.dumps(error.body()))
                        record.update(status=error.status, error=error.message)
                    self._finish_local(record, completion, completion_body(completion, model_name))
                    self._sse("[DONE]")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    for event in wait_events(request, settings.timeout_s):
                        if event[0] == "text":
                            completion.text += event[1]
                        else:
                            completion.finish, completion.completion_tokens = event[1], event[2]
                    response = completion_body(completion, model_name)
                    self._finish_local(record, completion, response)
                    self._send_json(200, response, extra)
            except (BrokenPipeError, ConnectionResetError):
                request.cancelled.set()
                raise
            return completion.prompt_tokens, completion.completion_tokens

        def _finish_local(self, record: dict[str, Any], completion: Completion, response: dict[str, Any]) -> None:
            _, calls, invalid = completion.parsed()
            record.update(
                completion_tokens=completion.completion_tokens,
                finish_reason=response["choices"][0]["finish_reason"],
                tool_calls=len(calls),
                tool_calls_valid=int(invalid == 0) if calls or invalid else None,
                response_json=response,
            )
            self._commit(record)

        def _sse(self, data: str) -> None:
            payload = f"data: {data}\n\n".encode()
            self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            self.wfile.flush()

        def _remote(
            self, route: Route, body: dict[str, Any], record: dict[str, Any], extra: dict[str, str]
        ) -> tuple[int, int]:
            checked = _validate(body)
            if checked["max_tokens"] is not None:  # without one, the engine's own default applies
                field = checked["max_tokens_field"]
                # The prompt is the engine's to count: the server's and the engine's output limits apply here.
                allowed = budget(checked["max_tokens"], None, gateway.limits(route.entry.id), settings, field)
                record.update(budget_record(allowed))
                if allowed.clamp:
                    body = {**body, field: allowed.max_tokens}
            upstream = forward(route.entry, body)
            with upstream:
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    for key, value in extra.items():
                        self.send_header(key, value)
                    self.end_headers()
                    usage_seen: dict[str, Any] = {}
                    text: list[str] = []
                    calls: dict[int, dict[str, Any]] = {}
                    finish = None
                    for raw in upstream:
                        line = raw.decode("utf-8", "replace").strip()
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        if data:
                            try:
                                chunk = json.loads(data)
                            except json.JSONDecodeError:
                                chunk = {}
                            usage_seen = chunk.get("usage") or usage_seen
                            for choice in chunk.get("choices") or []:
                                delta = choice.get("delta") or {}
                                text.append(delta.get("content") or "")
                                for call in delta.get("tool_calls") or []:
                                    slot = calls.setdefault(call.get("index", 0), {"name": "", "arguments": ""})
                                    function = call.get("function") or {}
                                    slot["name"] += function.get("name") or ""
                                    slot["arguments"] += function.get("arguments") or ""
                                finish = choice.get("finish_reason") or finish
                        self._sse(data)
                    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
                    if calls:
                        message["tool_calls"] = [{"type": "function", "function": calls[i]} for i in sorted(calls)]
                    response: dict[str, Any] = {
                        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                        "usage": usage_seen,
                    }
                    self._finish_remote(record, response)
                    self._sse("[DONE]")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    response = json.loads(upstream.read())
                    self._finish_remote(record, response)
                    self._send_json(200, response, extra)
            used = response.get("usage") or {}
            return int(used.get("prompt_tokens") or 0), int(used.get("completion_tokens") or 0)

        def _finish_remote(self, record: dict[str, Any], response: dict[str, Any]) -> None:
            used = response.get("usage") or {}
            choice = (response.get("choices") or [{}])[0] or {}
            record.update(
                prompt_tokens=used.get("prompt_tokens"),
                completion_tokens=used.get("completion_tokens"),
                response_json=response,
                finish_reason=choice.get("finish_reason"),
                tool_calls=len((choice.get("message") or {}).get("tool_calls") or []),
            )
            self._commit(record)

    return Handler


def bind(host: str, port: int) -> ThreadingHTTPServer:
    """Claim the address (raises OSError if it is taken), before any model is loaded: `serve` then reports a port in
    use at once, not after minutes of loading. `Server(gateway, httpd=...)` gives it its handler."""
    return ThreadingHTTPServer((host, port), BaseHTTPRequestHandler)


class Server:
    """The gateway behind a threading HTTP server; `close()` finishes in-flight requests, then flushes the log."""

    def __init__(
        self,
        gateway: Gateway,
        host: str | None = None,
        port: int | None = None,
        httpd: ThreadingHTTPServer | None = None,
    ) -> None:
        self.gateway = gateway
        host = host or gateway.settings.host
        port = gateway.settings.port if port is None else port
        if httpd is None:
            httpd = ThreadingHTTPServer((host, port), make_handler(gateway))
        else:
            httpd.RequestHandlerClass = make_handler(gateway)
        self.httpd = httpd
        self.httpd.daemon_threads = False
        self.httpd.block_on_close = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Server:
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="clawtune-http", daemon=True)
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        import socket

        self.gateway.closing = True
        self.httpd.shutdown()  # no new connections
        with self.gateway.connections_lock:
            idle = [c for c in self.gateway.connections if not c.busy]
        for handler in idle:
            try:
                handler.connection.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        self.httpd.server_close()  # joins the request threads (block_on_close): requests in flight finish
        if self.gateway.engine is not None:
            self.gateway.engine.close()
        self.gateway.log.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
