"""The general-assistant generator: pre-training's corpus unchanged, replay disjoint from the forgetting set."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from clawtune.models import general


def digest(examples: list[dict]) -> str:
    return hashlib.sha256(json.dumps(examples).encode()).hexdigest()


def test_the_forgetting_set_is_still_the_one_every_report_was_measured_on() -> None:
    # Recorded before the phrasing families existed: the demo's forgetting figures stay comparable across versions.
    assert digest(general.forgetting_set()) == "f5b3f39a1d34e7a9e99c81774748fcc2941c4502cbba8cc61b8e25822c4ecacd"


FIELDS = {"a": r"\d+", "b": r"\d+", "op": r"[-+*]", "value": r"\d+", "number": r"\d+", "time": r"\d\d:\d\d"}


def template_patterns(family: str) -> list[re.Pattern[str]]:
    """Each user-side template as a regular expression (numbers as numbers, names as anything)."""
    patterns = []
    for templates in general.PHRASINGS[family].values():
        for template in templates:
            pieces = re.split(r"\{(\w+)\}", template)
            regex = "".join(
                re.escape(piece) if i % 2 == 0 else f"(?:{FIELDS.get(piece, '.+')})" for i, piece in enumerate(pieces)
            )
            patterns.append(re.compile("^" + regex + "$", re.DOTALL))
    patterns += [re.compile("^" + re.escape(q) + "$") for q, _ in general.PLAIN_BY_FAMILY[family]]
    patterns += [re.compile("^" + re.escape(q) + "$") for q in general.REFUSE_BY_FAMILY[family]]
    return patterns


def user_turns(examples: list[dict]) -> list[str]:
    return [m["content"] for e in examples for m in e["messages"] if m["role"] == "user"]


def test_replay_shares_no_conversation_and_no_user_template_with_the_forgetting_set() -> None:
    forgetting = user_turns(general.forgetting_set(600))
    replay = user_turns(general.replay_set(2000))
    pretrain_patterns = template_patterns("pretrain")
    # The patterns describe the forgetting set completely, so not matching them means a different template.
    assert all(any(p.match(turn) for p in pretrain_patterns) for turn in forgetting)
    assert all(any(p.match(turn) for p in template_patterns("replay")) for turn in replay)
    shared = [turn for turn in replay if any(p.match(turn) for p in pretrain_patterns)]
    assert not shared, shared[:5]
    assert not set(replay) & set(forgetting)
    assert general.REPLAY_SEED != general.FORGETTING_SEED


def test_replay_keeps_the_assistants_behaviour() -> None:
    """Same kinds of conversation: tools called in the same share, refusals with the same answer."""
    replay, pretrain = general.replay_set(1000), general.conversations(1000, seed=3)

    def share_with_calls(examples: list[dict]) -> float:
        return sum(any(m.get("tool_calls") for m in e["messages"]) for e in examples) / len(examples)

    assert share_with_calls(replay) == pytest.approx(share_with_calls(pretrain), abs=0.05)
    assert any(m.get("content") == general.REFUSAL for e in replay for m in e["messages"])
    with pytest.raises(ValueError, match="unknown phrasing family"):
        general.conversations(1, family="other")
