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
import itertools
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
    canary: dict[str, Any] | None = None  # {"steps": [B's share, in percent], "step": index in force, "since": time}
    promotion: dict[str, Any] | None = None  # what a promotion changed (see `promote`)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def routing(self) -> bool:
        """Whether it decides where requests for its model go: while it runs, and once promoted (all to B)."""
        return self.status in ("running", "promoted")

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
            "canary": self.canary,
            "promotion": self.promotion,
        }

    def public(self) -> dict[str, Any]:
        """The record as the admin API answers it."""
        return {**self.record(), "model": self.model, "splits": self.model or self.id, "virtual": self.model is None}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Experiment:
        model = row["model"] if row["model"] != row["id"] else None
        names = ("sticky", "status", "source", "created", "stopped", "settings", "result", "canary", "promotion")
        fields: dict[str, Any] = {k: row.get(k) for k in names}
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


CANARY_FIELDS = ("steps",)
PIN_CAPACITY = 500_000  # canary sessions whose arm is remembered (the oldest are forgotten first)


def validate_canary(canary: Any, arms: dict[str, float]) -> dict[str, Any]:
    """{"steps": [B's share in percent, rising, each in (0, 100]]}: the first step below 100 (100 is the promotion)."""
    if not isinstance(canary, dict) or set(canary) - set(CANARY_FIELDS) or "steps" not in canary:
        raise APIError(400, 'canary: {"steps": [10, 50, 100]} (B\'s share at each step, in percent)', param="canary")
    steps = canary["steps"]
    if (
        not isinstance(steps, list)
        or not steps
        or len(steps) > 20
        or any(isinstance(x, bool) or not isinstance(x, int | float) or not 0 < x <= 100 for x in steps)
    ):
        raise APIError(400, "canary.steps: 1 to 20 percentages, each above 0 and at most 100", param="canary")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise APIError(400, "canary.steps: each step must give B more traffic than the one before", param="canary")
    if steps[0] >= 100:
        raise APIError(400, "canary.steps: the first step must be below 100 (100 is the promotion)", param="canary")
    if len(arms) != 2:
        raise APIError(400, "canary: an experiment of two arms (A, the incumbent, first; then B)", param="canary")
    return {"steps": [float(x) for x in steps], "step": 0, "since": time.time()}


def canary_arms(arms: Mapping[str, float], share_b: float) -> dict[str, float]:
    """The two arms' weights when B takes `share_b` percent (A first: a rising B share only moves A's sessions)."""
    a, b = list(arms)[:2]
    return {a: 100.0 - share_b, b: share_b}


def _figures(body: dict[str, Any], key: str = "figures") -> dict[str, Any] | None:
    figures = body.get(key)
    if figures is not None and not isinstance(figures, dict):
        raise APIError(400, f"{key}: a JSON object", param=key)
    return figures


def _reason(body: dict[str, Any]) -> str | None:
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 2000):
        raise APIError(400, "reason: text of up to 2,000 characters", param="reason")
    return reason


