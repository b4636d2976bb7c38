"""The gateway's state and decisions, apart from HTTP: models, routing, experiments, the system-prompt policy, keys,
the concurrency limit, run-time adapters, and the log and metrics every request goes to.

Routing: `model` is an id from the config; `"auto"` picks the model whose tags best match the request's tags
(`X-Clawtune-Tags` header or `metadata.tags`), else `default_model`; an experiment id splits traffic between arms by
weight, sticky per session or user (a hash, so a conversation never switches model midway).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clawtune.generation import KEEP, SystemPromptPolicy
from clawtune.openai_http import ERRORS, ModelLimits, limits_of, list_models
from clawtune.serve.config import ModelEntry, ServeConfig, resolve_path
from clawtune.serve.engine import Engine, EngineError
from clawtune.serve.experiments import Conversations, Experiment, Experiments, unit_key
from clawtune.serve.limits import combined, forwarded_limits, own_limits
from clawtune.serve.log import RequestLog
from clawtune.serve.metrics import Metrics
from clawtune.serve.protocol import APIError, ChatCompletionRequest
from clawtune.serve.upstream import Upstream, api_key, upstream_model

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# How long a forwarded engine's `/v1/models` may take, and how long to wait before asking an unreachable one again.
UPSTREAM_MODELS_TIMEOUT_S = 5.0
UPSTREAM_RETRY_S = 60.0


@dataclass
class Route:
    entry: ModelEntry
    requested: str
    experiment: str | None = None
    arm: str | None = None
    session: str | None = None
    user: str | None = None
    unit: str | None = None  # the key the arm was drawn by (the A/B test's unit)


def choose_arm(experiment: str, key: str, arms: dict[str, float]) -> str:
    """Sticky weighted assignment: the same (experiment, key) always gets the same arm."""
    digest = hashlib.sha256(f"{experiment}\0{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(arms.values())
    for arm, weight in arms.items():
        if point < weight:
            return arm
        point -= weight
    return next(reversed(arms))


def key_matches(given: str, keys: list[str]) -> bool:
    """Whether `given` is one of `keys`, in time that does not depend on how much of a key matched (every key is
    compared, each with hmac.compare_digest)."""
    found = False
    supplied = given.encode()
    for key in keys:
        found |= hmac.compare_digest(supplied, key.encode())
    return found


class Gateway:
    """Everything a request needs: config, engine, routing, policies, log, metrics, limits."""

    def __init__(self, config: ServeConfig, engine: Engine | None = None, data_dir: Path | None = None) -> None:
        self.config = config
        self.settings = config.server
        self.base_dir = Path(config.source).parent if config.source else Path()
        folder = data_dir or resolve_path(self.settings.data_dir, self.base_dir)
        # The log first: a log that cannot be opened fails the start before a model is loaded.
        self.log = RequestLog(folder / "requests.sqlite", self.settings.log_max_rows, scrub=self.settings.log_scrub)
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
        # the log's database is the truth for experiments: models.yaml's are written there, the admin API's live there
        source = Path(config.source) if config.source else None
        self.lab = Experiments(self.log.path, config.experiments, self.entries, source)
        self.conversations = Conversations()
        self.policies: dict[str, SystemPromptPolicy] = {}
        if self.engine is not None:
            for entry in config.models:
                if entry.provider == "clawtune":
                    self._load_entry(entry)
        self.metrics = Metrics(self.known, self._live)
        self.in_flight = 0
        self.created = int(time.time())
        self.closing = False
        self.bound_host: str | None = None
        self._upstream: Upstream | None = None
        # A forwarded engine's limits as its /v1/models states them: asked once; an unreachable one again after a while.
        self.upstream_cards: dict[str, ModelLimits] = {}
        self.upstream_failed: dict[str, float] = {}
        # The guardrails' watchdog over running experiments (start()/stop()), set by `clawtune serve`: it is
        # `clawtune.loop.canary.Watchdog`, whose statistics live in a layer above this one.
        self.watchdog: Any = None

    @property
    def experiments(self) -> dict[str, Experiment]:
        """The experiments that are model ids of their own (virtual models), running or stopped."""
        return self.lab.virtual

    @property
    def upstream(self) -> Upstream:
        """The pooled client for remote engines, made on first use (inside the server's event loop)."""
        if self._upstream is None:
            self._upstream = Upstream()
        return self._upstream

    async def aclose(self) -> None:
        """What must be closed inside the event loop (the remote engines' connection pool)."""
        if self._upstream is not None:
            await self._upstream.close()
            self._upstream = None

    # ---- state ------------------------------------------------------------------------------------------------------

    def known(self, model: str) -> bool:
        """An id that exists now: configured, loaded at run time, or an experiment (what metrics may label)."""
        return model in self.entries or model in self.experiments

    def _live(self) -> dict[str, Any]:
        status = self.log.status()
        values: dict[str, Any] = {
            "queued": self.engine.pending() if self.engine is not None else 0,
            "log_ok": int(status["ok"]),
            "log_pending": status["pending"],
            "log_dropped": status.get("dropped", 0),
        }
        if self.engine is not None and hasattr(self.engine, "batches"):
            values["batches"] = self.engine.batches
            values["batched"] = self.engine.batched_requests
        return values

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body): 503 and "degraded" when the log cannot write (the answers still flow)."""
        log = self.log.status()
        ok = log["ok"]
        body = {
            "status": "ok" if ok else "degraded",
            "models": sorted(self.entries),
            "queued": self.engine.pending() if self.engine is not None else 0,
            "in_flight": self.in_flight,
            "log": log,
        }
        if not ok:
            body["reasons"] = [f"the request log cannot be written: {log.get('error')}"]
        return (200 if ok else 503), body

    def allowed_hosts(self) -> list[str]:
        """The Host header allow-list: the config's, else the loopback names and the address the server is bound to."""
        if self.settings.allowed_hosts:
            return list(self.settings.allowed_hosts)
        hosts = list(LOOPBACK_NAMES)
        bound = self.bound_host or self.settings.host
        try:
            unspecified = ipaddress.ip_address(bound).is_unspecified
        except ValueError:
            unspecified = False
        if bound and not unspecified and bound not in hosts:
            hosts.append(bound)
        return hosts

    # ---- keys and limits --------------------------------------------------------------------------------------------

    def authorized(self, authorization: str | None, admin: bool = False) -> bool:
        """API keys for the API (none configured: open); admin keys only for admin (none configured: admin is off)."""
        keys = self.settings.admin_keys if admin else self.settings.api_keys
        if not keys:
            return not admin
        if not authorization or not authorization.startswith("Bearer "):
            return False
        return key_matches(authorization[7:].strip(), keys)

    def acquire(self) -> bool:
        """A slot for one request (called on the event loop, so a plain counter is enough); False means 429."""
        if self.in_flight >= self.settings.max_concurrency:
            self.metrics.rejected.inc()
            return False
        self.in_flight += 1
        self.metrics.in_flight.inc()
        return True

    def release(self) -> None:
        self.in_flight -= 1
        self.metrics.in_flight.dec()

    # ---- models -----------------------------------------------------------------------------------------------------

    def _load_entry(self, entry: ModelEntry) -> None:
        """An entry's adapters (several are served together as one model) and its system-prompt policy."""
        assert self.engine is not None
        sources = [(str(resolve_path(a.path, self.base_dir)), a.weight) for a in entry.adapters.values()]
        if sources:
            self.engine.add_adapter(entry.id, sources[0][0], sources[0][1], sources[1:])
        self.policies[entry.id] = self._policy(entry)

    def _policy(self, entry: ModelEntry) -> SystemPromptPolicy:
        """The config's choice laid over what the adapter's training data did (`clawtune.generation`)."""
        trained = None
        if self.engine is not None and entry.id in self.engine.adapters:
            from clawtune.data.provenance import trained_policy

            trained = trained_policy(self.engine.adapters[entry.id].manifest)
        return (trained or KEEP).overridden(entry.system_prompt, entry.system_prompt_text)

    def adapter_of(self, entry: ModelEntry) -> str | None:
        return entry.id if entry.provider == "clawtune" and entry.adapters else None

    def adapters(self) -> list[dict[str, Any]]:
        engine = self.engine
        return [
            {"id": a.name, "path": a.path, "weight": a.weight} for a in (engine.adapters.values() if engine else [])
        ]

    def load_adapter(self, name: str, path: str, weight: float) -> dict[str, Any]:
        """Admin: load an adapter at run time as a new model id, only from a folder the config allows (blocking: run
        it off the event loop)."""
        if self.engine is None:
            raise APIError(400, "no clawtune provider in this server's config: nothing to load adapters into")
        allowed = [resolve_path(d, self.base_dir).resolve() for d in self.settings.adapter_dirs]
        try:
            target = resolve_path(path, self.base_dir).resolve()
        except (OSError, ValueError) as exc:
            raise APIError(400, f"{path}: not a usable path: {exc}", param="path") from None
        if not any(target.is_relative_to(d) for d in allowed):
            raise APIError(403, f"{path} is outside the folders server.adapter_dirs allows", "permission_error", "path")
        if self.known(name):
            raise APIError(409, f"a model or experiment named {name!r} already exists", param="name")
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
        using = [e.id for e in self.lab.all.values() if e.routing and name in e.arms]
        if using:
            raise APIError(409, f"{name!r} is an arm of the running experiment {using[0]!r}: stop it first")
        self.engine.remove_adapter(name)
        del self.entries[name]
        self.policies.pop(name, None)

    # ---- routing ----------------------------------------------------------------------------------------------------

    # ---- limits ----------------------------------------------------------------------------------------------------

    async def limits(self, model_id: str) -> ModelLimits:
        """A model's (or an experiment's: every arm's) context window and output limit, as `/v1/models` publishes."""
        experiment = self.lab.for_request(model_id)
        if experiment is not None and experiment.routing:  # whichever arm answers, it fits every arm's limits
            return combined([await self._model_limits(arm) for arm in experiment.arms])
        if model_id in self.experiments:
            return await self._model_limits(next(iter(self.experiments[model_id].arms)))
        return await self._model_limits(model_id)

    async def _model_limits(self, model_id: str) -> ModelLimits:
        entry = self.entries[model_id]
        if entry.provider == "clawtune":
            assert self.engine is not None
            return own_limits(self.engine.max_context, self.settings)
        return forwarded_limits(entry, await self.upstream_limits(entry), self.settings)

    async def upstream_limits(self, entry: ModelEntry) -> ModelLimits | None:
        """What the engine's own `/v1/models` says of the model (vLLM: `max_model_len`); None if it cannot be asked."""
        if entry.id in self.upstream_cards:
            return self.upstream_cards[entry.id]
        if time.monotonic() - self.upstream_failed.get(entry.id, -UPSTREAM_RETRY_S) < UPSTREAM_RETRY_S:
            return None
        timeout = min(entry.timeout_s, UPSTREAM_MODELS_TIMEOUT_S)
        try:  # rare (once per model): the standard library's client on a worker thread, not the request pool
            cards = await asyncio.to_thread(list_models, entry.endpoint or "", api_key(entry), timeout)
        except ERRORS:
            self.upstream_failed[entry.id] = time.monotonic()
            return None
        name = upstream_model(entry)
        card = next((c for c in cards if c.get("id") == name), None)
        self.upstream_cards[entry.id] = limits_of(card) if card else ModelLimits()
        return self.upstream_cards[entry.id]

    # ---- routing ---------------------------------------------------------------------------------------------------

    def route(self, request: ChatCompletionRequest, headers: Mapping[str, str]) -> Route:
        requested = request.model
        metadata: dict[str, Any] = dict(request.metadata or {})
        session = headers.get("x-clawtune-session") or metadata.get("session_id") or metadata.get("session")
        user = request.user or metadata.get("user_id") or headers.get("x-clawtune-user")
        session = session if isinstance(session, str) else None
        user = user if isinstance(user, str) else None
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
        experiment = self.lab.for_request(requested)
        if experiment is not None:
            if not experiment.routing:  # a stopped virtual model answers with its first arm (the incumbent)
                return Route(self.entries[next(iter(experiment.arms))], requested, session=session, user=user)
            extra = request.model_extra or {}
            explicit = session or user or extra.get("prompt_cache_key")
            derived = None if explicit else self.conversations.key(request.messages)
            key, source = unit_key(experiment, session, user, extra, derived)
            key = key or f"random-{uuid.uuid4().hex}"
            arm = choose_arm(experiment.id, key, experiment.arms)
            # the log's unit: the key itself, unless it is a user id (personal data) or too long to be one
            unit = (
                key
                if source != "user" and len(key) <= 200
                else f"{source}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"
            )
            if source != "random":  # a canary's session stays on the arm it began on when B's share rises
                arm = self.lab.arm_for(experiment, unit, arm)
            return Route(self.entries[arm], requested, experiment.id, arm, session, user, unit=unit)
        entry = self.entries.get(requested)
        if entry is None:
            served = [*self.entries, *self.experiments]
            raise APIError(
                404,
                f"The model `{requested}` does not exist; this server has: {', '.join(served)} (and auto)",
                param="model",
                code="model_not_found",
            )
        return Route(entry, requested, session=session, user=user)

    def apply_policy(self, entry: ModelEntry, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages the model sees under its system-prompt policy (keep, drop, or replace with the short one)."""
        policy = self.policies.get(entry.id) or KEEP.overridden(entry.system_prompt, entry.system_prompt_text)
        return policy.apply(messages)

    def close(self) -> None:
        """Stop the engine, then flush and close the log (after the HTTP server has drained)."""
        if self.engine is not None:
            self.engine.close()
        self.log.close()
