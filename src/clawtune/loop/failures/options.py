"""What `agent collect-failures` takes, each option declared once (see `clawtune.options`); cheap to import, since
`clawtune --help` builds the command from it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from clawtune.data.options import parse_date_range, teacher_api_key
from clawtune.loop.failures.fields import DEFAULT_CRITERIA
from clawtune.loop.failures.signals import NEGATIVE_REACTIONS, POSITIVE_REACTIONS, parse_emoji_list
from clawtune.options import flag
from clawtune.problems import InputError

SOURCES = ("openclaw", "gateway")


def parse_holdout(text: str) -> float:
    """`20%`, `20` or `0.2` -> 0.2."""
    raw = text.strip().rstrip("%")
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"--holdout {text!r}: expected a share like 20% or 0.2") from None
    share = value / 100 if text.strip().endswith("%") or value > 1 else value
    if not 0 <= share < 1:
        raise InputError(f"--holdout {text!r}: expected a share from 0% to under 100%")
    return share


@dataclass
class CollectOptions:
    """Everything `collect-failures` takes."""

    agent_id: str = field(metadata=flag("--agent-id", "The agent whose failures to collect, e.g. my-agent."))
    output: Path = field(
        metadata=flag("--output", "Folder for failures, corrected, pairs, review, held-out and the report.")
    )
    criteria: str = field(
        default=DEFAULT_CRITERIA,
        metadata=flag(
            "--criteria",
            "Which failing turns to keep (default: any failure signal); grammar below.",
            show_default=False,
        ),
    )
    source: str | None = field(
        default=None, metadata=flag("--source", "openclaw, gateway, or both (default: both, each if found).")
    )
    state_dirs: list[Path] = field(
        default_factory=list,
        metadata=flag("--state-dir", "OpenClaw state folder (default $OPENCLAW_STATE_DIR or ~/.openclaw)."),
    )
    sessions: list[Path] = field(
        default_factory=list, metadata=flag("--sessions", "Explicit OpenClaw sources instead of the state folder.")
    )
    gateway_log: Path | None = field(
        default=None,
        metadata=flag("--gateway-log", "clawtune serve's request log or data folder (default ./clawtune-data)."),
    )
    gateway_models: list[str] = field(
        default_factory=list,
        metadata=flag(
            "--gateway-model",
            "Gateway requests for these models (globs) are the agent's (default: OpenClaw's agent marker, "
            "or a model named after the agent).",
        ),
    )
    eval_items: list[Path] = field(
        default_factory=list,
        metadata=flag(
            "--eval-items",
            "ft evaluate's eval-items.jsonl (or its folder): test items the evaluated model got wrong become "
            "failures, corrected by their reference answers (repeatable).",
        ),
    )
    date_range: str | None = field(default=None, metadata=flag("--date-range", "FROM:TO, ISO dates, inclusive."))
    holdout: str = field(
        default="20%", metadata=flag("--holdout", "Share of failing sessions never trained on (held-out.jsonl).")
    )
    seed: int = field(default=42, metadata=flag("--seed", "Seed of the hold-out split."))
    corrections: Path | None = field(
        default=None, metadata=flag("--corrections", "A review.jsonl a person filled in: merge its corrections.")
    )
    teacher_endpoint: str | None = field(
        default=None, metadata=flag("--teacher-endpoint", "OpenAI-compatible endpoint of a teacher model.")
    )
    teacher_model: str | None = field(default=None, metadata=flag("--teacher-model", "The teacher's model name."))
    negative_reactions: str | None = field(
        default=None, metadata=flag("--negative-reactions", "Emoji that count as negative, e.g. '👎,❌,😡'.")
    )
    exports: list[Path] = field(
        default_factory=list,
        metadata=flag("--export", "An earlier export folder: its validation/test sessions are refused."),
    )
    system_prompt: str = field(
        default="short", metadata=flag("--system-prompt", "keep | drop | short | FILE, as in export-training-data.")
    )
    max_tokens: int = field(default=4096, metadata=flag("--max-tokens", "Context kept before a failing turn."))
    scrub: bool = field(default=True, metadata=flag("--no-scrub", "Do not replace secrets and PII.", invert=True))
    force: bool = field(default=False, metadata=flag("--force", "Replace another run's files in --output."))
    strict: bool = field(default=False, metadata=flag("--strict", "Stop at the first bad line."))
    progress: bool = False  # a progress bar (the command line: when stderr is a terminal)
    teacher_api_key: str | None = field(default_factory=teacher_api_key)
    positive_reactions: tuple[str, ...] = POSITIVE_REACTIONS
    # Parsed from the text above.
    sources: tuple[str, ...] = field(init=False)
    explicit_sources: bool = field(init=False)  # the user named --source: a missing source is an error, not a note
    dates: tuple[date, date] | None = field(init=False)
    holdout_share: float = field(init=False)
    negative: tuple[str, ...] = field(init=False)  # the reactions that count as negative

    def __post_init__(self) -> None:
        self.sources = SOURCES if self.source in (None, "both") else tuple(str(self.source).split(","))
        if not set(self.sources) <= set(SOURCES):
            raise InputError(f"--source {self.source!r}: expected openclaw, gateway or both")
        self.explicit_sources = self.source is not None
        self.dates = parse_date_range(self.date_range) if self.date_range else None
        self.holdout_share = parse_holdout(self.holdout)
        self.negative = parse_emoji_list(self.negative_reactions) if self.negative_reactions else NEGATIVE_REACTIONS

    def fingerprint(self) -> str:
        """What decides which failures a run finds: a folder written with another is another run's."""
        key = {
            "agent_id": self.agent_id,
            "criteria": self.criteria,
            "sources": list(self.sources),
            "state_dirs": [str(p) for p in self.state_dirs],
            "sessions": [str(p) for p in self.sessions],
            "gateway_log": str(self.gateway_log) if self.gateway_log else None,
            "gateway_models": self.gateway_models,
            **({"eval_items": [str(p) for p in self.eval_items]} if self.eval_items else {}),
            "date_range": [d.isoformat() for d in self.dates] if self.dates else None,
            "holdout": self.holdout_share,
            "seed": self.seed,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
