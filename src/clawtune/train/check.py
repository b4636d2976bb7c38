"""`clawtune ft check-template`: what a base's chat template makes of your data, before a GPU hour is spent.

For the template as the model publishes it, and for clawtune's training template where one replaces it, the table
says how the masks are found (generation markers or prefixes), how many examples train, which rule refused the rest
and how to fix it, which adaptations the data needed, and for a training template how far its serving prompts differ
from the stock template's (measured on this data: prompts that differ, characters added) and whether the turns it
trains are the ones the stock template serves.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawtune.artifacts import chat_templates
from clawtune.artifacts.render import TemplateError, render_example, template_messages
from clawtune.artifacts.template_profile import profile, raw_render
from clawtune.messages import Example, is_trained
from clawtune.models import TINY_AGENT, load_tokenizer
from clawtune.problems import InputError, Problems


@dataclass
class TemplateReport:
    """One template's verdict on one data file."""

    template: str
    used_for_training: bool
    method: str
    base: str = ""
    examples: int = 0
    trained: int = 0
    trained_turns: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    first_refusal: dict[str, str] = field(default_factory=dict)
    adapted: Counter[str] = field(default_factory=Counter)
    # against the stock template (training templates only)
    prompts: int = 0
    prompts_differing: int = 0
    characters_added: int = 0
    stock_cannot: int = 0  # prompts the stock template cannot render at all
    turns_compared: int = 0
    turns_identical: int = 0

    @property
    def refused_share(self) -> float:
        return sum(self.refused.values()) / self.examples if self.examples else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "template": self.template,
            "used_for_training": self.used_for_training,
            "masks": self.method,
            "examples": self.examples,
            "trained": self.trained,
            "trained_turns": self.trained_turns,
            "refused": dict(self.refused),
            "first_refusal": self.first_refusal,
            "adapted": dict(self.adapted),
            "against_stock": {
                "prompts": self.prompts,
                "prompts_differing": self.prompts_differing,
                "characters_added": self.characters_added,
                "stock_cannot_render": self.stock_cannot,
                "turns_compared": self.turns_compared,
                "turns_identical": self.turns_identical,
            }
            if self.prompts
            else None,
        }


def _tokenizers(base: str, tokenizer_name: str | None) -> list[tuple[Any, bool]]:
    """(tokenizer, used for training) for the base's own template and, where one replaces it, clawtune's."""
    path = Path(base)
    if path.suffix == ".jinja" or (path.is_file() and not path.is_dir()):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"--base {base}: cannot read the template ({exc.strerror or exc})") from None
        tokenizer, _ = load_tokenizer(tokenizer_name or TINY_AGENT)
        tokenizer.chat_template = text
        tokenizer.clawtune_template_source = str(path)
    else:
        tokenizer, _ = load_tokenizer(base, "model")
    shipped = chat_templates.for_stock(tokenizer.chat_template)
    if shipped is None:
        return [(tokenizer, True)]
    trainer = copy.copy(tokenizer)
    trainer.chat_template = shipped.text()
    trainer.clawtune_template_source = shipped.reference
    return [(tokenizer, False), (trainer, True)]


def check_template(base: str, examples: list[Example], tokenizer_name: str | None = None) -> list[TemplateReport]:
    """The reports for `base` (a model id or folder, or a .jinja file) on `examples`."""
    found = _tokenizers(base, tokenizer_name)
    stock = found[0][0] if len(found) == 2 else None
    reports = [
        _report(tokenizer, used, examples, stock if tokenizer is not stock else None) for tokenizer, used in found
    ]
    for report in reports:
        report.base = base
    return reports


def _report(tokenizer: Any, used: bool, examples: list[Example], stock: Any) -> TemplateReport:
    rules = profile(tokenizer)
    report = TemplateReport(rules.name, used, "generation markers" if rules.markers else "prefixes")
    for example in examples:
        report.examples += 1
        try:
            rendered = render_example(tokenizer, example)
        except TemplateError as exc:
            report.refused[exc.rule] += 1
            report.first_refusal.setdefault(exc.rule, f"example {report.examples}: {exc}")
            continue
        except Exception as exc:  # the template raised on this conversation
            report.refused["template-error"] += 1
            message = str(rules.refuse("template-error", str(exc).strip().splitlines()[0] if str(exc) else ""))
            report.first_refusal.setdefault("template-error", f"example {report.examples}: {message}")
            continue
        report.trained += 1
        report.adapted.update(rendered.adapted)
        turns = [i for i, m in enumerate(example["messages"]) if is_trained(m) and i]
        report.trained_turns += len(turns)
        if stock is not None:
            _compare(report, tokenizer, stock, example, turns)
    return report


