"""A teacher model behind any OpenAI-compatible endpoint: paraphrases user turns for augmentation, and answers a
failing turn again for the improvement loop (its tool calls checked against the offered tools' schemas).

Requests go through the one endpoint client (`clawtune.openai_http`: a 429 or 5xx is retried with backoff, honouring
Retry-After). What still fails (network, HTTP errors, odd replies) is counted and the example falls back to the
offline transformations; nothing from the teacher is kept unchecked.
"""

from __future__ import annotations

import json
import re
from typing import Any

from clawtune.openai_http import ERRORS, Client, completions_url
from clawtune.problems import InputError

INSTRUCTION = (
    "Rewrite the user's message below so it asks for exactly the same thing in different words. Keep every name, "
    "number, date, code and quoted value exactly as written, keep the language, and reply with the rewritten "
    "message only."
)


GENERATE = (
    "You write test data for an AI agent. Write requests a user might plausibly send to the agent that are OUTSIDE what "
    "it can do (so it must politely refuse). Vary topic and phrasing; one request per line, no numbering, no comments."
)


class Teacher:
    """Paraphrases text through `POST {endpoint}/chat/completions`."""

    def __init__(self, endpoint: str, model: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.url = completions_url(endpoint)
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.client = Client(timeout)
        self.stats: dict[str, Any] = {"requests": 0, "failures": 0, "last_error": None}

    def check(self) -> None:
        """One short request before any work: an unreachable teacher, a wrong model name or a refused key stops the
        run with the cause instead of every paraphrase silently falling back to the offline transformations."""
        if self.complete("Reply with the word OK.", "OK?", 4) is None:
            raise InputError(
                f"--teacher-endpoint {self.url}: the teacher model {self.model!r} did not answer "
                f"({self.stats['last_error']}); check the URL, the model name and $CLAWTUNE_TEACHER_API_KEY, or run "
                "without --teacher-endpoint to augment offline"
            )

    def paraphrase(self, text: str) -> str | None:
        """The teacher's rewrite of `text`, or None when the endpoint fails."""
        return self.complete(INSTRUCTION, text, max(64, len(text)))

    def out_of_scope_requests(self, scope: str, n: int = 20) -> list[str]:
        """Requests a user might send that an agent limited to `scope` cannot serve, one per line (unvalidated)."""
        reply = self.complete(GENERATE, f"The agent can only: {scope}\nWrite {n} requests.", 60 * n)
        lines = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip() for line in (reply or "").splitlines()]
        return [line for line in lines if 8 <= len(line) <= 300]

    def complete(self, instruction: str, text: str, max_tokens: int) -> str | None:
        """One chat completion, or None when the endpoint fails."""
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": instruction}, {"role": "user", "content": text}],
            "temperature": 0.7,
            "max_tokens": max_tokens,
        }
        self.stats["requests"] += 1
        try:
            content = self.client.chat_completion(self.url, body, self.api_key)["choices"][0]["message"]["content"]
        except ERRORS as exc:
            self.stats["failures"] += 1
            self.stats["last_error"] = f"{type(exc).__name__}: {exc}"[:300]
            return None
        return content.strip() if isinstance(content, str) else None

    def answer(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> dict[str, Any] | None:
        """The teacher's next assistant message for a conversation (with the tools offered), or None on failure."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0}
        if tools:
            body["tools"] = tools
        self.stats["requests"] += 1
        try:
            message = self.client.chat_completion(self.url, body, self.api_key)["choices"][0]["message"]
            if not isinstance(message, dict):
                raise TypeError("the reply's message is not an object")
        except ERRORS as exc:
            self.stats["failures"] += 1
            self.stats["last_error"] = f"{type(exc).__name__}: {exc}"[:300]
            return None
        out: dict[str, Any] = {"role": "assistant", "content": message.get("content") or None}
        if message.get("tool_calls"):
            out["tool_calls"] = message["tool_calls"]
        return out


def tool_call_problems(message: dict[str, Any], tools: list[dict[str, Any]] | None) -> list[str]:
    """Why an assistant message's tool calls cannot be trusted: a tool that was not offered, arguments that are not
    a JSON object, or arguments the tool's JSON Schema refuses (checked with jsonschema). Empty when they are fine."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    schemas = {
        t["function"]["name"]: t["function"].get("parameters") or {"type": "object"}
        for t in tools or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name")
    }
    problems = []
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        return ["tool_calls is not a list"]
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            problems.append("a tool call without a function")
            continue
        name = fn.get("name")
        if name not in schemas:
            problems.append(f"calls {name!r}, which was not offered")
            continue
        raw = fn.get("arguments")
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            problems.append(f"{name}: arguments are not JSON")
            continue
        if not isinstance(args, dict):
            problems.append(f"{name}: arguments are not a JSON object")
            continue
        try:
            error = next(iter(Draft202012Validator(schemas[name]).iter_errors(args)), None)
        except SchemaError:
            error = None  # a tool whose own schema is broken: its name and JSON arguments are all that can be checked
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "arguments"
            problems.append(f"{name}: {where}: {error.message}")
    return problems
