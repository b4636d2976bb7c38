"""What `ft evaluate` takes, each option declared once (see `clawtune.options`); cheap to import, since
`clawtune --help` builds the command from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clawtune.options import flag
from clawtune.problems import InputError

METRICS = ("accuracy", "f1", "tool_calls", "refusal", "hallucination", "latency", "tokens", "cost", "forgetting")


class EvalError(InputError):
    """The evaluation cannot run as asked."""


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """`accuracy,f1` -> the metric names (none given: all of them)."""
    if not text:
        return METRICS
    names = tuple(m.strip().lower().replace("-", "_") for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise EvalError(f"--metrics: unknown {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    return names


@dataclass
class EvalOptions:
    """Everything `ft evaluate` takes."""

    test_set: Path = field(metadata=flag("--test-set", "Held-out examples (e.g. ./ft-data/test.jsonl)."))
    model_dir: str | None = field(
        default=None,
        metadata=flag("--model-dir", "A checkpoint or output folder of `ft train`, or any model."),
    )
    metrics: str | None = field(
        default=None,
        metadata=flag(
            "--metrics",
            "Comma-separated: accuracy, f1, tool_calls, refusal, hallucination, latency, tokens, cost, forgetting "
            "(default: all).",
        ),
    )
    baseline: str | None = field(
        default=None,
        metadata=flag("--baseline", "A local baseline model (default: the adapter's base model)."),
    )
    baseline_endpoint: str | None = field(
        default=None, metadata=flag("--baseline-endpoint", "An OpenAI-compatible endpoint as the baseline.")
    )
    baseline_model: str | None = field(
        default=None, metadata=flag("--baseline-model", "The model id to ask the baseline endpoint for.")
    )
    baseline_system_prompt: Path | None = field(
        default=None, metadata=flag("--baseline-system-prompt", "System prompt the baseline needs (a file).")
    )
    endpoint: str | None = field(
        default=None, metadata=flag("--endpoint", "Evaluate a served model behind this endpoint instead.")
    )
    endpoint_model: str | None = field(default=None, metadata=flag("--endpoint-model", "Its model id."))
    output: Path | None = field(default=None, metadata=flag("--output", "Report folder (default: MODEL_DIR/eval)."))
    batch_size: int = field(default=8, metadata=flag("--batch-size", "Local generation batch size.", min=1))
    max_new_tokens: int = field(default=256, metadata=flag("--max-new-tokens", min=1))
    limit: int | None = field(default=None, metadata=flag("--limit", "Evaluate only the first N turns.", min=1))
    price_in_per_1k: float | None = field(
        default=None, metadata=flag("--price-in", "Endpoint price per 1K prompt tokens.")
    )
    price_out_per_1k: float | None = field(
        default=None, metadata=flag("--price-out", "Endpoint price per 1K completion tokens.")
    )
    gpu_hour_price: float = field(
        default=2.5, metadata=flag("--gpu-hour-price", "Price of an hour of the local device.")
    )
    forgetting_threshold: float = field(
        default=0.05, metadata=flag("--forgetting-threshold", "Flag a general-accuracy drop past this.")
    )
    forgetting_size: int = field(
        default=60, metadata=flag("--forgetting-size", "General conversations in the forgetting check.", min=1)
    )
    judge_endpoint: str | None = field(
        default=None, metadata=flag("--judge-endpoint", "Optional LLM-as-judge endpoint for text answers.")
    )
    judge_model: str | None = field(default=None, metadata=flag("--judge-model"))
    allow_base_mismatch: bool = field(
        default=False, metadata=flag("--allow-base-mismatch", "Load an adapter on a base it was not trained on.")
    )
    train_set: Path | None = field(
        default=None,
        metadata=flag(
            "--train-set",
            "Training data to check the held-out turns against (default: the file in the checkpoint's manifest).",
        ),
    )
    held_out: Path | None = field(
        default=None,
        metadata=flag(
            "--held-out",
            "The gate after a retrain: the collect-failures folder (its held-out.jsonl). Compares --model-dir "
            "with --baseline (default: the checkpoint it was retrained from) on those failures, the test set and the "
            "forgetting set; exits 3 unless the gate passes.",
        ),
    )  # the gate: a collect-failures folder (or file) the retrain never saw
    benchmark: str | None = field(
        default=None,
        metadata=flag(
            "--benchmark",
            "A general tool-calling check: bfcl:simple,multiple,irrelevance (the Berkeley Function Calling "
            "Leaderboard's cases, scored by its own AST checker; needs bfcl-eval, installed without its dependencies).",
        ),
    )
    benchmark_limit: int = field(default=50, metadata=flag("--benchmark-limit", "Cases per benchmark category.", min=1))
    api_key_env: str = "OPENAI_API_KEY"
    strict: bool = False
    quiet: bool = False
    # Parsed from the text above.
    metric_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.metric_names = parse_metrics(self.metrics)
