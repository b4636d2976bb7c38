"""The evaluation report: the founding document's table in the terminal, and eval-report.{json,md,html}.

The HTML page is self-contained (inline SVG charts, no scripts or network): per-metric bars with their 95%
intervals, per-category accuracy, the verdict, and the worst failures with their inputs.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from clawtune.artifacts.files import write_reports as write_report_files

# (key in a side's summary, label, kind): kind says how to format and whether higher is better.
ROWS = [
    ("accuracy", "accuracy", "rate+"),
    ("f1", "token F1", "rate+"),
    ("tool_call_accuracy", "tool-call accuracy", "rate+"),
    ("tool_name_accuracy", "tool-name accuracy", "rate+"),
    ("refusal_precision", "refusal precision", "rate+"),
    ("refusal_recall", "refusal recall", "rate+"),
    ("hallucination_rate", "hallucination rate", "rate-"),
    ("judge_accuracy", "judge accuracy", "rate+"),
    ("general_accuracy", "general accuracy (forgetting)", "rate+"),
    ("latency_p50_s", "latency p50", "seconds-"),
    ("latency_p95_s", "latency p95", "seconds-"),
    ("prompt_tokens_per_request", "prompt tokens / request", "count-"),
    ("completion_tokens_per_request", "completion tokens / request", "count-"),
    ("cost_per_request", "cost / request", "money-"),
]
METRIC_ROWS = {
    "accuracy": {"accuracy"},
    "f1": {"f1"},
    "tool_calls": {"tool_call_accuracy", "tool_name_accuracy"},
    "refusal": {"refusal_precision", "refusal_recall"},
    "hallucination": {"hallucination_rate"},
    "latency": {"latency_p50_s", "latency_p95_s"},
    "tokens": {"prompt_tokens_per_request", "completion_tokens_per_request"},
    "cost": {"cost_per_request"},
    "forgetting": {"general_accuracy"},
}


def _value(summary: dict[str, Any], key: str) -> tuple[float | None, list[float] | None]:
    raw = summary.get(key)
    if isinstance(raw, dict):
        value = raw.get("value")
        return (None if value is None else float(value)), raw.get("ci")
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None, None
    return float(raw), None


def _fmt(value: float | None, kind: str, ci: list[float] | None = None) -> str:
    if value is None:
        return "—"
    if kind.startswith("rate"):
        text = f"{value:.1%}"
        if ci and not any(math.isnan(c) for c in ci):
            text += f" [{ci[0]:.0%}–{ci[1]:.0%}]"
        return text
    if kind.startswith("seconds"):
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    if kind.startswith("money"):
        return f"${value:.6f}" if value < 0.01 else f"${value:.4f}"
    return f"{value:,.1f}"


def _change(base: float | None, tuned: float | None, kind: str) -> str:
    if base is None or tuned is None:
        return "—"
    if kind.startswith("rate"):
        return f"{(tuned - base) * 100:+.1f} pts"
    if base == 0:
        return "—"
    return f"{(tuned - base) / base:+.0%}"


def rows(report: dict[str, Any]) -> list[tuple[str, str, str, str, bool | None]]:
    """(label, baseline, fine-tuned, change, better?) for each metric that was asked for and measured."""
    wanted = set().union(*(METRIC_ROWS[m] for m in report["metrics"]))
    wanted.add("judge_accuracy")
    out = []
    for key, label, kind in ROWS:
        if key not in wanted:
            continue
        b, b_ci = _value(report["baseline"], key)
        t, t_ci = _value(report["fine_tuned"], key)
        if b is None and t is None:
            continue
        better = None
        if b is not None and t is not None and b != t:
            better = (t > b) == kind.endswith("+")
        out.append((label, _fmt(b, kind, b_ci), _fmt(t, kind, t_ci), _change(b, t, kind), better))
    return out


def print_table(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"baseline vs fine-tuned on {report['items']} held-out turns ({report['test_set']})")
    table.add_column("metric")
    table.add_column("baseline", justify="right")
    table.add_column("fine-tuned", justify="right")
    table.add_column("change", justify="right")
    for label, b, t, change, better in rows(report):
        style = "" if better is None else ("green" if better else "red")
        table.add_row(label, b, t, f"[{style}]{change}[/]" if style else change)
    console.print(table)
    comparison = report["comparison"]
    colour = (
        "green"
        if comparison["significant"] and comparison["fine_tuned_only_correct"] > comparison["baseline_only_correct"]
        else "yellow"
    )
    console.print(f"[{colour}]{comparison['verdict']}[/]", highlight=False)
    if line := errors_line(report):
        console.print(f"[yellow]errors[/]: {line}", highlight=False)
    if line := overlap_line(report):
        console.print(f"overlap: {line}", highlight=False, markup=False)
    if report.get("forgetting", {}).get("flagged"):
        f = report["forgetting"]
        console.print(
            f"[red]forgetting[/]: general accuracy fell {f['drop']:.1%} ({f['before']:.1%} -> {f['after']:.1%}), "
            f"past the {f['threshold']:.0%} threshold",
            highlight=False,
        )
    console.print(f"reports: {', '.join(report['files'].values())}", highlight=False)


def errors_line(report: dict[str, Any]) -> str | None:
    """The requests an endpoint still failed after its retries, per set, and what was left out because of them."""
    parts = []
    for name, e in (report.get("errors") or {}).items():
        if e["baseline"] or e["fine_tuned"]:
            parts.append(
                f"{name}: baseline {e['baseline']}, fine-tuned {e['fine_tuned']} without an answer; {e['excluded']} "
                "items left out of both sides' figures"
            )
    return "; ".join(parts) + " (not scored as wrong)" if parts else None


def overlap_line(report: dict[str, Any]) -> str | None:
    """What the held-out turns share with the training data, and the verdict on the turns never seen in training."""
    o = report.get("overlap")
    if not o:
        return None
    if not o["items_seen"]:
        return f"no held-out turn was asked word for word in the training data ({o['train_set']})"
    u = o["unseen"]
    return (
        f"{o['items_seen']} of {o['items_seen'] + o['items_unseen']} held-out turns were asked word for word in the "
        f"training data ({o['train_set']}); on the other {o['items_unseen']}: baseline "
        f"{_fmt(u['baseline_accuracy']['value'], 'rate')}, fine-tuned {_fmt(u['fine_tuned_accuracy']['value'], 'rate')}"
        f", {u['comparison']['verdict']}"
    )


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Evaluation: baseline vs fine-tuned",
        "",
        f"- test set: `{report['test_set']}` ({report['items']} held-out assistant turns)",
        f"- baseline: {report['baseline']['name']}",
        f"- fine-tuned: {report['fine_tuned']['name']}",
        f"- **verdict: {report['comparison']['verdict']}**",
        *([f"- overlap: {line}"] if (line := overlap_line(report)) else []),
        *([f"- errors: {line}"] if (line := errors_line(report)) else []),
        "",
        "| metric | baseline | fine-tuned | change |",
        "|---|---|---|---|",
    ]
    lines += [f"| {label} | {b} | {t} | {change} |" for label, b, t, change, _ in rows(report)]
    lines += ["", "Rates show their 95% bootstrap interval in brackets.", "", "## Accuracy by category", ""]
    lines += ["| category | items | baseline | fine-tuned |", "|---|---|---|---|"]
    for name, b in report["baseline"]["per_category"].items():
        t = report["fine_tuned"]["per_category"][name]
        if b["n"]:
            lines.append(f"| {name} | {b['n']} | {_fmt(b['value'], 'rate')} | {_fmt(t['value'], 'rate')} |")
    if report.get("forgetting"):
        f = report["forgetting"]
        lines += [
            "",
            f"Forgetting: general accuracy {f['before']:.1%} -> {f['after']:.1%} on {f['general_items']} general turns"
            + (" (**flagged**)" if f["flagged"] else " (within the threshold)"),
        ]
    lines += ["", "## Worst failures of the fine-tuned model", ""]
    for failure in report["worst_failures"]:
        lines += [
            f"- `{failure['id']}` ({failure['category']}): {failure['why']}",
            f"  - input: {failure['input']}",
            f"  - reference: `{failure['reference']}`",
            f"  - fine-tuned: `{failure['fine_tuned']}`",
            f"  - baseline: `{failure['baseline']}`",
        ]
    return "\n".join(lines) + "\n"


def _bars(title: str, groups: list[tuple[str, float | None, float | None]], percent: bool = True) -> str:
    """An inline SVG grouped bar chart: baseline and fine-tuned per group."""
    width, bar, gap, top, left = 640, 18, 14, 30, 220
    height = top + len(groups) * (2 * bar + gap) + 10
    scale = max([v for _, b, t in groups for v in (b, t) if v is not None] + [1e-9]) if not percent else 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="0" y="18" font-size="15" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, (label, b, t) in enumerate(groups):
        y = top + i * (2 * bar + gap)
        parts.append(f'<text x="0" y="{y + bar + 4}" font-size="13">{html.escape(label)}</text>')
        for j, (value, colour, name) in enumerate(((b, "#9aa5b1", "baseline"), (t, "#2563eb", "fine-tuned"))):
            length = 0 if value is None else max(1, (width - left - 80) * value / scale)
            parts.append(
                f'<rect class="bar" data-series="{name}" x="{left}" y="{y + j * bar}" width="{length:.1f}" '
                f'height="{bar - 3}" fill="{colour}"><title>{name}: {value}</title></rect>'
            )
            text = "—" if value is None else (f"{value:.0%}" if percent else f"{value:.3g}")
            parts.append(f'<text x="{left + length + 6:.1f}" y="{y + j * bar + bar - 6}" font-size="12">{text}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_page(report: dict[str, Any]) -> str:
    base, tuned = report["baseline"], report["fine_tuned"]
    rate_groups = []
    for key, label, kind in ROWS:
        if kind.startswith("rate") and key in base and key in tuned:
            b, _ = _value(base, key)
            t, _ = _value(tuned, key)
            if b is not None or t is not None:
                rate_groups.append((label, b, t))
    categories = [
        (name, b["value"], tuned["per_category"][name]["value"]) for name, b in base["per_category"].items() if b["n"]
    ]
    latency = [
        (label, _value(base, key)[0], _value(tuned, key)[0]) for key, label, _ in ROWS if key.startswith("latency")
    ]
    table = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{html.escape(b)}</td><td>{html.escape(t)}</td>"
        f'<td class="{"" if better is None else ("up" if better else "down")}">{html.escape(change)}</td></tr>'
        for label, b, t, change, better in rows(report)
    )
    failures = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(f[k]))}</td>" for k in ("id", "category", "input", "reference", "fine_tuned", "why")
        )
        + "</tr>"
        for f in report["worst_failures"]
    )
    significant = report["comparison"]["significant"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clawtune evaluation</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 980px; color: #111; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} td, th {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
td.up {{ color: #15803d; font-weight: 600; }} td.down {{ color: #b91c1c; font-weight: 600; }}
.verdict {{ padding: .6rem 1rem; border-radius: 6px; background: {"#dcfce7" if significant else "#fef9c3"}; }}
.charts svg {{ display: block; margin: 1.2rem 0; }} .legend span {{ margin-right: 1rem; }}
</style></head><body>
<h1>Baseline vs fine-tuned</h1>
<p>{report["items"]} held-out assistant turns from <code>{html.escape(report["test_set"])}</code>.
Baseline: <b>{html.escape(base["name"])}</b>. Fine-tuned: <b>{html.escape(tuned["name"])}</b>.</p>
<p class="verdict" id="verdict">{html.escape(report["comparison"]["verdict"])}</p>
{f'<p id="overlap">{html.escape(line)}</p>' if (line := overlap_line(report)) else ""}
{f'<p id="errors">errors: {html.escape(line)}</p>' if (line := errors_line(report)) else ""}
<table id="metrics"><tr><th>metric</th><th>baseline</th><th>fine-tuned</th><th>change</th></tr>{table}</table>
<p class="legend"><span style="color:#9aa5b1">■ baseline</span><span style="color:#2563eb">■ fine-tuned</span>
Rates show their 95% bootstrap interval in brackets.</p>
<div class="charts">
<div id="chart-metrics">{_bars("Metrics (higher is better except hallucination)", rate_groups)}</div>
<div id="chart-categories">{_bars("Accuracy by category", categories)}</div>
<div id="chart-latency">{_bars("Latency (seconds per request)", latency, percent=False)}</div>
</div>
<h2>Worst failures of the fine-tuned model</h2>
<table id="failures"><tr><th>item</th><th>category</th><th>input</th><th>reference</th><th>fine-tuned</th><th>why</th></tr>
{failures}</table>
</body></html>
"""


def write_reports(report: dict[str, Any], folder: Path) -> dict[str, str]:
    """eval-report.{json,md,html} in `folder`."""
    return write_report_files(folder, "eval-report", report, markdown(report), html_page(report))
