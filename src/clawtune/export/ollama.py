"""Ollama: a Modelfile whose TEMPLATE renders exactly what training rendered, and the values Ollama passes to it.

Ollama renders prompts with Go templates, not Jinja, so a model's Jinja chat template cannot be shipped as is. For
clawtune's own template (the default for bases without one, and the bundled tiny model's) the Go counterpart is
below; for any other template a user gives one with `--ollama-template FILE`. Either way the export renders sample
conversations through it, with the values Ollama would pass (`ollama_values`, after Ollama's template package:
system messages joined into `.System`, consecutive same-role messages merged, tool-call arguments printed as Go's
json.Marshal prints a map, tool signatures as Go prints Ollama's ToolFunction struct), and refuses to write a
Modelfile whose tokens differ from training's.
"""

from __future__ import annotations

import json
from typing import Any

from clawtune.chat import Message, content_text
from clawtune.export.gotemplate import GoStruct, go_json
from clawtune.models import default_chat_template

# The Go twin of models/chatml_tools.jinja. Keep the two in step: the parity check fails the export if they drift.
CHATML_TOOLS_GO = """\
{{- if .Tools }}<|im_start|>system
{{ if .System }}{{ .System }}

{{ end }}# Tools

You may call one or more functions to answer. Their signatures:
<tools>
{{ range .Tools }}{{ .Function }}
{{ end }}</tools>

For each call, answer with a JSON object holding the function name and its arguments in <tool_call></tool_call> tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{{ else if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $m := .Messages }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}
{{- range $j, $c := .ToolCalls }}{{ if or $j $m.Content }}
{{ end }}<tool_call>
{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
</tool_call>
{{- end }}<|im_end|>
{{ else if eq .Role "tool" }}<|im_start|>tool
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- end }}<|im_start|>assistant
"""

CHATML_STOPS = ["<|im_end|>", "<|im_start|>"]


def known_go_template(jinja_template: str) -> tuple[str, list[str]] | None:
    """The Go TEMPLATE and stop words for a Jinja template clawtune knows, else None."""
    if jinja_template.strip() == default_chat_template().strip():
        return CHATML_TOOLS_GO, CHATML_STOPS
    return None


# Fields of a tool's parameter schema that Ollama's ToolFunction / ToolProperty structs keep, in struct order.
_PARAMETER_FIELDS = ("type", "required", "properties")
_PROPERTY_FIELDS = ("type", "items", "description", "enum")


def ollama_tool_function(function: dict[str, Any]) -> GoStruct:
    """A tool as Ollama's template sees `.Function`: printed as Go's json.Marshal prints the struct."""
    parameters = function.get("parameters") or {}
    properties = {
        name: {k: prop[k] for k in _PROPERTY_FIELDS if isinstance(prop, dict) and prop.get(k)}
        for name, prop in (parameters.get("properties") or {}).items()
    }
    params: dict[str, Any] = {"type": parameters.get("type") or "object"}
    if parameters.get("required"):
        params["required"] = parameters["required"]
    params["properties"] = properties
    fields: dict[str, Any] = {"Name": function.get("name", "")}
    if function.get("description"):
        fields["Description"] = function["description"]
    fields["Parameters"] = params
    text = '{"name":' + go_json(fields["Name"])
    if "Description" in fields:
        text += ',"description":' + go_json(fields["Description"])
    parts = [f"{go_json(k)}:{go_json(params[k])}" for k in _PARAMETER_FIELDS[:-1] if k in params]
    parts.append('"properties":{' + ",".join(f"{go_json(n)}:{_struct(p)}" for n, p in sorted(properties.items())) + "}")
    text += ',"parameters":{' + ",".join(parts) + "}}"
    return GoStruct(fields, stringer=lambda: text)


def _struct(fields: dict[str, Any]) -> str:
    """A Go struct's JSON: its fields in declaration order (a dict built in that order), not sorted like a map's."""
    return "{" + ",".join(f"{go_json(k)}:{go_json(v)}" for k, v in fields.items()) + "}"


def _arguments(raw: Any) -> GoStruct:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = {}
    args = raw if isinstance(raw, dict) else {}
    return GoStruct(dict(args), stringer=lambda: go_json(args))


def ollama_values(messages: list[Message], tools: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The values Ollama's chat endpoint passes to a model's TEMPLATE for these OpenAI-style messages and tools."""
    system = [content_text(m.get("content")) for m in messages if m.get("role") == "system"]
    collated: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        calls = [
            {
                "Function": {
                    "Name": (c.get("function") or c).get("name", ""),
                    "Arguments": _arguments((c.get("function") or c).get("arguments")),
                }
            }
            for c in message.get("tool_calls") or []
        ]
        text = content_text(message.get("content"))
        entry: dict[str, Any] = {"Role": role, "Content": text, "ToolCalls": calls}
        if collated and collated[-1]["Role"] == role and role != "tool":
            collated[-1]["Content"] += "\n\n" + text
            collated[-1]["ToolCalls"] = collated[-1]["ToolCalls"] + calls
        else:
            collated.append(entry)
    offered = [{"Type": "function", "Function": ollama_tool_function(t.get("function") or t)} for t in tools or []]
    return {"System": "\n\n".join(system), "Messages": collated, "Tools": offered, "Response": ""}


def modelfile(source: str, adapter: str | None, template: str, stops: list[str], system: str | None = None) -> str:
    """A Modelfile: FROM (and ADAPTER), the TEMPLATE, stop parameters, and the system prompt if one was trained."""
    if '"""' in template:
        raise ValueError("a TEMPLATE cannot contain three double quotes in a Modelfile")
    lines = [f"FROM {source}"]
    if adapter:
        lines.append(f"ADAPTER {adapter}")
    lines.append(f'TEMPLATE """{template}"""')
    lines.extend(f"PARAMETER stop {json.dumps(stop)}" for stop in stops)
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"
