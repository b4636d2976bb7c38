"""Ollama: a Modelfile whose TEMPLATE renders exactly what training rendered, and the values Ollama passes to it.

Ollama renders prompts with Go templates, not Jinja, so a model's Jinja chat template cannot be shipped as is. For
clawtune's own template (the default for bases without one, and the bundled tiny model's) the Go counterpart is
below; for any other template a user gives one with `--ollama-template FILE`. Either way the export renders sample
conversations through it, with the values Ollama would pass (`ollama_values`, modelled on the structs of Ollama's
template package: system messages joined into `.System`, consecutive same-role messages merged, tool-call arguments
printed as Go's json.Marshal prints a map, tools printed with Ollama's `json` function), and refuses to write a
Modelfile whose tokens differ from training's.
"""

from __future__ import annotations

import json
from typing import Any

from clawtune.export.gotemplate import GoMap, GoSlice, GoStruct, OrderedMap, go_json
from clawtune.messages import Message, content_text
from clawtune.models import default_chat_template

# The Go twin of models/chatml_tools.jinja. Keep the two in step: the parity check fails the export if they drift.
CHATML_TOOLS_GO = """\
{{- if .Tools }}<|im_start|>system
{{ if .System }}{{ .System }}

{{ end }}# Tools

You may call one or more functions to answer. Their signatures:
<tools>
{{ range .Tools }}{{ json .Function }}
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


# ---- the values Ollama passes a TEMPLATE, modelled on its structs -------------------------------------------
#
# Since v0.14 Ollama's template package (template/template.go: templateTool, templateToolFunction,
# templateToolFunctionParameters, templateProperties, templateMessage, templateToolCall, templateToolCallFunction,
# templateArgs) hands templates its own structs. What a template prints depends on their shape: the fields and their
# order, the json tags and omitempty, and which types have a String method (templateTools, templateTool,
# templateArgs and templateProperties do; templateToolFunction does not, so `{{ .Function }}` prints a Go struct
# dump, not JSON). The same shapes, in Go, produce the golden outputs the tests compare with
# (scripts/ollama_template_golden.go).


def _any(value: Any) -> Any:
    """A JSON value as Go's `any` holds it after json.Unmarshal: numbers are float64."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _any(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_any(v) for v in value]
    return value


def _strings(value: Any) -> GoSlice:
    return GoSlice([str(v) for v in value] if isinstance(value, list) and value else None)


def _property_type(value: Any) -> GoSlice:
    """api.PropertyType: a []string that prints and marshals as its one element, or as a list."""
    types = [value] if isinstance(value, str) else [str(v) for v in value] if isinstance(value, list) else None
    kind = GoSlice(types)
    kind.stringer = lambda: "" if not kind else kind[0] if len(kind) == 1 else "[" + " ".join(kind) + "]"
    kind.marshal = lambda: go_json(kind[0]) if len(kind) == 1 else go_json(list(kind))
    return kind


def _tool_property(schema: Any) -> GoStruct:
    """api.ToolProperty, as Ollama decodes it from a JSON schema (unknown keys dropped)."""
    schema = schema if isinstance(schema, dict) else {}
    nested = schema.get("properties")
    kind = _property_type(schema.get("type"))
    fields = {
        "AnyOf": GoSlice([_tool_property(s) for s in schema["anyOf"]] if schema.get("anyOf") else None),
        "Type": kind,
        "Items": _any(schema.get("items")),
        "Description": schema.get("description") or "",
        "Enum": GoSlice(_any(schema["enum"]) if isinstance(schema.get("enum"), list) else None),
        "Properties": OrderedMap({k: _tool_property(v) for k, v in nested.items()})
        if isinstance(nested, dict)
        else None,
        "Required": _strings(schema.get("required")),
    }
    names = {"AnyOf": "anyOf", "Type": "type", "Items": "items", "Description": "description", "Enum": "enum"}
    names |= {"Properties": "properties", "Required": "required"}
    return GoStruct(fields, json_fields={k: (v, True) for k, v in names.items()}, type_name="api.ToolProperty")


