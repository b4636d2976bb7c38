"""The seed's data recipe: what kind of example each one is, and how a dataset's mix compares with the target.

Categories and the target mix (the founding document): 30% normal, 20% edge cases, 20% refusals, 15% multi-turn,
15% tool calls. An example can show several traits; it counts once, in its primary category, chosen by this
precedence (most specific behaviour first):

    refusal > edge > multi-turn > tool-call > normal

- refusal: the final answer declines the request (English or Chinese phrasing) and no tool was called;
- edge: a failure signal (tool error, non-zero exit, aborted turn), an empty tool result, an empty, very short or very
  long user message, a context over 3,000 tokens, or an answer that asks the user to clarify;
- multi-turn: more than one user message;
- tool-call: at least one tool call;
- normal: none of these.

`metadata.category` on an example overrides the detection.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawtune.data.examples import approx_tokens, duplicate_keys, message_tokens
from clawtune.messages import Example, content_text

CATEGORIES = ("normal", "edge", "refusal", "multi-turn", "tool-call")
PRECEDENCE = ("refusal", "edge", "multi-turn", "tool-call")
TARGET = {"normal": 0.30, "edge": 0.20, "refusal": 0.20, "multi-turn": 0.15, "tool-call": 0.15}

# A declining answer, in the phrasings agents and models actually use (English and Chinese). An apostrophe may be
# straight or curly; "none of the available functions" is how BFCL's irrelevance answers often read.
_APOS = "['\u2019]"
REFUSAL = re.compile(
    r"\b(?:sorry|apologi[sz]e|unfortunately)\b.{0,60}\b(?:can(?:not|"
    + _APOS
    + r"t)|unable|not able|don"
    + _APOS
    + r"t have)\b"
    r"|\bI(?:" + _APOS + r"m| am) (?:unable|not able|not allowed|not permitted) to\b"
    r"|\bI (?:can(?:not|"
    + _APOS
    + r"t)|won"
    + _APOS
    + r"t be able to) (?:help|assist|do|book|order|provide|perform|complete|fulfil)"
    r"|\b(?:outside|beyond) (?:of )?(?:my|the) (?:scope|capabilities|abilities)"
    r"|\bI can only help with"
    r"|\bnone of the (?:available |provided |given )?(?:functions|tools)\b"
    r"|\b(?:there is|there"
    + _APOS
    + r"s|I have|I don"
    + _APOS
    + r"t have) no (?:\w+ )?(?:function|tool)s? (?:that |which |to |for |available)"
    r"|\bI don" + _APOS + r"t have (?:a|any|the) (?:\w+ )?(?:function|tool|capability|ability)"
    r"|抱歉|无法(?:帮|提供|完成|处理|执行)|不能(?:帮|提供|完成)|超出了?我的(?:能力|职责)?范围|没有(?:可用的|合适的)?(?:工具|函数)",
    re.IGNORECASE | re.DOTALL,
)
CLARIFY = re.compile(
    r"\b(?:did you mean|do you mean|could you clarify|which one|not a valid)\b|您是指|请确认", re.IGNORECASE
)
TOOL_ERROR = re.compile(
    r"^\s*(?:error\b|traceback\b|exception\b)|\"error\"\s*:|\bexit(?:ed)? (?:with )?code [1-9]", re.IGNORECASE
)
EMPTY_RESULT = re.compile(r"^\s*(?:\[\s*\]|\{\s*\}|null|)\s*$|\"rows\"\s*:\s*\[\s*\]")
LONG_CONTEXT_TOKENS = 3000


def traits(example: Example) -> set[str]:
    """Every category whose signs the example shows (before precedence picks one)."""
    messages = example.get("messages") or []
    found: set[str] = set()
    users = [content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    calls = any(m.get("tool_calls") for m in messages if m.get("role") == "assistant")
    answers = [m for m in messages if m.get("role") == "assistant" and m.get("weight", 1) != 0]
    final = content_text(answers[-1].get("content")) if answers else ""
    if calls:
        found.add("tool-call")
    if len(users) > 1:
        found.add("multi-turn")
    if not calls and final and REFUSAL.search(final):
        found.add("refusal")
    metadata = example.get("metadata") or {}
    tool_texts = [content_text(m.get("content")) for m in messages if m.get("role") == "tool"]
    if (
        metadata.get("signals")
        or any(TOOL_ERROR.search(t) or EMPTY_RESULT.search(t) for t in tool_texts)
        or any(len(u.strip()) < 3 or len(u) > 2000 for u in users)
        or (final and CLARIFY.search(final) and not calls)
        or sum(message_tokens(m) for m in messages) > LONG_CONTEXT_TOKENS
    ):
        found.add("edge")
    return found


def category(example: Example) -> str:
    """The example's primary category: `metadata.category` if set, else the first trait by precedence."""
    given = (example.get("metadata") or {}).get("category")
    if given in CATEGORIES:
        return str(given)
    found = traits(example)
    return next((c for c in PRECEDENCE if c in found), "normal")


