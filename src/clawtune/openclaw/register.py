"""`clawtune openclaw register`: add a served model to OpenClaw's config, and optionally make it an agent's primary.

Edits `openclaw.json` (JSON5) in place with `clawtune.openclaw.json5`, so comments, key order and every other
setting stay as the user wrote them. A backup is written before the first change; a second identical run changes
nothing. The provider entry follows OpenClaw's schema (`models.providers.<id> = {baseUrl, apiKey, api, models}`,
checked against the real program by `openclaw config validate` in the integration tests).

The model's `contextWindow` and `maxTokens` come from the endpoint's `/v1/models` (`clawtune serve` publishes both,
vLLM its `max_model_len`), so OpenClaw never asks for more output than the server gives; flags override them.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clawtune.artifacts.files import write_text_atomic
from clawtune.openai_http import ERRORS, EndpointError, ModelLimits, limits_of, list_models, models_url
from clawtune.openclaw import json5
from clawtune.problems import InputError

APIS = ("openai-completions", "ollama")
# OpenClaw's hard floor: it refuses to run a model with a smaller context ("Model context window too small ...
# Minimum is 4000"; CONTEXT_WINDOW_HARD_MIN_TOKENS in src/agents/context-window-guard.ts, 2026.7.35 to 2026.9.6).
OPENCLAW_MIN_CONTEXT = 4_000
# Its own prompt (workspace files, skills, ~12 tool schemas) by its count, measured with the real 2026.9.6: it asks for
# max_completion_tokens = contextWindow - ~15,600 (404 at 16,000, 1 at 8,000); 2026.7.35 stops with "Context
# overflow: prompt too large" at 16,000 and 20,000. Below this a model has little or no room left to answer.
OPENCLAW_PROMPT_TOKENS = 16_000
# maxTokens written when the endpoint cannot say: clawtune serve's default server.max_tokens_limit (OpenClaw's own
# default, 8,192, is more than that server gives).
FALLBACK_MAX_TOKENS = 4096
PROBE_TIMEOUT_S = 5.0


class RegisterError(InputError):
    """The registration cannot be made; says why."""


@dataclass
class Registration:
    model_id: str
    endpoint: str
    api: str = "openai-completions"
    provider: str = "clawtune"
    agent: str | None = None
    primary: bool = False
    api_key: str | None = None
    name: str | None = None
    context_window: int | None = None
    max_tokens: int | None = None


def config_path(explicit: Path | None = None) -> Path:
    """Where OpenClaw reads its config: $OPENCLAW_CONFIG_PATH, else $OPENCLAW_STATE_DIR/openclaw.json, else ~/.openclaw."""
    if explicit is not None:
        return explicit.expanduser()
    if os.environ.get("OPENCLAW_CONFIG_PATH"):
        return Path(os.environ["OPENCLAW_CONFIG_PATH"]).expanduser()
    state = os.environ.get("OPENCLAW_STATE_DIR")
    return (Path(state).expanduser() if state else Path.home() / ".openclaw") / "openclaw.json"


def base_url(endpoint: str, api: str) -> str:
    """OpenAI-compatible providers take a base URL ending in /v1; Ollama's native API takes one without."""
    url = endpoint.rstrip("/")
    for suffix in ("/chat/completions", "/v1"):
        if api == "ollama" and url.endswith(suffix):
            url = url[: -len(suffix)]
    if api == "openai-completions" and url.endswith("/chat/completions"):
        url = url[: -len("/chat/completions")]
    if api == "openai-completions" and not url.endswith("/v1"):
        url += "/v1"
    return url


def model_entry(reg: Registration) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": reg.model_id,
        "name": reg.name or f"{reg.model_id} (clawtune fine-tune)",
        "reasoning": False,
        "input": ["text"],
        "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
    }
    if reg.context_window:
        entry["contextWindow"] = reg.context_window
    if reg.max_tokens:
        entry["maxTokens"] = reg.max_tokens
    if reg.api == "openai-completions":
        # OpenClaw then sends its session id as `prompt_cache_key` (a proxy must opt in): the gateway keys A/B arms
        # by it, so one conversation stays on one model
        entry["compat"] = {"supportsPromptCacheKey": True}
    return entry


def check_endpoint(endpoint: str) -> None:
    """OpenClaw needs a whole URL: `127.0.0.1:8000/v1` would be written as a base URL it cannot call."""
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    if parts.scheme in ("http", "https") and parts.netloc:
        return
    guess = endpoint if "://" in endpoint else f"http://{endpoint.lstrip('/')}"
    raise RegisterError(
        f"--endpoint {endpoint!r}: not a URL OpenClaw can call (it needs http:// or https:// and a host)"
        + (f"; did you mean {guess!r}?" if guess != endpoint else "")
    )


