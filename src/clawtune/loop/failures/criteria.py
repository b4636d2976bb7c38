"""The `--criteria` language of `collect-failures`: which failing turns to collect.

    criteria   := or_expr
    or_expr    := and_expr ("OR" and_expr)*
    and_expr   := not_expr ("AND" not_expr)*
    not_expr   := "NOT" not_expr | "(" or_expr ")" | comparison
    comparison := FIELD OP value          OP is one of  =  !=  <  <=  >  >=  ~
    value      := a bare word (negative, true, finance-*), a number (500, 2.5), an ISO date (2026-04-01),
                  or a quoted string ("a b", 'a b')

Keywords are case-insensitive; NOT binds tighter than AND, AND tighter than OR. `~` is a glob match (`*`, `?`,
`[...]`, case-sensitive). A field that has several values for one turn (`signal`, `tool`, `reaction`) matches when
any of them does. A field a turn does not have (no `status` on an OpenClaw turn) fails every comparison, and
`!=` is `NOT =`, so it holds there. Nothing is evaluated as code: the expression is parsed with lark into a tree of
comparisons, each field and value type-checked against FIELDS before anything runs.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from lark import Lark, Token, Transformer, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.exceptions import VisitError

from clawtune.loop.failures.fields import DEFAULT_CRITERIA, FIELDS, Field, known_fields
from clawtune.problems import InputError

__all__ = ["DEFAULT_CRITERIA", "FIELDS", "Criteria", "CriteriaError", "parse_criteria"]


GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: _NOT not_expr -> negation
         | "(" or_expr ")"
         | comparison
comparison: FIELD OP value
?value: STRING | BARE
_OR.2: /or\b/i
_AND.2: /and\b/i
_NOT.2: /not\b/i
FIELD: /[A-Za-z_][A-Za-z0-9_]*/
OP: "<=" | ">=" | "!=" | "=" | "<" | ">" | "~"
STRING: /"(?:[^"\\]|\\.)*"/ | /'(?:[^'\\]|\\.)*'/
BARE: /[^\s()"'=!<>~]+/
%ignore /\s+/
"""

_PARSER = Lark(GRAMMAR, parser="lalr", lexer="contextual", propagate_positions=True)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_OPS_FOR = {
    "bool": {"=", "!="},
    "text": {"=", "!=", "~"},
    "number": {"=", "!=", "<", "<=", ">", ">="},
    "date": {"=", "!=", "<", "<=", ">", ">=", "~"},
}

Record = dict[str, Any]
Test = Callable[[Record], bool]


class CriteriaError(InputError):
    """A mistake in the criteria, shown with the expression and a caret under it."""


def _error(text: str, column: int, message: str) -> CriteriaError:
    """The message, the expression, and a caret at a 1-based column."""
    caret = " " * max(column - 1, 0) + "^"
    return CriteriaError(f"--criteria: {message}\n  {text}\n  {caret}")


@dataclass(frozen=True)
class Criteria:
    """A parsed expression: `matches(record)` tests one failing turn's fields."""

    text: str
    test: Test
    fields: frozenset[str]

    def matches(self, record: Record) -> bool:
        return self.test(record)


def parse_criteria(text: str) -> Criteria:
    """Parse and type-check an expression; raises CriteriaError with a caret under the first mistake."""
    if not text.strip():
        raise _error(text, 1, "the expression is empty")
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    builder = _Build(text)
    try:
        test = builder.transform(tree)
    except VisitError as exc:  # lark wraps what a transformer raises
        if isinstance(exc.orig_exc, CriteriaError):
            raise exc.orig_exc from None
        raise
    return Criteria(text, test, frozenset(builder.used))


def _syntax_error(text: str, exc: UnexpectedInput) -> CriteriaError:
    column = getattr(exc, "column", None)
    if isinstance(exc, UnexpectedEOF) or column is None or column < 1:
        expected = _describe(getattr(exc, "expected", set()))
        return _error(text, len(text) + 1, f"the expression ends too early; expected {expected}")
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        if token.type == "$END":
            return _error(text, len(text) + 1, f"the expression ends too early; expected {_describe(exc.expected)}")
        return _error(text, column, f"unexpected {str(token)!r}; expected {_describe(exc.expected)}")
    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream or 0
        char = text[pos] if pos < len(text) else ""
        hint = " (an unclosed quote?)" if char in "\"'" else ""
        return _error(text, column, f"unexpected character {char!r}{hint}; expected {_describe(exc.allowed)}")
    return _error(text, column, str(exc).splitlines()[0])


