"""`clawtune openclaw register`: add a served model to OpenClaw's config, and optionally make it an agent's primary.

Edits `openclaw.json` (JSON5) in place with `clawtune.openclaw.json5`, so comments, key order and every other
setting stay as the user wrote them. A backup is written before the first change; a second identical run changes
nothing. The provider entry follows OpenClaw's schema (`models.providers.<id> = {baseUrl, apiKey, api, models}`,
checked against the real program by `openclaw config validate` in the integration tests).
"""

from __future__ import annotations

import difflib
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clawtune.openclaw import json5
from clawtune.problems import InputError

APIS = ("openai-completions", "ollama")


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
    if reg.agent:
        agents_list = json5.find(root, ["agents", "list"])
        path: list[str] | None = None
        if isinstance(agents_list, json5.ArrayNode):
            for index, item in enumerate(agents_list.items):
                if (
                    isinstance(item, json5.ObjectNode)
                    and json5.to_python(item.get("id") or json5.Node(0, 0)) == reg.agent
                ):
                    return _primary_in_list(text, index, ref, name)
        path = ["agents", "entries", reg.agent, "model"]
    else:
        path = ["agents", "defaults", "model"]
    current = json5.find(json5.parse(text, name), path)
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


def _primary_in_list(text: str, index: int, ref: str, name: str) -> str:
    root = json5.parse(text, name)
    array = json5.find(root, ["agents", "list"])
    assert isinstance(array, json5.ArrayNode)
    item = array.items[index]
    assert isinstance(item, json5.ObjectNode)
    current = item.get("model")
    value = _model_value(json5.to_python(current) if current is not None else None, ref)
    return json5._set_in_item(text, ["agents", "list"], index, "model", value, name)


@dataclass
class Result:
    path: Path
    changed: bool
    diff: str
    backup: Path | None


def register(reg: Registration, path: Path | None = None, dry_run: bool = False) -> Result:
    """Apply the registration to OpenClaw's config file (created if missing), with a backup; or show the diff."""
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
        return Result(target, new != old, diff, None)
    backup = None
    if target.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        backup = target.with_name(f"{target.name}.clawtune-{stamp}.bak")
        shutil.copy2(target, backup)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.clawtune.tmp")
    tmp.write_text(new, encoding="utf-8")
    if target.exists():
        shutil.copymode(target, tmp)
    os.replace(tmp, target)
    return Result(target, True, diff, backup)