def known_agents(text: str, name: str, path: Path) -> list[str]:
    """The agents an OpenClaw config knows: `agents.list[].id`, `agents.entries.<id>`, the default `main`, and the
    agent folders of the state folder beside the config."""
    root = json5.loads(text, name)
    agents = root.get("agents") if isinstance(root, dict) else None
    found = ["main"]
    if isinstance(agents, dict):
        for item in agents.get("list") or []:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                found.append(item["id"])
        if isinstance(agents.get("entries"), dict):
            found += [str(k) for k in agents["entries"]]
    states = [path.parent] + ([Path(os.environ["OPENCLAW_STATE_DIR"])] if os.environ.get("OPENCLAW_STATE_DIR") else [])
    for state in states:
        try:
            found += sorted(p.name for p in (state / "agents").iterdir() if p.is_dir())
        except OSError:
            pass
    return list(dict.fromkeys(found))


def check_agent(agent: str, text: str, name: str, path: Path) -> None:
    """`--agent` must name an agent that exists: a typo would otherwise add a new agent beside the real one."""
    known = known_agents(text, name, path)
    if agent in known:
        return
    close = difflib.get_close_matches(agent, known, n=1)
    raise RegisterError(
        f"--agent {agent!r}: no such agent in {path} or its state folder (agents: {', '.join(known)})"
        + (f"; did you mean {close[0]!r}?" if close else "")
    )


def apply(text: str, reg: Registration, name: str) -> str:
    """`text` (an openclaw.json) with the registration applied."""
    if reg.api not in APIS:
        raise RegisterError(f"--api must be one of {', '.join(APIS)}, not {reg.api!r}")
    check_endpoint(reg.endpoint)
    if not reg.model_id or "/" in reg.provider:
        raise RegisterError("a model id and a provider id without '/' are needed")
    provider = ["models", "providers", reg.provider]
    text = json5.set_value(text, [*provider, "baseUrl"], base_url(reg.endpoint, reg.api), name)
    text = json5.set_value(text, [*provider, "api"], reg.api, name)
    if reg.api_key is not None or reg.api == "openai-completions":
        root = json5.parse(text, name)
        existing = json5.find(root, [*provider, "apiKey"])
        if reg.api_key is not None or existing is None:
            text = json5.set_value(text, [*provider, "apiKey"], reg.api_key or "clawtune-local", name)
    text = json5.upsert_item(text, [*provider, "models"], {"id": reg.model_id}, model_entry(reg), name)
    if reg.primary or reg.agent:
        text = _set_primary(text, reg, name)
    return text


def _set_primary(text: str, reg: Registration, name: str) -> str:
    ref = f"{reg.provider}/{reg.model_id}"
    root = json5.parse(text, name)
    path: json5.KeyPath = ["agents", "defaults", "model"]
    if reg.agent:
        path = ["agents", "entries", reg.agent, "model"]
        agents_list = json5.find(root, ["agents", "list"])
        if isinstance(agents_list, json5.ArrayNode):
            for index, item in enumerate(agents_list.items):
                if (
                    isinstance(item, json5.ObjectNode)
                    and json5.to_python(item.get("id") or json5.Node(0, 0)) == reg.agent
                ):
                    path = ["agents", "list", index, "model"]
                    break
    current = json5.find(root, path)
    value = json5.to_python(current) if current is not None else None
    return json5.set_value(text, path, _model_value(value, ref), name)


def _model_value(current: Any, ref: str) -> Any:
    """The agent's model setting with `ref` as primary; the old primary becomes the first fallback."""
    if isinstance(current, str):
        return current if current == ref else {"primary": ref, "fallbacks": [current]}
    if isinstance(current, dict):
        updated = dict(current)
        old = current.get("primary")
        updated["primary"] = ref
        if old and old != ref:
            fallbacks = [f for f in current.get("fallbacks") or [] if f != old and f != ref]
            updated["fallbacks"] = [old, *fallbacks]
        return updated
    return {"primary": ref}


@dataclass
class Limits:
    """The `contextWindow` and `maxTokens` to write (None: not written), where they came from, and what to heed."""

    context_window: int | None
    max_tokens: int | None
    notes: list[str]
    warnings: list[str]


def probe_key(api_key: str | None) -> str | None:
    """The key to send when reading the endpoint: a `${ENV_VAR}` reference read from the environment."""
    if api_key and api_key.startswith("${") and api_key.endswith("}"):
        return os.environ.get(api_key[2:-1])
    return api_key


