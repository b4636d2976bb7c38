"""A/B experiments in the gateway: their state (the log's database is the truth while the server runs), which
experiment a request falls under, the key its arm is drawn by, and each unit's figures for the A/B test.

Two kinds, one table: an experiment with `model` set splits the requests for that model id (an A/B test of an
incumbent: the agent keeps asking for the id it was registered with); one without is a model id of its own (a virtual
model, as `experiments:` in models.yaml has always meant). `experiments:` in models.yaml are written to the database at
start; those created through the admin API live there only. Both survive a restart: the arm is a hash of the
experiment and the unit key, so the same conversation lands on the same arm before and after.

The unit key (`unit_key`): the client's session (`X-Clawtune-Session`, `metadata.session_id`) or user, else OpenAI's
`prompt_cache_key` (OpenClaw sends its session id there when the model's `compat.supportsPromptCacheKey` is true, which
`clawtune openclaw register` sets), else a key derived from the conversation itself (`Conversations`).
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawtune.serve.config import Experiment as ExperimentConfig
from clawtune.serve.log import ExperimentStore, experiment_requests
from clawtune.serve.protocol import APIError

EXPERIMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

# OpenClaw's envelope around the current user turn: "[Wed 2026-12-02 14:50 UTC] text" (the history keeps it raw, so
# the same turn reads differently once it is history), and its internal context blocks, which are not the user's.
TIMESTAMP_PREFIX = re.compile(
    r"^\s*\[[A-Z][a-z]{2} \d{4}-\d{2}-\d{2} \d{1,2}:\d{2}(?::\d{2})?(?: [A-Za-z0-9+:-]+)?\]\s*"
)
INTERNAL_BLOCK = re.compile(r"<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>.*?(<<<END_OPENCLAW_INTERNAL_CONTEXT>>>|$)", re.S)
# OpenClaw's first user turn ends with a runtime line that names its session: "Runtime: agent=main | session=... |
# sessionId=<uuid> | ...".
RUNTIME_SESSION = re.compile(r"\bRuntime: [^\n]*?\bsessionId=([A-Za-z0-9._:-]{8,128})")
# OpenClaw's prompt_cache_key is "<sessionId>:<boundary count>", and the count grows when the session is compacted.
BOUNDARY_SUFFIX = re.compile(r"^(.{8,}):\d+$")
# Compaction's summary message: a stand-in for the turns it replaced, never the start of a conversation.
SUMMARY_MARKERS = ("<summary>", "The conversation history before this point was compacted")


@dataclass
class Experiment:
    """One experiment's state (a row of the experiments table)."""

    id: str
    arms: dict[str, float]
    model: str | None = None
    sticky: str = "session"
    status: str = "running"
    source: str = "admin"
    created: float = field(default_factory=time.time)
    stopped: float | None = None
    settings: dict[str, Any] | None = None
    result: dict[str, Any] | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    def share(self, arm: str) -> float:
        return self.arms[arm] / sum(self.arms.values())

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model or self.id,
            "arms": self.arms,
            "sticky": self.sticky,
            "status": self.status,
            "source": self.source,
            "created": self.created,
            "stopped": self.stopped,
            "settings": self.settings,
            "result": self.result,
        }

    def public(self) -> dict[str, Any]:
        """The record as the admin API answers it."""
        return {**self.record(), "model": self.model, "splits": self.model or self.id, "virtual": self.model is None}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Experiment:
        model = row["model"] if row["model"] != row["id"] else None
        fields = {k: row[k] for k in ("sticky", "status", "source", "created", "stopped", "settings", "result")}
        return cls(id=row["id"], arms=dict(row["arms"] or {}), model=model, **fields)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def turn_text(content: Any) -> str:
    """A user turn as the user wrote it: OpenClaw's timestamp prefix and internal context removed, whitespace folded."""
    text = INTERNAL_BLOCK.sub("", _text(content))
    text = TIMESTAMP_PREFIX.sub("", text)
    return " ".join(text.split())


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class Conversations:
    """Derives a stable key for a conversation that names none, from its own messages.

    OpenClaw 2026.9.6 ends a session's first user turn with a runtime line naming its session id: while that turn is in
    the history, the session id is the key. Otherwise the key is the hash of the conversation's first user turn as the
    user wrote it (`turn_text`: OpenClaw prefixes each turn with a timestamp, which is removed). Compaction drops early turns and
    puts a summary in their place, so the first turn changes: every user turn seen is remembered with its conversation's
    key (a bounded LRU), and a request whose history holds any remembered turn keeps that key. What stays imperfect:
    two conversations that open with the same words share a key (and so an arm), and a conversation compacted after a
    restart, or after its turns have left the memory, gets a new key.
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, messages: list[Any]) -> str | None:
        turns = []
        named = None
        for message in messages:
            role = getattr(message, "role", None) if not isinstance(message, Mapping) else message.get("role")
            content = getattr(message, "content", None) if not isinstance(message, Mapping) else message.get("content")
            if role != "user":
                continue
            text = turn_text(content)
            if named is None and (found := RUNTIME_SESSION.search(text)):
                named = "openclaw-" + found.group(1)
            if text and not any(marker in text for marker in SUMMARY_MARKERS):
                turns.append(_digest(text))
        if not turns:
            return None
        with self._lock:
            # OpenClaw's own session id while its runtime line is there; else the earliest remembered turn names the
            # conversation (after a compaction); a new conversation is named by its first turn
            remembered = next((self._seen[t] for t in turns if t in self._seen), None)
            key = named or remembered or "conv-" + turns[0]
            for turn in turns:
                self._seen[turn] = key
                self._seen.move_to_end(turn)
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
        return key


def unit_key(
    experiment: Experiment, session: str | None, user: str | None, extra: Mapping[str, Any], derived: str | None
) -> tuple[str | None, str]:
    """(the key the arm is drawn by, where it came from)."""
    cache_key = extra.get("prompt_cache_key")
    cache_key = cache_key if isinstance(cache_key, str) and cache_key else None
    if cache_key and (bare := BOUNDARY_SUFFIX.match(cache_key)):
        cache_key = bare.group(1)  # the same session before and after a compaction
    order = [("user", user), ("session", session)] if experiment.sticky == "user" else [("session", session)]
    order += [("user", user), ("prompt_cache_key", cache_key), ("conversation", derived)]
    for source, value in order:
        if value:
            return value, source
    return None, "random"


def validate_arms(arms: Any, known: Mapping[str, Any]) -> dict[str, float]:
    if not isinstance(arms, dict) or not 1 <= len(arms) <= 16:
        raise APIError(400, 'arms: give 1 to 16 model ids with a weight each, e.g. {"a": 50, "b": 50}', param="arms")
    out: dict[str, float] = {}
    for name, weight in arms.items():
        if name not in known:
            raise APIError(400, f"arms.{name}: no model with this id on this server", param="arms")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
            raise APIError(400, f"arms.{name}: a weight must be a positive number", param="arms")
        out[name] = float(weight)
    return out


class Experiments:
    """The gateway's experiments, in memory for routing and in the log's database as the truth."""

    def __init__(self, log_path: Path, configured: list[ExperimentConfig], models: Mapping[str, Any]) -> None:
        self.log_path = log_path
        self.store = ExperimentStore(log_path)
        self.models = models
        self.all: dict[str, Experiment] = {}
        self._lock = threading.Lock()
        for row in self.store.all():
            self.all[row["id"]] = Experiment.from_row(row)
        for config in configured:
            self._declare(config)
        self._index()

    def _declare(self, config: ExperimentConfig) -> None:
        """A models.yaml experiment: written at start; one already stored keeps its state and history, and takes the
        file's arms (the file is the declaration)."""
        stored = self.all.get(config.id)
        if stored is not None and stored.arms == config.arms and stored.model == config.model:
            return
        experiment = Experiment(config.id, dict(config.arms), config.model, config.sticky, source="config")
        if stored is not None:
            experiment.status, experiment.created = stored.status, stored.created
            experiment.settings, experiment.result, experiment.stopped = stored.settings, stored.result, stored.stopped
        if experiment.running and experiment.model and self.splitting(experiment.model, experiment.id):
            experiment.status, experiment.stopped = "stopped", time.time()
        self.store.save(experiment.record())
        self.all[config.id] = experiment

    def _index(self) -> None:
        self.virtual = {e.id: e for e in self.all.values() if e.model is None}
        self.splits = {e.model: e for e in self.all.values() if e.model is not None and e.running}

    def splitting(self, model: str, other_than: str | None = None) -> Experiment | None:
        found = next((e for e in self.all.values() if e.running and e.model == model and e.id != other_than), None)
        return found

    def for_request(self, requested: str) -> Experiment | None:
        """The experiment a request for this id falls under: one splitting it, or a virtual model of that name."""
        return self.splits.get(requested) or self.virtual.get(requested)

    # -- the admin API (blocking: called off the event loop) --
    def create(self, body: Any) -> Experiment:
        if not isinstance(body, dict):
            raise APIError(400, "the body must be a JSON object")
        allowed = {"id", "model", "arms", "sticky", "settings"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise APIError(
                400, f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})", param=unknown[0]
            )
        arms = validate_arms(body.get("arms"), self.models)
        model = body.get("model")
        if model is not None and (not isinstance(model, str) or model not in self.models):
            raise APIError(400, f"model: no model with id {model!r} on this server", param="model")
        sticky = body.get("sticky", "session")
        if sticky not in ("session", "user"):
            raise APIError(400, "sticky: session or user", param="sticky")
        settings = body.get("settings")
        if settings is not None and not isinstance(settings, dict):
            raise APIError(400, "settings: a JSON object", param="settings")
        experiment_id = body.get("id") or f"ab-{(model or next(iter(arms)))[:60]}-{time.strftime('%Y%m%d-%H%M%S')}"
        if not isinstance(experiment_id, str) or not EXPERIMENT_ID.fullmatch(experiment_id):
            raise APIError(400, "id: letters, digits, '.', '_', '-' (up to 128)", param="id")
        with self._lock:
            if experiment_id in self.all or experiment_id in self.models:
                raise APIError(409, f"an experiment or model named {experiment_id!r} already exists", param="id")
            if model is None and experiment_id in self.models:
                raise APIError(409, f"{experiment_id!r} is a model id", param="id")
            if model is not None:
                other = self.splitting(model)
                if other is not None:
                    raise APIError(
                        409, f"experiment {other.id!r} already splits {model!r}: stop it first", param="model"
                    )
            experiment = Experiment(experiment_id, arms, model, sticky, settings=settings)
            self.store.save(experiment.record())
            self.all[experiment_id] = experiment
            self._index()
        return experiment

    def get(self, experiment_id: str) -> Experiment:
        experiment = self.all.get(experiment_id)
        if experiment is None:
            raise APIError(404, f"no experiment named {experiment_id!r}", code="experiment_not_found")
        return experiment

    def stop(self, experiment_id: str, body: Any) -> Experiment:
        """Stop an experiment (the requests for its model go back to the model itself); a result may be attached. Safe
        to call twice: a stopped experiment keeps its first stop time, and takes a newer result."""
        if body is not None and not isinstance(body, dict):
            raise APIError(400, "the body must be a JSON object")
        result = (body or {}).get("result")
        if result is not None and not isinstance(result, dict):
            raise APIError(400, "result: a JSON object", param="result")
        with self._lock:
            experiment = self.get(experiment_id)
            if experiment.running:
                experiment.status, experiment.stopped = "stopped", time.time()
            if result is not None:
                experiment.result = result
            self.store.save(experiment.record())
            self._index()
        return experiment

    def add_refresh(self, experiment_id: str, body: Any) -> dict[str, Any]:
        self.get(experiment_id)
        figures = (body or {}).get("figures") if isinstance(body, dict) else None
        if not isinstance(figures, dict):
            raise APIError(400, "figures: a JSON object (the refresh's figures)", param="figures")
        created = self.store.add_refresh(experiment_id, figures)
        return {"experiment": experiment_id, "created": created}

    def refreshes(self, experiment_id: str, limit: int | None) -> list[dict[str, Any]]:
        self.get(experiment_id)
        return self.store.refreshes(experiment_id, limit)

    def units(self, experiment_id: str) -> list[dict[str, Any]]:
        """Every unit's figures so far, in the order units first appeared (see `aggregate_units`)."""
        experiment = self.get(experiment_id)
        return aggregate_units(experiment_requests(self.log_path, experiment_id), experiment)


