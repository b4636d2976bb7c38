"""What every YAML config file's errors share: the line of each key, and a did-you-mean for an unknown key.

`ft-config.yaml` (train/config.py) and `models.yaml` (serve/config.py) report problems the same way:
`line 7, key "lora.alpah": unknown key; did you mean 'lora.alpha'?`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import yaml

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
    """One problem line: `line N, key "a.b": message`."""
    line = line_of(lines, path)
    return (f"line {line}, " if line else "") + f'key "{dotted(path)}": {message}'
