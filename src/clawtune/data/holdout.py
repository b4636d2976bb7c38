"""Which export made a data file, where that export's held-out files are, and whether training data leaks into them.

An export owns its folder: it records an export id in `export-report.json` and in every example's metadata. Data
made from it later (an augmented file, a training file) carries that id, so `ft augment-data` and `ft train` can find
the validation and test files of the export that made their data, and refuse data that shares a session or an
example with them. When the folder was re-exported since (a new split), the id no longer matches: the held-out files
there are then checked all the same (they are what the model will be evaluated on) and the mismatch is said.

One rule for both commands, here below them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawtune.data.examples import duplicate_keys
from clawtune.messages import Example
from clawtune.problems import Problems

REPORT = "export-report.json"
HOLDOUT_SPLITS = ("validation", "test")
HOLDOUT_NAMES = ("validation.jsonl", "test.jsonl")


@dataclass
class ExportRecord:
    """What an export's report says about the folder it wrote."""

    folder: Path
    export_id: str | None
    report: dict[str, Any]

    def holdout_files(self) -> list[Path]:
        """The export's validation and test files, as its report names them."""
        splits = self.report.get("splits") or {}
        names = [(splits.get(s) or {}).get("file") or f"{s}.jsonl" for s in HOLDOUT_SPLITS]
        return [self.folder / str(name) for name in names]

    def describe(self) -> str:
        return f"export {self.export_id}" if self.export_id else "an export without an id (written before ids)"


def read_export(folder: Path) -> ExportRecord | None:
    """The export recorded in `folder/export-report.json`, if there is a readable one."""
    path = folder / REPORT
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict):
        return None
    export_id = report.get("export_id")
    return ExportRecord(folder, str(export_id) if export_id else None, report)


def export_ids(examples: Iterable[Example]) -> Counter[str]:
    """How many examples each export id made (examples without one are not counted)."""
    ids: Counter[str] = Counter()
    for example in examples:
        export_id = (example.get("metadata") or {}).get("export_id")
        if export_id:
            ids[str(export_id)] += 1
    return ids


@dataclass
class Holdouts:
    """The held-out files found for some data, and what the search noticed on the way."""

    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def find_holdouts(data: Path, ids: Iterable[str], folders: Iterable[Path] = (), extra: Iterable[Path] = ()) -> Holdouts:
    """Held-out files for `data` (made by exports `ids`): those of the export in the data's folder and in `folders`,
    the validation/test files beside the data when no report is there, and `extra`."""
    wanted = set(ids)
    found = Holdouts()
    matched: set[str] = set()
    for folder in dict.fromkeys([data.parent, *folders]):
        record = read_export(folder)
        if record is None:
            found.files += [folder / name for name in HOLDOUT_NAMES]
            continue
        found.files += record.holdout_files()
        if record.export_id in wanted:
            matched.add(record.export_id)
        elif wanted:
            made = ", ".join(sorted(wanted))
            found.notes.append(
                f"{data} was made by export {made}, but {folder / REPORT} is {record.describe()} (the folder was "
                "exported again since): its held-out files are a different split"
            )
    for missing in sorted(wanted - matched):
        if not any(f"export {missing}" in note for note in found.notes):
            found.notes.append(
                f"export {missing}, which made {data}, was not found (no {REPORT} with that id beside the data): "
                "checked the held-out files found instead"
            )
    found.files += list(extra)
    resolved = data.resolve()
    found.files = [p for p in dict.fromkeys(found.files) if p.is_file() and p.resolve() != resolved]
    return found


@dataclass
class HeldOut:
    """What the held-out files contain: their sessions and the (exact) content key of each example, with where."""

    sessions: dict[str, str] = field(default_factory=dict)
    contents: dict[bytes, str] = field(default_factory=dict)

    @classmethod
    def read(cls, holdouts: list[Path]) -> HeldOut:
        from clawtune.data.validate import iter_examples

        held = cls()
        for path in holdouts:
            for line, example in iter_examples(path, Problems(keep=0)):
                session = (example.get("metadata") or {}).get("session_id")
                if session:
                    held.sessions.setdefault(str(session), f"{path}:{line}")
                held.contents.setdefault(duplicate_keys(example)[0], f"{path}:{line}")
        return held


def leaks(examples: Iterable[tuple[int, Example]], source: Path, holdouts: list[Path] | HeldOut) -> list[str]:
    """Every training example that shares a session or its whole content with a held-out file, as `file:line` lines."""
    held = holdouts if isinstance(holdouts, HeldOut) else HeldOut.read(holdouts)
    sessions, contents = held.sessions, held.contents
    found = []
    for line, example in examples:
        session = str((example.get("metadata") or {}).get("session_id") or "")
        where = sessions.get(session) if session else None
        same = contents.get(duplicate_keys(example)[0])
        if where:
            found.append(f"{source}:{line} is from session {session}, as is {where}")
        elif same:
            found.append(f"{source}:{line} is the same example as {same}")
    return found


def leakage_message(what: str, found: list[str], notes: list[str]) -> str:
    """The refusal: how many examples leak, the first ten, and why the held-out files may not be the expected ones."""
    shown = "\n  ".join(found[:10]) + (f"\n  ... and {len(found) - 10} more" if len(found) > 10 else "")
    why = "".join(f"\n  note: {note}" for note in notes)
    return (
        f"refusing to {what}: {len(found)} training examples overlap held-out data (leakage would inflate every "
        f"evaluation):\n  {shown}{why}"
    )
