"""What evaluation and serving must agree on about a trained model, defined once so that evaluation measures what is
served: the system-prompt policy (what becomes of a request's system prompt before the model sees it) and the tokens
that end a reply.

The policy is chosen at export (`--system-prompt keep|drop|short|FILE`), recorded in every training example's
metadata, read back from a checkpoint's training data (or an export's manifest), and applied by the gateway to every
request and by `ft evaluate` to every held-out prompt. `keep` leaves the messages alone; `drop` removes every system
(and developer) message; `replace` puts the trained prompt in their place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clawtune.messages import Message
from clawtune.problems import InputError

POLICIES = ("keep", "drop", "replace")

# End-of-turn markers of the chat template families clawtune trains (ChatML, Llama 3, Phi-3, Gemma, Mistral/Llama 2):
# a model may end its turn with its template's marker even where the generation config names only the EOS token.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>")


@dataclass(frozen=True)
class SystemPromptPolicy:
    """keep | drop | replace, with the replacement prompt (only for replace)."""

    policy: str = "keep"
    prompt: str | None = None

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"system-prompt policy {self.policy!r}: expected one of {', '.join(POLICIES)}")
        if self.policy == "replace" and not self.prompt:
            raise ValueError("the system-prompt policy `replace` needs the prompt to put in place")

    @classmethod
    def from_record(cls, record: Any) -> SystemPromptPolicy | None:
        """A recorded `{policy, prompt}` (an export's manifest, a data report); None when it is not one."""
        if not isinstance(record, dict) or record.get("policy") not in POLICIES:
            return None
        prompt = record.get("prompt") if isinstance(record.get("prompt"), str) else None
        if record["policy"] == "replace" and not prompt:
            return KEEP
        return cls(record["policy"], prompt if record["policy"] == "replace" else None)

    def overridden(self, policy: str | None, prompt: str | None) -> SystemPromptPolicy:
        """This policy with a config's choice and prompt laid over it (`replace` with no prompt anywhere is `keep`)."""
        chosen = policy or self.policy
        text = prompt or self.prompt
        if chosen == "replace":
            return SystemPromptPolicy("replace", text) if text else KEEP
        return SystemPromptPolicy(chosen)

    def record(self) -> dict[str, Any]:
        return {"policy": self.policy, "prompt": self.prompt}

    def system_message(self, original: str | None) -> Message | None:
        """The system message an exported example starts with, given the session's own prompt (None if unknown)."""
        if self.policy == "replace":
            return {"role": "system", "content": self.prompt}
        if self.policy == "keep" and original:
            return {"role": "system", "content": original}
        return None

    def apply(self, messages: list[Message]) -> list[Message]:
        """The messages the model sees: the request's own (keep), without system and developer messages (drop), or
        with the trained prompt in their place (replace)."""
        if self.policy == "keep":
            return messages
        rest = [m for m in messages if m.get("role") not in ("system", "developer")]
        if self.policy == "drop":
            return rest
        return [{"role": "system", "content": self.prompt}, *rest]


KEEP = SystemPromptPolicy()


def short_system_prompt(agent_id: str) -> str:
    """The generated one-liner that replaces OpenClaw's ~48,000-character generic prompt by default."""
    return (
        f"You are {agent_id}, a specialist agent. Use the provided tools when a request needs data, answer concisely, "
        "and politely decline requests outside your scope."
    )


def parse_choice(choice: str, agent_id: str, flag: str = "--system-prompt") -> SystemPromptPolicy:
    """The policy of `--system-prompt keep|drop|short|FILE` (a file holds the prompt to use)."""
    if choice in ("keep", "drop"):
        return SystemPromptPolicy(choice)
    if choice == "short":
        return SystemPromptPolicy("replace", short_system_prompt(agent_id))
    path = Path(choice)
    if not path.is_file():
        raise InputError(f"{flag} {choice!r}: expected keep, drop, short or an existing file")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise InputError(f"{flag} {choice}: the file is empty (use drop to train without a system prompt)")
    return SystemPromptPolicy("replace", text)


def policy_of_examples(examples: Iterable[dict[str, Any]]) -> SystemPromptPolicy | None:
    """The policy training data was exported with, from its examples' metadata (the most common one, and for replace
    the most common leading system prompt); None when no example records one."""
    policies: Counter[str] = Counter()
    prompts: Counter[str] = Counter()
    for example in examples:
        policy = (example.get("metadata") or {}).get("system_prompt")
        if policy in POLICIES:
            policies[policy] += 1
            first = (example.get("messages") or [{}])[0]
            if policy == "replace" and first.get("role") == "system" and isinstance(first.get("content"), str):
                prompts[first["content"]] += 1
    if not policies:
        return None
    policy = policies.most_common(1)[0][0]
    if policy != "replace":
        return SystemPromptPolicy(policy)
    return SystemPromptPolicy("replace", prompts.most_common(1)[0][0]) if prompts else KEEP


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> frozenset[int]:
    """The token ids that end a reply: the tokenizer's EOS, every EOS id of the model's generation config, and the
    end-of-turn markers of the chat template families that are in this vocabulary."""
    ids: set[int] = set()
    eos = getattr(generation_config, "eos_token_id", None)
    for value in [*(eos if isinstance(eos, list | tuple) else [eos]), getattr(tokenizer, "eos_token_id", None)]:
        if isinstance(value, int) and value >= 0:
            ids.add(value)
    unknown = getattr(tokenizer, "unk_token_id", None)
    vocabulary = tokenizer.get_vocab()
    for token in END_OF_TURN:
        found = vocabulary.get(token)
        if isinstance(found, int) and found != unknown and found >= 0:
            ids.add(found)
    return frozenset(ids)
