"""Training data: tokenized examples, isolated packing and batches.

Packing puts several examples in one row (best-fit decreasing, so rows are nearly full) and restarts positions at
each example. Each row also carries document ids, from which `attention.isolate` keeps the examples apart.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clawtune.artifacts.render import IGNORE, Rendered, TemplateError, render_example
from clawtune.artifacts.template_profile import describe, profile
from clawtune.problems import InputError, Problems

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


class RefusedError(InputError):
    """Too many examples were refused by the chat template's rules to train on the rest."""


@dataclass
class TokenizedData:
    """The usable examples of one file and what happened to the rest."""

    examples: list[Rendered] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)  # rule -> first (line, message)

    @property
    def refused_count(self) -> int:
        return sum(v for k, v in self.counts.items() if k.startswith("refused: "))

    @property
    def tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)

    @property
    def trained_tokens(self) -> int:
        return sum(e.trained for e in self.examples)


def tokenize_file(
    path: Path,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    truncation: str,
    problems: Problems,
    progress: Any = None,
    train_on_inputs: bool = False,
    max_refused: float | None = None,
) -> TokenizedData:
    """Render and tokenize every valid example of `path`; invalid, untrainable and (by flag) over-long ones are
    reported with their line and counted, never silently lost. With `max_refused`, raise `RefusedError` when the chat
    template's rules refused a larger share of the examples (see `check_refused`)."""
    from clawtune.data.validate import check_example, iter_examples

    data = TokenizedData()
    name = str(path)
    for lineno, example in iter_examples(path, problems):
        data.counts["read"] += 1
        if progress is not None:
            progress()
        if not check_example(example, name, lineno, problems):
            data.counts["skipped: invalid"] += 1
            continue
        try:
            rendered = render_example(tokenizer, example, train_on_inputs)
        except TemplateError as exc:
            _refuse(data, problems, name, lineno, exc.rule, str(exc))
            continue
        except Exception as exc:  # a template raising on this conversation (jinja's raise_exception)
            rules = profile(tokenizer)
            message = str(rules.refuse("template-error", str(exc).strip().splitlines()[0] if str(exc).strip() else ""))
            _refuse(data, problems, name, lineno, "template-error", message)
            continue
        for adaptation in rendered.adapted:
            data.counts[f"adapted: {adaptation}"] += 1
        if len(rendered.input_ids) > max_length:
            if truncation == "drop":
                problems.add(name, lineno, "too-long", f"{len(rendered.input_ids)} tokens > max_seq_length, dropped")
                data.counts["skipped: too long"] += 1
                continue
            data.counts["truncated"] += 1
            rendered = rendered.truncated(max_length)
        if rendered.trained == 0:
            why = "after truncation to max_seq_length" if len(rendered.input_ids) == max_length else "at all"
            problems.add(name, lineno, "no-trained-token", f"no assistant token is trained {why}", key="messages")
            data.counts["skipped: no trained token"] += 1
            continue
        data.examples.append(rendered)
    data.counts["used"] = len(data.examples)
    if max_refused is not None:
        check_refused(data, name, max_refused)
    return data


def _refuse(data: TokenizedData, problems: Problems, name: str, lineno: int, rule: str, message: str) -> None:
    problems.add(name, lineno, f"template: {rule}", message, key="messages")
    data.counts[f"refused: {rule}"] += 1
    data.refused.setdefault(rule, (lineno, message))


def check_refused(data: TokenizedData, name: str, max_refused: float) -> None:
    """Stop before training when the chat template's rules refused more than `max_refused` of the examples: what is
    left is no longer the data (all multi-turn conversations gone, say), and the message says which rule and the fix."""
    read = data.counts["read"]
    refused = data.refused_count
    if not read or refused / read <= max_refused:
        return
    lines = [
        f"{name}: the chat template's rules refused {refused} of {read} examples ({refused / read:.1%}, more than "
        f"data.max_refused {max_refused:.0%}); training on the rest would learn from a biased remainder. By rule:"
    ]
    for rule, (lineno, message) in sorted(data.refused.items(), key=lambda kv: -data.counts[f"refused: {kv[0]}"]):
        lines.append(f"  {rule}: {data.counts[f'refused: {rule}']} examples ({describe(rule)}); first, line {lineno}:")
        lines.append(f"    {message}")
    lines.append("Fix the cause above, or raise data.max_refused in the config to train on the rest anyway.")
    raise RefusedError("\n".join(lines))


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices grouped into rows of at most `capacity` tokens (best-fit decreasing; deterministic)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row index), sorted
    for i in order:
        at = bisect.bisect_left(free, (lengths[i], -1))
        if at == len(free):
            rows.append([i])
            room, row = capacity - lengths[i], len(rows) - 1
        else:
            room, row = free.pop(at)
            rows[row].append(i)
            room -= lengths[i]
        if room > 0:
            bisect.insort(free, (room, row))
    return rows


class RowDataset:
    """Rows of one or more examples (a map-style dataset for the Trainer)."""

    def __init__(self, examples: list[Rendered], rows: list[list[int]]) -> None:
        self.examples = examples
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> list[Rendered]:
        return [self.examples[i] for i in self.rows[index]]


def make_dataset(data: TokenizedData, packing: bool, capacity: int) -> RowDataset:
    if packing:
        return RowDataset(data.examples, pack([len(e.input_ids) for e in data.examples], capacity))
    return RowDataset(data.examples, [[i] for i in range(len(data.examples))])


@dataclass
class Collator:
    """Pads rows to the longest in the batch (or a fixed length) and adds positions and document ids."""

    pad_token_id: int
    pad_to: int | None = None
    multiple_of: int = 8

    def __call__(self, rows: list[list[Rendered]]) -> dict[str, torch.Tensor]:
        import torch

        width = max(sum(len(e.input_ids) for e in row) for row in rows)
        if self.pad_to:
            width = max(width, self.pad_to)
        width = -(-width // self.multiple_of) * self.multiple_of
        shape = (len(rows), width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        labels = torch.full(shape, IGNORE, dtype=torch.long)
        positions = torch.zeros(shape, dtype=torch.long)
        documents = torch.full(shape, -1, dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for d, example in enumerate(row):
                n = len(example.input_ids)
                input_ids[r, at : at + n] = torch.tensor(example.input_ids)
                labels[r, at : at + n] = torch.tensor(example.labels)
                labels[r, at] = IGNORE  # never predict an example's first token from the previous example
                positions[r, at : at + n] = torch.arange(n)
                documents[r, at : at + n] = d
                at += n
        return {"input_ids": input_ids, "labels": labels, "position_ids": positions, "document_ids": documents}
