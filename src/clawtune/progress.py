"""The one progress bar every long step shows (rich): a label, the bar, done/total, any live fields, time left.

Without a console (quiet runs, other ranks, tests) the bar is disabled but still takes `add_task`/`advance`/`update`,
so callers never branch on whether one is shown.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def progress_bar(label: str, console: Any, fields: str | None = None, transient: bool = True) -> Any:
    """A `rich.progress.Progress` (use it as a context manager, or `start()`/`stop()` it). `label` and `fields` are
    rich `TextColumn` formats: `fields` shows a task's own fields between the count and the time left, e.g.
    `"loss {task.fields[loss]}"`. `console` None disables it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns: list[Any] = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    if fields:
        columns.append(TextColumn(fields))
    columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console, disable=console is None, transient=transient)


def track(items: Sequence[T], label: str, console: Any) -> Iterator[T]:
    """`items`, one at a time, with the bar advancing over them (none without a console)."""
    with progress_bar(label, console) as bar:
        task = bar.add_task(label, total=len(items))
        for item in items:
            yield item
            bar.advance(task)
