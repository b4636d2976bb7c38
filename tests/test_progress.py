"""The one progress bar: shown on a console, silent without one, and never in the way of what it counts."""

from __future__ import annotations

import io

from rich.console import Console

from clawtune.progress import progress_bar, track


def test_track_yields_every_item_with_or_without_a_bar() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80)
    assert list(track([1, 2, 3], "asking the teacher", console)) == [1, 2, 3]
    assert "asking the teacher" in out.getvalue() and "3/3" in out.getvalue()
    assert list(track(["a"], "quiet", None)) == ["a"]
    assert list(track([], "nothing", console)) == []


def test_a_disabled_bar_still_takes_tasks() -> None:
    with progress_bar("reading {task.description}", None) as bar:
        task = bar.add_task("sessions", total=2)
        bar.advance(task)
        bar.update(task, completed=2)
