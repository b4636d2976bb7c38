"""Printed summaries a person reads at a glance."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def print_export_summary(report: dict[str, Any], output: Path) -> None:
    """The export's summary: sessions, examples per split, what was skipped and redacted, tool-call share."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Export of agent {report['agent_id']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("sessions read / used", f"{report['sessions_read']} / {report['sessions_used']}")
    splits = report["splits"]
    table.add_row(
        "examples written",
        f"{report['examples_written']}  (train {splits['train']['examples']}, validation {splits['validation']['examples']}, "
        f"test {splits['test']['examples']})",
    )
    table.add_row("tool-call share", f"{report['tool_call_share']:.0%}")
    dropped = report["dropped"]
    table.add_row("dropped", ", ".join(f"{k}: {v}" for k, v in dropped.items()) or "none")
    skipped = report["skipped_input"]
    table.add_row("bad input skipped", ", ".join(f"{k}: {v}" for k, v in skipped["by_reason"].items()) or "none")
    redactions = report["redactions"]
    table.add_row(
        "redactions",
        redactions if isinstance(redactions, str) else ", ".join(f"{k}: {v}" for k, v in redactions.items()) or "none",
    )
    table.add_row("system prompt", report["system_prompt"]["policy"])
    table.add_row("export id", str(report.get("export_id")))
    console.print(table)
    for line in skipped["first"][:5]:
        console.print(f"  [yellow]skipped[/] {line}", highlight=False)
    for split in ("train", "validation", "test"):
        console.print(f"  {split:<10} -> {output / splits[split]['file']}", highlight=False)
    console.print(f"  report     -> {output / 'export-report.json'}", highlight=False)
    for stale in report.get("stale_files") or []:
        made = f"export {stale['export_id']}" if stale["export_id"] else "an earlier export (no export id)"
        console.print(
            f"  [yellow]warning[/]: {output / stale['file']} was made from {made}, not this one: its training examples "
            "may now be in this split's validation or test data (re-run `clawtune ft augment-data` on the new "
            "raw.jsonl; `ft train` refuses leaking data)",
            highlight=False,
        )