def _tool(tool: dict[str, Any]) -> GoStruct:
    """template.templateTool (with String: its JSON) for an OpenAI tool, as Ollama decodes and converts it."""
    function: dict[str, Any] = tool["function"] if isinstance(tool.get("function"), dict) else tool
    parameters: dict[str, Any] = function["parameters"] if isinstance(function.get("parameters"), dict) else {}
    properties = parameters.get("properties")
    props = GoMap({k: _tool_property(v) for k, v in properties.items()} if isinstance(properties, dict) else None)
    props.stringer = lambda: "{}" if props.nil else go_json(props)
    params = GoStruct(
        {
            "Type": parameters.get("type") or "",
            "Defs": _any(parameters.get("$defs")),
            "Items": _any(parameters.get("items")),
            "Required": _strings(parameters.get("required")),
            "Properties": props,
        },
        json_fields={
            "Type": ("type", False),
            "Defs": ("$defs", True),
            "Items": ("items", True),
            "Required": ("required", True),
            "Properties": ("properties", False),
        },
        type_name="template.templateToolFunctionParameters",
    )
    fn = GoStruct(
        {"Name": function.get("name") or "", "Description": function.get("description") or "", "Parameters": params},
        json_fields={
            "Name": ("name", False),
            "Description": ("description", False),
            "Parameters": ("parameters", False),
        },
        type_name="template.templateToolFunction",
    )
    value = GoStruct(
        {"Type": tool.get("type") or "", "Items": _any(tool.get("items")), "Function": fn},
        json_fields={"Type": ("type", False), "Items": ("items", True), "Function": ("function", False)},
        type_name="template.templateTool",
    )
    value.stringer = lambda: go_json(value)
    return value


def _arguments(raw: Any) -> GoMap:
    """template.templateArgs: the call's arguments as a map (String: its JSON, "{}" when nil)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = None
    args = GoMap(_any(raw) if isinstance(raw, dict) else None)
    args.stringer = lambda: "{}" if args.nil else go_json(args)
    return args


def _call(call: dict[str, Any]) -> GoStruct:
    function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else call
    return GoStruct(
        {
            "ID": call.get("id") or "",
            "Function": GoStruct(
                {"Index": 0, "Name": function.get("name") or "", "Arguments": _arguments(function.get("arguments"))},
                type_name="template.templateToolCallFunction",
            ),
        },
        type_name="template.templateToolCall",
    )


def _api_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Ollama's api.Message list for OpenAI messages (openai.FromChatRequest): a text-part list becomes one message
    per part, a tool message takes its name from the call it answers."""
    out = []
    for message in messages:
        role = message.get("role") or ""
        name = ""
        if role.lower() == "tool":
            name = message.get("name") or ""
            wanted = message.get("tool_call_id")
            for earlier in reversed(messages):
                if name or not wanted:
                    break
                for call in earlier.get("tool_calls") or []:
                    if call.get("id") == wanted:
                        name = (call.get("function") or {}).get("name") or ""
                        break
        content = message.get("content")
        parts = [content_text(p) for p in content] if isinstance(content, list) else [content_text(content)]
        for k, part in enumerate(parts or [""]):
            entry: dict[str, Any] = {
                "Role": role,
                "Content": part,
                "Thinking": "",
                "ToolCalls": [],
                "ToolName": "",
                "ToolCallID": "",
            }
            if k == len(parts or [""]) - 1:
                entry.update(
                    Thinking=message.get("reasoning") or "",
                    ToolCalls=[_call(c) for c in message.get("tool_calls") or []],
                    ToolName=name,
                    ToolCallID=message.get("tool_call_id") or "",
                )
            out.append(entry)
    return out


def ollama_values(messages: list[Message], tools: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The values Ollama's chat endpoint passes to a model's TEMPLATE for these OpenAI-style messages and tools:
    system messages joined into `.System`, consecutive messages of a role merged (their text; the first one's other
    fields), each message a *templateMessage, the tools a templateTools (nil without tools)."""
    system: list[str] = []
    collated: list[dict[str, Any]] = []
    for entry in _api_messages(messages):
        if entry["Role"] == "system":
            system.append(entry["Content"])
        if collated and collated[-1]["Role"] == entry["Role"] and entry["Role"] != "tool":
            collated[-1]["Content"] += "\n\n" + entry["Content"]
        else:
            collated.append(entry)
    values = [
        GoStruct(
            {
                "Role": e["Role"],
                "Content": e["Content"],
                "Thinking": e["Thinking"],
                "Images": GoSlice(None),
                "ToolCalls": GoSlice(e["ToolCalls"] or None),
                "ToolName": e["ToolName"],
                "ToolCallID": e["ToolCallID"],
            },
            pointer=True,
            type_name="*template.templateMessage",
        )
        for e in collated
    ]
    offered = GoSlice([_tool(t) for t in tools] if tools else None)
    offered.stringer = lambda: go_json(offered)
    return {
        "System": "\n\n".join(system),
        "Messages": values,
        "Tools": offered,
        "Response": "",
        "Think": False,
        "ThinkLevel": "",
        "IsThinkSet": False,
    }


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
