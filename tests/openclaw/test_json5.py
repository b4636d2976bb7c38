"""The JSON5 reader and writer (openclaw/json5.py) on what OpenClaw writes. Needs no torch."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clawtune.openclaw import json5

from .test_register import CONFIG


def test_json5_reads_what_openclaw_writes() -> None:
    assert json5.loads(CONFIG)["channels"]["telegram"]["token"] == "${TELEGRAM_TOKEN}"
    assert json5.loads("{a: +1, b: .5, c: 0x1F, d: [1, 2,], e: 'it\\'s', f: Infinity, // c\n}") == {
        "a": 1,
        "b": 0.5,
        "c": 31,
        "d": [1, 2],
        "e": "it's",
        "f": float("inf"),
    }
    with pytest.raises(json5.JSON5Error, match=r"cfg: line 3, column 3: expected ',' or '}'"):
        json5.loads("{\n  a: 1\n  b: 2\n}", "cfg")


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=10,
    )
)
def test_json5_round_trips_json(value: object) -> None:
    assert json5.loads(json.dumps(value, indent=2)) == value
    assert json5.loads(json5.dumps(value)) == value


@pytest.mark.parametrize("step", ["    ", "\t", "  "])
def test_json5_writes_with_the_files_own_indent(step: str) -> None:
    """A replaced or inserted value takes the file's indent step (4 spaces, tabs, 2 spaces), wherever it lands: the
    whole file reads as if written by one hand, and a second run changes nothing."""
    before = {
        "agents": {"defaults": {"model": "anthropic/claude-sonnet-4"}, "list": [{"id": "ops"}, {"id": "main"}]},
        "models": {"providers": {}},
    }
    text = json.dumps(before, indent=step)
    model = {"primary": "clawtune/m", "fallbacks": ["anthropic/claude-sonnet-4"]}
    out = json5.set_value(text, ["agents", "defaults", "model"], model)  # a string replaced by an object
    out = json5.set_value(out, ["agents", "list", 1, "model"], {"primary": "clawtune/m"})  # a key added in an item
    out = json5.set_value(out, ["models", "providers", "clawtune"], {"api": "openai-completions"})  # in an empty {}
    expected = {
        "agents": {
            "defaults": {"model": model},
            "list": [{"id": "ops"}, {"id": "main", "model": {"primary": "clawtune/m"}}],
        },
        "models": {"providers": {"clawtune": {"api": "openai-completions"}}},
    }
    # exactly what json.dumps writes with that indent (but for the short list of plain values, kept on one line)
    written = json.dumps(expected, indent=step)
    assert out == written.replace(
        f'[\n{step * 5}"anthropic/claude-sonnet-4"\n{step * 4}]', '["anthropic/claude-sonnet-4"]'
    )
    assert json5.set_value(out, ["agents", "list", -1, "model"], {"primary": "clawtune/m"}) == out


def test_json5_paths_take_array_indices() -> None:
    text = '{\n  list: [\n    { id: "a", n: 1 },\n    { id: "b" },\n  ],\n  // kept\n}'
    out = json5.set_value(text, ["list", 0, "n"], 2)
    assert out == text.replace("n: 1", "n: 2")
    out = json5.set_value(out, ["list", -1, "id"], "c")
    assert json5.loads(out) == {"list": [{"id": "a", "n": 2}, {"id": "c"}]} and "// kept" in out
    assert json5.find(json5.parse(out), ["list", 1, "id"]).value == "c"  # type: ignore[union-attr]
    assert json5.find(json5.parse(out), ["list", 5]) is None
    with pytest.raises(json5.JSON5Error, match=r"cfg: list has 2 items, no item 2"):
        json5.set_value(out, ["list", 2, "id"], "x", "cfg")
    with pytest.raises(json5.JSON5Error, match=r"cfg: list\[0\]\.id is not an array"):
        json5.set_value(out, ["list", 0, "id", 0], "x", "cfg")
    with pytest.raises(json5.JSON5Error, match=r"cfg: list is not an object"):
        json5.set_value(out, ["list", "id"], "x", "cfg")
