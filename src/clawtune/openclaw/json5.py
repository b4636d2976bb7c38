"""Edit a JSON5 document (OpenClaw's `openclaw.json`) in place, keeping every comment, key order and layout.

`parse` reads JSON5 (comments, trailing commas, unquoted keys, single quotes, hex, Infinity/NaN, leading `+` or `.`)
into nodes that remember where each value sits in the text. `set_value` (the one write path; `upsert_item` is built on
it) rewrites only the span of what changes, indenting what it writes like the file does (its siblings' indent, else
the document's own step: 2 spaces, 4 spaces or tabs), so a user's hand-written config keeps its comments and
formatting, and applying the same change twice gives the same text. Paths are object keys and array indices.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from clawtune.problems import InputError


class JSON5Error(InputError):
    """The text is not valid JSON5; names the line and column."""


@dataclass
class Node:
    start: int
    end: int
    value: Any = None  # scalars; containers use members / items


@dataclass
class Member:
    key: str
    key_start: int
    value: Node


@dataclass
class ObjectNode(Node):
    members: list[Member] = field(default_factory=list)

    def get(self, key: str) -> Node | None:
        for member in reversed(self.members):  # the last duplicate wins, as in JSON.parse
            if member.key == key:
                return member.value
        return None


@dataclass
class ArrayNode(Node):
    items: list[Node] = field(default_factory=list)


_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_NUMBER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|Infinity|NaN|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "0": "\0"}


class _Parser:
    def __init__(self, text: str, name: str) -> None:
        self.text, self.name, self.pos = text, name, 0

    def error(self, message: str, pos: int | None = None) -> JSON5Error:
        pos = self.pos if pos is None else pos
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return JSON5Error(f"{self.name}: line {line}, column {column}: {message}")

    def skip(self) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t\r\n\ufeff\u00a0\u2028\u2029":
                self.pos += 1
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end + 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.error("unclosed /* comment")
                self.pos = end + 2
            else:
                return

    def value(self) -> Node:
        self.skip()
        if self.pos >= len(self.text):
            raise self.error("unexpected end of text")
        char = self.text[self.pos]
        if char == "{":
            return self.object()
        if char == "[":
            return self.array()
        if char in "\"'":
            return self._string_node(self.pos)
        number = _NUMBER.match(self.text, self.pos)
        if number:
            start, self.pos = self.pos, number.end()
            return Node(start, self.pos, _number(number.group()))
        ident = _IDENT.match(self.text, self.pos)
        if ident and ident.group() in ("true", "false", "null"):
            start, self.pos = self.pos, ident.end()
            return Node(start, self.pos, {"true": True, "false": False, "null": None}[ident.group()])
        raise self.error(f"unexpected {char!r}")

    def _string_node(self, start: int) -> Node:
        value = self.string()
        return Node(start, self.pos, value)

    def string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.error("unclosed string")
            char = self.text[self.pos]
            if char == quote:
                self.pos += 1
                # \uD83D\uDE00 escapes a pair of UTF-16 surrogates: join them into one character
                return "".join(out).encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
            if char == "\\":
                nxt = self.text[self.pos + 1 : self.pos + 2]
                if nxt == "u":
                    out.append(chr(int(self.text[self.pos + 2 : self.pos + 6], 16)))
                    self.pos += 6
                    continue
                if nxt == "x":
                    out.append(chr(int(self.text[self.pos + 2 : self.pos + 4], 16)))
                    self.pos += 4
                    continue
                if nxt == "\r" and self.text[self.pos + 2 : self.pos + 3] == "\n":
                    self.pos += 3
                    continue
                if nxt in "\n\u2028\u2029":
                    self.pos += 2
                    continue
                out.append(_ESCAPES.get(nxt, nxt))
                self.pos += 2
                continue
            if char == "\n":
                raise self.error("line break inside a string")
            out.append(char)
            self.pos += 1

    def object(self) -> ObjectNode:
        node = ObjectNode(self.pos, self.pos)
        self.pos += 1
        while True:
            self.skip()
            if self.text[self.pos : self.pos + 1] == "}":
                self.pos += 1
                node.end = self.pos
                return node
            key_start = self.pos
            if self.text[self.pos : self.pos + 1] in ("'", '"'):
                key = self.string()
            else:
                ident = _IDENT.match(self.text, self.pos)
                if not ident:
                    raise self.error("expected a key")
                key, self.pos = ident.group(), ident.end()
            self.skip()
            if self.text[self.pos : self.pos + 1] != ":":
                raise self.error(f"expected ':' after key {key!r}")
            self.pos += 1
            node.members.append(Member(key, key_start, self.value()))
            self.skip()
            char = self.text[self.pos : self.pos + 1]
            if char == ",":
                self.pos += 1
            elif char != "}":
                raise self.error("expected ',' or '}'")

    def array(self) -> ArrayNode:
        node = ArrayNode(self.pos, self.pos)
        self.pos += 1
        while True:
            self.skip()
            if self.text[self.pos : self.pos + 1] == "]":
                self.pos += 1
                node.end = self.pos
                return node
            node.items.append(self.value())
            self.skip()
            char = self.text[self.pos : self.pos + 1]
            if char == ",":
                self.pos += 1
            elif char != "]":
                raise self.error("expected ',' or ']'")


def _number(text: str) -> float | int:
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body == "Infinity":
        return sign * math.inf
    if body == "NaN":
        return math.nan
    if body[:2] in ("0x", "0X"):
        return sign * int(body, 16)
    if re.fullmatch(r"\d+", body):
        return sign * int(body)
    return sign * float(body)


def parse(text: str, name: str = "<json5>") -> Node:
    parser = _Parser(text, name)
    node = parser.value()
    parser.skip()
    if parser.pos != len(text):
        raise parser.error("unexpected text after the document")
    return node


def to_python(node: Node) -> Any:
    if isinstance(node, ObjectNode):
        return {m.key: to_python(m.value) for m in node.members}
    if isinstance(node, ArrayNode):
        return [to_python(item) for item in node.items]
    return node.value


def loads(text: str, name: str = "<json5>") -> Any:
    return to_python(parse(text, name))


# ---- writing ------------------------------------------------------------------------------------------------


def _key(key: str, quoted: bool = False) -> str:
    return key if _IDENT.fullmatch(key) and not quoted else json.dumps(key, ensure_ascii=False)


def quotes_keys(text: str) -> bool:
    """Whether the document is written as plain JSON (quoted keys, no trailing commas): new text then follows suit."""
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def dumps(value: Any, indent: str = "  ", level: str = "", quoted: bool = False) -> str:
    """JSON5 in the style OpenClaw's examples use (unquoted keys, trailing commas), or plain JSON if `quoted`."""
    inner = level + indent
    comma = "" if quoted else ","
    if isinstance(value, dict):
        if not value:
            return "{}"
        body = ",\n".join(f"{inner}{_key(k, quoted)}: {dumps(v, indent, inner, quoted)}" for k, v in value.items())
        return "{\n" + body + comma + "\n" + level + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        if all(not isinstance(v, dict | list) for v in value):
            return "[" + ", ".join(dumps(v) for v in value) + "]"
        body = ",\n".join(f"{inner}{dumps(v, indent, inner, quoted)}" for v in value)
        return "[\n" + body + comma + "\n" + level + "]"
    return json.dumps(value, ensure_ascii=False)