def aggregate_units(requests: list[dict[str, Any]], experiment: Experiment) -> list[dict[str, Any]]:
    """Per unit (the key its arm was drawn by; a request drawn at random is a unit of its own): its arm, how many
    requests, errors (status >= 400), latency, tokens, tool calls and invalid ones, ratings. A unit is on the arm of its
    first request (a unit split across arms, when the experiment's arms changed, keeps its first)."""
    units: dict[str, dict[str, Any]] = {}
    for r in requests:
        key = r.get("unit") or f"request:{r['id']}"
        unit = units.get(key)
        if unit is None:
            arm = r.get("arm")
            unit = units[key] = {
                "unit": key,
                "arm": arm,
                "propensity": experiment.share(arm) if arm in experiment.arms else None,
                "first": r["created"],
                "last": r["created"],
                "requests": 0,
                "errors": 0,
                "latency_ms": [],
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "tool_calls": 0,
                "tool_calls_invalid": 0,  # answers with an invalid tool call
                "graded": 0,
                "correct": 0,
                "positive": 0,
                "negative": 0,
            }
        if r.get("arm") != unit["arm"]:
            continue
        unit["last"] = r["created"]
        unit["requests"] += 1
        status = r.get("status") or 0
        unit["errors"] += int(status >= 400)
        if status < 400 and r.get("latency_ms") is not None:
            unit["latency_ms"].append(r["latency_ms"])
        unit["prompt_tokens"] += r.get("prompt_tokens") or 0
        unit["completion_tokens"] += r.get("completion_tokens") or 0
        # graded: an answer whose tool calls were checked against the offered schemas (tool_calls_valid is 1 or 0),
        # or an error (which answers nothing right); correct: checked and valid
        valid = r.get("tool_calls_valid")
        unit["tool_calls"] += r.get("tool_calls") or 0
        if status >= 400:
            unit["graded"] += 1
        elif valid is not None:
            unit["graded"] += 1
            unit["correct"] += int(valid == 1)
            unit["tool_calls_invalid"] += int(valid == 0)
        ratings = r.get("ratings") or []
        if ratings:
            # the request's last rating counts (a user may change their mind)
            unit["positive" if ratings[-1] == "positive" else "negative"] += 1
    return list(units.values())
