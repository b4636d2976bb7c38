"""A failing turn, whichever source found it, and the training-format shapes it is written in."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from clawtune.messages import Example, Message


@dataclass
class Failure:
    """One failing turn: the conversation before it, the turn itself (the user's message, then what the agent did),
    the signals that marked it, and, once found, a corrected response."""

    source: str  # openclaw | gateway | eval
    session_id: str
    context: list[Message]  # earlier messages (system prompt first); assistant turns carry weight 0
    turn: list[Message]  # the user's message, then the agent's messages of that turn
    signals: list[dict[str, Any]]
    fields: dict[str, Any]  # the values the criteria test
    location: str  # where a person finds it: file:line, store#session:seq, or log#request
    anchor: str  # what identifies the turn within its session (first line, request id)
    tools: list[dict[str, Any]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # agent, key, channel, request id, model, adapter, times
    correction: list[Message] | None = None
    correction_how: str | None = None  # recovery | teacher | person | reference (an eval item's)
    correction_from: str | None = None  # where the correction came from
    # To find the same answer in the other source (not written): answer keys, and the user's words as asked.
    links: list[str] = field(default_factory=list)
    asked: str = ""

    @property
    def id(self) -> str:
        """Stable across runs (a person's review is merged back by it)."""
        key = f"{self.source}\x00{self.session_id}\x00{self.anchor}"
        return "f-" + hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def prompt(self) -> list[Message]:
        return [*self.context, self.turn[0]]

    @property
    def response(self) -> list[Message]:
        return self.turn[1:]

    def metadata(self) -> dict[str, Any]:
        return {
            "failure_id": self.id,
            "source": self.source,
            "session_id": self.session_id,
            **self.meta,
            "signals": self.signals,
            "category": self.fields.get("category"),
            "location": self.location,
            "corrected": self.correction_how,
            "correction_from": self.correction_from,
        }

    def failure_example(self) -> Example:
        """The failing turn in the training format: every assistant turn at weight 0 (shown, never learned)."""
        messages = [*self.context, *(_weight(m, 0) for m in self.turn)]
        return self._example(messages)

    def corrected_example(self) -> Example:
        """The same context, the corrected response at weight 1 (earlier turns stay weight 0)."""
        assert self.correction is not None
        messages = [*self.prompt, *(_weight(m, 1) for m in self.correction)]
        return self._example(messages)

    def pair(self) -> dict[str, Any] | None:
        """A preference pair in TRL's conversational format (prompt, chosen, rejected), or None without both sides."""
        if self.correction is None or not self.response:
            return None
        out: dict[str, Any] = {
            "prompt": self.prompt,
            "chosen": [_weight(m, None) for m in self.correction],
            "rejected": [_weight(m, None) for m in self.response],
        }
        if self.tools:
            out["tools"] = self.tools
        out["metadata"] = self.metadata()
        return out

    def _example(self, messages: list[Message]) -> Example:
        example: Example = {"messages": messages}
        if self.tools:
            example["tools"] = self.tools
        example["metadata"] = self.metadata()
        return example


def _weight(message: Message, weight: int | None) -> Message:
    """A copy of a message with its weight set (assistant messages only), or removed with None."""
    out = {k: v for k, v in message.items() if k != "weight"}
    if weight is not None and out.get("role") == "assistant":
        out["weight"] = weight
    return out


def as_context(message: Message) -> Message:
    """An earlier message, seen but not trained: assistant turns get weight 0."""
    return _weight(message, 0) if message.get("role") == "assistant" else dict(message)