def _line_indent(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    match = re.match(r"[ \t]*", text[start:])
    return match.group() if match else ""


def _style(text: str, node: Node, root: Node | None = None) -> tuple[str, str]:
    """(indent of the container's line, one indent step) from the container's children; a container with none on
    lines of their own takes the document's step (`root`)."""
    base = _line_indent(text, node.start)
    step = _own_step(text, node)
    if step is None:
        step = document_step(text, root if root is not None else parse(text))
    return base, step


def _own_step(text: str, node: Node) -> str | None:
    base = _line_indent(text, node.start)
    children = node.members if isinstance(node, ObjectNode) else node.items if isinstance(node, ArrayNode) else []
    for child in children:
        pos = child.key_start if isinstance(child, Member) else child.start
        if "\n" in text[node.start : pos]:
            own = _line_indent(text, pos)
            if len(own) > len(base) and own.startswith(base):
                return own[len(base) :]
    return None


def document_step(text: str, root: Node) -> str:
    """The document's indent step: that of its first container whose children sit on lines of their own (two spaces
    for a document with none)."""
    pending = [root]
    while pending:
        node = pending.pop(0)
        step = _own_step(text, node)
        if step is not None:
            return step
        if isinstance(node, ObjectNode):
            pending += [m.value for m in node.members]
        elif isinstance(node, ArrayNode):
            pending += node.items
    return "  "


def _insert(text: str, container: Node, entry: str, single_line: bool, root: Node) -> str:
    """Insert `entry` (already indented text without a trailing comma) as the container's last child."""
    children = container.members if isinstance(container, ObjectNode) else container.items  # type: ignore[attr-defined]
    close = container.end - 1
    if children:
        last = children[-1].value if isinstance(children[-1], Member) else children[-1]
        after = last.end
        # Keep a trailing comma (and anything between the last child and the comma) where it is.
        probe = _Parser(text, "")
        probe.pos = after
        probe.skip()
        has_comma = text[probe.pos : probe.pos + 1] == ","
        base, step = _style(text, container, root)
        if single_line or "\n" not in text[container.start : close]:
            sep = ", " if not has_comma else " "
            point = probe.pos + 1 if has_comma else after
            return text[:point] + sep + entry.strip() + text[point:]
        point = probe.pos + 1 if has_comma else after
        trailing = "," if has_comma else ""
        return text[:point] + ("" if has_comma else ",") + "\n" + base + step + entry + trailing + text[point:]
    base, step = _style(text, container, root)
    inside = text[container.start + 1 : close]
    if single_line:
        return text[: container.start + 1] + entry.strip() + text[close:]
    trailing = "" if quotes_keys(text) else ","
    head = text[: container.start + 1] + inside.rstrip(" \t\n")
    return head + "\n" + base + step + entry + trailing + "\n" + base + text[close:]


def dumps_inline(value: Any, quoted: bool = False) -> str:
    """JSON5 on one line, for a container written on one line."""
    if isinstance(value, dict):
        members = ", ".join(f"{_key(k, quoted)}: {dumps_inline(v, quoted)}" for k, v in value.items())
        return "{ " + members + " }" if value else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(dumps_inline(v, quoted) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _render_for(text: str, container: Node, value: Any, root: Node) -> str:
    quoted = quotes_keys(text)
    children = container.members if isinstance(container, ObjectNode) else getattr(container, "items", [])
    if children and "\n" not in text[container.start : container.end]:
        return dumps_inline(value, quoted)
    base, step = _style(text, container, root)
    return dumps(value, step, base + step, quoted)


KeyPath = Sequence[str | int]  # object keys and array indices


def _where(path: KeyPath) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "the top level"


def set_value(text: str, path: KeyPath, value: Any, name: str = "<json5>") -> str:
    """`text` with the value at `path` set to `value`. A path is object keys (str) and array indices (int, negative
    from the end); missing objects are created on the way, an index must exist.

    A value already equal to `value` is left exactly as written (so a second run changes nothing); a new or replaced
    value is indented like the file (the step of its container's children, else the document's)."""
    root = parse(text, name)
    node: Node = root
    for depth, key in enumerate(path):
        if isinstance(key, int):
            if not isinstance(node, ArrayNode):
                raise JSON5Error(f"{name}: {_where(path[:depth])} is not an array, so {_where(path)} cannot be set")
            if not -len(node.items) <= key < len(node.items):
                raise JSON5Error(f"{name}: {_where(path[:depth])} has {len(node.items)} items, no item {key}")
            node = node.items[key]
            continue
        if not isinstance(node, ObjectNode):
            raise JSON5Error(f"{name}: {_where(path[:depth])} is not an object, so {_where(path)} cannot be set")
        child = node.get(key)
        if child is None:
            if any(isinstance(inner, int) for inner in path[depth + 1 :]):
                raise JSON5Error(f"{name}: {_where(path[: depth + 1])} does not exist, so {_where(path)} cannot be set")
            remaining: Any = value
            for inner in reversed(path[depth + 1 :]):
                remaining = {inner: remaining}
            entry = f"{_key(key, quotes_keys(text))}: {_render_for(text, node, remaining, root)}"
            return _insert(text, node, entry, single_line=False, root=root)
        node = child
    if to_python(node) == value:
        return text
    base = _line_indent(text, node.start)
    step = _style(text, node, root)[1]
    replacement = dumps(value, step, base, quotes_keys(text))
    return text[: node.start] + replacement + text[node.end :]


def find(root: Node, path: KeyPath) -> Node | None:
    """The node at `path` (object keys and array indices), or None."""
    node: Node | None = root
    for key in path:
        if isinstance(key, int):
            if not isinstance(node, ArrayNode) or not -len(node.items) <= key < len(node.items):
                return None
            node = node.items[key]
        elif isinstance(node, ObjectNode):
            node = node.get(key)
        else:
            return None
    return node


def upsert_item(text: str, path: KeyPath, match: dict[str, Any], item: dict[str, Any], name: str = "<json5>") -> str:
    """In the array at `path`, replace the first object whose fields equal `match` with `item`, or append `item`.

    Fields of the existing object not in `item` are kept (a user's own settings on the entry survive)."""
    root = parse(text, name)
    array = find(root, path)
    if array is None:
        return set_value(text, path, [item], name)
    if not isinstance(array, ArrayNode):
        raise JSON5Error(f"{name}: {_where(path)} is not an array")
    for index, existing in enumerate(array.items):
        if isinstance(existing, ObjectNode) and all(
            to_python(existing.get(k) or Node(0, 0, None)) == v for k, v in match.items()
        ):
            for key, value in item.items():
                text = set_value(text, [*path, index, key], value, name)
            return text
    entry = _render_for(text, array, item, root)
    return _insert(text, array, entry, single_line=False, root=root)