@dataclass
class DataStats:
    """What `ft data-stats` reports about a set of examples."""

    examples: int = 0
    mix: Counter[str] = field(default_factory=Counter)
    token_lengths: list[int] = field(default_factory=list)
    tool_calls: Counter[str] = field(default_factory=Counter)
    exact_duplicates: int = 0
    near_duplicates: int = 0

    def share(self, name: str) -> float:
        return self.mix[name] / self.examples if self.examples else 0.0

    def percentiles(self) -> dict[str, int]:
        values = sorted(self.token_lengths)
        if not values:
            return {}
        pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
        return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": values[-1]}

    def to_add(self) -> dict[str, int]:
        """How many examples of each under-represented category would bring it to its target share.

        Computed against the smallest total in which no category is over its target, so adding the suggested
        examples (and nothing else) reaches the recipe exactly.
        """
        if not self.examples:
            return {}
        total = max(self.mix[c] / TARGET[c] for c in CATEGORIES if self.mix[c])
        total = max(total, self.examples)
        return {c: round(TARGET[c] * total) - self.mix[c] for c in CATEGORIES if round(TARGET[c] * total) > self.mix[c]}

    def to_json(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "mix": {
                c: {"count": self.mix[c], "share": round(self.share(c), 4), "target": TARGET[c]} for c in CATEGORIES
            },
            "token_length": self.percentiles(),
            "tool_calls": dict(self.tool_calls.most_common()),
            "duplicates": {"exact": self.exact_duplicates, "near": self.near_duplicates},
            "to_add": self.to_add(),
        }


def data_stats(examples: list[Example]) -> DataStats:
    """Mix, token lengths (tokenizer-free estimate), tool usage and duplicates of a set of examples."""
    stats = DataStats()
    exact_seen: set[bytes] = set()
    near_seen: set[bytes] = set()
    for example in examples:
        stats.examples += 1
        stats.mix[category(example)] += 1
        messages = example.get("messages") or []
        tools = example.get("tools")
        stats.token_lengths.append(
            sum(message_tokens(m) for m in messages) + (approx_tokens(json.dumps(tools)) if tools else 0)
        )
        for m in messages:
            for call in m.get("tool_calls") or []:
                stats.tool_calls[str((call.get("function") or call).get("name"))] += 1
        exact, near = duplicate_keys(example)
        if exact in exact_seen:
            stats.exact_duplicates += 1
        elif near in near_seen:
            stats.near_duplicates += 1
        exact_seen.add(exact)
        near_seen.add(near)
    return stats


def print_data_stats(stats: DataStats, title: str) -> None:
    """The mix as bars against the target, lengths, tools, duplicates and what to add."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{title}: {stats.examples} examples", title_justify="left")
    for name, justify in (
        ("category", "left"),
        ("count", "right"),
        ("share", "right"),
        ("target", "right"),
        ("", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    width = 30
    for c in CATEGORIES:
        share = stats.share(c)
        filled = round(share * width / 0.5)  # the bar's full width is 50%
        mark = round(TARGET[c] * width / 0.5)
        bar = "".join("█" if i < filled else ("│" if i == mark else " ") for i in range(max(width, filled + 1)))
        color = "green" if abs(share - TARGET[c]) <= 0.05 else "yellow"
        table.add_row(c, str(stats.mix[c]), f"{share:.0%}", f"{TARGET[c]:.0%}", f"[{color}]{bar}[/]")
    console.print(table)
    console.print("  bars: share of examples (full width = 50%); │ marks the target", style="dim")
    p = stats.percentiles()
    if p:
        console.print(
            f"  tokens per example (estimate): p50 {p['p50']}, p90 {p['p90']}, p99 {p['p99']}, max {p['max']}"
        )
    tools = ", ".join(f"{name} {n}" for name, n in stats.tool_calls.most_common(8)) or "none"
    console.print(f"  tool calls: {tools}")
    console.print(f"  duplicates: {stats.exact_duplicates} exact, {stats.near_duplicates} near")
    to_add = stats.to_add()
    if to_add:
        console.print("  to reach the recipe, add: " + ", ".join(f"{n} {c}" for c, n in to_add.items()))
    else:
        console.print("  the mix matches the recipe")


def data_stats_command(files: list[Path], as_json: bool) -> None:
    """`ft data-stats`: the statistics of the files together, as a table or JSON; unreadable lines are skipped."""
    import typer

    from clawtune.data.validate import iter_examples
    from clawtune.problems import InputError, Problems

    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise InputError(f"no such file: {', '.join(missing)}")
    problems = Problems()
    examples = [e for path in files for _, e in iter_examples(path, problems)]
    for problem in problems.items:
        typer.echo(f"skipped {problem}", err=True)
    if not examples:
        why = f"{len(problems)} unreadable lines" if problems else "empty"
        raise InputError(f"{', '.join(map(str, files))}: no examples ({why}); nothing to compare with the recipe")
    stats = data_stats(examples)
    if as_json:
        typer.echo(json.dumps(stats.to_json(), indent=2, ensure_ascii=False))
    else:
        print_data_stats(stats, ", ".join(str(f) for f in files))
