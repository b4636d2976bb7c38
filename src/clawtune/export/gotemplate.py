"""A Go `text/template` interpreter for the subset chat templates use, so an Ollama TEMPLATE can be rendered here.

Ollama renders prompts with Go templates; the training side renders them with Jinja. To prove that both produce the
same tokens (the train/serve parity check), clawtune renders the exported TEMPLATE itself, with the values Ollama
would pass. Supported: text with `{{- -}}` trimming, comments, `if`/`else if`/`else`, `range` (with `$i, $v :=` and
`else`), `with`, `$x := ...` and `$x = ...`, fields (`.A.B`, `$.A`, `$x.A`), string/raw/number/bool literals,
parenthesised pipelines and `|`, and the functions `and or not eq ne lt le gt ge len index slice print json`.

Values: Python str/int/float/bool/None, lists (Go slices), dicts (Go maps: `.key` reads them, `range` visits keys in
sorted order as Go does), and `GoStruct` for structs (fields by name, optional `String()` used when printed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clawtune.problems import InputError


class GoTemplateError(InputError):
    """The template cannot be parsed or executed; says where."""


@dataclass
class GoStruct:
    """A Go struct value: named fields, and the `String()` method Go's printing calls, if it has one."""

    fields: dict[str, Any]
    stringer: Callable[[], str] | None = None


def go_json(value: Any) -> str:
    """`json.Marshal` as Go does it: compact, map keys sorted, `<`, `>`, `&`, U+2028/9 escaped."""
    text = json.dumps(_plain(value), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028")):
        text = text.replace(char, escaped)
    return text.replace("\u2029", "\\u2029")


def _plain(value: Any) -> Any:
    if isinstance(value, GoStruct):
        return {k: _plain(v) for k, v in value.fields.items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)  # Go writes float64 12.0 as 12
    return value


def go_print(value: Any) -> str:
    """What `{{ value }}` writes (fmt.Print)."""
    if isinstance(value, GoStruct):
        if value.stringer is not None:
            return value.stringer()
        return "{" + " ".join(go_print(v) for v in value.fields.values()) + "}"
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_print(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_print(v) for v in value) + "]"
    return str(value)


def truthy(value: Any) -> bool:
    """Go's template truth: false, 0, nil, and empty strings, slices and maps are false."""
    if isinstance(value, GoStruct):
        return True
    return bool(value)


# ---- lexing -------------------------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<decl>:=)
    | (?P<assign>=)
    | (?P<var>\$[A-Za-z0-9_]*)
    | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>[()|,])
    )""",
    re.VERBOSE,
)


@dataclass
class _Tok:
    kind: str
    text: str


def _tokens(source: str, where: str) -> list[_Tok]:
    out, pos = [], 0
    source = source.rstrip()
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if not match or match.end() == pos:
            raise GoTemplateError(f"{where}: cannot read {source[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        out.append(_Tok(kind, match.group(kind)))
        pos = match.end()
        while pos < len(source) and source[pos].isspace():
            pos += 1
    return out


# ---- parsing ------------------------------------------------------------------------------------------------


@dataclass
class _Node:
    kind: str  # text, action, if, range, with
    text: str = ""
    pipe: Any = None
    decl: list[str] = field(default_factory=list)
    assign: bool = False
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)
    line: int = 0


def parse(source: str) -> list[_Node]:
    """The template's node tree; a syntax error names its line."""
    items: list[tuple[str, str, int]] = []  # (kind, text, line)
    pos = 0
    pending_trim = False
    for match in _ACTION.finditer(source):
        text = source[pos : match.start()]
        if pending_trim:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        if text:
            items.append(("text", text, source.count("\n", 0, pos) + 1))
        body = match.group(2).strip()
        items.append(("action", body, source.count("\n", 0, match.start()) + 1))
        pending_trim = bool(match.group(3))
        pos = match.end()
    tail = source[pos:]
    if pending_trim:
        tail = tail.lstrip()
    if tail:
        items.append(("text", tail, source.count("\n", 0, pos) + 1))
    nodes, _, end = _parse_list(items, 0)
    if end is not None:
        raise GoTemplateError(f"line {end[2]}: unexpected {{{{{end[1]}}}}}")
    return nodes


