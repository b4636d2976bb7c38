"""What `agent export-training-data` and `ft augment-data` take, each option declared once (see `clawtune.options`).

Kept apart from the stages' code so that `clawtune --help`, which builds every command from these classes, imports
nothing heavy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from clawtune.options import flag
from clawtune.problems import InputError

MB = 1024 * 1024


def teacher_api_key() -> str | None:
    """The teacher endpoint's key, from the environment (never a flag: it would land in shell history)."""
    return os.environ.get("CLAWTUNE_TEACHER_API_KEY") or os.environ.get("OPENAI_API_KEY")


def parse_date_range(text: str) -> tuple[date, date]:
    """`FROM:TO` (ISO dates, both inclusive)."""
    try:
        start, end = (date.fromisoformat(p.strip()) for p in text.split(":"))
    except ValueError as exc:
        raise InputError(f"--date-range {text!r}: expected FROM:TO as ISO dates, e.g. 2026-04-01:2026-05-20") from exc
    if end < start:
        raise InputError(f"--date-range {text!r}: the end is before the start")
    return start, end


def parse_split(text: str) -> tuple[float, float, float]:
    """`80:10:10` -> the train, validation and test ratios."""
    try:
        ratios = tuple(float(x) for x in text.split(":"))
        if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
            raise ValueError
    except ValueError:
        raise InputError(f"--split {text!r}: expected three non-negative ratios like 80:10:10") from None
    return ratios  # type: ignore[return-value]


@dataclass
class TrainingDataOptions:
    """Everything `export-training-data` takes; defaults follow the seed."""

    agent_id: str = field(metadata=flag("--agent-id", "The OpenClaw agent whose sessions to export, e.g. my-agent."))
    output: Path = field(
        metadata=flag("--output", "Folder for raw.jsonl, validation.jsonl, test.jsonl and the report.")
    )
    format: str = field(default="jsonl", metadata=flag("--format", "Output format (OpenAI chat JSONL)."))
    min_samples: int = field(
        default=1, metadata=flag("--min-samples", "Fail unless at least this many examples remain.")
    )
    date_range: str | None = field(default=None, metadata=flag("--date-range", "FROM:TO, ISO dates, inclusive."))
    state_dirs: list[Path] = field(
        default_factory=list,
        metadata=flag("--state-dir", "OpenClaw state folder (default $OPENCLAW_STATE_DIR or ~/.openclaw)."),
    )
    sessions: list[Path] = field(
        default_factory=list,
        metadata=flag(
            "--sessions", "Explicit sources: transcript files, folders, an SQLite store, a trajectory bundle."
        ),
    )
    session_key: str | None = field(
        default=None,
        metadata=flag("--session-key", "Only sessions whose key matches this glob, e.g. 'agent:my-agent:*'."),
    )
    channel: str | None = field(default=None, metadata=flag("--channel", "Only sessions from this channel."))
    system_prompt: str = field(
        default="short",
        metadata=flag("--system-prompt", "keep | drop | short (a generated one-liner) | FILE with the prompt to use."),
    )
    max_tokens: int = field(
        default=4096, metadata=flag("--max-tokens", "Split longer sessions at turn boundaries (approximate tokens).")
    )
    scrub: bool = field(
        default=True, metadata=flag("--no-scrub", "Do not replace secrets and PII (not recommended).", invert=True)
    )
    keep_thinking: bool = field(
        default=False, metadata=flag("--keep-thinking", "Keep thinking blocks as reasoning_content.")
    )
    keep_images: bool = field(
        default=False, metadata=flag("--keep-images", "Keep an \\[image] placeholder where images were.")
    )
    drop_failures: bool = field(
        default=False, metadata=flag("--drop-failures", "Drop examples with tool errors or aborted turns.")
    )
    split: str = field(default="80:10:10", metadata=flag("--split", "train:validation:test ratios."))
    seed: int = field(default=42, metadata=flag("--seed", "Seed of the session split."))
    strict: bool = field(
        default=False, metadata=flag("--strict", "Stop at the first bad line instead of reporting and skipping it.")
    )
    force: bool = field(
        default=False,
        metadata=flag("--force", "Replace an earlier export in --output (only the files that export wrote)."),
    )
    max_line_mb: float = field(
        default=64,
        metadata=flag(
            "--max-line-mb", "Skip (and report) transcript lines and store events larger than this.", min=0.001
        ),
    )
    gateway_log: Path | None = field(
        default=None,
        metadata=flag(
            "--gateway-log",
            "Also (or, without --state-dir/--sessions, only) export the conversations clawtune serve logged: "
            "its requests.sqlite or data folder.",
        ),
    )
    gateway_models: list[str] = field(
        default_factory=list,
        metadata=flag(
            "--gateway-model",
            "Logged requests for these models (globs) are the agent's (default: OpenClaw's agent marker, or a "
            "model named after the agent).",
        ),
    )
    gateway_feedback: str = field(
        default="not-negative",
        metadata=flag("--gateway-feedback", "Which rated answers to train on: not-negative, positive or any."),
    )
    progress: bool = False  # a progress bar (the command line: when stderr is a terminal)
    # Conversations from another source (the gateway's log, read by the loop layer): (session, conversation) pairs,
    # shaped, filtered, scrubbed and split like OpenClaw's. Without `read_openclaw` the stores are not looked for.
    extra_conversations: Any = None
    extra_stats: dict[str, Any] | None = None  # the other source's counts, filled while it is read
    read_openclaw: bool = True
    # Parsed from the text above.
    dates: tuple[date, date] | None = field(init=False)
    ratios: tuple[float, float, float] = field(init=False)
    max_line_bytes: int = field(init=False)  # longer lines (and SQLite events) are skipped and reported

    def __post_init__(self) -> None:
        if self.format != "jsonl":
            raise InputError(f"--format {self.format!r}: only jsonl (OpenAI chat fine-tuning JSONL) is written")
        self.ratios = parse_split(self.split)
        self.dates = parse_date_range(self.date_range) if self.date_range else None
        self.max_line_bytes = int(self.max_line_mb * MB)


@dataclass
class AugmentOptions:
    """What `ft augment-data` takes."""

    input: Path = field(metadata=flag("--input", "Training examples (OpenAI chat JSONL), e.g. ./ft-data/raw.jsonl."))
    output: Path = field(metadata=flag("--output", "Where to write the grown set."))
    factor: float = field(
        default=3.0, metadata=flag("--factor", "Output size as a multiple of the input (originals included).")
    )
    balance: bool = field(default=False, metadata=flag("--balance", "Move the mix toward the seed's recipe."))
    seed: int = field(default=0, metadata=flag("--seed", "Seed of every random choice."))
    holdout: list[Path] = field(
        default_factory=list,
        metadata=flag(
            "--holdout",
            "Held-out files to check for leakage (validation.jsonl and test.jsonl beside the input are always checked).",
        ),
    )
    teacher_endpoint: str | None = field(
        default=None,
        metadata=flag("--teacher-endpoint", "OpenAI-compatible endpoint of a teacher model for paraphrases."),
    )
    teacher_model: str | None = field(
        default=None, metadata=flag("--teacher-model", "The teacher model's name at that endpoint.")
    )
    force: bool = field(default=False, metadata=flag("--force", "Replace an existing output file."))
    teacher_api_key: str | None = field(default_factory=teacher_api_key)

    @property
    def report_path(self) -> Path:
        """The report written beside the output: `augmented-report.json` for `augmented.jsonl`."""
        return self.output.with_name(self.output.stem + "-report.json")
