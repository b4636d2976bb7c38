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