def _parse_list(items: list[tuple[str, str, int]], i: int) -> tuple[list[_Node], int, tuple[str, str, int] | None]:
    """Nodes until an `end`/`else` (returned as the stopper) or the end of the input."""
    nodes: list[_Node] = []
    while i < len(items):
        kind, text, line = items[i]
        if kind == "text":
            nodes.append(_Node("text", text=text, line=line))
            i += 1
            continue
        if text.startswith("/*"):
            i += 1
            continue
        word = text.split(None, 1)[0] if text else ""
        if word in ("end", "else"):
            return nodes, i, items[i]
        if word in ("if", "range", "with"):
            node = top = _Node(word, line=line)
            _parse_clause(node, text[len(word) :], line)
            node.body, i, stop = _parse_list(items, i + 1)
            if stop is None:
                raise GoTemplateError(f"line {line}: {{{{{word}}}}} has no {{{{end}}}}")
            while stop[1].startswith("else"):
                rest = stop[1][4:].strip()
                if rest.startswith("if ") and word == "if":  # else if: a nested if in the else branch
                    inner = _Node("if", line=stop[2])
                    _parse_clause(inner, rest[2:], stop[2])
                    inner.body, i, stop = _parse_list(items, i + 1)
                    if stop is None:
                        raise GoTemplateError(f"line {line}: {{{{else if}}}} has no {{{{end}}}}")
                    node.orelse = [inner]
                    node = inner
                    continue
                node.orelse, i, stop = _parse_list(items, i + 1)
                if stop is None or stop[1] != "end":
                    raise GoTemplateError(f"line {line}: {{{{else}}}} has no {{{{end}}}}")
            nodes.append(top)
            i += 1
            continue
        node = _Node("action", line=line)
        _parse_clause(node, text, line)
        nodes.append(node)
        i += 1
    return nodes, i, None


def _parse_clause(node: _Node, text: str, line: int) -> None:
    toks = _tokens(text, f"line {line}")
    # Declarations: $x := pipe, $i, $v := pipe (range), $x = pipe
    if toks and toks[0].kind == "var":
        names = [toks[0].text]
        j = 1
        if j < len(toks) and toks[j].text == "," and j + 1 < len(toks) and toks[j + 1].kind == "var":
            names.append(toks[j + 1].text)
            j += 2
        if j < len(toks) and toks[j].kind in ("decl", "assign"):
            node.decl, node.assign = names, toks[j].kind == "assign"
            toks = toks[j + 1 :]
    pipe, j = _parse_pipe(toks, 0, line)
    if j != len(toks):
        raise GoTemplateError(f"line {line}: unexpected {toks[j].text!r}")
    node.pipe = pipe


def _parse_pipe(toks: list[_Tok], j: int, line: int) -> tuple[list[list[Any]], int]:
    commands: list[list[Any]] = [[]]
    while j < len(toks):
        tok = toks[j]
        if tok.text == ")":
            break
        if tok.text == "|":
            commands.append([])
            j += 1
            continue
        if tok.text == "(":
            inner, j = _parse_pipe(toks, j + 1, line)
            if j >= len(toks) or toks[j].text != ")":
                raise GoTemplateError(f"line {line}: unclosed (")
            j += 1
            arg: Any = ("pipe", inner)
            if j < len(toks) and toks[j].kind == "field" and toks[j].text != ".":
                arg = ("chain", arg, toks[j].text[1:].split("."))
                j += 1
            commands[-1].append(arg)
            continue
        if tok.kind == "var" and j + 1 < len(toks) and toks[j + 1].kind == "field" and toks[j + 1].text != ".":
            commands[-1].append(("chain", ("var", tok.text), toks[j + 1].text[1:].split(".")))
            j += 2
            continue
        commands[-1].append(_operand(tok, line))
        j += 1
    if not commands[-1]:
        raise GoTemplateError(f"line {line}: empty command")
    return commands, j


def _operand(tok: _Tok, line: int) -> Any:
    if tok.kind == "str":
        return ("lit", json.loads(tok.text))
    if tok.kind == "raw":
        return ("lit", tok.text[1:-1])
    if tok.kind == "num":
        return ("lit", float(tok.text) if "." in tok.text else int(tok.text))
    if tok.kind == "var":
        return ("var", tok.text)
    if tok.kind == "field":
        return ("field", [] if tok.text == "." else tok.text[1:].split("."))
    if tok.kind == "ident":
        if tok.text in ("true", "false"):
            return ("lit", tok.text == "true")
        if tok.text == "nil":
            return ("lit", None)
        return ("func", tok.text)
    raise GoTemplateError(f"line {line}: unexpected {tok.text!r}")


# ---- execution ----------------------------------------------------------------------------------------------


def _field(value: Any, name: str, line: int) -> Any:
    if isinstance(value, GoStruct):
        if name not in value.fields:
            raise GoTemplateError(f"line {line}: can't evaluate field {name}")
        return value.fields[name]
    if isinstance(value, dict):
        return value.get(name)  # missingkey=zero, as Ollama parses its templates
    if value is None:
        return None
    raise GoTemplateError(f"line {line}: can't evaluate field {name} in {type(value).__name__}")


FUNCS: dict[str, Callable[..., Any]] = {
    "not": lambda a: not truthy(a),
    "eq": lambda a, *bs: any(a == b for b in bs),
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "len": lambda a: len(a.fields if isinstance(a, GoStruct) else a),
    "index": lambda a, *keys: _index(a, keys),
    "slice": lambda a, *ix: a[ix[0] : ix[1]] if len(ix) == 2 else a[ix[0] :] if ix else a,
    "print": lambda *xs: "".join(go_print(x) for x in xs),
    "json": go_json,
}


