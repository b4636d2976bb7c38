"""`clawtune ft ab-test`: an A/B test of two models on a running gateway's live traffic, with verdicts that stay valid
however often anyone looks.

The gateway does the splitting (an experiment on model A's id: the agent keeps asking for the id it was registered
with, and each conversation is sticky to one arm); this module drives it through the admin API, turns the gateway's
per-unit figures into metrics per arm, and tests the primary metric with `clawtune.loop.sequential`:

- the unit is the session (the key the arm was drawn by): a unit's value is its share of rated answers that were
  positive (`user_satisfaction`), its share of graded answers that were right (`accuracy`), its mean latency
  (`latency`), ... so requests of one conversation are never counted as independent;
- bounded metrics (shares) go to the exact betting test, unbounded ones (latency, tokens) to the asymptotic
  confidence sequence; both are valid under continuous monitoring, so the live table may be read at every refresh;
- the verdict: B better, A better, equivalent within `--margin` (the confidence sequence lies inside +/- margin), or
  not enough data yet, with a forecast of how many more sessions it needs;
- a fixed-horizon mode (`--min-effect`, `--power`) computes the sample size up front and gives no verdict before it.

Every refresh's figures are stored in the gateway's database (`/admin/experiments/{id}/refreshes`), and the reports
(JSON, Markdown, a self-contained HTML page) are written when the test ends.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clawtune.artifacts.files import write_reports as write_report_files
from clawtune.loop import sequential
from clawtune.loop.options import DEFAULT_ENDPOINT, GUARDRAILS, ABTestOptions, registration
from clawtune.problems import InputError


class ABTestError(InputError):
    """A bad option, or a gateway that refuses or cannot be reached; says which."""


class GatewayUnreachable(ABTestError):
    """The gateway did not answer (stopped, restarting): a running test waits for it."""


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    bounded: bool  # a share in [0, 1]: the exact betting test; else the asymptotic confidence sequence
    higher_is_better: bool
    unit: str  # how to format: "share", "ms", "tokens", "usd"


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("user_satisfaction", "user satisfaction", True, True, "share"),
        Metric("accuracy", "accuracy", True, True, "share"),
        Metric("latency", "latency (mean per session)", False, False, "ms"),
        Metric("tokens", "tokens per request", False, False, "tokens"),
        Metric("cost", "cost per request", False, False, "usd"),
        Metric("error_rate", "error rate", True, False, "share"),
        Metric("invalid_tool_calls", "invalid tool-call rate", True, False, "share"),
        Metric("slow_requests", "slow requests (over --slow-ms)", True, False, "share"),
    )
}
VERDICTS = ("B better", "A better", "equivalent within margin", "not enough data")


def parse_metrics(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise ABTestError("--metrics: name at least one metric")
    for name in names:
        if name not in METRICS:
            raise ABTestError(f"--metrics: unknown metric {name!r} (known: {', '.join(METRICS)})")
    return list(dict.fromkeys(names))


def parse_split(text: str) -> tuple[float, float]:
    """'50:50' -> (50, 50); each part positive."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*", text)
    if not match or float(match.group(1)) <= 0 or float(match.group(2)) <= 0:
        raise ABTestError(f"--traffic-split: {text!r} is not A:B with two positive numbers, e.g. 50:50 or 90:10")
    return float(match.group(1)), float(match.group(2))


def parse_duration(text: str) -> float:
    """'2h', '90m', '20s', '1h30m', '1d' -> seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([dhms])", text.strip().lower())
    if not parts or "".join(f"{n}{u}" for n, u in parts) != re.sub(r"\s+", "", text.strip().lower()):
        raise ABTestError(f"--duration: {text!r} is not a duration such as 2h, 90m, 20s or 1h30m")
    seconds = sum(float(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise ABTestError("--duration: must be longer than 0")
    return seconds


@dataclass
class Settings:
    """What the test was asked; stored with the experiment, so `status` can analyse it the same way."""

    model_a: str
    model_b: str
    split: tuple[float, float] = (50.0, 50.0)
    metrics: list[str] = field(default_factory=lambda: ["user_satisfaction"])
    primary: str = "user_satisfaction"
    duration_s: float = field(default_factory=lambda: parse_duration(ABTestOptions.duration))
    alpha: float = ABTestOptions.alpha
    margin: float | None = None  # in the primary metric's units; default 0.02 for shares, 5% of A's mean otherwise
    mode: str = "sequential"  # sequential | fixed
    min_effect: float | None = None
    power: float = ABTestOptions.power
    price_a: float | None = None  # USD per 1M tokens
    price_b: float | None = None
    agent_model: str | None = None  # the id whose requests are split (default model A's)
    # guardrails: metric -> the worsening allowed; a breach (the always-valid lower bound of B - A above it) stops B
    guardrails: dict[str, float] = field(default_factory=lambda: dict(GUARDRAILS))
    slow_ms: float = ABTestOptions.slow_ms  # a request slower than this counts as slow (the slow_requests guardrail)
    canary: list[float] | None = None  # B's share at each step, in percent (replaces split); 100 is the promotion
    step_sessions: int = ABTestOptions.step_sessions  # B's sessions each canary step needs before it may pass
    promote_if_better: bool = False  # promote B when the primary metric calls it better (after the last step)
    register: dict[str, Any] | None = None  # on promotion, make B OpenClaw's primary: {"config", "agent"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "split" in known:
            known["split"] = tuple(known["split"])
        return cls(**known)

    @property
    def share_b(self) -> float:
        if self.canary:
            return self.canary[0] / 100
        return self.split[1] / sum(self.split)


# ---- per unit, per arm ------------------------------------------------------------------------------------------


def unit_value(
    unit: dict[str, Any], metric: str, price: float | None = None, slow_ms: float | None = None
) -> float | None:
    """One unit's value of a metric, or None when it has nothing to say (no rated answer, no graded answer, ...)."""
    requests = unit.get("requests") or 0
    if metric == "slow_requests":
        if not requests or slow_ms is None:
            return None
        return sum(latency > slow_ms for latency in unit["latency_ms"]) / requests
    if metric == "user_satisfaction":
        rated = unit["positive"] + unit["negative"]
        return unit["positive"] / rated if rated else None
    if metric == "accuracy":
        return unit["correct"] / unit["graded"] if unit["graded"] else None
    if metric == "latency":
        latencies = unit["latency_ms"]
        return float(sum(latencies) / len(latencies)) if latencies else None
    if not requests:
        return None
    tokens = (unit["prompt_tokens"] + unit["completion_tokens"]) / requests
    if metric == "tokens":
        return float(tokens)
    if metric == "cost":
        return tokens * price / 1e6 if price is not None else None
    if metric == "error_rate":
        return unit["errors"] / requests
    if metric == "invalid_tool_calls":
        return unit["tool_calls_invalid"] / requests
    raise ValueError(metric)


