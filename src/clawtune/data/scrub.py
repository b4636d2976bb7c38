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
from functools import partial
from typing import Any

from clawtune.chat import Example


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


# (type, pattern, validator). A pattern's named group `v` is the part replaced; without one, the whole match is.
PATTERNS: list[tuple[str, str, Callable[[str], bool] | None]] = [
    ("PRIVATE_KEY", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----", None),
    ("ANTHROPIC_KEY", r"\bsk-ant-[A-Za-z0-9]{2,10}-[A-Za-z0-9_\-]{20,}", None),
    ("OPENAI_KEY", r"\bsk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{20,}", None),
    ("AWS_ACCESS_KEY", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b", None),
    (
        "AWS_SECRET_KEY",
        r"(?i:aws_secret_access_key|aws_secret|secret_access_key)[\"'\s:=]+(?P<v>[A-Za-z0-9/+=]{40})\b",
        None,
    ),
    ("GITHUB_TOKEN", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b", None),
    ("SLACK_TOKEN", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}|https://hooks\.slack\.com/services/[A-Za-z0-9/]+", None),
    ("GOOGLE_API_KEY", r"\bAIza[0-9A-Za-z_\-]{35}\b|\bya29\.[0-9A-Za-z_\-]{20,}", None),
    ("JWT", r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}", None),
    ("BEARER_TOKEN", r"(?i:\bbearer\s+)(?P<v>[A-Za-z0-9._~+/\-]{16,}=*)", None),
    ("URL_PASSWORD", r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]+:(?P<v>[^@\s/]+)@", None),
    ("EMAIL", r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b", None),
    ("CARD", r"(?<!\d)(?<!\d\.)(?:\d[ \-]?){12,18}\d(?!\d|\.\d)", lambda s: luhn_ok(re.sub(r"\D", "", s))),
    # International (+CC ...), (NNN) NNN-NNNN, NNN-NNN-NNNN, and Chinese mobiles; bare digit runs are left alone so
    # amounts and ids (1234567) survive.
    (
        "PHONE",
        r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?\(?\d{1,4}\)?(?:[\s.\-]?\d{2,4}){2,4}|\(\d{3}\)\s?\d{3}[\s.\-]\d{4}|\d{3}[.\-]\d{3}[.\-]\d{4})(?![\w\-]|\s\d)"
        r"|(?<!\d)1[3-9]\d{9}(?!\d)",
        None,
    ),
]
# Every pattern needs one of these; strings without any (most of them) skip the scan.
TRIGGER = re.compile(
    r"\d[\d \-.()]{8,}\d|@|sk-|AKIA|ASIA|ABIA|ACCA|gh[pousr]_|github_pat_|xox|hooks\.slack|AIza|ya29\.|eyJ|[Bb][Ee][Aa][Rr][Ee][Rr]|(?i:secret)|-----BEGIN"
)
# One alternation scanned once per string (14 separate passes cost 10x more); at each position the first
# alternative that matches wins, so the more specific patterns come first.
COMBINED = re.compile(
    "|".join(f"(?P<k{i}>{p.replace('(?P<v>', f'(?P<v{i}>')})" for i, (_, p, _) in enumerate(PATTERNS))
)


class Scrubber:
    """Replaces secrets and PII in every string of an example; `counts` accumulates over all examples."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def scrub_example(self, example: Example) -> Example:
        """A scrubbed copy of an example: message contents, tool-call arguments, tool results, tools' text."""
        mapping: dict[tuple[str, str], str] = {}
        out = dict(example)
        out["messages"] = [self._message(m, mapping) for m in example.get("messages", [])]
        return out

    def scrub_text(self, text: str, mapping: dict[tuple[str, str], str] | None = None) -> str:
        """Scrub one string (placeholders numbered within `mapping`)."""
        if not TRIGGER.search(text):
            return text
        return COMBINED.sub(partial(self._replace, mapping={} if mapping is None else mapping), text)

    def _replace(self, match: re.Match[str], mapping: dict[tuple[str, str], str]) -> str:
        name = match.lastgroup or ""
        index = int(name[1:])
        kind, _, check = PATTERNS[index]
        inner = f"v{index}"
        has_inner = inner in match.re.groupindex and match.group(inner) is not None
        value = match.group(inner) if has_inner else match.group(0)
        if check is not None and not check(value):
            return match.group(0)
        key = (kind, value)
        if key not in mapping:
            mapping[key] = f"<{kind}_{sum(1 for k in mapping if k[0] == kind) + 1}>"
        self.counts[kind] += 1
        if not has_inner:
            return mapping[key]
        start, end = match.span(inner)
        offset = match.start(0)
        whole = match.group(0)
        return whole[: start - offset] + mapping[key] + whole[end - offset :]

    def _message(self, message: dict[str, Any], mapping: dict[tuple[str, str], str]) -> dict[str, Any]:
        out = dict(message)
        for key in ("content", "reasoning_content"):
            if isinstance(out.get(key), str):
                out[key] = self.scrub_text(out[key], mapping)
        if isinstance(out.get("tool_calls"), list):
            out["tool_calls"] = [self._call(c, mapping) for c in out["tool_calls"]]
        return out

    def _call(self, call: dict[str, Any], mapping: dict[tuple[str, str], str]) -> dict[str, Any]:
        fn = dict(call.get("function") or {})
        raw = str(fn.get("arguments") or "{}")
        if not TRIGGER.search(raw):
            return call
        try:
            args = json.loads(raw)
        except ValueError:
            fn["arguments"] = self.scrub_text(raw, mapping)
        else:
            # Scrub values, not the JSON text: a placeholder must never break the arguments' JSON.
            fn["arguments"] = json.dumps(self._walk(args, mapping), ensure_ascii=False)
        return {**call, "function": fn}

    def _walk(self, value: Any, mapping: dict[tuple[str, str], str]) -> Any:
        if isinstance(value, str):
            return self.scrub_text(value, mapping)
        if isinstance(value, list):
            return [self._walk(v, mapping) for v in value]
        if isinstance(value, dict):
            return {k: self._walk(v, mapping) for k, v in value.items()}
        return value