def _index(value: Any, keys: tuple[Any, ...]) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else value[key]
    return value


class _Scope:
    def __init__(self, root: Any) -> None:
        self.frames: list[dict[str, Any]] = [{"$": root}]

    def get(self, name: str, line: int) -> Any:
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise GoTemplateError(f"line {line}: undefined variable {name}")

    def set(self, name: str, value: Any, line: int) -> None:
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = value
                return
        raise GoTemplateError(f"line {line}: undefined variable {name}")


def _eval_arg(arg: Any, dot: Any, scope: _Scope, line: int) -> Any:
    kind = arg[0]
    if kind == "lit":
        return arg[1]
    if kind == "var":
        return scope.get(arg[1], line)
    if kind == "field":
        value = dot
        for name in arg[1]:
            value = _field(value, name, line)
        return value
    if kind == "pipe":
        return _eval_pipe(arg[1], dot, scope, line)
    if kind == "chain":
        value = _eval_arg(arg[1], dot, scope, line)
        for name in arg[2]:
            value = _field(value, name, line)
        return value
    if kind == "func":
        return _call(arg[1], [], dot, scope, line)
    raise GoTemplateError(f"line {line}: cannot evaluate {arg!r}")


def _call(name: str, args: list[Any], dot: Any, scope: _Scope, line: int, piped: list[Any] | None = None) -> Any:
    if name not in FUNCS:
        raise GoTemplateError(f'line {line}: function "{name}" not defined')
    values = [_eval_arg(a, dot, scope, line) for a in args] + (piped or [])
    try:
        return FUNCS[name](*values)
    except (TypeError, IndexError, KeyError) as exc:
        raise GoTemplateError(f"line {line}: error calling {name}: {exc}") from None


def _and_or(name: str, args: list[Any], dot: Any, scope: _Scope, line: int, piped: list[Any]) -> Any:
    value: Any = None
    for arg in args:
        value = _eval_arg(arg, dot, scope, line)
        if truthy(value) == (name == "or"):
            return value
    for value in piped:
        if truthy(value) == (name == "or"):
            return value
    return value


def _eval_pipe(commands: list[list[Any]], dot: Any, scope: _Scope, line: int) -> Any:
    piped: list[Any] = []
    value: Any = None
    for command in commands:
        head, args = command[0], command[1:]
        if head[0] == "func":
            if head[1] in ("and", "or"):
                value = _and_or(head[1], args, dot, scope, line, piped)
            else:
                value = _call(head[1], args, dot, scope, line, piped)
        else:
            if args:
                raise GoTemplateError(f"line {line}: can't give arguments to a non-function")
            value = _eval_arg(head, dot, scope, line)
        piped = [value]
    return value


def _iterate(value: Any) -> list[tuple[Any, Any]]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [(k, value[k]) for k in sorted(value)]
    if isinstance(value, list | tuple):
        return list(enumerate(value))
    if isinstance(value, int):
        return [(i, i) for i in range(value)]
    raise GoTemplateError(f"range can't iterate over {type(value).__name__}")


def _exec(nodes: list[_Node], dot: Any, scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
            continue
        value = _eval_pipe(node.pipe, dot, scope, node.line)
        if node.kind == "action":
            if node.decl:
                (scope.set if node.assign else lambda n, v, _l: scope.frames[-1].__setitem__(n, v))(
                    node.decl[0], value, node.line
                )
            else:
                out.append(go_print(value))
        elif node.kind == "if":
            if node.decl:
                scope.frames[-1][node.decl[0]] = value
            _run_block(node.body if truthy(value) else node.orelse, dot, scope, out)
        elif node.kind == "with":
            if truthy(value):
                scope.frames.append({node.decl[0]: value} if node.decl else {})
                _exec(node.body, value, scope, out)
                scope.frames.pop()
            else:
                _run_block(node.orelse, dot, scope, out)
        elif node.kind == "range":
            pairs = _iterate(value)
            if not pairs:
                _run_block(node.orelse, dot, scope, out)
            for key, item in pairs:
                frame: dict[str, Any] = {}
                if len(node.decl) == 2:
                    frame[node.decl[0]], frame[node.decl[1]] = key, item
                elif node.decl:
                    frame[node.decl[0]] = item
                scope.frames.append(frame)
                _exec(node.body, item, scope, out)
                scope.frames.pop()


def _run_block(nodes: list[_Node], dot: Any, scope: _Scope, out: list[str]) -> None:
    scope.frames.append({})
    _exec(nodes, dot, scope, out)
    scope.frames.pop()


def render(source: str, data: Any) -> str:
    """Execute the Go template `source` on `data`."""
    scope = _Scope(data)
    out: list[str] = []
    _exec(parse(source), data, scope, out)
    return "".join(out)