def _quantile(values: Sequence[float], q: float) -> float | None:
    return float(np.quantile(np.asarray(values, dtype=float), q)) if values else None


def arm_summary(units: list[dict[str, Any]], price: float | None) -> dict[str, Any]:
    """The figures of one arm: units, requests, satisfaction (and how many rated), accuracy (and how many graded),
    latency p50/p95 over requests, tokens and cost per request, error and invalid tool-call rates."""
    requests = sum(u["requests"] for u in units)
    rated = sum(u["positive"] + u["negative"] for u in units)
    graded = sum(u["graded"] for u in units)
    latencies = [x for u in units for x in u["latency_ms"]]
    tokens = sum(u["prompt_tokens"] + u["completion_tokens"] for u in units)
    per_request = tokens / requests if requests else None
    return {
        "units": len(units),
        "requests": requests,
        "rated": rated,
        "user_satisfaction": sum(u["positive"] for u in units) / rated if rated else None,
        "graded": graded,
        "accuracy": sum(u["correct"] for u in units) / graded if graded else None,
        "latency_p50_ms": _quantile(latencies, 0.5),
        "latency_p95_ms": _quantile(latencies, 0.95),
        "tokens_per_request": per_request,
        "cost_per_request": per_request * price / 1e6 if per_request is not None and price is not None else None,
        "error_rate": sum(u["errors"] for u in units) / requests if requests else None,
        "invalid_tool_call_rate": sum(u["tool_calls_invalid"] for u in units) / requests if requests else None,
    }


# ---- the test ---------------------------------------------------------------------------------------------------


def _margin(settings: Settings, metric: Metric, mean_a: float) -> float:
    if settings.margin is not None:
        return settings.margin
    if metric.bounded:
        return 0.02
    return 0.05 * abs(mean_a) if math.isfinite(mean_a) and mean_a else 0.0


def test_metric(
    units: list[dict[str, Any]], settings: Settings, name: str, prices: dict[str, float | None]
) -> dict[str, Any]:
    """The always-valid test of mean(B) - mean(A) of one metric over the units that have a value, in arrival order."""
    metric = METRICS[name]
    seq: list[sequential.Unit] = []
    for unit in units:
        arm = unit["arm"]
        value = unit_value(unit, name, prices.get(arm), settings.slow_ms)
        if value is None or arm not in ("A", "B"):
            continue
        seq.append(sequential.Unit(arm, float(value), unit.get("propensity_b") or settings.share_b))
    out: dict[str, Any] = {"metric": name, "units": len(seq), "method": "betting" if metric.bounded else "asymptotic"}
    n_a = sum(u.arm == "A" for u in seq)
    n_b = len(seq) - n_a
    out.update(n_a=n_a, n_b=n_b)
    if n_a == 0 or n_b == 0:
        out.update(estimate=None, lower=None, upper=None, p_value=1.0, mean_a=None, mean_b=None)
        return out
    state = (
        sequential.betting_sequence(seq, alpha=settings.alpha)
        if metric.bounded
        else sequential.asymptotic_sequence(seq, alpha=settings.alpha)
    )
    values_a = [u.value for u in seq if u.arm == "A"]
    values_b = [u.value for u in seq if u.arm == "B"]
    out.update(
        # the plain difference of the arms' means (what the table shows); the test runs on the AIPW terms, whose
        # running mean (`aipw_estimate`) starts from a prior and converges to the same difference
        estimate=state.mean_b - state.mean_a,
        aipw_estimate=state.estimate,
        lower=state.lower if math.isfinite(state.lower) else None,
        upper=state.upper if math.isfinite(state.upper) else None,
        p_value=state.p_value,
        mean_a=state.mean_a,
        mean_b=state.mean_b,
        sd_a=float(np.std(values_a)) if len(values_a) > 1 else None,
        sd_b=float(np.std(values_b)) if len(values_b) > 1 else None,
    )
    return out


def _better(metric: Metric, estimate: float) -> str:
    return "B better" if (estimate > 0) == metric.higher_is_better else "A better"


def _more_needed(test: dict[str, Any], metric: Metric, settings: Settings, margin: float) -> int | None:
    """Sessions still needed to decide, at the difference seen so far (or the margin, if that is larger): the
    asymptotic sequence's forecast (`sequential.asymptotic_sample_size`) with the spreads seen so far."""
    estimate = test.get("estimate")
    sd_a = test.get("sd_a") or (0.5 if metric.bounded else None)
    sd_b = test.get("sd_b") or (0.5 if metric.bounded else None)
    if sd_a is None or sd_b is None:
        return None
    effect = max(abs(estimate or 0.0), margin)
    if effect <= 0:
        return None
    try:
        total = sequential.asymptotic_sample_size(effect, sd_a, sd_b, settings.share_b, settings.alpha, settings.power)
    except ValueError:
        return None
    return max(total - test["units"], 1)


def fixed_sample_size(settings: Settings, sd: float | None) -> int | None:
    """Sessions (both arms) the fixed-horizon test needs for `--min-effect` at `--power`; for a share, the worst
    case spread (0.5) when nothing has been seen yet."""
    if settings.min_effect is None:
        return None
    metric = METRICS[settings.primary]
    spread = sd if sd else (0.5 if metric.bounded else None)
    if spread is None:
        return None
    return sequential.fixed_sample_size(
        settings.min_effect, spread, spread, settings.share_b, settings.alpha, settings.power
    )


