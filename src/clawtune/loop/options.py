"""What `ft ab-test` and its subcommands take, each option declared once (see `clawtune.options`); cheap to import,
since `clawtune --help` builds the commands from it. The checks and the parsing are the stage's (`loop.abtest`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawtune.options import flag

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"
# The guardrails and the worsening of B against A each allows (in points of a share): beyond it, B is stopped.
GUARDRAILS: dict[str, float] = {"error_rate": 0.01, "invalid_tool_calls": 0.02, "slow_requests": 0.05}
ADMIN_KEY_HELP = "The gateway's admin key (server.admin_keys; default $CLAWTUNE_ADMIN_KEY)."


def endpoint_field() -> Any:
    """`--endpoint`: the running gateway (every ab-test command talks to it)."""
    return field(
        default=DEFAULT_ENDPOINT, metadata=flag("--endpoint", "The running gateway.", envvar="CLAWTUNE_ENDPOINT")
    )


def admin_key_field() -> Any:
    """`--admin-key`: the gateway's admin key."""
    return field(default=None, metadata=flag("--admin-key", ADMIN_KEY_HELP, envvar="CLAWTUNE_ADMIN_KEY"))


@dataclass
class ABTestOptions:
    """Everything `ft ab-test` takes, as typed; `loop.abtest.ab_test_command` checks and parses it."""

    model_a: str | None = field(default=None, metadata=flag("--model-a", "The incumbent (the id agents ask for)."))
    model_b: str | None = field(default=None, metadata=flag("--model-b", "The challenger."))
    traffic_split: str | None = field(
        default=None, metadata=flag("--traffic-split", "A:B traffic shares, e.g. 50:50 (default).")
    )
    canary_steps: str | None = field(
        default=None,
        metadata=flag(
            "--canary",
            "Gray release instead of a fixed split: B's share at each step in percent, e.g. 10,50,100; each step "
            "is held until --step-sessions of B's sessions, no guardrail breach and a primary metric not worse; 100 "
            "is the promotion (needs --promote-if-better).",
        ),
    )
    step_sessions: int = field(
        default=100, metadata=flag("--step-sessions", "Canary: B's sessions each step needs before it may pass.", min=1)
    )
    promote_if_better: bool = field(
        default=False,
        metadata=flag(
            "--promote-if-better",
            "When the primary metric calls B better (after the canary's last step): serve B behind the agent's "
            "model id, in the gateway and its models.yaml (with a backup).",
        ),
    )
    guardrails: str = field(
        default=",".join(f"{name}={allowed}" for name, allowed in GUARDRAILS.items()),
        metadata=flag(
            "--guardrails",
            "B against A, each with the worsening allowed (a share); a breach rolls B back at once. 'none': off.",
        ),
    )
    slow_ms: float = field(
        default=10_000.0,
        metadata=flag("--slow-ms", "A request slower than this counts as slow (slow_requests).", min=1),
    )
    register: bool = field(
        default=False,
        metadata=flag("--register", "On promotion, make B OpenClaw's primary model (clawtune openclaw register)."),
    )
    openclaw_config: Path | None = field(
        default=None, metadata=flag("--openclaw-config", "--register: OpenClaw's config (default: its own).")
    )
    agent: str | None = field(
        default=None, metadata=flag("--agent", "--register: the agent whose primary model changes (default: all).")
    )
    duration: str = field(default="2h", metadata=flag("--duration", "The longest it runs: 2h, 90m, 20s."))
    metrics: str = field(
        default="user_satisfaction,accuracy,latency",
        metadata=flag(
            "--metrics",
            "Comma-separated: user_satisfaction, accuracy, latency, tokens, cost, error_rate, invalid_tool_calls.",
        ),
    )
    primary: str | None = field(
        default=None, metadata=flag("--primary", "The metric the verdict is on (default: the first in --metrics).")
    )
    endpoint: str = endpoint_field()
    admin_key: str | None = admin_key_field()
    agent_model: str | None = field(
        default=None, metadata=flag("--agent-model", "The id the agent asks for, when it is not model A's.")
    )
    margin: float | None = field(
        default=None,
        metadata=flag("--margin", "Equivalence margin in the primary metric's units (default 0.02 for shares).", min=0),
    )
    alpha: float = field(default=0.05, metadata=flag("--alpha", "False-positive rate, under continuous monitoring."))
    min_effect: float | None = field(
        default=None, metadata=flag("--min-effect", "Fixed-horizon mode: the smallest difference to detect.")
    )
    power: float = field(default=0.8, metadata=flag("--power", "Fixed-horizon mode: the power at --min-effect."))
    price_a: float | None = field(default=None, metadata=flag("--price-a", "Model A's price, USD per 1M tokens."))
    price_b: float | None = field(default=None, metadata=flag("--price-b", "Model B's price, USD per 1M tokens."))
    refresh: float = field(default=5.0, metadata=flag("--refresh", "Seconds between refreshes.", min=0.1))
    experiment_id: str | None = field(default=None, metadata=flag("--id", "The experiment's id (default: generated)."))
    output: Path | None = field(default=None, metadata=flag("--output", "Report folder (default ./ab-tests/ID)."))
    test_set: Path | None = field(
        default=None,
        metadata=flag("--test-set", "Offline: compare the two models on these held-out turns (paired, ft evaluate)."),
    )
    limit: int | None = field(default=None, metadata=flag("--limit", "Offline: only the first N turns.", min=1))


@dataclass
class StatusOptions:
    """`ft ab-test status [ID]`."""

    experiment_id: str | None = field(
        default=None, metadata=flag("ID", "An experiment (default: list them all).", argument=True)
    )
    endpoint: str = endpoint_field()
    admin_key: str | None = admin_key_field()


@dataclass
class RollbackOptions:
    """`ft ab-test rollback ID`."""

    experiment_id: str = field(metadata=flag("ID", "The experiment to roll back (running or promoted).", argument=True))
    reason: str | None = field(default=None, metadata=flag("--reason", "Why, for the record."))
    endpoint: str = endpoint_field()
    admin_key: str | None = admin_key_field()


@dataclass
class PromoteOptions:
    """`ft ab-test promote ID`."""

    experiment_id: str = field(
        metadata=flag("ID", "The experiment (running or ended) whose B is promoted.", argument=True)
    )
    register: bool = field(
        default=False,
        metadata=flag("--register", "Also make B OpenClaw's primary model (clawtune openclaw register)."),
    )
    openclaw_config: Path | None = field(
        default=None, metadata=flag("--openclaw-config", "--register: OpenClaw's config (default: its own).")
    )
    agent: str | None = field(default=None, metadata=flag("--agent", "--register: the agent (default: all)."))
    endpoint: str = endpoint_field()
    admin_key: str | None = admin_key_field()


@dataclass
class ResumeOptions:
    """`ft ab-test resume ID`."""

    experiment_id: str = field(metadata=flag("ID", "The running experiment to drive again.", argument=True))
    refresh: float = field(
        default=ABTestOptions.refresh, metadata=flag("--refresh", "Seconds between refreshes.", min=0.1)
    )
    output: Path | None = field(default=None, metadata=flag("--output", "Report folder (default ./ab-tests/ID)."))
    endpoint: str = endpoint_field()
    admin_key: str | None = admin_key_field()


def registration(register: bool, config: Path | None, agent: str | None) -> dict[str, Any] | None:
    """What a promotion registers with OpenClaw (None: nothing)."""
    if not register:
        return None
    return {"config": str(config) if config else None, "agent": agent}