_NAMES = {
    "FIELD": "a field name",
    "OP": "an operator (= != < <= > >= ~)",
    "STRING": "a value",
    "BARE": "a value",
    "_AND": "AND",
    "_OR": "OR",
    "_NOT": "NOT",
    "LPAR": "(",
    "RPAR": ")",
    "$END": "the end",
}


def _describe(expected: Any) -> str:
    names = sorted({_NAMES.get(str(e), str(e)) for e in expected or ()})
    return " or ".join(names) if names else "something else"


class _Build(Transformer[Token, Test]):
    """Tree -> a closure per node, checking each field and value as it goes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.used: set[str] = set()

    def or_expr(self, children: list[Test]) -> Test:
        return lambda r: any(c(r) for c in children)

    def and_expr(self, children: list[Test]) -> Test:
        return lambda r: all(c(r) for c in children)

    def negation(self, children: list[Test]) -> Test:
        (child,) = children
        return lambda r: not child(r)

    def comparison(self, children: list[Token]) -> Test:
        name_token, op_token, value_token = children
        name = str(name_token)
        spec = FIELDS.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, FIELDS, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise _error(
                self.text, name_token.column or 1, f"unknown field {name!r}; {hint}known fields: {known_fields()}"
            )
        self.used.add(name)
        op = str(op_token)
        if op not in _OPS_FOR[spec.kind]:
            allowed = " ".join(sorted(_OPS_FOR[spec.kind]))
            raise _error(self.text, op_token.column or 1, f"{name} is {spec.kind}; it takes {allowed}, not {op}")
        value = self._value(name, spec, op, value_token)
        return _compare(name, spec, op, value)

    def _value(self, name: str, spec: Field, op: str, token: Token) -> Any:
        raw = str(token)
        quoted = token.type == "STRING"
        text = _unquote(raw) if quoted else raw
        column = token.column or 1
        if op == "~":
            return text
        if spec.kind == "bool":
            if text.lower() not in ("true", "false"):
                raise _error(self.text, column, f"{name} is true or false, not {raw}")
            return text.lower() == "true"
        if spec.kind == "number":
            if not _NUMBER.fullmatch(text):
                raise _error(self.text, column, f"{name} takes a number, not {raw}")
            return float(text)
        if spec.kind == "date":
            try:
                if not _DATE.fullmatch(text):
                    raise ValueError
                return date.fromisoformat(text)
            except ValueError:
                raise _error(self.text, column, f"{name} takes an ISO date like 2026-04-01, not {raw}") from None
        if spec.choices and text not in spec.choices:
            close = difflib.get_close_matches(text, spec.choices, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise _error(self.text, column, f"{name} is one of {', '.join(spec.choices)}; {hint}not {raw}")
        return text


def _unquote(raw: str) -> str:
    return re.sub(r"\\(.)", r"\1", raw[1:-1])


def _compare(name: str, spec: Field, op: str, value: Any) -> Test:
    """A test of one field; a missing field fails every comparison but `!=` (which is NOT =)."""

    def normal(actual: Any) -> Any:
        if spec.kind == "number":
            return float(actual)
        if spec.kind == "date":
            return actual if isinstance(actual, date) else date.fromisoformat(str(actual)[:10])
        return str(actual) if spec.kind == "text" else actual

    def one(actual: Any) -> bool:
        if op == "~":
            return fnmatch.fnmatchcase(str(actual), value)
        left = normal(actual)
        if op in ("=", "!="):
            return bool(left == value)
        if op == "<":
            return bool(left < value)
        if op == "<=":
            return bool(left <= value)
        if op == ">":
            return bool(left > value)
        return bool(left >= value)

    def test(record: Record) -> bool:
        actual = record.get(name)
        values = actual if isinstance(actual, list | tuple | set | frozenset) else [actual]
        hit = any(_safe(one, v) for v in values if v is not None)
        return not hit if op == "!=" else hit

    return test


def _safe(check: Callable[[Any], bool], value: Any) -> bool:
    try:
        return check(value)
    except (TypeError, ValueError):
        return False