def _compare(report: TemplateReport, trainer: Any, stock: Any, example: Example, turns: list[int]) -> None:
    """Serving prompts and served turns of the training template against the stock template's, turn by turn, on the
    same messages (the stock template gets its own adaptations, text next to calls kept where it renders it)."""
    messages, _ = profile(trainer).adapt(template_messages(example["messages"]))
    theirs_rules = copy.copy(profile(stock))
    theirs_rules.drop_text_with_calls = False
    stock_messages, _ = theirs_rules.adapt(messages)
    tools = example.get("tools")
    for i in turns:
        report.prompts += 1
        mine = raw_render(trainer, messages[:i], tools, True)
        try:
            theirs = raw_render(stock, stock_messages[:i], tools, True)
            whole = raw_render(stock, stock_messages[: i + 1], tools, False)
        except Exception:  # the stock template cannot render this prompt at all
            report.prompts_differing += 1
            report.stock_cannot += 1
            continue
        if mine != theirs:
            report.prompts_differing += 1
            report.characters_added += len(mine) - len(theirs)
        if whole.startswith(theirs):
            report.turns_compared += 1
            served = whole[len(theirs) :].rstrip()
            through = raw_render(trainer, messages[: i + 1], tools, False)
            turn = through[len(mine) :].rstrip()
            eos = stock.eos_token or ""
            if eos and served.endswith(eos) and not turn.endswith(eos):
                served = served[: -len(eos)].rstrip()  # appended without a generation prompt (Phi): never generated
            if through.startswith(mine) and turn == served:
                report.turns_identical += 1


def read_examples(path: Path) -> list[Example]:
    from clawtune.data.validate import iter_examples

    if not path.is_file():
        raise InputError(f"{path}: no such data file")
    return [example for _, example in iter_examples(path, Problems())]


def print_reports(reports: list[TemplateReport], data: Path, max_refused: float, console: Any) -> bool:
    """The table and, per refusing rule, the first refusal with its fix; True if every training template passes."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"chat templates on {data}")
    for column in ("template", "masks", "trains", "refused (by rule)", "data adapted", "against the stock template"):
        table.add_column(column, overflow="fold")
    for report in reports:
        refused = ", ".join(f"{rule}: {n}" for rule, n in report.refused.most_common()) or "-"
        adapted = ", ".join(f"{what}: {n}" for what, n in report.adapted.most_common()) or "-"
        against = "-"
        if report.prompts:
            against = (
                f"{report.prompts_differing}/{report.prompts} prompts differ"
                + (f" ({report.characters_added:+,} chars)" if report.prompts_differing > report.stock_cannot else "")
                + (f" (the stock template cannot render {report.stock_cannot})" if report.stock_cannot else "")
                + f"; {report.turns_identical}/{report.turns_compared} served turns identical"
            )
        name = report.template + (" (used for training)" if report.used_for_training else "")
        trains = f"{report.trained} of {report.examples} ({report.trained_turns} turns)"
        table.add_row(*(escape(cell) for cell in (name, report.method, trains, refused, adapted, against)))
    console.print(table)
    for report in reports:
        for rule, first in report.first_refusal.items():
            console.print(f"[bold]{escape(report.template)}[/], {rule}: {escape(first)}", highlight=False)
    ok = True
    for report in reports:
        if not report.used_for_training:
            continue
        if report.refused_share > max_refused:
            ok = False
            console.print(
                f"[red]refused[/]: {escape(report.base)}: {escape(report.template)} refuses "
                f"{report.refused_share:.1%} of the examples, more than {max_refused:.0%}; `ft train` would stop "
                "before training",
                highlight=False,
            )
        else:
            console.print(
                f"[green]trains[/]: {escape(report.base)}: {escape(report.template)} trains {report.trained} of "
                f"{report.examples} examples",
                highlight=False,
            )
    return ok


def check_template_command(
    base: list[str], data: Path, tokenizer: str | None, max_refused: float, as_json: bool
) -> int:
    """`ft check-template`: the reports as tables or JSON; exit 1 when training would stop on refused examples."""
    import sys

    import typer
    from rich.console import Console

    examples = read_examples(data)
    reports = [report for name in base for report in check_template(name, examples, tokenizer)]
    if any(name.endswith(".jinja") for name in base) and tokenizer is None:
        typer.echo(
            "note: .jinja templates are rendered with the tiny model's tokenizer (--tokenizer MODEL for yours)",
            err=True,
        )
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in reports], indent=2, ensure_ascii=False))
        ok = all(r.refused_share <= max_refused for r in reports if r.used_for_training)
    else:
        console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
        ok = print_reports(reports, data, max_refused, console)
    return 0 if ok else 1
