"""`clawtune serve --config FILE`: the seed's `models:` list, accepted as written, plus clawtune's own settings.

```yaml
models:
  - id: miaoquai-finance-agent      # what clients put in "model"
    provider: clawtune              # clawtune (in-process transformers + PEFT) | ollama | vllm | openai
    model: clawtune/tiny-agent      # the base model (clawtune) or the engine's model name (remote)
    endpoint: http://localhost:11434   # remote providers only
    context_window: 8192            # remote providers: published in /v1/models when the engine's own does not say
    adapters:
      finance-lora: {path: ./exports/finance-lora/openclaw-lora, weight: 1.0}
    tags: [finance, domestic]
    system_prompt: replace          # keep | drop | replace (default: what the adapter's training data did)
experiments:
  - id: finance-ab                  # a virtual model split between arms
    arms: {finance-v1: 50, finance-v2: 50}
    sticky: session                 # session | user
  - id: finance-v2-test             # an A/B test of an incumbent: requests for `model` are split between the arms
    model: finance-v1
    arms: {finance-v1: 50, finance-v2: 50}
default_model: miaoquai-finance-agent   # where model "auto" goes when no tags match
server: {host: 127.0.0.1, port: 8000, api_keys: [...], max_concurrency: 32, ...}
```

A request asking for more output than `server.max_tokens_limit` or than the context leaves after its prompt is clamped
(the clamp is in the log); `server.strict_max_tokens: true` answers OpenAI's 400 instead.

Every mistake in the file is listed at once, each with its key path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clawtune.configfile import KeyPath, key_lines, problems_message, validation_problems
from clawtune.problems import InputError

PROVIDERS = ("clawtune", "ollama", "vllm", "openai")


class ServeConfigError(InputError):
    """The serve config has mistakes; all of them are listed, each with its key path."""


class Adapter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    weight: float = Field(1.0, gt=0, le=4)


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    provider: Literal["clawtune", "ollama", "vllm", "openai"] = "clawtune"
    model: str | None = None
    endpoint: str | None = None
    adapters: dict[str, Adapter] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    system_prompt: Literal["keep", "drop", "replace"] | None = None
    system_prompt_text: str | None = None
    api_key: str | None = None  # for remote engines; "${ENV}" reads the environment
    timeout_s: float = Field(120, gt=0)
    description: str | None = None
    # A forwarded model's context window when the engine's /v1/models does not state it (vLLM does, Ollama does not).
    context_window: int | None = Field(None, ge=1)


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    arms: dict[str, float]
    sticky: Literal["session", "user"] = "session"
    # The model id whose requests are split (an A/B test of an incumbent: clients keep asking for it); unset, the
    # experiment is a model id of its own.
    model: str | None = None


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_keys: list[str] = Field(default_factory=list)
    admin_keys: list[str] = Field(default_factory=list)
    max_concurrency: int = Field(32, ge=1)  # requests queued or running; more get 429
    batch_size: int = Field(8, ge=1)  # requests generated together (mixed adapters)
    max_body_bytes: int = Field(8_000_000, ge=1024)
    max_tokens_limit: int = Field(4096, ge=1)
    default_max_tokens: int = Field(512, ge=1)
    # Over-large max_tokens: clamp to what the limit and the context allow (logged), or with this set, OpenAI's 400.
    strict_max_tokens: bool = False
    timeout_s: float = Field(300, gt=0)
    data_dir: str = "clawtune-data"
    log_max_rows: int = Field(1_000_000, ge=100)
    adapter_dirs: list[str] = Field(default_factory=list)  # where the admin endpoint may load adapters from
    device: str | None = None
    max_context: int | None = None  # cap the model's context (default: the model's own)
    # The log: secrets and personal data in requests, responses and feedback comments are replaced by typed
    # placeholders with the training export's scrubber before they are stored; false stores them as sent.
    log_scrub: bool = True
    # Host header allow-list (DNS rebinding): default the loopback names and the bound address. "*" allows any.
    allowed_hosts: list[str] = Field(default_factory=list)
    # Browser origins allowed to call the API (CORS). Empty: no cross-origin browser access.
    cors_origins: list[str] = Field(default_factory=list)
    header_timeout_s: float = Field(10, gt=0)  # a request's line and headers must arrive within this
    body_timeout_s: float = Field(30, gt=0)  # ... and its body within this
    keep_alive_s: float = Field(5, gt=0)  # an idle keep-alive connection is closed after this
    drain_s: float = Field(30, ge=0)  # on shutdown, requests in flight get this long to finish, then are cancelled


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[ModelEntry] = Field(min_length=1)
    experiments: list[Experiment] = Field(default_factory=list)
    default_model: str | None = None
    server: ServerSettings = Field(default_factory=ServerSettings)
    source: str | None = None

    def entry(self, model_id: str) -> ModelEntry | None:
        return next((m for m in self.models if m.id == model_id), None)

    def base_model(self) -> str | None:
        """The one base model the clawtune provider holds in memory."""
        return next((m.model for m in self.models if m.provider == "clawtune"), None)


def parse(data: Any, source: str, lines: dict[KeyPath, int] | None = None) -> ServeConfig:
    """Validate a loaded YAML document; raise with every problem found (with its line when `lines` maps them)."""
    if not isinstance(data, dict):
        raise ServeConfigError(f"{source}: expected a mapping with a models: list")
    problems: list[str] = []
    try:
        config = ServeConfig.model_validate({**data, "source": source})
    except ValidationError as exc:
        problems = validation_problems(exc, ServeConfig, lines or {}, hidden=("source",))
        raise ServeConfigError(problems_message(source, problems)) from None
    problems.extend(semantic_problems(config, Path(source).parent if source else Path()))
    if problems:
        raise ServeConfigError(problems_message(source, problems))
    return config


def semantic_problems(config: ServeConfig, base_dir: Path) -> list[str]:
    problems = []
    seen: set[str] = set()
    local_bases = {m.model for m in config.models if m.provider == "clawtune" and m.model}
    for i, m in enumerate(config.models):
        where = f"models[{i}] ({m.id})"
        if m.id in seen or m.id == "auto":
            problems.append(f"{where}.id: {'reserved' if m.id == 'auto' else 'duplicate'} model id {m.id!r}")
        seen.add(m.id)
        if m.provider == "clawtune":
            if not m.model:
                problems.append(f"{where}.model: the base model (a Hugging Face id or folder) is required")
            if m.endpoint:
                problems.append(f"{where}.endpoint: the clawtune provider runs in this process; remove the endpoint")
            if m.context_window:
                problems.append(
                    f"{where}.context_window: the clawtune provider uses the model's own context; "
                    "cap it with server.max_context"
                )
            for name, adapter in m.adapters.items():
                path = resolve_path(adapter.path, base_dir)
                if not path.is_dir():
                    problems.append(f"{where}.adapters.{name}.path: {path} is not a folder")
        else:
            if not m.endpoint:
                problems.append(f"{where}.endpoint: a {m.provider} model needs the engine's URL")
            if not m.model:
                problems.append(f"{where}.model: the engine's model name is required")
            for name, adapter in m.adapters.items():
                if adapter.weight != 1.0:
                    problems.append(
                        f"{where}.adapters.{name}.weight: {m.provider} applies an adapter at weight 1.0 only; "
                        "use provider: clawtune for other weights"
                    )
    if len(local_bases) > 1:
        problems.append(
            f"models: the clawtune provider holds one base model in memory, but these name several: {sorted(local_bases)}"
        )
    for i, e in enumerate(config.experiments):
        if e.id in seen:
            problems.append(f"experiments[{i}].id: {e.id!r} is already a model id")
        for arm, weight in e.arms.items():
            if config.entry(arm) is None:
                problems.append(f"experiments[{i}].arms.{arm}: no model with this id")
            if weight <= 0:
                problems.append(f"experiments[{i}].arms.{arm}: a weight must be positive")
        if not e.arms:
            problems.append(f"experiments[{i}].arms: at least one arm is needed")
        if e.model is not None and config.entry(e.model) is None:
            problems.append(f"experiments[{i}].model: no model with id {e.model!r}")
        elif e.model is not None and any(o.model == e.model for o in config.experiments[:i]):
            problems.append(f"experiments[{i}].model: another experiment already splits {e.model!r}")
    if config.default_model and config.entry(config.default_model) is None:
        problems.append(f"default_model: no model with id {config.default_model!r}")
    return problems


def resolve_path(path: str, base_dir: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (base_dir / candidate)


def load(path: Path) -> ServeConfig:
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        lines = key_lines(yaml.compose(text, Loader=yaml.SafeLoader))
    except OSError as exc:
        raise ServeConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ServeConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse(data, str(path), lines)
