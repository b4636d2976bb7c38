"""What `ft export` takes, each option declared once (see `clawtune.options`); cheap to import, since
`clawtune --help` builds the command from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clawtune.options import flag
from clawtune.problems import InputError

FORMATS = ("openclaw-lora", "merged", "gguf", "ollama", "vllm")


class ExportError(InputError):
    """The export cannot be made as asked; says why and what to do."""


def parse_formats(text: str) -> list[str]:
    """`gguf,ollama` or `all` -> the formats to write."""
    formats = [f.strip() for f in text.split(",") if f.strip()]
    if formats == ["all"]:
        return list(FORMATS)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"unknown format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)} or all")
    return formats


@dataclass
class ExportOptions:
    """Everything `ft export` takes."""

    model_dir: Path = field(metadata=flag("--model-dir", "A checkpoint or output folder of `ft train`."))
    output: Path = field(metadata=flag("--output", "The export folder, e.g. ./exports/finance-agent-v1/."))
    format: str = field(
        default="openclaw-lora",
        metadata=flag("--format", "openclaw-lora, merged, gguf, ollama, vllm, a comma-separated list, or all."),
    )
    name: str | None = field(default=None, metadata=flag("--name", "Model name (default: the output folder's name)."))
    force: bool = field(default=False, metadata=flag("--force", "Replace an existing export."))
    chat_template: Path | None = field(
        default=None, metadata=flag("--chat-template", "Ship this Jinja template instead (parity-checked).")
    )
    ollama_template: Path | None = field(
        default=None, metadata=flag("--ollama-template", "A Go TEMPLATE for Ollama (parity-checked).")
    )  # for a chat template clawtune has no Go twin for
    ollama_base: str | None = field(
        default=None, metadata=flag("--ollama-base", "An Ollama model to use as FROM instead of writing base.gguf.")
    )
    gguf_f16: bool = field(default=False, metadata=flag("--gguf-f16", "Write whole-model GGUFs in float16."))
    merged_dtype: str | None = field(
        default=None, metadata=flag("--dtype", "The merged model's dtype (default: the base model's).")
    )
    allow_base_mismatch: bool = field(
        default=False, metadata=flag("--allow-base-mismatch", "Export an adapter whose base model has changed.")
    )
    register_endpoint: str | None = field(
        default=None,
        metadata=flag("--register-endpoint", "Then show the OpenClaw registration for a server at this URL."),
    )
    parity_examples: int = 20
    # Parsed from the text above.
    formats: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.formats = parse_formats(self.format)