def decide(units: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """Every metric's test and the verdict on the primary one."""
    prices = {"A": settings.price_a, "B": settings.price_b}
    tests = {name: test_metric(units, settings, name, prices) for name in settings.metrics}
    if settings.primary not in tests:
        tests[settings.primary] = test_metric(units, settings, settings.primary, prices)
    primary = tests[settings.primary]
    metric = METRICS[settings.primary]
    margin = _margin(settings, metric, primary.get("mean_a") or math.nan)
    out: dict[str, Any] = {"primary": settings.primary, "margin": margin, "mode": settings.mode, "tests": tests}
    if settings.mode == "fixed":
        return {**out, **_fixed_verdict(units, settings, metric, primary, margin, prices)}
    lower, upper, estimate = primary.get("lower"), primary.get("upper"), primary.get("estimate")
    if lower is not None and upper is not None and estimate is not None and (lower > 0 or upper < 0):
        verdict = _better(metric, lower if lower > 0 else upper)
        reason = f"the {100 * (1 - settings.alpha):.0f}% confidence sequence of B - A excludes 0"
    elif lower is not None and upper is not None and -margin <= lower and upper <= margin and margin > 0:
        verdict = "equivalent within margin"
        reason = f"the confidence sequence lies inside +/- {_fmt(margin, metric.unit)}"
    else:
        verdict = "not enough data"
        more = _more_needed(primary, metric, settings, margin)
        out["more_units_needed"] = more
        reason = "the confidence sequence still holds 0 and reaches past the margin" + (
            f": about {more} more sessions at the difference seen so far" if more else ""
        )
    return {**out, "verdict": verdict, "reason": reason, "decided": verdict != "not enough data"}


def check_guardrails(units: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """Each guardrail's always-valid test of B - A (every unit so far, each weighted by the share B had when it was
    drawn): breached when the confidence sequence's lower bound lies above the worsening allowed, that is when B is
    worse than A by more than the threshold with 95% confidence, however often this is looked at."""
    prices = {"A": settings.price_a, "B": settings.price_b}
    out: dict[str, Any] = {}
    for name, threshold in settings.guardrails.items():
        test = test_metric(units, settings, name, prices)
        lower = test.get("lower")
        breached = lower is not None and lower > threshold
        out[name] = {"threshold": threshold, "breached": breached, "test": test}
        if name == "slow_requests":
            out[name]["slow_ms"] = settings.slow_ms
    return out


def guardrail_reason(name: str, guardrail: dict[str, Any]) -> str:
    """A breach in words: which guardrail, B - A with its interval, the threshold."""
    test = guardrail["test"]
    label = METRICS[name].label.replace("--slow-ms", f"{guardrail.get('slow_ms', 0):,.0f} ms")
    return (
        f"guardrail {name}: {label} B {_fmt(test.get('mean_b'), 'share')} vs A {_fmt(test.get('mean_a'), 'share')}, "
        f"B - A {_interval(test, 'share')} over {test['n_a']} + {test['n_b']} sessions: worse by more than the "
        f"{_fmt(guardrail['threshold'], 'share', True)} allowed"
    )


def _fixed_verdict(
    units: list[dict[str, Any]],
    settings: Settings,
    metric: Metric,
    primary: dict[str, Any],
    margin: float,
    prices: dict[str, float | None],
) -> dict[str, Any]:
    """The fixed-horizon test: no verdict before the planned size; at it, Welch's test on the first units."""
    spread = None if metric.bounded else (primary.get("sd_a") or None)
    needed = fixed_sample_size(settings, spread)
    if needed is None:
        return {
            "verdict": "not enough data",
            "reason": "the planned size needs the arms' spread: waiting for the first sessions",
            "planned_units": None,
            "decided": False,
        }
    values: list[tuple[str, float]] = []
    for unit in units:
        value = unit_value(unit, settings.primary, prices.get(unit["arm"]))
        if value is not None and unit["arm"] in ("A", "B") and len(values) < needed:
            values.append((unit["arm"], value))
    if len(values) < needed:
        return {
            "verdict": "not enough data",
            "reason": f"fixed horizon: {len(values)} of the planned {needed} sessions so far (no verdict before)",
            "planned_units": needed,
            "more_units_needed": needed - len(values),
            "decided": False,
        }
    a = [v for arm, v in values if arm == "A"]
    b = [v for arm, v in values if arm == "B"]
    estimate, lower, upper, p = sequential.fixed_horizon_test(a, b)
    fixed = {"estimate": estimate, "lower": lower, "upper": upper, "p_value": p, "units": len(values)}
    effect_margin = max(margin, settings.min_effect or 0.0)
    if p < settings.alpha:
        verdict, reason = _better(metric, estimate), f"fixed horizon: p = {p:.3g} < {settings.alpha}"
    elif -effect_margin <= lower and upper <= effect_margin:
        verdict, reason = (
            "equivalent within margin",
            f"the 95% interval lies inside +/- {_fmt(effect_margin, metric.unit)}",
        )
    else:
        verdict, reason = "not enough data", f"fixed horizon reached without a difference (p = {p:.3g})"
    return {"verdict": verdict, "reason": reason, "planned_units": needed, "fixed_test": fixed, "decided": True}


def labelled_units(raw_units: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """The gateway's units (arms named by model id) as A and B, each with the probability B had when it was drawn."""
    arm_of = {settings.model_a: "A", settings.model_b: "B"}
    units = []
    for unit in raw_units:
        label = arm_of.get(unit.get("arm") or "")
        if label is None:
            continue
        prop = unit.get("propensity")
        propensity_b = (1 - prop if label == "A" else prop) if prop is not None else settings.share_b
        if not 0 < propensity_b < 1:  # drawn when one arm had all the traffic (after a promotion): no comparison
            continue
        units.append({**unit, "arm": label, "propensity_b": propensity_b})
    return units


def analyse(experiment: dict[str, Any], raw_units: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """The gateway's units as A and B, every arm's figures, the guardrails, the canary's step, and the decision."""
    units = labelled_units(raw_units, settings)
    prices = {"A": settings.price_a, "B": settings.price_b}
    arms = {label: arm_summary([u for u in units if u["arm"] == label], prices[label]) for label in ("A", "B")}
    out = {
        "experiment": experiment.get("id"),
        "status": experiment.get("status"),
        "models": {"A": settings.model_a, "B": settings.model_b},
        "split": list(settings.split),
        "accuracy_source": "tool-call validity: answers with tool calls, right when every call names an offered tool "
        "with arguments its JSON Schema accepts; errors count as wrong",
        "arms": arms,
        **decide(units, settings),
        "guardrails": check_guardrails(units, settings),
        "time": time.time(),
    }
    canary = experiment.get("canary")
    if canary:
        steps, step = canary["steps"], canary["step"]
        at_step = [u for u in units if u["first"] >= canary["since"]]
        out["canary"] = {
            **canary,
            "share_b": steps[step] if step < len(steps) else 100.0,
            "sessions_b": sum(u["arm"] == "B" for u in at_step),
            "sessions_a": sum(u["arm"] == "A" for u in at_step),
            "needed_b": settings.step_sessions,
        }
    return out


# ---- formatting -------------------------------------------------------------------------------------------------


def _fmt(value: float | None, unit: str, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    sign = "+" if signed and value > 0 else ""
    if unit == "share":
        return f"{sign}{100 * value:.1f}{' pts' if signed else '%'}"
    if unit == "ms":
        return f"{sign}{value:,.0f} ms"
    if unit == "usd":
        return f"{sign}${value:.5f}"
    return f"{sign}{value:,.1f}"


ARM_ROWS = [
    ("units", "sessions", None),
    ("requests", "requests", None),
    ("user_satisfaction", "user satisfaction", "share"),
    ("rated", "  rated answers", None),
    ("accuracy", "accuracy", "share"),
    ("graded", "  graded answers", None),
    ("latency_p50_ms", "latency p50", "ms"),
    ("latency_p95_ms", "latency p95", "ms"),
    ("tokens_per_request", "tokens / request", "tokens"),
    ("cost_per_request", "cost / request", "usd"),
    ("error_rate", "error rate", "share"),
    ("invalid_tool_call_rate", "invalid tool calls", "share"),
]


def _cell(value: Any, unit: str | None) -> str:
    if unit is None:
        return "—" if value is None else f"{value:,}"
    return _fmt(value, unit)


def _p(test: dict[str, Any]) -> str:
    p = test.get("p_value")
    return "—" if p is None else f"{p:.3g}"


def _interval(test: dict[str, Any], unit: str) -> str:
    if test.get("estimate") is None:
        return "—"
    low, high = test.get("lower"), test.get("upper")
    return f"{_fmt(test['estimate'], unit, True)} [{_fmt(low, unit, True)}, {_fmt(high, unit, True)}]"


def rich_table(result: dict[str, Any], elapsed: float | None = None, duration: float | None = None) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    models = result["models"]
    title = f"A/B test {result.get('experiment')}"
    if elapsed is not None and duration is not None:
        title += f" · {elapsed:,.0f}s of {duration:,.0f}s"
    arms = Table(title=title, title_justify="left")
    arms.add_column("")
    arms.add_column(f"A: {models['A']}", justify="right")
    arms.add_column(f"B: {models['B']}", justify="right")
    for key, label, unit in ARM_ROWS:
        arms.add_row(label, _cell(result["arms"]["A"].get(key), unit), _cell(result["arms"]["B"].get(key), unit))
    tests = Table(title="B - A, always-valid 95% confidence sequences (sessions as units)", title_justify="left")
    for column in ("metric", "sessions", "B - A [interval]", "p (always valid)", "test"):
        tests.add_column(column, justify="left" if column == "metric" else "right")
    for name, test in result["tests"].items():
        metric = METRICS[name]
        mark = " (primary)" if name == result["primary"] else ""
        p = test.get("p_value")
        tests.add_row(
            metric.label + mark,
            str(test["units"]),
            _interval(test, metric.unit),
            f"{p:.3g}" if p is not None else "—",
            test["method"],
        )
    colour = {"B better": "green", "A better": "yellow", "equivalent within margin": "cyan"}.get(
        result["verdict"], "white"
    )
    verdict = Text.assemble(("verdict: ", "bold"), (result["verdict"], f"bold {colour}"), f" — {result['reason']}")
    parts: list[Any] = [arms, tests, verdict]
    if result.get("canary"):
        parts.append(Text(canary_line(result)))
    breached = [n for n, g in (result.get("guardrails") or {}).items() if g["breached"]]
    if result.get("guardrails"):
        state = f"breached: {', '.join(breached)}" if breached else "none breached"
        parts.append(Text(f"guardrails ({', '.join(result['guardrails'])}): {state}"))
    return Group(*parts)


def canary_line(result: dict[str, Any]) -> str:
    """'canary step 1 of 3 (B 10%): 12 of B's 100 sessions' for a live line."""
    canary = result["canary"]
    steps, step = canary["steps"], canary["step"]
    if step >= len(steps):
        return f"canary: promoted after {len(steps)} steps"
    return (
        f"canary step {step + 1} of {len(steps)} (B {canary['share_b']:g}%): {canary['sessions_b']} of the "
        f"{canary['needed_b']} sessions on B this step needs"
    )


def progress_line(result: dict[str, Any], elapsed: float) -> str:
    arms = result["arms"]
    test = result["tests"][result["primary"]]
    interval = _interval(test, METRICS[result["primary"]].unit)
    line = (
        f"[{elapsed:5.0f}s] sessions A {arms['A']['units']} / B {arms['B']['units']}; {result['primary']} B - A "
        f"{interval}; {result['verdict']}"
    )
    if result.get("canary"):
        line += f"; {canary_line(result)}"
    return line


def split_text(result: dict[str, Any]) -> str:
    """'split 50:50', or for a canary 'canary 10% -> 50% -> 100%, at step 2 (B 50%)'."""
    canary = result.get("canary")
    if not canary:
        return f"split {result['split'][0]:g}:{result['split'][1]:g}"
    steps = " -> ".join(f"{x:g}%" for x in canary["steps"])
    return f"canary {steps}, at step {min(canary['step'] + 1, len(canary['steps']))} (B {canary['share_b']:g}%)"


def markdown(report: dict[str, Any]) -> str:
    result = report["result"]
    models = result["models"]
    lines = [
        f"# A/B test {result['experiment']}",
        "",
        f"A (incumbent): **{models['A']}** · B: **{models['B']}** · {split_text(result)}"
        f" · {report['elapsed_s']:.0f} s · mode {result['mode']}",
        "",
        f"**Verdict: {result['verdict']}** ({result['primary']}): {result['reason']}.",
        "",
        "| | A | B |",
        "|---|---|---|",
    ]
    for key, label, unit in ARM_ROWS:
        lines.append(
            f"| {label.strip()} | {_cell(result['arms']['A'].get(key), unit)} | "
            f"{_cell(result['arms']['B'].get(key), unit)} |"
        )
    lines += [
        "",
        "| metric | sessions | B - A [95% confidence sequence] | p (always valid) | test |",
        "|---|---|---|---|---|",
    ]
    for name, test in result["tests"].items():
        metric = METRICS[name]
        p = test.get("p_value")
        lines.append(
            f"| {metric.label}{' (primary)' if name == result['primary'] else ''} | {test['units']} | "
            f"{_interval(test, metric.unit)} | {f'{p:.3g}' if p is not None else '—'} | {test['method']} |"
        )
    guardrails = result.get("guardrails") or {}
    if guardrails:
        lines += [
            "",
            "| guardrail | A | B | B - A [95% confidence sequence] | allowed | state |",
            "|---|---|---|---|---|---|",
        ]
        for name, g in guardrails.items():
            test = g["test"]
            lines.append(
                f"| {name} | {_fmt(test.get('mean_a'), 'share')} | {_fmt(test.get('mean_b'), 'share')} | "
                f"{_interval(test, 'share')} | {_fmt(g['threshold'], 'share', True)} | "
                f"{'**breached**' if g['breached'] else 'ok'} |"
            )
    events = report.get("events") or []
    if events:
        lines += ["", "## Decisions", "", "| time | decision | arms after | why |", "|---|---|---|---|"]
        for e in events:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["created"]))
            arms = ", ".join(f"{k} {v:g}" for k, v in (e.get("arms") or {}).items())
            why = (e.get("reason") or "").replace("|", "/")
            lines.append(f"| {when} | {e['kind']} | {arms} | {why} |")
    lines += ["", f"Accuracy: {result['accuracy_source']}.", ""]
    return "\n".join(lines)


def _svg_path(points: list[tuple[float, float]], x0: float, x1: float, y0: float, y1: float) -> str:
    def sx(x: float) -> float:
        return 60 + (x - x0) / ((x1 - x0) or 1) * 600

    def sy(y: float) -> float:
        return 200 - (y - y0) / ((y1 - y0) or 1) * 180

    return " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(points))


def _history_chart(refreshes: list[dict[str, Any]], primary: str) -> str:
    """The primary metric's estimate and confidence sequence over the refreshes (inline SVG)."""
    rows = []
    for r in refreshes:
        test = (r.get("figures") or {}).get("tests", {}).get(primary) or {}
        if test.get("estimate") is not None and test.get("lower") is not None and test.get("upper") is not None:
            rows.append((r["created"], test["estimate"], test["lower"], test["upper"]))
    if len(rows) < 2:
        return "<p>Not enough refreshes to draw the history.</p>"
    x0, x1 = rows[0][0], rows[-1][0]
    y0 = min(min(r[2] for r in rows), 0.0)
    y1 = max(max(r[3] for r in rows), 0.0)
    zero = _svg_path([(x0, 0.0), (x1, 0.0)], x0, x1, y0, y1)
    lines = [
        (_svg_path([(r[0], r[2]) for r in rows], x0, x1, y0, y1), "#93c5fd"),
        (_svg_path([(r[0], r[3]) for r in rows], x0, x1, y0, y1), "#93c5fd"),
        (_svg_path([(r[0], r[1]) for r in rows], x0, x1, y0, y1), "#2563eb"),
    ]
    body = "".join(f'<path d="{d}" fill="none" stroke="{c}" stroke-width="2"/>' for d, c in lines)
    return (
        f'<svg id="chart-history" width="700" height="220" role="img"><title>B - A of {html.escape(primary)} over '
        f'time, with its confidence sequence</title><path d="{zero}" stroke="#999" stroke-dasharray="4"/>{body}</svg>'
    )


def _decisions_html(events: list[dict[str, Any]]) -> str:
    """Every decision taken on the experiment (start, steps, stop, rollback, promote) as a table."""
    if not events:
        return ""
    rows = "".join(
        f"<tr><td>{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e['created']))}</td>"
        f"<td>{html.escape(e['kind'])}</td>"
        f"<td>{html.escape(', '.join(f'{k} {v:g}' for k, v in (e.get('arms') or {}).items()))}</td>"
        f"<td>{html.escape(e.get('reason') or '')}</td></tr>"
        for e in events
    )
    return f'<h2>Decisions</h2>\n<table id="decisions"><tr><th>time</th><th>decision</th><th>arms after</th><th>why</th></tr>{rows}</table>'


def html_page(report: dict[str, Any]) -> str:
    result = report["result"]
    models = result["models"]
    arms = "".join(
        f"<tr><td>{html.escape(label.strip())}</td><td>{html.escape(_cell(result['arms']['A'].get(k), u))}</td>"
        f"<td>{html.escape(_cell(result['arms']['B'].get(k), u))}</td></tr>"
        for k, label, u in ARM_ROWS
    )
    tests = "".join(
        f"<tr><td>{html.escape(METRICS[n].label)}{' (primary)' if n == result['primary'] else ''}</td>"
        f"<td>{t['units']}</td><td>{html.escape(_interval(t, METRICS[n].unit))}</td>"
        f"<td>{_p(t)}</td>"
        f"<td>{t['method']}</td></tr>"
        for n, t in result["tests"].items()
    )
    decided = result["verdict"] != "not enough data"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clawtune A/B test {html.escape(str(result["experiment"]))}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 980px; color: #111; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} td, th {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
.verdict {{ padding: .6rem 1rem; border-radius: 6px; background: {"#dcfce7" if decided else "#fef9c3"}; }}
</style></head><body>
<h1>A/B test {html.escape(str(result["experiment"]))}</h1>
<p>A (incumbent): <b>{html.escape(models["A"])}</b>. B: <b>{html.escape(models["B"])}</b>.
{html.escape(split_text(result))}; {report["elapsed_s"]:.0f} s; mode {html.escape(result["mode"])}.</p>
<p class="verdict" id="verdict"><b>{html.escape(result["verdict"])}</b> ({html.escape(result["primary"])}):
{html.escape(result["reason"])}.</p>
<table id="arms"><tr><th></th><th>A</th><th>B</th></tr>{arms}</table>
<h2>B - A, always-valid 95% confidence sequences</h2>
<table id="tests"><tr><th>metric</th><th>sessions</th><th>B - A [interval]</th><th>p</th><th>test</th></tr>{tests}</table>
{_decisions_html(report.get("events") or [])}
<h2>The primary metric over time</h2>
{_history_chart(report.get("refreshes") or [], result["primary"])}
<p>Accuracy: {html.escape(result["accuracy_source"])}.</p>
</body></html>
"""


def write_reports(report: dict[str, Any], folder: Path) -> dict[str, str]:
    """ab-test-report.{json,md,html} in `folder` (rewritten on every run: the same inputs give the same files)."""
    return write_report_files(folder, "ab-test-report", report, markdown(report), html_page(report))


# ---- the gateway's admin API ------------------------------------------------------------------------------------


class AdminClient:
    """The few admin calls the test needs (the standard library: one JSON request at a time). Not through
    `openai_http.Client`'s retries, on purpose: promote, rollback and pause are not safe to send twice, and a gateway
    that fails them is reported, not retried."""

    def __init__(self, endpoint: str, admin_key: str | None, timeout: float = 30.0) -> None:
        self.base = endpoint.rstrip("/").removesuffix("/v1")
        self.key = admin_key
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = exc.reason
            hint = " (pass --admin-key, or set CLAWTUNE_ADMIN_KEY)" if exc.code in (401, 403) else ""
            raise ABTestError(f"{self.base}{path}: the gateway answered {exc.code}: {message}{hint}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GatewayUnreachable(
                f"{self.base}: cannot reach the gateway ({reason}); start it with `clawtune serve` or pass --endpoint"
            ) from None


# ---- running it -------------------------------------------------------------------------------------------------


@dataclass
class RunOptions:
    settings: Settings
    endpoint: str = DEFAULT_ENDPOINT
    admin_key: str | None = None
    experiment_id: str | None = None
    refresh_s: float = ABTestOptions.refresh
    output: Path | None = None
    live: bool = True


def run_ab_test(
    options: RunOptions,
    console: Any = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Create the experiment on the gateway (a fixed split, or the canary's first step), then `drive` it."""
    from rich.console import Console

    console = console or Console()
    settings = options.settings
    client = AdminClient(options.endpoint, options.admin_key)
    target = settings.agent_model or settings.model_a
    body: dict[str, Any] = {
        "model": target,
        "arms": {settings.model_a: settings.split[0], settings.model_b: settings.split[1]},
        "settings": asdict(settings),
    }
    if settings.canary:
        body["canary"] = {"steps": settings.canary}
    if options.experiment_id:
        body["id"] = options.experiment_id
    experiment = client.call("POST", "/admin/experiments", body)
    if settings.canary:
        how = f"canary {' -> '.join(f'{x:g}%' for x in settings.canary)} for B, starting at {settings.canary[0]:g}%"
    else:
        how = f"{settings.split[0]:g}:{settings.split[1]:g}"
    console.print(
        f"experiment {experiment['id']}: requests for {target!r} now go to {settings.model_a} / {settings.model_b} "
        f"({how}), each session sticky to its arm"
    )
    return drive(client, experiment["id"], settings, options, console, clock, sleep, clock())


def drive(
    client: AdminClient,
    experiment_id: str,
    settings: Settings,
    options: RunOptions,
    console: Any,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    started: float,
) -> dict[str, Any]:
    """Refresh the analysis every `refresh_s` (stored in the gateway and shown live) and act on it: a guardrail's
    breach rolls B back at once; a canary steps up when its step's check passes; the test ends when the primary
    metric is decided (promoting B with `promote_if_better`) or the duration is over. Every state it acts on is read
    from the gateway each time, so a gateway restarted meanwhile (or `resume`) carries on where the ramp was."""
    from rich.live import Live

    from clawtune.loop import canary

    result: dict[str, Any] = {}
    action = canary.Action("stop", "duration", "the duration is over")

    def refresh() -> tuple[dict[str, Any], dict[str, Any]]:
        experiment = client.call("GET", f"/admin/experiments/{experiment_id}")
        units = client.call("GET", f"/admin/experiments/{experiment_id}/units")["units"]
        figures = analyse(experiment, units, settings)
        client.call("POST", f"/admin/experiments/{experiment_id}/refreshes", {"figures": figures})
        return experiment, figures

    try:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            if not options.live:
                live.stop()
            while True:
                try:
                    experiment, result = refresh()
                    elapsed = clock() - started
                    found = canary.next_action(experiment, result, settings, elapsed)
                    if found is not None and found.kind == "step":
                        client.call("POST", f"/admin/experiments/{experiment_id}/step", found.body())
                        console.print(f"[{elapsed:5.0f}s] {found.reason}", highlight=False, markup=False)
                        continue
                except GatewayUnreachable as exc:
                    # the experiment is in the gateway's database and survives a restart: wait for it to come back
                    elapsed = clock() - started
                    if elapsed >= settings.duration_s:
                        raise ABTestError(
                            f"{exc}; the experiment {experiment_id} is still recorded there (`clawtune ft ab-test "
                            f"status {experiment_id}` once it is back)"
                        ) from None
                    console.print(f"[{elapsed:5.0f}s] {exc}: retrying", highlight=False, markup=False)
                    sleep(min(options.refresh_s, max(settings.duration_s - elapsed, 0.05)))
                    continue
                if options.live:
                    live.update(rich_table(result, elapsed, settings.duration_s), refresh=True)
                else:  # a log, not a terminal: one line per refresh
                    console.print(progress_line(result, elapsed), highlight=False, markup=False)
                if found is not None:
                    action = found
                    break
                sleep(min(options.refresh_s, max(settings.duration_s - elapsed, 0.05)))
    except KeyboardInterrupt:
        console.print("interrupted: stopping the experiment with the figures so far")
        result = result or refresh()[1]
        action = canary.Action("stop", "interrupted", "interrupted")
    elapsed = clock() - started
    final = canary.act(
        client, experiment_id, action, result, settings, options.endpoint, console, sleep, options.refresh_s
    )
    events = client.call("GET", f"/admin/experiments/{experiment_id}/events")["events"]
    refreshes = client.call("GET", f"/admin/experiments/{experiment_id}/refreshes")["refreshes"]
    result = {**result, "ended": action.ended}
    report = {
        "experiment": final,
        "settings": asdict(settings),
        "elapsed_s": elapsed,
        "ended": action.ended,
        "result": result,
        "events": events,
        "refreshes": refreshes,
    }
    folder = options.output or Path("ab-tests") / experiment_id
    report["files"] = write_reports(report, folder)
    if options.live:
        console.print(f"verdict: {result['verdict']} — {result['reason']}")
    else:
        console.print(rich_table(result, elapsed, settings.duration_s))
    console.print(f"{final['status']}: {action.reason}", highlight=False, markup=False)
    console.print(f"reports: {report['files']['json']}, {report['files']['markdown']}, {report['files']['html']}")
    return report


def resume(options: RunOptions, console: Any = None) -> dict[str, Any]:
    """`ft ab-test resume ID`: drive a running experiment again with the settings it was started with."""
    from rich.console import Console

    console = console or Console()
    client = AdminClient(options.endpoint, options.admin_key)
    experiment_id = options.experiment_id or ""
    experiment = client.call("GET", f"/admin/experiments/{experiment_id}")
    if experiment["status"] != "running":
        raise ABTestError(f"{experiment_id} is {experiment['status']}: nothing to resume")
    if not experiment.get("settings"):
        raise ABTestError(f"{experiment_id} was not started by `clawtune ft ab-test`: it has no settings to resume")
    settings = stored_settings(experiment)
    started = time.monotonic() - max(time.time() - experiment["created"], 0.0)
    console.print(f"experiment {experiment_id}: resumed", highlight=False)
    return drive(client, experiment_id, settings, options, console, time.monotonic, time.sleep, started)


def stored_settings(experiment: dict[str, Any]) -> Settings:
    """The settings an experiment was started with (one made by hand: its first and last arms, the usual metrics)."""
    raw = experiment.get("settings")
    if not raw:
        names = list((experiment.get("promotion") or {}).get("arms") or experiment["arms"])
        raw = {
            "model_a": names[0],
            "model_b": names[-1],
            "split": [experiment["arms"].get(n, 1.0) or 1.0 for n in (names[0], names[-1])],
        }
        raw["metrics"] = ["user_satisfaction", "accuracy", "latency"]
    return Settings.from_dict(raw)


def status(endpoint: str, admin_key: str | None, experiment_id: str | None, console: Any = None) -> Any:
    """`ft ab-test status [ID]`: every experiment in one table, or one (running or past) analysed as its test would,
    with its guardrails and every decision taken on it."""
    from rich.console import Console
    from rich.table import Table

    from clawtune.loop import canary

    console = console or Console()
    client = AdminClient(endpoint, admin_key)
    if experiment_id is None:
        experiments = client.call("GET", "/admin/experiments")["experiments"]
        table = Table(title=f"experiments on {client.base}", title_justify="left")
        for column in ("id", "status", "splits", "arms", "canary", "verdict", "created"):
            table.add_column(column)
        for e in experiments:
            verdict = (e.get("result") or {}).get("verdict") or "—"
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(e["created"]))
            arms = ", ".join(f"{k} {v:g}" for k, v in e["arms"].items())
            table.add_row(e["id"], e["status"], e["splits"], arms, canary.step_label(e), verdict, created)
        console.print(table)
        return experiments
    experiment = client.call("GET", f"/admin/experiments/{experiment_id}")
    settings = stored_settings(experiment)
    if experiment["status"] == "running" or not experiment.get("result"):
        units = client.call("GET", f"/admin/experiments/{experiment_id}/units")["units"]
        result = analyse(experiment, units, settings)
    else:
        result = experiment["result"]
    events = client.call("GET", f"/admin/experiments/{experiment_id}/events")["events"]
    console.print(f"{experiment_id}: {experiment['status']}" + (f" · {canary.step_label(experiment)}"))
    console.print(rich_table(result))
    if result.get("guardrails"):
        console.print(canary.guardrail_table(result["guardrails"]))
    console.print(canary.events_table(events))
    return {**result, "events": events, "status": experiment["status"]}


# ---- offline: the same held-out turns through both models -------------------------------------------------------


def offline(
    model_a: str, model_b: str, test_set: Path, endpoint: str, output: Path | None, limit: int | None = None
) -> dict[str, Any]:
    """`--test-set`: both models answer the same held-out turns through the gateway, scored by `ft evaluate` (A as the
    baseline, B as the fine-tuned side): McNemar's exact test and a paired bootstrap of the accuracy difference."""
    from clawtune.evaluate.run import EvalOptions, run_evaluation

    api = endpoint.rstrip("/")
    api = api if api.endswith("/v1") else api + "/v1"
    folder = output or Path("ab-tests") / f"offline-{model_a}-vs-{model_b}"
    report = run_evaluation(
        EvalOptions(
            test_set=test_set,
            endpoint=api,
            endpoint_model=model_b,
            baseline_endpoint=api,
            baseline_model=model_a,
            metrics="accuracy,f1,tool_calls,latency,tokens",
            output=folder,
            limit=limit,
        )
    )
    comparison = report["comparison"]
    if not comparison["significant"]:
        verdict = "no significant difference"
    elif comparison["fine_tuned_only_correct"] > comparison["baseline_only_correct"]:
        verdict = "B better"
    else:
        verdict = "A better"
    diff = comparison.get("accuracy_difference") or {}
    ci = diff.get("ci") or [math.nan, math.nan]
    print(
        f"offline verdict: {verdict} (A {model_a}, B {model_b}; McNemar p = {comparison['mcnemar_p']:.3g}; "
        f"B - A accuracy {_fmt(diff.get('value'), 'share', True)} [{_fmt(ci[0], 'share', True)}, "
        f"{_fmt(ci[1], 'share', True)}], paired bootstrap)"
    )
    return {**report, "ab_verdict": verdict}


# ---- simulated users (the demo, the tests) ----------------------------------------------------------------------


Rater = Callable[[str, dict[str, Any], dict[str, Any]], "str | None"]


class SimulatedUsers:
    """Conversations against a gateway, on threads, until stopped. Each session takes a script (`{"messages": [...],
    "tools": [...], ...}`) and either replays its messages as one request (`replay=True`: a held-out turn) or sends its
    user turns one by one (`turns` of them), asking for `model` (the agent's id) and naming itself only by its
    conversation (no session header: the gateway keys it). Each answer is rated by `rate(arm, script, response)` ->
    "positive" | "negative" | None through /v1/feedback. Records which arm answered each turn (`arms_seen`)."""

    def __init__(
        self,
        url: str,
        model: str,
        rate: Rater,
        scripts: Sequence[dict[str, Any]],
        turns: int = 2,
        workers: int = 4,
        api_key: str | None = None,
        seed: int = 0,
        max_tokens: int = 16,
        replay: bool = False,
        once: bool = False,
    ) -> None:
        import threading

        self.url = url.rstrip("/").removesuffix("/v1")
        self.model = model
        self.rate = rate
        self.scripts = list(scripts)
        self.turns = turns
        self.workers = workers
        self.api_key = api_key
        self.max_tokens = max_tokens
        self.replay = replay
        self.once = once  # each script once, in order, then the workers stop (`wait()`)
        self.rng = np.random.default_rng(seed)
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.arms_seen: dict[int, list[str | None]] = {}
        self.errors: list[str] = []
        self.sessions = 0
        self._threads: list[Any] = []

    def _post(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(), headers, method="POST")
        with urllib.request.urlopen(request, timeout=120) as reply:
            return json.loads(reply.read()), {k.lower(): v for k, v in reply.headers.items()}

    def _ask(self, number: int, script: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens}
        if script.get("tools"):
            body["tools"] = script["tools"]
        response, headers = self._post("/v1/chat/completions", body)
        arm = headers.get("x-clawtune-arm")
        with self.lock:
            self.arms_seen.setdefault(number, []).append(arm)
        rating = self.rate(arm or "", script, response)
        if rating:
            self._post("/v1/feedback", {"request_id": response["id"], "rating": rating})
        return response

    def _session(self, number: int, script: dict[str, Any]) -> None:
        if self.replay:
            self._ask(number, script, script["messages"])
            return
        messages = [m for m in script["messages"] if m.get("role") == "system"]
        users = [m for m in script["messages"] if m.get("role") == "user"] or [{"role": "user", "content": "hello"}]
        for turn in range(self.turns):
            content = users[turn % len(users)]["content"]
            # a unique opening, so two simulated sessions never share a conversation key
            text = f"{content} (session {number})" if turn == 0 else f"{content} (turn {turn + 1})"
            messages.append({"role": "user", "content": text})
            response = self._ask(number, script, messages)
            answer = response["choices"][0]["message"]
            messages.append({"role": "assistant", "content": answer.get("content") or ""})

    def _worker(self) -> None:
        while not self.stop_event.is_set():
            with self.lock:
                number = self.sessions
                if self.once and number >= len(self.scripts):
                    return
                self.sessions += 1
                script = self.scripts[number if self.once else int(self.rng.integers(len(self.scripts)))]
            try:
                self._session(number, script)
            except Exception as exc:  # a simulated user that fails is recorded, and the next one starts
                with self.lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                if self.stop_event.wait(0.2):
                    return

    def __enter__(self) -> SimulatedUsers:
        import threading

        self._threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def wait(self) -> None:
        """With `once`: until every script has been sent."""
        for thread in self._threads:
            thread.join()

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout=120)


def coin_rater(rates: dict[str, float], seed: int = 0) -> Rater:
    """A user who likes an answer of arm X with probability rates[X] (the arms' true satisfaction)."""
    import threading

    rng = np.random.default_rng(seed)
    lock = threading.Lock()

    def rate(arm: str, script: dict[str, Any], response: dict[str, Any]) -> str | None:
        with lock:
            draw = float(rng.random())
        return "positive" if draw < rates.get(arm, 0.5) else "negative"

    return rate


def reference_rater() -> Rater:
    """A user who likes an answer when `ft evaluate`'s scorer finds it right against the script's reference turn
    (a held-out turn replayed: the user knows what a right answer is)."""
    from clawtune.evaluate.metrics import score

    def rate(arm: str, script: dict[str, Any], response: dict[str, Any]) -> str | None:
        message = response["choices"][0]["message"]
        prediction = {"role": "assistant", "content": message.get("content") or ""}
        if message.get("tool_calls"):
            prediction["tool_calls"] = message["tool_calls"]
        right = score(prediction, script["reference"], script["messages"], script.get("tools")).correct
        return "positive" if right else "negative"

    return rate


def ab_test_command(options: ABTestOptions, live: bool = True) -> None:
    """`ft ab-test`: check the options, then run the test live on the gateway (or, with --test-set, offline)."""
    from clawtune.loop import canary

    if not options.model_a or not options.model_b:
        raise ABTestError(
            "--model-a and --model-b are required (or: clawtune ft ab-test status|rollback|promote|resume ID)"
        )
    if options.test_set is not None:
        offline(options.model_a, options.model_b, options.test_set, options.endpoint, options.output, options.limit)
        return
    names = parse_metrics(options.metrics)
    chosen = options.primary or names[0]
    if chosen not in METRICS:
        raise ABTestError(f"--primary: unknown metric {chosen!r} (known: {', '.join(METRICS)})")
    if not 0 < options.alpha < 1 or not 0 < options.power < 1:
        raise ABTestError("--alpha and --power must lie between 0 and 1")
    if options.model_a == options.model_b:
        raise ABTestError("--model-a and --model-b must differ")
    if options.canary_steps is not None and options.traffic_split is not None:
        raise ABTestError("--canary replaces --traffic-split: give one of them")
    steps = canary.parse_canary(options.canary_steps) if options.canary_steps is not None else None
    if steps and steps[-1] >= 100 and not options.promote_if_better:
        raise ABTestError(
            "--canary: a last step of 100% is the promotion: add --promote-if-better (or end the ramp below 100)"
        )
    if (options.register or options.openclaw_config or options.agent) and not options.promote_if_better:
        raise ABTestError("--register, --openclaw-config and --agent act on promotion: add --promote-if-better")
    split = parse_split(options.traffic_split or "50:50")
    if steps:
        split = (100 - steps[0], steps[0])
    settings = Settings(
        model_a=options.model_a,
        model_b=options.model_b,
        split=split,
        metrics=names if chosen in names else [chosen, *names],
        primary=chosen,
        duration_s=parse_duration(options.duration),
        alpha=options.alpha,
        margin=options.margin,
        mode="fixed" if options.min_effect is not None else "sequential",
        min_effect=options.min_effect,
        power=options.power,
        price_a=options.price_a,
        price_b=options.price_b,
        agent_model=options.agent_model,
        guardrails=canary.parse_guardrails(options.guardrails),
        slow_ms=options.slow_ms,
        canary=steps,
        step_sessions=options.step_sessions,
        promote_if_better=options.promote_if_better,
        register=registration(options.register, options.openclaw_config, options.agent),
    )
    run = RunOptions(
        settings, options.endpoint, options.admin_key, options.experiment_id, options.refresh, options.output, live=live
    )
    run_ab_test(run)