def endpoint_limits(reg: Registration) -> tuple[ModelLimits | None, str]:
    """The model's limits as the endpoint's `/v1/models` states them, or None and why they could not be read."""
    base = base_url(reg.endpoint, "openai-completions")  # Ollama serves /v1/models too
    url = models_url(base)
    try:
        cards = list_models(base, probe_key(reg.api_key), PROBE_TIMEOUT_S)
    except EndpointError as exc:
        if exc.status is None:
            return None, f"cannot read {url}: {exc}"
        hint = " (the server wants an API key: pass --api-key)" if exc.status in (401, 403) else ""
        return None, f"{url} answered {exc.status}{hint}"
    except ERRORS as exc:
        return None, f"cannot read {url}: {exc}"
    card = next((c for c in cards if c.get("id") == reg.model_id), None)
    if card is None:
        served = ", ".join(sorted(str(c.get("id")) for c in cards)) or "none"
        return None, f"{url} does not list a model {reg.model_id!r} (it serves: {served})"
    limits = limits_of(card)
    if limits.context_window is None and limits.max_output_tokens is None:
        return limits, f"{url} does not state the context window or output limit of {reg.model_id!r}"
    return limits, url


def resolve_limits(reg: Registration) -> Limits:
    """`contextWindow` and `maxTokens`: the flags, else what the endpoint states, else a safe `maxTokens` and no
    `contextWindow` (OpenClaw then assumes its default); with a note on each value's source and warnings for a
    context OpenClaw cannot work in."""
    context, max_tokens = reg.context_window, reg.max_tokens
    notes: list[str] = []
    if context is None or max_tokens is None:
        stated, source = endpoint_limits(reg)
        stated = stated or ModelLimits()
        if context is None and stated.context_window:
            context = stated.context_window
            notes.append(f"contextWindow {context}: from {source}")
        if max_tokens is None and stated.max_output_tokens:
            max_tokens = stated.max_output_tokens
            notes.append(f"maxTokens {max_tokens}: from {source}")
        elif max_tokens is None and stated.context_window:  # vLLM states its context only
            max_tokens = min(FALLBACK_MAX_TOKENS, stated.context_window)
            notes.append(f"maxTokens {max_tokens}: {source} states no output limit; {FALLBACK_MAX_TOKENS} at most")
        if context is None:
            notes.append(
                f"contextWindow not written ({source}): OpenClaw assumes 200,000 tokens; pass --context-window "
                "or register again while the server runs"
            )
        if max_tokens is None:
            max_tokens = FALLBACK_MAX_TOKENS
            notes.append(
                f"maxTokens {max_tokens} ({source}): clawtune serve's default output limit; pass --max-tokens "
                "or register again while the server runs"
            )
    if context is not None and max_tokens is not None and max_tokens > context:
        notes.append(f"maxTokens {max_tokens} -> {context}: an answer cannot be longer than the context window")
        max_tokens = context
    return Limits(context, max_tokens, notes, context_warnings(context))


def context_warnings(context: int | None) -> list[str]:
    """What OpenClaw does with a context window this small, and what to do about it."""
    if context is None or context >= OPENCLAW_PROMPT_TOKENS:
        return []
    fix = (
        "Serve the model with a longer context (clawtune serve: the model's own, unless server.max_context caps it; "
        "vLLM: --max-model-len) and register again"
    )
    if context < OPENCLAW_MIN_CONTEXT:
        return [
            f"contextWindow {context} is under {OPENCLAW_MIN_CONTEXT:,} tokens: OpenClaw refuses to run this model "
            f'("Model context window too small ... Minimum is {OPENCLAW_MIN_CONTEXT}"). {fix}.'
        ]
    return [
        f"contextWindow {context} is under {OPENCLAW_PROMPT_TOKENS:,} tokens: OpenClaw's own prompt (workspace files, "
        "skills, tool schemas) takes about 15,600 of them by its count, leaving the model little or no room to answer "
        f'(OpenClaw 2026.7.35 stops with "Context overflow" instead). {fix}.'
    ]


@dataclass
class Result:
    path: Path
    changed: bool
    diff: str
    backup: Path | None
    limits: Limits | None = None


def register(reg: Registration, path: Path | None = None, dry_run: bool = False) -> Result:
    """Apply the registration to OpenClaw's config file (created if missing), with a backup; or show the diff.

    `contextWindow`/`maxTokens` not given are read from the endpoint first (see `resolve_limits`)."""
    limits = resolve_limits(reg)
    reg = dataclasses.replace(reg, context_window=limits.context_window, max_tokens=limits.max_tokens)
    target = config_path(path)
    try:
        old = target.read_text(encoding="utf-8") if target.exists() else "{\n}\n"
    except OSError as exc:
        raise RegisterError(f"{target}: cannot read OpenClaw's config: {exc}") from None
    if reg.agent:
        check_agent(reg.agent, old, str(target), target)
    new = apply(old, reg, str(target))
    diff = "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), str(target), f"{target} (registered)"
        )
    )
    if dry_run or new == old:
        return Result(target, new != old, diff, None, limits)
    backup = None
    if target.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        backup = target.with_name(f"{target.name}.clawtune-{stamp}.bak")
        shutil.copy2(target, backup)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, new)  # keeps the file's mode: it holds API keys
    return Result(target, True, diff, backup, limits)
