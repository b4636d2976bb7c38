"""What every YAML config file's errors share: the line of each key, a did-you-mean for an unknown key, and the one
formatter that turns a pydantic validation error into those lines.

`ft-config.yaml` (train/config.py) and `models.yaml` (serve/config.py) report problems the same way:
`line 7, key "lora.alpah": unknown key; did you mean 'lora.alpha'?`, all of them at once under
`FILE: N problems:`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, get_args, get_origin

import yaml

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

KeyPath = tuple[str | int, ...]


def key_lines(node: yaml.Node | None, prefix: KeyPath = ()) -> dict[KeyPath, int]:
    """Line (1-based) of every key path in a composed YAML document; list items by index (`models[2].id`)."""
    out: dict[KeyPath, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, str(key.value))
            out[path] = key.start_mark.line + 1
            out.update(key_lines(value, path))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = (*prefix, index)
            out[path] = item.start_mark.line + 1
            out.update(key_lines(item, path))
    return out


def dotted(path: Iterable[Any]) -> str:
    """`("models", 2, "id")` -> `models[2].id`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def line_of(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """The line of a key path, else of its nearest parent that has one."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest known name, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def problem(lines: dict[KeyPath, int], path: KeyPath, message: str) -> str:
    """One problem line: `line N, key "a.b": message` (a problem of the whole document: the message alone)."""
    if not path:
        return message
    line = line_of(lines, path)
    return (f"line {line}, " if line else "") + f'key "{dotted(path)}": {message}'


def known_keys(model: type[BaseModel], path: KeyPath, hidden: Iterable[str] = ()) -> list[str]:
    """The keys allowed where the last part of `path` sits in `model` (through nested models, lists and dicts of
    them): what an unknown key's did-you-mean chooses from."""
    from pydantic import BaseModel

    node: Any = model
    for part in path[:-1]:
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            node = field.annotation if field else None
        elif get_origin(node) is list:
            node = get_args(node)[0]
        elif get_origin(node) is dict:
            node = get_args(node)[1]
        else:
            return []
        if get_origin(node) is not None and type(None) in get_args(node):  # Optional[X]: X
            node = next(a for a in get_args(node) if a is not type(None))
    if isinstance(node, type) and issubclass(node, BaseModel):
        return [name for name in node.model_fields if name not in set(hidden)]
    return []


def validation_problems(
    error: ValidationError, model: type[BaseModel], lines: dict[KeyPath, int], hidden: Iterable[str] = ()
) -> list[str]:
    """One problem line per pydantic error: an unknown key with its did-you-mean, a missing one, a bad value (with
    the value given, when it is a plain one)."""
    problems = []
    for found in error.errors():
        path: KeyPath = tuple(found["loc"])
        if found["type"] == "extra_forbidden":
            known = [dotted((*path[:-1], k)) for k in known_keys(model, path, hidden)]
            message = "unknown key" + did_you_mean(dotted(path), known)
        elif found["type"] == "missing":
            message = "required"
        else:
            value = found.get("input")
            given = f" (got {value!r})" if isinstance(value, str | int | float | bool) or value is None else ""
            message = f"{found['msg']}{given}"
        problems.append(problem(lines, path, message))
    return problems


def problems_message(source: Any, problems: list[str]) -> str:
    """`FILE: N problems:` and the problems, one per indented line."""
    return f"{source}: {len(problems)} problem{'s' * (len(problems) != 1)}:\n  " + "\n  ".join(problems)
