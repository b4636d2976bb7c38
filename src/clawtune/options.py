"""Command options, declared once: each stage's options dataclass gives every field its default (the only one) and,
through `flag()` in its metadata, the flag and help the command line shows.

`clawtune.cli` builds its commands from these classes, and `command_line()` writes an options object back as the
command that runs it (what `clawtune demo` prints, and what `ft train --gpus N` hands to each process). A field holds
what a user types (`split="80:10:10"`, `date_range="2026-04-01:2026-05-20"`); the class parses it in `__post_init__`,
so the command line and a Python caller get the same checks and the same errors. No typer here: the stages stay free
of the command line's library, and importing an options module stays cheap (`clawtune --help` imports them all).
"""

from __future__ import annotations

import shlex
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Flag:
    """How one field appears on the command line."""

    name: str  # "--agent-id"; for a positional argument, the field's name is its metavar and `name` is unused
    help: str | None = None
    argument: bool = False  # positional
    invert: bool = False  # a switch that turns the field off: `--no-scrub` gives scrub=False
    required: bool = False  # the command line needs it even though a Python caller may give something else instead
    settings: dict[str, Any] = field(default_factory=dict)  # min, max, envvar, show_default: as the CLI takes them


def flag(
    name: str,
    help: str | None = None,
    *,
    argument: bool = False,
    invert: bool = False,
    required: bool = False,
    **settings: Any,
) -> dict[str, Flag]:
    """A dataclass field's metadata that makes it a command-line option (or, with `argument=True`, a positional
    argument): `min_samples: int = field(default=1, metadata=flag("--min-samples", "Fail unless ..."))`."""
    return {"flag": Flag(name, help, argument, invert, required, settings)}


def declared(options: Any) -> list[tuple[Field[Any], Flag]]:
    """The fields of an options class (or object) that the command line sets, in the order its help lists them."""
    return [(f, f.metadata["flag"]) for f in fields(options) if "flag" in f.metadata]


def default_of(spec: Field[Any]) -> Any:
    """A field's default (MISSING for a required one)."""
    if spec.default is not MISSING:
        return spec.default
    if spec.default_factory is not MISSING:
        return spec.default_factory()
    return MISSING


def command_words(command: str, options: Any) -> list[str]:
    """`clawtune COMMAND ...` as argv: every required option, and every other one whose value is not its default."""
    words = ["clawtune", *command.split()]
    for spec, cli in declared(options):
        value = getattr(options, spec.name)
        default = default_of(spec)
        if default is not MISSING and value == default:
            continue
        if isinstance(value, bool):
            words.append(cli.name)  # a switch, and not at its default: given
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            words += [str(item)] if cli.argument else [cli.name, str(item)]
    return words


def command_line(command: str, options: Any) -> str:
    """`command_words` as one shell-quoted line, to print."""
    return shlex.join(command_words(command, options))
