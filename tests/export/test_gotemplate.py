"""The Go template interpreter and the model of Ollama's values, against Ollama's own test data and real Go.

`tests/fixtures/ollama/` (see its README): Ollama's 20 shipped templates with their 60 expected outputs, and outputs
recorded from real Go (go1.27.3) by `scripts/ollama_template_golden.go` with structs of the same shape as Ollama's:
values, functions and actions, and the 20 templates on tool-calling conversations. Needs no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clawtune.export import gotemplate, ollama, parity

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ollama"
GOLDEN = json.loads((FIXTURES / "golden.json").read_text(encoding="utf-8"))
CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello, how are you?"}],
    "user-assistant-user": [
        {"role": "user", "content": "Hello, how are you?"},
        {"role": "assistant", "content": "I'm doing great. How can I help you today?"},
        {"role": "user", "content": "I'd like to show off how chat templating works!"},
    ],
}
CONVERSATIONS["system-user-assistant-user"] = [
    {"role": "system", "content": "You are a helpful assistant."},
    *CONVERSATIONS["user-assistant-user"],
]
TRAILING_SPACE = {"chatqa.gotmpl", "llama2-chat.gotmpl", "mistral-instruct.gotmpl", "openchat.gotmpl", "vicuna.gotmpl"}


def test_ollamas_template_test_data_renders_identically() -> None:
    cases = 0
    for template in sorted((FIXTURES / "templates").glob("*.gotmpl")):
        source = template.read_text(encoding="utf-8").replace("\r\n", "\n")
        for name, messages in CONVERSATIONS.items():
            out = gotemplate.render(source, ollama.ollama_values(messages, None))
            if template.name in TRAILING_SPACE and out.endswith(" "):
                out = out[:-1]  # as Ollama's TestTemplate does
            assert out == (FIXTURES / "testdata" / template.name / name).read_text(encoding="utf-8"), template.name
            cases += 1
    assert cases == 60


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["name"] for c in GOLDEN["cases"]])
def test_renders_as_go_renders(case: dict[str, Any]) -> None:
    values = ollama._any(case["data"]) if "data" in case else ollama.ollama_values(case["messages"], case.get("tools"))
    if case.get("error"):
        with pytest.raises(gotemplate.GoTemplateError):
            gotemplate.render(case["template"], values)
        return
    assert gotemplate.render(case["template"], values) == case["output"]


def test_each_shipped_template_has_goldens_on_tool_calling_conversations() -> None:
    """The goldens were rendered from the templates as they are in the fixtures (a template changed since would be
    tested against another template's output)."""
    by_name = {c["name"]: c for c in GOLDEN["cases"]}
    templates = sorted((FIXTURES / "templates").glob("*.gotmpl"))
    assert len(templates) == 20
    for template in templates:
        source = template.read_text(encoding="utf-8").replace("\r\n", "\n")
        for suffix in ("sample", "sample-prompt", "conversation"):
            case = by_name[f"ollama-{template.stem}-{suffix}"]
            assert case["template"] == source and "error" not in case, case["name"]
            assert any(m.get("tool_calls") for m in case["messages"]) and case["tools"], case["name"]


def test_the_default_template_prints_tools_as_ollama_shows_them() -> None:
    """`{{ .Function }}` is a struct dump in Ollama since v0.14 (templateToolFunction has no String method): the
    default TEMPLATE prints the tools with `json`, and training's Jinja template writes the same bytes."""
    by_name = {c["name"]: c for c in GOLDEN["cases"]}
    dump = by_name["function-struct-dump"]["output"].splitlines()[0]
    assert dump.startswith("{query_database Run a read-only SQL query") and "<nil> <nil> [query]" in dump
    assert "{{ json .Function }}" in ollama.CHATML_TOOLS_GO and "{{ .Function }}" not in ollama.CHATML_TOOLS_GO
    from clawtune.models import load_tokenizer

    tokenizer = load_tokenizer("clawtune/tiny-agent")[0]
    golden = [c for c in GOLDEN["cases"] if c["name"].startswith("default-template-sample-")]
    assert len(golden) == len(parity.prompts(parity.SAMPLE))
    for case in golden:
        assert parity.training_renderer(tokenizer)(case["messages"], case["tools"]) == case["output"]
    # The tools with every field Ollama keeps (anyOf, $defs, items, nested properties in their order, no description)
    everything = by_name["default-template-every-tool-field"]
    assert parity.training_renderer(tokenizer)(everything["messages"], everything["tools"]) == everything["output"]


def test_actions_go_rejects_are_rejected_with_their_line() -> None:
    with pytest.raises(gotemplate.GoTemplateError, match=r"line 2: \{\{break\}\} outside \{\{range\}\}"):
        gotemplate.render("x\n{{ break }}", {})
    with pytest.raises(gotemplate.GoTemplateError, match=r"line 1: unexpected \{\{else if .B\}\} in \{\{with\}\}"):
        gotemplate.render("{{ with .A }}a{{ else if .B }}b{{ end }}", {})
    with pytest.raises(gotemplate.GoTemplateError, match=r"line 1: unexpected \{\{else with .B\}\} in \{\{if\}\}"):
        gotemplate.render("{{ if .A }}a{{ else with .B }}b{{ end }}", {})
    with pytest.raises(gotemplate.GoTemplateError, match="can't evaluate field Nope in type"):
        gotemplate.render(
            "{{ range .Messages }}{{ .Nope }}{{ end }}", ollama.ollama_values(CONVERSATIONS["user"], None)
        )


# ---- the interpreter on hand-written templates -----------------------------------------------------------------


def test_go_template_subset() -> None:
    source = (
        "{{- /* a comment */ -}}\n"
        "{{ range $i, $m := .Messages }}{{ if $i }}, {{ end }}{{ $m.Role }}={{ .Content }}{{ end }}\n"
        '{{- if eq .Mode "a" }} A{{ else if eq .Mode "b" "c" }} BC{{ else }} other{{ end }}\n'
        "{{ range $k, $v := .Map }}{{ $k }}:{{ $v }};{{ end }}"
        "{{ $last := eq (len (slice .Messages 1)) 1 }}{{ if $last }} last{{ end }}"
        "{{ with .Missing }}never{{ else }} none{{ end }}"
        ' {{ json .Text }} {{ and 1 0 }} {{ or 0 "x" }} {{ not .Text }} {{ index .Map "b" }}'
        "{{ $n := 1 }}{{ range .Messages }}{{ $n = 2 }}{{ end }} n={{ $n }}"
    )
    data = {
        "Messages": [{"Role": "user", "Content": "hi"}, {"Role": "assistant", "Content": "yo"}],
        "Mode": "c",
        "Map": {"b": 2, "a": 1},
        "Text": "<a & b>",
    }
    assert gotemplate.render(source, data) == (
        'user=hi, assistant=yo BC\na:1;b:2; last none "\\u003ca \\u0026 b\\u003e" 0 x false 2 n=2'
    )


def test_go_template_errors_name_the_line() -> None:
    with pytest.raises(gotemplate.GoTemplateError, match=r"line 2: .*has no"):
        gotemplate.render("ok\n{{ if .A }}never closed", {})
    with pytest.raises(gotemplate.GoTemplateError, match='line 1: function "nope" not defined'):
        gotemplate.render("{{ nope 1 }}", {})


def test_go_json_matches_go() -> None:
    assert gotemplate.go_json({"b": [1, 2.0, 2.5], "a": "é<\u2028"}) == '{"a":"é\\u003c\\u2028","b":[1,2,2.5]}'
