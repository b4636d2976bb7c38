"""The --criteria language: grammar, precedence, types, and errors with a caret and did-you-mean."""

import pytest

from clawtune.loop.failures.criteria import CriteriaError, parse_criteria

TURN = {
    "user_feedback": "negative",
    "tool_call_error": False,
    "status": 502,
    "latency_ms": 1234.5,
    "model": "finance-agent-v2",
    "date": "2026-04-02",
    "signal": ["negative_feedback", "server_error"],
    "tool": ["query_database"],
    "category": "tool-call",
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("user_feedback=negative OR tool_call_error=true", True),
        ("user_feedback=negative AND tool_call_error=true", False),
        ("tool_call_error=false", True),
        ("status >= 500 AND status < 600", True),
        ("latency_ms > 1234.5", False),
        ("latency_ms <= 1234.5", True),
        ('model ~ "finance-*"', True),
        ("model ~ finance-v?", False),
        ("model = 'finance-agent-v2'", True),
        ("date >= 2026-04-01 AND date <= 2026-04-30", True),
        ("date = 2026-04-03", False),
        ("date ~ 2026-04-*", True),
        ("signal = server_error", True),
        ("signal != timeout", True),
        ("tool = send_report", False),
        ("NOT tool_call_error=true", True),
        ("not (status=502 or status=503)", False),
        # AND binds tighter than OR, NOT tighter than AND
        ("tool_call_error=true AND status=502 OR model=x", False),
        ("model=x OR status=502 AND user_feedback=negative", True),
        ("NOT status=502 AND model=x", False),
        # a field the turn lacks fails every test but !=
        ("adapter = a", False),
        ("adapter != a", True),
        ("arm ~ *", False),
        ("category = tool-call", True),
    ],
)
def test_criteria_evaluate(expression, expected):
    assert parse_criteria(expression).matches(TURN) is expected


def _error(expression: str) -> str:
    with pytest.raises(CriteriaError) as info:
        parse_criteria(expression)
    return str(info.value)


def _caret_column(message: str) -> int:
    lines = message.splitlines()
    return lines[2].index("^") - 2  # both lines are indented by two spaces


def test_unknown_field_names_the_closest_and_every_known_one():
    message = _error("tool_call_error=true OR user_feedbak=negative")
    assert "unknown field 'user_feedbak'; did you mean user_feedback?" in message
    assert "known fields: user_feedback, tool_call_error" in message
    assert message.splitlines()[1] == "  tool_call_error=true OR user_feedbak=negative"
    assert _caret_column(message) == len("tool_call_error=true OR ")


@pytest.mark.parametrize(
    ("expression", "says", "column"),
    [
        ("tool_call_error=yes", "tool_call_error is true or false, not yes", 16),
        ("status>=abc", "status takes a number, not abc", 8),
        ("date>2026-13-01", "date takes an ISO date like 2026-04-01", 5),
        ("user_feedback=negatve", "did you mean negative?", 14),
        ("model<3", "model is text; it takes != = ~, not <", 5),
        ("aborted == true", "unexpected '='", 9),
        ('model = "abc', "an unclosed quote?", 8),
        ("aborted=true model=x", "unexpected 'model'; expected ) or AND or OR", 13),
        ("(aborted=true", "ends too early; expected )", 13),
        ("aborted=true AND", "ends too early; expected ( or NOT or a field name", 16),
        ("model ~", "ends too early; expected a value", 7),
    ],
)
def test_mistakes_are_shown_with_a_caret(expression, says, column):
    message = _error(expression)
    assert says in message
    assert message.splitlines()[1] == f"  {expression}"
    assert _caret_column(message) == column


def test_empty_and_keyword_like_fields():
    assert "empty" in _error("  ")
    # `not` is a keyword only as a whole word: a field starting with it is still a field name
    assert "unknown field 'notes'" in _error("notes=1")


def test_never_evaluates_code():
    for attempt in ("__import__('os').system('true')", "model=x; import os"):
        with pytest.raises(CriteriaError):
            parse_criteria(attempt)
    # a value that looks like code is only ever a string to compare with
    assert not parse_criteria("model = \"__import__('os')\"").matches(TURN)
    assert parse_criteria("model = {{7*7}}").matches({"model": "{{7*7}}"})


def test_help_documents_every_field():
    import contextlib
    import io

    from clawtune.cli import main
    from clawtune.loop.failures.fields import FIELDS

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["agent", "collect-failures", "--help"])
    text = " ".join(out.getvalue().split())
    for name in FIELDS:
        assert f"{name} (" in text
    assert "AND, OR, NOT and parentheses" in text
