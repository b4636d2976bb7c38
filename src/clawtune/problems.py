"""Bad input is reported with its file, line and key, counted, and skipped; `strict` turns the first one into an error.

Every reader takes a `Problems` log instead of raising, so one bad line in 10 GB of logs never loses the rest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


class InputError(Exception):
    """Raised for bad input in strict mode, or when nothing usable is left; the CLI prints it without a traceback."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located as precisely as the format allows."""

    file: str
    line: int | None
    reason: str
    message: str
    key: str | None = None
    message_index: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where]
        if self.message_index is not None:
            parts.append(f"message {self.message_index}")
        if self.key:
            parts.append(f'key "{self.key}"')
        return ", ".join(parts) + f": {self.message}"


@dataclass
class Problems:
    """Collects problems; keeps the first `keep` in full and counts all of them by reason."""

    strict: bool = False
    keep: int = 200
    items: list[Problem] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def add(
        self,
        file: str,
        line: int | None,
        reason: str,
        message: str,
        key: str | None = None,
        message_index: int | None = None,
    ) -> None:
        """Record one problem; in strict mode stop the run at once."""
        problem = Problem(str(file), line, reason, message, key, message_index)
        self.counts[reason] += 1
        if len(self.items) < self.keep:
            self.items.append(problem)
        if self.strict:
            raise InputError(str(problem))

    def __len__(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict[str, object]:
        """A JSON-ready summary: counts by reason and the first problems in full."""
        return {"total": len(self), "by_reason": dict(self.counts.most_common()), "first": [str(p) for p in self.items]}
