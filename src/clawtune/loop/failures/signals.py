"""Signals read from what the user said: a correction of the previous answer, a retry, and emoji reactions.

The correction heuristic (its own signal, `user_correction`): a user message corrects the previous answer when it
opens with a rejection or a restatement, in English or Chinese:

- English: "no," / "nope" / "wrong" / "incorrect" / "that's wrong|not right|not correct|not what I ..." / "not what I
  asked|meant|wanted" / "actually, I meant|it's|it should ..." / "I said|meant|asked (for)" / "you misunderstood|got it wrong|made a mistake"
  / "that is not ..." / "try again" / "still wrong". "no thanks", "no problem", "no worries", "no need", "nope, that's
  all" and "actually, thanks|great|perfect" are thanks, not corrections.
- Chinese: 不对 / 错了 / 不是 (…, 我要/我说/我问) / 你搞错了|弄错了|理解错了 / 我说的是 / 我是说 / 我要的是 / 应该是 / 重新 / 再试.
  "不是很" (not very) and "不用了" / "没事" are not corrections.

Only the start of the message is looked at (after any OpenClaw system-event lines and timestamp envelopes), where a
correction almost always stands, so "no" inside a sentence does not count. Tested on both languages' positives and
negatives in tests/loop/test_failures.py.

Reactions: OpenClaw turns a channel's reaction into a system event line in the agent's next context (its docs:
"Telegram reaction added: 👍 by Alice (@alice) on msg 42"); a store may also hold reaction rows (`session_reactions`).
Which emoji count as negative is configurable (`--negative-reactions`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NEGATIVE_REACTIONS = ("👎", "👎🏻", "👎🏼", "👎🏽", "👎🏾", "👎🏿", "❌", "😡", "😠", "🤬", "💩", "😞", "🙁", "☹️", "☹")
POSITIVE_REACTIONS = ("👍", "👍🏻", "👍🏼", "👍🏽", "👍🏾", "👍🏿", "❤️", "❤", "🎉", "🙏", "👌", "💯", "🔥", "✅")

# OpenClaw's envelopes before the user's own words: "[Tue 2026-11-24 17:27 UTC] " and "System: [...] ..." lines.
_ENVELOPE = re.compile(r"^\s*(?:\[[^\]\n]{0,80}\]\s*)+")
_SYSTEM_LINE = re.compile(r"^\s*System:\s.*$", re.MULTILINE)

_EN_NOT_CORRECTION = re.compile(
    r"^(?:no|nope|nah)\b[\s,.!]*(?:thanks|thank you|thx|problem|worries|need|rush|that'?s all|that is all|more)\b"
    r"|^actually[\s,]+(?:thanks|thank you|great|perfect|that'?s (?:great|perfect|right|correct))",
    re.IGNORECASE,
)
_EN_CORRECTION = re.compile(
    r"^(?:"
    r"(?:no|nope|nah)\b[\s,.!:;-]"
    r"|no$"
    r"|wrong\b|incorrect\b|still wrong\b"
    r"|that(?:'s| is| was)\s+(?:wrong|incorrect|not (?:right|correct|it|true|what i)|the wrong)\b"
    r"|not (?:what i (?:asked|meant|wanted|said)|quite|right|correct)\b"
    r"|actually[\s,]+(?:i (?:meant|said|wanted|asked)|it(?:'s| is| should)|that(?:'s| is) (?:wrong|not)|no\b)"
    r"|i (?:said|meant|asked(?: for)?|wanted)\b"
    r"|you (?:misunderstood|got (?:it|that) wrong|made a mistake|are wrong|'re wrong|mixed up)\b"
    r"|(?:please )?try again\b"
    r"|that'?s not what i\b"
    r")",
    re.IGNORECASE,
)
_ZH_NOT_CORRECTION = re.compile(r"^(?:不是很|不用了|没事|不错|不客气)")
_ZH_CORRECTION = re.compile(
    r"^(?:不对|错了|不是(?!很)|你(?:搞|弄|理解)?错了|你搞错|你弄错|理解错了|我说的是|我是说|我要的是|我问的是|应该是|重新|再试|还是不对)"
)
_RETRY = re.compile(r"^(?:(?:please )?(?:try|do it) again|again|retry|重试|再试一次|再来一次)\b", re.IGNORECASE)

# "Telegram reaction added: 👎 by Alice (@alice) on msg 42", "Discord reaction removed: ..."
_REACTION_EVENT = re.compile(
    r"(?P<channel>[A-Z][A-Za-z]+) reaction (?P<action>added|removed): (?P<emoji>\S+)"
    r"(?: by (?P<by>[^\n]+?))?(?: on msg (?P<msg>\S+))?\s*$",
    re.MULTILINE,
)


def user_words(text: str) -> str:
    """What the user typed: without OpenClaw's system-event lines and timestamp envelope."""
    return _ENVELOPE.sub("", _SYSTEM_LINE.sub("", text)).strip()


def is_correction(text: str) -> bool:
    """Whether a user message corrects the previous answer (English or Chinese; see the module's docstring)."""
    words = user_words(text)
    if not words:
        return False
    if _EN_NOT_CORRECTION.match(words) or _ZH_NOT_CORRECTION.match(words):
        return False
    return bool(_EN_CORRECTION.match(words) or _ZH_CORRECTION.match(words))


def is_retry(text: str) -> bool:
    """Whether a user message asks for the same thing again ("try again", "重试")."""
    return bool(_RETRY.match(user_words(text)))


@dataclass(frozen=True)
class Reaction:
    """One emoji reaction to an answer, from a system-event line or a store row."""

    emoji: str
    removed: bool = False
    by: str | None = None
    channel: str | None = None


def reaction_events(text: str) -> list[Reaction]:
    """The reaction system events in a user message, in order."""
    return [
        Reaction(m["emoji"], m["action"] == "removed", (m["by"] or "").strip() or None, m["channel"].lower())
        for m in _REACTION_EVENT.finditer(text)
    ]


def net_reactions(reactions: list[Reaction]) -> list[str]:
    """The emoji still standing after removals, in the order first added."""
    standing: list[str] = []
    for reaction in reactions:
        if reaction.removed:
            if reaction.emoji in standing:
                standing.remove(reaction.emoji)
        elif reaction.emoji not in standing:
            standing.append(reaction.emoji)
    return standing


def parse_emoji_list(text: str) -> tuple[str, ...]:
    """`--negative-reactions "👎,❌,😡"` (commas or spaces)."""
    return tuple(e for e in re.split(r"[\s,]+", text) if e)


def words(text: str) -> set[str]:
    """Lower-case word and CJK-character tokens, for comparing two requests."""
    return set(re.findall(r"[a-z0-9]+|[\u4e00-\u9fff]", user_words(text).lower()))


def same_request(a: str, b: str, threshold: float = 0.6) -> bool:
    """Whether two user messages ask for nearly the same thing (Jaccard similarity of their words)."""
    wa, wb = words(a), words(b)
    if not wa or not wb:
        return False
    return len(wa & wb) / len(wa | wb) >= threshold
