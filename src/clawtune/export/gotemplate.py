"""A Go `text/template` interpreter for what chat templates use, so an Ollama TEMPLATE can be rendered here.

Ollama renders prompts with Go templates; the training side renders them with Jinja. To prove that both produce the
same tokens (the train/serve parity check), clawtune renders the exported TEMPLATE itself, with the values Ollama
would pass (`ollama.py`). No Python package implements Go's text/template, so this one is written by hand, and
checked against Ollama's own template test data and against outputs recorded from real Go
(`scripts/ollama_template_golden.go`, `tests/fixtures/ollama/`).

Supported: text with `{{- -}}` trimming, comments, `if`/`else if`/`else`, `range` (with `$i, $v :=`, `else`,
`break`, `continue`; over slices, maps in key order, and integers), `with`/`else with`/`else`, `$x := ...` and
`$x = ...`, fields (`.A.B`, `$.A`, `$x.A`, `(pipe).A`), string/raw/number/bool/nil literals, parenthesised pipelines
and `|`, and the functions `and or not eq ne lt le gt ge len index slice print println printf json` plus Ollama's
`currentDate yesterdayDate toTypeScriptType`.

Values: Python str/int/float/bool/None; lists (Go slices) and dicts (Go maps: `.key` reads them, `range` visits keys
in sorted order); `GoSlice`/`GoMap` for named slice and map types with a `String()` method or a nil value; and
`GoStruct` for structs (fields in declaration order, their JSON names and `omitempty`, the `String()` method if the
type has one, whether the value is a pointer). Numbers that came from JSON are floats, as Go's `any` holds them.
Printing follows `fmt.Print` (what `{{ value }}` writes), JSON follows `encoding/json` (what Ollama's `json` writes).
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from clawtune.problems import InputError


class GoTemplateError(InputError):
    """The template cannot be parsed or executed; says where."""


@dataclass
class GoStruct:
    """A Go struct value: named fields in declaration order, and how `fmt` and `encoding/json` write it.

    `json_fields` maps each field to its JSON name and whether it is `omitempty` (absent: the field's own name, no
    omitempty, as for a struct without tags); `stringer` is the type's `String()` method, if it has one.
    """

    fields: dict[str, Any]
    stringer: Callable[[], str] | None = None
    json_fields: dict[str, tuple[str, bool]] | None = None
    pointer: bool = False
    type_name: str = "struct"
    marshal: Callable[[], str] | None = None  # the type's own MarshalJSON


class GoMap(dict):  # type: ignore[type-arg]
    """A named Go map type: a dict that prints with the type's `String()` method; `nil` for a nil map."""

    def __init__(self, items: dict[str, Any] | None, stringer: Callable[[], str] | None = None) -> None:
        super().__init__(items or {})
        self.stringer = stringer
        self.nil = items is None


class GoSlice(list):  # type: ignore[type-arg]
    """A named Go slice type: a list that prints with the type's `String()` method and marshals with its
    `MarshalJSON` (when it has them); `nil` for a nil slice."""

    def __init__(
        self,
        items: list[Any] | None,
        stringer: Callable[[], str] | None = None,
        marshal: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(items or [])
        self.stringer = stringer
        self.marshal = marshal
        self.nil = items is None


class OrderedMap(dict):  # type: ignore[type-arg]
    """A map that marshals its keys in insertion order (Ollama's orderedmap: nested tool properties)."""


# ---- encoding/json ------------------------------------------------------------------------------------------


def _json_string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif char == "\b":
            out.append("\\b")
        elif char == "\f":
            out.append("\\f")
        elif code < 0x20 or char in "<>&\u2028\u2029":
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _shortest(value: float) -> tuple[str, int]:
    """The shortest digits that read back as `value` (as Go and Python both find them) and the decimal exponent of
    the first digit."""
    _, digits, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    text = "".join(map(str, digits))
    return text, len(text) + int(exponent) - 1


def _positional(digits: str, exp: int) -> str:
    point = exp + 1
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _exponential(digits: str, exp: int, min_digits: int) -> str:
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):0{min_digits}d}"