def _object(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise APIError(400, "the body must be a JSON object")
    return body


class Experiments:
    """The gateway's experiments, in memory for routing and in the log's database as the truth.

    A promotion also rewrites models.yaml (`config_path`, when the gateway was started from one) through
    `clawtune.serve.promotion`, so the agent's id keeps serving B after the database is gone; a rollback undoes it.
    """

    def __init__(
        self,
        log_path: Path,
        configured: list[ExperimentConfig],
        models: Mapping[str, Any],
        config_path: Path | None = None,
    ) -> None:
        self.log_path = log_path
        self.store = ExperimentStore(log_path)
        self.models = models
        self.config_path = config_path
        self.all: dict[str, Experiment] = {}
        self._lock = threading.Lock()
        # a canary's sessions keep the arm they began on when B's share rises (a hash alone would move some of A's
        # sessions to B mid-conversation): (experiment, unit) -> arm, bounded, rebuilt from the log at start
        self._pins: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._pin_lock = threading.Lock()  # apart from the admin lock, which is held while the database is written
        self.pin_capacity = PIN_CAPACITY
        for row in self.store.all():
            self.all[row["id"]] = Experiment.from_row(row)
        for config in configured:
            self._declare(config)
        self._index()
        for experiment in self.all.values():
            if experiment.running and experiment.canary is not None:
                for request in experiment_requests(log_path, experiment.id):
                    if request.get("unit") and request.get("arm"):
                        self._pins.setdefault((experiment.id, request["unit"]), request["arm"])
        while len(self._pins) > self.pin_capacity:
            self._pins.popitem(last=False)

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
            experiment.canary, experiment.promotion = stored.canary, stored.promotion
        if experiment.running and experiment.model and self.splitting(experiment.model, experiment.id):
            experiment.status, experiment.stopped = "stopped", time.time()
        self.store.save(experiment.record())
        self.all[config.id] = experiment

    def _index(self) -> None:
        self.virtual = {e.id: e for e in self.all.values() if e.model is None}
        # a running experiment takes the requests for its model; else the latest promotion does (a rollback of it
        # gives them back to the one before)
        self.splits = {}
        for e in sorted(self.all.values(), key=lambda e: (e.running, e.created)):
            if e.model is not None and e.routing:
                self.splits[e.model] = e

    def splitting(self, model: str, other_than: str | None = None) -> Experiment | None:
        found = next((e for e in self.all.values() if e.running and e.model == model and e.id != other_than), None)
        return found

    def for_request(self, requested: str) -> Experiment | None:
        """The experiment a request for this id falls under: one splitting it, or a virtual model of that name."""
        return self.splits.get(requested) or self.virtual.get(requested)

    def arm_for(self, experiment: Experiment, unit: str, drawn: str) -> str:
        """The arm a unit gets: for a running canary, the one its session began on (if it began since the experiment
        started), else `drawn` (the hash's), remembered."""
        if experiment.canary is None or not experiment.running:
            return drawn
        key = (experiment.id, unit)
        with self._pin_lock:
            arm = self._pins.get(key)
            if arm is None or arm not in experiment.arms:
                arm = self._pins[key] = drawn
            self._pins.move_to_end(key)
            while len(self._pins) > self.pin_capacity:
                self._pins.popitem(last=False)
        return arm

    def _save(self, experiment: Experiment, kind: str, reason: str | None, figures: dict[str, Any] | None) -> None:
        """Write the experiment and the decision just taken on it (under the lock)."""
        self.store.save(experiment.record())
        self.store.add_event(experiment.id, kind, experiment.arms, reason, figures)
        self._index()

    # -- the admin API (blocking: called off the event loop) --
    def create(self, body: Any) -> Experiment:
        if not isinstance(body, dict):
            raise APIError(400, "the body must be a JSON object")
        allowed = {"id", "model", "arms", "sticky", "settings", "canary"}
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
        canary = validate_canary(body["canary"], arms) if body.get("canary") is not None else None
        if canary is not None:
            arms = canary_arms(arms, canary["steps"][0])
        experiment_id = body.get("id") or f"ab-{(model or next(iter(arms)))[:60]}-{time.strftime('%Y%m%d-%H%M%S')}"
        if not isinstance(experiment_id, str) or not EXPERIMENT_ID.fullmatch(experiment_id):
            raise APIError(400, "id: letters, digits, '.', '_', '-' (up to 128)", param="id")
        with self._lock:
            if experiment_id in self.all or experiment_id in self.models:
                raise APIError(409, f"an experiment or model named {experiment_id!r} already exists", param="id")
            if model is not None:
                other = self.splitting(model)
                if other is not None:
                    raise APIError(
                        409, f"experiment {other.id!r} already splits {model!r}: stop it first", param="model"
                    )
            experiment = Experiment(experiment_id, arms, model, sticky, settings=settings, canary=canary)
            self.all[experiment_id] = experiment
            share = f"B takes {canary['steps'][0]:g}% (canary step 1 of {len(canary['steps'])})" if canary else None
            self._save(experiment, "start", share or "started", {"settings": settings, "canary": canary})
        return experiment

    def get(self, experiment_id: str) -> Experiment:
        experiment = self.all.get(experiment_id)
        if experiment is None:
            raise APIError(404, f"no experiment named {experiment_id!r}", code="experiment_not_found")
        return experiment

    def stop(self, experiment_id: str, body: Any) -> Experiment:
        """Stop an experiment (the requests for its model go back to the model itself); a result may be attached. Safe
        to call twice: a stopped experiment keeps its first stop time, and takes a newer result."""
        body = _object(body)
        result = _figures(body, "result")
        with self._lock:
            experiment = self.get(experiment_id)
            was_running = experiment.running
            if was_running:
                experiment.status, experiment.stopped = "stopped", time.time()
            if result is not None:
                experiment.result = result
            if was_running:
                reason = _reason(body) or (result or {}).get("reason") or "stopped"
                verdict = (result or {}).get("verdict")
                self._save(experiment, "stop", f"{verdict}: {reason}" if verdict else reason, result)
            else:
                self.store.save(experiment.record())
                self._index()
        return experiment

    def step(self, experiment_id: str, body: Any) -> Experiment:
        """The canary's next step: {"step": index, "reason", "figures"}. Safe to send twice (a step already in force
        is answered as it is); a step back, a skipped step, or one to 100% (that is `promote`) is refused."""
        body = _object(body)
        index = body.get("step")
        reason, figures = _reason(body), _figures(body)
        with self._lock:
            experiment = self.get(experiment_id)
            canary = experiment.canary
            if canary is None:
                raise APIError(409, f"{experiment_id!r} has no canary ramp", param="step")
            if isinstance(index, bool) or not isinstance(index, int):
                raise APIError(400, "step: the index of the step to move to", param="step")
            if index == canary["step"] and experiment.running:
                return experiment
            if not experiment.running:
                raise APIError(409, f"{experiment_id!r} is {experiment.status}: no step to take", param="step")
            if index != canary["step"] + 1 or index >= len(canary["steps"]) or canary["steps"][index] >= 100:
                raise APIError(
                    409,
                    f"step: {experiment_id!r} is at step {canary['step']} of {canary['steps']}: the next is "
                    f"{canary['step'] + 1}, and 100% is reached by promoting",
                    param="step",
                )
            share = canary["steps"][index]
            experiment.arms = canary_arms(experiment.arms, share)
            experiment.canary = {**canary, "step": index, "since": time.time()}
            self._save(experiment, "step", reason or f"B takes {share:g}%", figures)
        return experiment

    def promote(self, experiment_id: str, body: Any) -> Experiment:
        """Every request for the experiment's model to B (its last arm) from now on (a running test, or one that
        ended), in the database and, when the
        gateway runs from a models.yaml, in that file (with a backup). {"reason", "figures", "result", "register": what
        the client changes in OpenClaw's config, kept so a rollback can undo it}. Safe to send twice."""
        from clawtune.serve import promotion

        body = _object(body)
        reason, figures, register = _reason(body), _figures(body), _figures(body, "register")
        result = _figures(body, "result")
        with self._lock:
            experiment = self.get(experiment_id)
            if experiment.status == "promoted":
                return experiment
            if experiment.status == "rolled_back":  # a running or ended test may be promoted; a rolled-back one not
                raise APIError(409, f"{experiment_id!r} was rolled back: start a new test to promote its B")
            arm = list(experiment.arms)[-1]
            target = experiment.model or experiment.id
            record: dict[str, Any] = {"at": time.time(), "model": target, "arm": arm, "arms": dict(experiment.arms)}
            if self.config_path is not None and self.config_path.is_file():
                try:
                    record["config"] = promotion.promote_in_config(
                        self.config_path, experiment.id, experiment.model, arm, experiment.sticky
                    )
                except promotion.PromotionError as exc:
                    raise APIError(409, f"not promoted: {exc}") from None
            else:
                record["config"] = None
            if register is not None:
                record["register"] = register
            experiment.status, experiment.stopped = "promoted", experiment.stopped or time.time()
            experiment.arms = {arm: 100.0}
            experiment.promotion = record
            if result is not None:
                experiment.result = result
            if experiment.canary is not None:
                experiment.canary = {**experiment.canary, "step": len(experiment.canary["steps"]), "since": time.time()}
            self._save(experiment, "promote", reason or f"{target!r} is served by {arm}", {**(figures or {}), **record})
        return experiment

    def rollback(self, experiment_id: str, body: Any) -> Experiment:
        """Every request for the experiment's model back to the incumbent: a running one (a guardrail's breach, a
        worse primary metric, a person) stops B at once; a promoted one is undone (models.yaml too). {"reason",
        "figures", "cause": guardrail | primary | manual, "result"}. Safe to send twice."""
        from clawtune.serve import promotion

        body = _object(body)
        reason, figures, result = _reason(body), _figures(body), _figures(body, "result")
        cause = body.get("cause", "manual")
        if cause not in ("guardrail", "primary", "manual"):
            raise APIError(400, "cause: guardrail, primary or manual", param="cause")
        with self._lock:
            experiment = self.get(experiment_id)
            if experiment.status == "rolled_back":
                return experiment
            if experiment.status not in ("running", "promoted"):
                raise APIError(409, f"{experiment_id!r} is {experiment.status}: nothing to roll back")
            undone: dict[str, Any] = {}
            if experiment.status == "promoted" and experiment.promotion:
                previous = experiment.promotion.get("arms")
                config = experiment.promotion.get("config")
                if config:
                    try:
                        undone["config"] = promotion.undo_in_config(config)
                    except promotion.PromotionError as exc:
                        raise APIError(409, f"not rolled back: {exc}") from None
                if previous:
                    experiment.arms = previous
            else:
                experiment.stopped = time.time()
            experiment.status = "rolled_back"
            if result is not None:
                experiment.result = result
            self._save(experiment, "rollback", reason or "rolled back", {"cause": cause, **(figures or {}), **undone})
        return experiment

    def events(self, experiment_id: str) -> list[dict[str, Any]]:
        self.get(experiment_id)
        return self.store.events(experiment_id)

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
        schedule = [(e["created"], e["arms"]) for e in self.store.events(experiment_id) if e["arms"]]
        return aggregate_units(experiment_requests(self.log_path, experiment_id), experiment, schedule)


def _share(arms: Mapping[str, float], arm: str | None) -> float | None:
    total = sum(arms.values())
    return arms[arm] / total if arm is not None and arm in arms and total > 0 else None


def aggregate_units(
    requests: list[dict[str, Any]],
    experiment: Experiment,
    schedule: list[tuple[float, dict[str, float]]] | None = None,
) -> list[dict[str, Any]]:
    """Per unit (the key its arm was drawn by; a request drawn at random is a unit of its own): its arm, the
    probability it had of that arm when it was drawn (`propensity`: the arms in force then, by `schedule`, the
    (time, arms) of each decision, which a canary's steps change), how many requests, errors (status >= 400),
    latency, tokens, tool calls and invalid ones, ratings. A unit is on the arm of its first request (a unit split
    across arms, when the experiment's arms changed, keeps its first)."""
    units: dict[str, dict[str, Any]] = {}
    schedule = sorted(schedule or [], key=lambda item: item[0])
    for r in requests:
        key = r.get("unit") or f"request:{r['id']}"
        unit = units.get(key)
        if unit is None:
            arm = r.get("arm")
            in_force = next((arms for at, arms in reversed(schedule) if at <= r["created"]), None)
            unit = units[key] = {
                "unit": key,
                "arm": arm,
                "propensity": _share(in_force if in_force is not None else experiment.arms, arm),
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
