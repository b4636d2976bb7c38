"""Secrets and PII out of training data before anything is written: typed, numbered placeholders, counted by type.

The same value gets the same placeholder within one example (`<EMAIL_1>` twice), so the model still learns that the
address in the question is the one in the tool call. Patterns are ordered from most to least specific; each match is
replaced before the next pattern runs, so a key inside a URL is not also counted as a password.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from clawtune.messages import Example


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


@dataclass(frozen=True)
class Rule:
    """One kind of secret: its pattern, the substrings it cannot match without, and an optional validator.

    A named group `v` marks the part replaced (the password in a URL); without one, the whole match is replaced.
    """

    kind: str
    pattern: re.Pattern[str]
    guards: tuple[str, ...] = ()
    check: Callable[[str], bool] | None = None


def _card_ok(value: str) -> bool:
    return luhn_ok(re.sub(r"\D", "", value))


# Applied in this order, most specific first, so a key inside a URL is not also counted as a password. Patterns
# start with a literal or a character class (boundary checks are lookbehinds after the first character): Python's
# regex engine then skips ahead to candidate positions instead of trying every one, and the substring guards skip
# most strings outright. A single alternation of all of them was 10x slower.
RULES: list[Rule] = [
    Rule(
        "PRIVATE_KEY",
        re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----"),
        ("PRIVATE KEY",),
    ),
    Rule("ANTHROPIC_KEY", re.compile(r"\bsk-ant-[A-Za-z0-9]{2,10}-[A-Za-z0-9_\-]{20,}"), ("sk-ant-",)),
    Rule("OPENAI_KEY", re.compile(r"\bsk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{20,}"), ("sk-",)),
    Rule("AWS_ACCESS_KEY", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"), ("AKIA", "ASIA", "ABIA", "ACCA")),
    Rule(
        "AWS_SECRET_KEY",
        re.compile(r"(?i:aws_secret_access_key|aws_secret|secret_access_key)[\"'\s:=]+(?P<v>[A-Za-z0-9/+=]{40})\b"),
        ("secret", "SECRET", "Secret"),
    ),
    Rule(
        "GITHUB_TOKEN",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    Rule(
        "SLACK_TOKEN",
        re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}|https://hooks\.slack\.com/services/[A-Za-z0-9/]+"),
        ("xox", "hooks.slack.com"),
    ),
    Rule("GOOGLE_API_KEY", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b|\bya29\.[0-9A-Za-z_\-]{20,}"), ("AIza", "ya29.")),
    Rule("JWT", re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"), ("eyJ",)),
    Rule(
        "BEARER_TOKEN", re.compile(r"(?i:\bbearer\s+)(?P<v>[A-Za-z0-9._~+/\-]{16,}=*)"), ("bearer", "Bearer", "BEARER")
    ),
    Rule("URL_PASSWORD", re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]+:(?P<v>[^@\s/]+)@"), ("://",)),
    Rule("EMAIL", re.compile(r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b"), ("@",)),
    Rule("CARD", re.compile(r"\d(?<!\d\d)(?<!\d\.\d)(?:[ \-]?\d){12,18}(?!\d|\.\d)"), check=_card_ok),
    # International (+CC ...), (NNN) NNN-NNNN, NNN-NNN-NNNN, and Chinese mobiles; bare digit runs are left alone so
    # amounts and ids (1234567) survive.
    Rule(
        "PHONE",
        re.compile(
            r"(?:\+(?<![\w+]\+)\d{1,3}[\s.\-]?\(?\d{1,4}\)?(?:[\s.\-]?\d{2,4}){2,4}|\((?<![\w+]\()\d{3}\)\s?\d{3}[\s.\-]\d{4}"
            r"|\d(?<![\w+]\d)\d{2}[.\-]\d{3}[.\-]\d{4})(?![\w\-]|\s\d)|1(?<!\d1)[3-9]\d{9}(?!\d)"
        ),
    ),
]


class Scrubber:
    """Replaces secrets and PII in every string of an example; `counts` accumulates over all examples."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def scrub_example(self, example: Example) -> Example:
        """A scrubbed copy of an example: message contents, reasoning, tool-call arguments and tool results.

        Strings are short and many, so the rules are first run once over all of an example's text joined by NUL (a
        boundary to every pattern, as a string's end is): only the rules that find something there run per string,
        and an example none of them matches is returned as it is.
        """
        messages = example.get("messages", [])
        strings = _strings(messages)
        # Long strings (a dumped table in a tool result) are searched on their own, not copied into the join.
        texts = [
            "\x00".join(t for t in strings if len(t) < _JOIN_BELOW),
            *(t for t in strings if len(t) >= _JOIN_BELOW),
        ]
        rules = [r for r in RULES if any(_finds(r, text) for text in texts)]
        if not rules:
            return example
        mapping: dict[tuple[str, str], str] = {}
        out = dict(example)
        out["messages"] = [self._message(m, mapping, rules) for m in messages]
        return out

    def scrub_text(
        self, text: str, mapping: dict[tuple[str, str], str] | None = None, rules: list[Rule] = RULES
    ) -> str:
        """Scrub one string (placeholders numbered within `mapping`)."""
        mapping = {} if mapping is None else mapping
        for rule in rules:
            if rule.guards and not any(g in text for g in rule.guards):
                continue
            text = rule.pattern.sub(partial(self._replace, rule=rule, mapping=mapping), text)
        return text

    def _replace(self, match: re.Match[str], rule: Rule, mapping: dict[tuple[str, str], str]) -> str:
        has_inner = "v" in match.re.groupindex
        value = match.group("v") if has_inner else match.group(0)
        if rule.check is not None and not rule.check(value):
            return match.group(0)
        key = (rule.kind, value)
        if key not in mapping:
            mapping[key] = f"<{rule.kind}_{sum(1 for k in mapping if k[0] == rule.kind) + 1}>"
        self.counts[rule.kind] += 1
        if not has_inner:
            return mapping[key]
        start, end = match.span("v")
        offset = match.start(0)
        whole = match.group(0)
        return whole[: start - offset] + mapping[key] + whole[end - offset :]

    def _message(
        self, message: dict[str, Any], mapping: dict[tuple[str, str], str], rules: list[Rule]
    ) -> dict[str, Any]:
        out = dict(message)
        for key in ("content", "reasoning_content"):
            if isinstance(out.get(key), str):
                out[key] = self.scrub_text(out[key], mapping, rules)
        if isinstance(out.get("tool_calls"), list):
            out["tool_calls"] = [self._call(c, mapping, rules) for c in out["tool_calls"]]
        return out

    def _call(self, call: dict[str, Any], mapping: dict[tuple[str, str], str], rules: list[Rule]) -> dict[str, Any]:
        fn = dict(call.get("function") or {})
        raw = str(fn.get("arguments") or "{}")
        if not any((not r.guards or any(g in raw for g in r.guards)) and r.pattern.search(raw) for r in rules):
            return call
        try:
            args = json.loads(raw)
        except ValueError:
            fn["arguments"] = self.scrub_text(raw, mapping, rules)
        else:
            # Scrub values, not the JSON text: a placeholder must never break the arguments' JSON.
            scrubbed = self._walk(args, mapping, rules)
            if scrubbed == args:
                return call  # a candidate that did not check out (a Luhn failure): keep the string byte for byte
            fn["arguments"] = json.dumps(scrubbed, ensure_ascii=False)
        return {**call, "function": fn}

    def _walk(self, value: Any, mapping: dict[tuple[str, str], str], rules: list[Rule]) -> Any:
        if isinstance(value, str):
            return self.scrub_text(value, mapping, rules)
        if isinstance(value, list):
            return [self._walk(v, mapping, rules) for v in value]
        if isinstance(value, dict):
            return {k: self._walk(v, mapping, rules) for k, v in value.items()}
        return value


_JOIN_BELOW = 1 << 20


def _finds(rule: Rule, text: str) -> bool:
    return (not rule.guards or any(g in text for g in rule.guards)) and rule.pattern.search(text) is not None


def _strings(messages: list[dict[str, Any]]) -> list[str]:
    """Every string the scrubber looks at in a list of messages."""
    out = []
    for m in messages:
        for key in ("content", "reasoning_content"):
            if isinstance(m.get(key), str):
                out.append(m[key])
        for call in m.get("tool_calls") or []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                out.append(str(call["function"].get("arguments") or ""))
    return out