def _json_float(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise GoTemplateError(f"json: unsupported value: {value}")
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    digits, exp = _shortest(value)
    sign = "-" if value < 0 else ""
    if abs(value) < 1e-6 or abs(value) >= 1e21:
        return sign + _exponential(digits, exp, 1)  # encoding/json cleans e-09 up to e-9
    return sign + _positional(digits, exp)


def go_json(value: Any) -> str:
    """`json.Marshal` as Go writes it: compact; maps by sorted key; structs by field order, tags and omitempty;
    `<`, `>`, `&`, U+2028/9 escaped; JSON numbers (floats) in Go's notation."""
    marshal = getattr(value, "marshal", None)
    if marshal is not None:
        return str(marshal())
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, GoStruct):
        parts = []
        for name, item in value.fields.items():
            key, omitempty = (value.json_fields or {}).get(name, (name, False))
            if omitempty and _empty(item):
                continue
            parts.append(f"{_json_string(key)}:{go_json(item)}")
        return "{" + ",".join(parts) + "}"
    if isinstance(value, (GoMap, GoSlice)) and value.nil:
        return "null"
    if isinstance(value, OrderedMap):
        return "{" + ",".join(f"{_json_string(str(k))}:{go_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json_string(str(k))}:{go_json(value[k])}" for k in sorted(value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    raise GoTemplateError(f"json: unsupported type {type(value).__name__}")


def _empty(value: Any) -> bool:
    """Go's `omitempty`: false, 0, nil, and empty strings, slices and maps (never a struct)."""
    if isinstance(value, GoStruct):
        return False
    if value is None or value is False:
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value == 0
    if isinstance(value, str | list | tuple | dict):
        return len(value) == 0
    return False


# ---- fmt ----------------------------------------------------------------------------------------------------


def _fmt_float(value: float) -> str:
    """`%v` of a float64: strconv's 'g' with the shortest digits, an exponent below 1e-4 or from 1e6."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    digits, exp = _shortest(value)
    sign = "-" if value < 0 else ""
    if exp < -4 or exp >= 6:
        return sign + _exponential(digits, exp, 2)
    return sign + _positional(digits, exp)


def go_print(value: Any, depth: int = 0) -> str:
    """What `{{ value }}` writes (`fmt.Print`), `depth` > 0 inside a struct, slice or map."""
    stringer = getattr(value, "stringer", None)
    if stringer is not None and not (isinstance(value, GoStruct) and value.pointer and depth):
        return str(stringer())
    if value is None:
        return "<nil>" if depth else "<no value>"
    if isinstance(value, GoStruct):
        if value.pointer and depth:
            return "0xc000010000"  # fmt prints a nested pointer's address
        inner = "{" + " ".join(go_print(v, depth + 1) for v in value.fields.values()) + "}"
        return "&" + inner if value.pointer else inner
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _fmt_float(value)
    if isinstance(value, dict):
        keys = list(value) if isinstance(value, OrderedMap) else sorted(value)
        return "map[" + " ".join(f"{go_print(k, depth + 1)}:{go_print(value[k], depth + 1)}" for k in keys) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_print(v, depth + 1) for v in value) + "]"
    return str(value)


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+))?([a-zA-Z%])")


def go_sprintf(template: str, *args: Any) -> str:
    """`fmt.Sprintf` for the verbs templates use: %s %v %d %q %t %f %x and %%, with width and precision."""
    out = []
    pos = 0
    next_arg = 0
    for match in _VERB.finditer(template):
        out.append(template[pos : match.start()])
        pos = match.end()
        flags, width, precision, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        if next_arg >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[next_arg]
        next_arg += 1
        if verb == "v":
            text = "<nil>" if arg is None else go_print(arg)
        elif verb == "s" and (isinstance(arg, str) or getattr(arg, "stringer", None) is not None):
            text = go_print(arg)
        elif verb == "s" and arg is None:
            text = "%!s(<nil>)"
        elif verb == "d" and isinstance(arg, int) and not isinstance(arg, bool):
            text = str(arg)
        elif verb == "q" and isinstance(arg, str):
            text = _json_string(arg).replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u0026", "&")
        elif verb == "t" and isinstance(arg, bool):
            text = "true" if arg else "false"
        elif verb == "f" and isinstance(arg, int | float) and not isinstance(arg, bool):
            text = f"{float(arg):.{int(precision) if precision else 6}f}"
        elif verb == "x" and isinstance(arg, int) and not isinstance(arg, bool):
            text = format(arg, "x")
        elif verb == "x" and isinstance(arg, str):
            text = arg.encode().hex()
        else:
            kind = {bool: "bool", int: "int", float: "float64", str: "string"}.get(type(arg), type(arg).__name__)
            text = f"%!{verb}({kind}={go_print(arg, 1)})"
        if width and width != "*" and len(text) < int(width):
            pad = " " * (int(width) - len(text))
            text = text + pad if "-" in flags else pad + text
        out.append(text)
    out.append(template[pos:])
    if next_arg < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{_kind(a)}={go_print(a, 1)}" for a in args[next_arg:]) + ")")
    return "".join(out)


def _kind(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float64", str: "string"}.get(type(value), type(value).__name__)


def _println(*values: Any) -> str:
    return " ".join(go_print(v) for v in values) + "\n"


def _print(*values: Any) -> str:
    """`fmt.Sprint`: spaces only between operands when neither is a string."""
    out = []
    for i, v in enumerate(values):
        if i and not isinstance(v, str) and not isinstance(values[i - 1], str):
            out.append(" ")
        out.append(go_print(v))
    return "".join(out)


def truthy(value: Any) -> bool:
    """Go's template truth: false, 0, nil, and empty strings, slices and maps are false; structs are true."""
    if isinstance(value, GoStruct):
        return True
    return bool(value)


# ---- lexing -------------------------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-[ \t\r\n])?(.*?)([ \t\r\n]-)?\}\}", re.DOTALL)
_SPACE = " \t\r\n"
_TOKEN = re.compile(
    r"""[ \t\r\n]*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<num>-?(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?))
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
    source = source.rstrip(_SPACE)
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if not match or match.end() == pos:
            raise GoTemplateError(f"{where}: cannot read {source[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        out.append(_Tok(kind, match.group(kind)))
        pos = match.end()
        while pos < len(source) and source[pos] in _SPACE:
            pos += 1
    return out


# ---- parsing ------------------------------------------------------------------------------------------------


@dataclass
class _Node:
    kind: str  # text, action, if, range, with, break, continue
    text: str = ""
    pipe: Any = None
    decl: list[str] = field(default_factory=list)
    assign: bool = False
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)
    line: int = 0


_Item = tuple[str, str, int]  # (kind, text, line)


def parse(source: str) -> list[_Node]:
    """The template's node tree; a syntax error names its line."""
    items: list[_Item] = []
    pos = 0
    pending_trim = False
    for match in _ACTION.finditer(source):
        text = source[pos : match.start()]
        if pending_trim:
            text = text.lstrip(_SPACE)
        if match.group(1):
            text = text.rstrip(_SPACE)
        if text:
            items.append(("text", text, source.count("\n", 0, pos) + 1))
        body = match.group(2).strip(_SPACE)
        items.append(("action", body, source.count("\n", 0, match.start()) + 1))
        pending_trim = bool(match.group(3))
        pos = match.end()
    tail = source[pos:]
    if pending_trim:
        tail = tail.lstrip(_SPACE)
    if tail:
        items.append(("text", tail, source.count("\n", 0, pos) + 1))
    nodes, _, end = _parse_list(items, 0, 0)
    if end is not None:
        raise GoTemplateError(f"line {end[2]}: unexpected {{{{{end[1]}}}}}")
    return nodes


def _word(text: str) -> str:
    return text.split(None, 1)[0] if text else ""


def _parse_list(items: list[_Item], i: int, loops: int) -> tuple[list[_Node], int, _Item | None]:
    """Nodes until an `end`/`else` (returned as the stopper) or the end of the input; `loops` counts the enclosing
    `range` blocks (break and continue are only valid inside one)."""
    nodes: list[_Node] = []
    while i < len(items):
        kind, text, line = items[i]
        if kind == "text":
            nodes.append(_Node("text", text=text, line=line))
            i += 1
            continue
        if text.startswith("/*"):
            if not text.endswith("*/"):
                raise GoTemplateError(f"line {line}: unclosed comment")
            i += 1
            continue
        word = _word(text)
        if word in ("end", "else"):
            return nodes, i, items[i]
        if word in ("break", "continue"):
            if text != word:
                raise GoTemplateError(f"line {line}: unexpected {text!r} in {word}")
            if not loops:
                raise GoTemplateError(f"line {line}: {{{{{word}}}}} outside {{{{range}}}}")
            nodes.append(_Node(word, line=line))
            i += 1
            continue
        if word in ("if", "range", "with"):
            node, i = _parse_block(items, i, word, text[len(word) :], line, loops)
            nodes.append(node)
            continue
        if word in ("template", "define", "block"):
            raise GoTemplateError(f"line {line}: {{{{{word}}}}} is not supported here")
        node = _Node("action", line=line)
        _parse_clause(node, text, line)
        nodes.append(node)
        i += 1
    return nodes, i, None


def _parse_block(items: list[_Item], i: int, word: str, clause: str, line: int, loops: int) -> tuple[_Node, int]:
    """An if/range/with block from its opening action at `i`; returns the node and the index after its `end`.

    `{{else if}}` (in an if) and `{{else with}}` (in a with) open a nested block in the else branch that shares the
    outer block's `end`, as Go's parser treats them."""
    node = _Node(word, line=line)
    _parse_clause(node, clause, line)
    inner_loops = loops + 1 if word == "range" else loops
    node.body, i, stop = _parse_list(items, i + 1, inner_loops)
    if stop is None:
        raise GoTemplateError(f"line {line}: {{{{{word}}}}} has no {{{{end}}}}")
    if stop[1] == "end":
        return node, i + 1
    rest = stop[1][4:].strip(_SPACE)  # after "else"
    if rest:
        chained = _word(rest)
        if chained not in ("if", "with") or chained != word:
            raise GoTemplateError(f"line {stop[2]}: unexpected {{{{{stop[1]}}}}} in {{{{{word}}}}}")
        inner, i = _parse_block(items, i, chained, rest[len(chained) :], stop[2], loops)
        node.orelse = [inner]
        return node, i
    node.orelse, i, stop = _parse_list(items, i + 1, loops)
    if stop is None or stop[1] != "end":
        raise GoTemplateError(f"line {line}: {{{{else}}}} has no {{{{end}}}}")
    return node, i + 1


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
    if not toks:
        raise GoTemplateError(f"line {line}: missing value for {node.kind}")
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
            if not commands[-1]:
                raise GoTemplateError(f"line {line}: missing command before |")
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
        return ("lit", _unquote(tok.text, line))
    if tok.kind == "raw":
        return ("lit", tok.text[1:-1])
    if tok.kind == "num":
        text = tok.text
        if text.lower().lstrip("-").startswith("0x"):
            return ("lit", int(text, 16))
        return ("lit", float(text) if any(c in text for c in ".eE") else int(text))
    if tok.kind == "var":
        return ("var", tok.text)
    if tok.kind == "field":
        return ("field", [] if tok.text == "." else tok.text[1:].split("."))
    if tok.kind == "ident":
        if tok.text in ("true", "false"):
            return ("lit", tok.text == "true")
        if tok.text == "nil":
            return ("nil", None)
        if tok.text not in FUNCS and tok.text not in ("and", "or"):
            raise GoTemplateError(f'line {line}: function "{tok.text}" not defined')
        return ("func", tok.text)
    raise GoTemplateError(f"line {line}: unexpected {tok.text!r}")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def _unquote(text: str, line: int) -> str:
    """A Go interpreted string literal (strconv.Unquote)."""
    out, i, body = [], 0, text[1:-1]
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[nxt]
            out.append(chr(int(body[i + 2 : i + 2 + size], 16)))
            i += 2 + size
        elif nxt.isdigit():
            out.append(chr(int(body[i + 1 : i + 4], 8)))
            i += 4
        else:
            raise GoTemplateError(f"line {line}: invalid escape in {text}")
    return "".join(out)


# ---- execution ----------------------------------------------------------------------------------------------


def _field(value: Any, name: str, line: int) -> Any:
    if isinstance(value, GoStruct):
        if name not in value.fields:
            raise GoTemplateError(f"line {line}: can't evaluate field {name} in type {value.type_name}")
        return value.fields[name]
    if isinstance(value, dict):
        return value.get(name)  # missingkey=zero, as Ollama parses its templates: a map[string]any gives nil
    if value is None:
        raise GoTemplateError(f"line {line}: nil pointer evaluating .{name}")
    raise GoTemplateError(f"line {line}: can't evaluate field {name} in type {type(value).__name__}")


def _basic(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "other"


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise TypeError("missing argument for comparison")
    for b in others:
        ka, kb = _basic(a), _basic(b)
        if a is None or b is None:
            if a is None and b is None:
                return True
            continue
        if ka == "other" or kb == "other":
            raise TypeError("non-comparable type")
        if ka != kb:
            raise TypeError("incompatible types for comparison")
        if a == b:
            return True
    return False


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        if _basic(a) != _basic(b) or _basic(a) in ("bool", "other"):
            raise TypeError("incompatible types for comparison")
        return op(a, b)

    return compare


def _len(value: Any) -> int:
    if isinstance(value, str | list | tuple | dict):
        return len(value.encode("utf-8")) if isinstance(value, str) else len(value)
    if value is None:
        raise TypeError("len of nil pointer")
    raise TypeError(f"len of type {type(value).__name__}")


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, str):  # a string indexes to a byte
            value = value.encode("utf-8")
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list | tuple | bytes):
            if not isinstance(key, int) or not 0 <= key < len(value):
                raise IndexError(f"index out of range: {key}")
            value = value[key]
        else:
            raise TypeError(f"can't index item of type {type(value).__name__}")
    return value


def _slice(value: Any, *ix: int) -> Any:
    if not isinstance(value, list | tuple | str):
        raise TypeError(f"can't slice item of type {type(value).__name__}")
    if len(ix) > 2:
        raise TypeError("too many slice indexes")
    items: Any = value.encode("utf-8") if isinstance(value, str) else value  # a string slices by bytes
    start = ix[0] if ix else 0
    end = ix[1] if len(ix) > 1 else len(items)
    if not 0 <= start <= end <= len(items):
        raise IndexError(f"slice index out of range: {start}:{end}")
    return items[start:end].decode("utf-8", errors="replace") if isinstance(value, str) else items[start:end]


def _typescript(value: Any) -> str:
    """Ollama's `toTypeScriptType` for an api.ToolProperty (`any` for anything else)."""
    if not isinstance(value, GoStruct) or value.type_name != "api.ToolProperty":
        return "any"
    any_of = value.fields.get("AnyOf") or []
    if any_of:
        return " | ".join(_typescript(p) for p in any_of)
    types = list(value.fields.get("Type") or [])
    if not types:
        return "any"
    names = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean", "array": "any[]"}
    names |= {"object": "Record<string, any>", "null": "null"}
    return " | ".join(names.get(t, "any") for t in types)


FUNCS: dict[str, Callable[..., Any]] = {
    "not": lambda a: not truthy(a),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _ordered(lambda a, b: a < b),
    "le": _ordered(lambda a, b: a <= b),
    "gt": _ordered(lambda a, b: a > b),
    "ge": _ordered(lambda a, b: a >= b),
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": _print,
    "println": _println,
    "printf": go_sprintf,
    "json": go_json,
    "currentDate": lambda *_: datetime.date.today().isoformat(),
    "yesterdayDate": lambda *_: (datetime.date.today() - datetime.timedelta(days=1)).isoformat(),
    "toTypeScriptType": _typescript,
}


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
    if kind == "nil":
        raise GoTemplateError(f"line {line}: nil is not a command")
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
    values = [None if a[0] == "nil" else _eval_arg(a, dot, scope, line) for a in args] + (piped or [])
    try:
        return FUNCS[name](*values)
    except (TypeError, IndexError, KeyError, ValueError) as exc:
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
            if args or piped:
                raise GoTemplateError(f"line {line}: can't give arguments to a non-function")
            value = _eval_arg(head, dot, scope, line)
        piped = [value]
    return value


def _iterate(value: Any, line: int) -> list[tuple[Any, Any]]:
    if value is None:
        return []
    if isinstance(value, dict):
        keys = list(value) if isinstance(value, OrderedMap) else sorted(value)
        return [(k, value[k]) for k in keys]
    if isinstance(value, list | tuple):
        return list(enumerate(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return [(i, i) for i in range(value)]
    raise GoTemplateError(f"line {line}: range can't iterate over {go_print(value)}")


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def _exec(nodes: list[_Node], dot: Any, scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
            continue
        if node.kind == "break":
            raise _Break
        if node.kind == "continue":
            raise _Continue
        value = _eval_pipe(node.pipe, dot, scope, node.line)
        if node.kind == "action":
            if node.decl and node.assign:
                scope.set(node.decl[0], value, node.line)
            elif node.decl:
                scope.frames[-1][node.decl[0]] = value
            else:
                out.append(go_print(value))
        elif node.kind == "if":
            if node.decl:
                scope.frames[-1][node.decl[0]] = value
            _run_block(node.body if truthy(value) else node.orelse, dot, scope, out)
        elif node.kind == "with":
            if truthy(value):
                scope.frames.append({node.decl[0]: value} if node.decl else {})
                try:
                    _exec(node.body, value, scope, out)
                finally:
                    scope.frames.pop()
            else:
                _run_block(node.orelse, dot, scope, out)
        elif node.kind == "range":
            pairs = _iterate(value, node.line)
            if not pairs:
                _run_block(node.orelse, dot, scope, out)
            for key, item in pairs:
                frame: dict[str, Any] = {}
                if len(node.decl) == 2:
                    frame[node.decl[0]], frame[node.decl[1]] = key, item
                elif node.decl:
                    frame[node.decl[0]] = item
                scope.frames.append(frame)
                try:
                    _exec(node.body, item, scope, out)
                except _Continue:
                    continue
                except _Break:
                    break
                finally:
                    scope.frames.pop()


def _run_block(nodes: list[_Node], dot: Any, scope: _Scope, out: list[str]) -> None:
    scope.frames.append({})
    try:
        _exec(nodes, dot, scope, out)
    finally:
        scope.frames.pop()


def render(source: str, data: Any) -> str:
    """Execute the Go template `source` on `data`."""
    scope = _Scope(data)
    out: list[str] = []
    _exec(parse(source), data, scope, out)
    return "".join(out)
