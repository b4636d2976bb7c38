"""Replay: a share of what the model already knew, mixed into the data of a (re)training so it does not forget it.

The founding document warns against over-tuning ("the model forgets general knowledge"). Two kinds of replay, each a
share of the final mix:
- `original`: the resumed checkpoint's own training data (found through its manifest), so a retrain on a few
  corrected failures does not undo the first fine-tune;
- `general`: general-assistant conversations: the bundled model's own replay set (another generator seed and another
  phrasing family than the forgetting set evaluation scores, so the forgetting figure measures skill, not memory), or
  for any other base a file of the user's (`general_file`).

The mix is written beside the checkpoints (`training-mix.jsonl`, the new data first, each replayed example marked in
its metadata) and recorded in the manifest, so evaluation's overlap check and a later retrain's own replay read what
the model was really trained on.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from clawtune.artifacts.files import write_jsonl_atomic
from clawtune.artifacts.manifest import sha256_file, training_file
from clawtune.data.provenance import trained_policy
from clawtune.data.validate import iter_examples
from clawtune.generation import SystemPromptPolicy, policy_of_examples
from clawtune.messages import Example
from clawtune.problems import InputError, Problems
from clawtune.train.config import FTConfig

MIX_FILE = "data/training-mix.jsonl"  # in a folder: the manifest hashes the output folder's files, not its folders


class ReplayError(InputError):
    """Replay cannot be built as configured."""


def replay_counts(new: int, original: float, general: float) -> tuple[int, int]:
    """How many replayed examples join `new` ones so that they make up the configured shares of the mix."""
    total = new / (1 - original - general)
    return round(original * total), round(general * total)


def _sample(examples: list[Example], n: int, rng: random.Random) -> list[Example]:
    """`n` examples without repetition while there are enough, then again from the start of a new shuffle."""
    out: list[Example] = []
    while len(out) < n and examples:
        order = examples[:]
        rng.shuffle(order)
        out.extend(order[: n - len(out)])
    return out


def _read(path: Path, what: str) -> list[Example]:
    if not path.is_file():
        raise ReplayError(f"{what} {path}: no such file")
    problems = Problems(keep=5)
    examples = [e for _, e in iter_examples(path, problems)]
    if not examples:
        shown = f" ({problems.items[0]})" if problems.items else ""
        raise ReplayError(f"{what} {path}: no example to replay{shown}")
    return examples


def _marked(example: Example, source: str) -> Example:
    metadata = dict(example.get("metadata") or {})
    metadata["replay"] = source
    return {**example, "metadata": metadata}


def _under(example: Example, policy: SystemPromptPolicy) -> Example:
    metadata = {**(example.get("metadata") or {}), "system_prompt": policy.policy}
    return {**example, "messages": policy.apply(example["messages"]), "metadata": metadata}


def build_mix(
    config: FTConfig, data: Path, parent: dict[str, Any] | None, out: Path, notes: list[str]
) -> dict[str, Any] | None:
    """Write `out/training-mix.jsonl` (the data plus its replay) and return what the manifest records, or None when
    no replay applies (then the data file is trained on as it is)."""
    from clawtune.models import TINY_AGENT
    from clawtune.models.general import REPLAY_SEED, replay_set

    replay = config.training.replay
    if replay is None or (replay.original == 0 and replay.general == 0):
        return None
    original_share = replay.original if parent is not None else 0.0
    # `original` applies to a retrain (--data with --resume) only: a first training's data is the original
    if original_share == 0 and replay.general == 0:
        return None
    new = _read(data, "training data")
    n_original, n_general = replay_counts(len(new), original_share, replay.general)
    rng = random.Random(replay.seed)
    sources: list[dict[str, Any]] = [
        {"source": "data", "path": str(data), "sha256": sha256_file(data), "examples": len(new)}
    ]
    mix = list(new)
    if n_original:
        assert parent is not None
        original_file = training_file(parent)
        if original_file is None:
            raise ReplayError(
                "training.replay.original: the resumed checkpoint's training data is gone (its manifest names "
                f"{(parent.get('training_data') or {}).get('path') or parent['config']['data']['train']}); put it back "
                "or set training.replay.original to 0"
            )
        pool = [
            e for e in _read(original_file, "training.replay.original:") if not (e.get("metadata") or {}).get("replay")
        ]
        picked = _sample(pool, n_original, rng)
        mix += [_marked(e, "original") for e in picked]
        sources.append(
            {
                "source": "original",
                "path": str(original_file),
                "sha256": sha256_file(original_file),
                "examples": len(picked),
                "share": original_share,
            }
        )
        if n_original > len(pool):
            notes.append(f"replay: {n_original} original examples asked for, {len(pool)} exist; some are repeated")
    if n_general:
        if replay.general_file is not None:
            picked = _sample(_read(replay.general_file, "training.replay.general_file"), n_general, rng)
            general: dict[str, Any] = {"path": str(replay.general_file), "sha256": sha256_file(replay.general_file)}
        elif config.base_model == TINY_AGENT:
            picked = replay_set(n_general)
            general = {"generator": "clawtune.models.general.replay_set", "seed": REPLAY_SEED}
        else:
            raise ReplayError(
                f"training.replay.general: general-assistant conversations for {config.base_model} come from a file "
                "of yours (training.replay.general_file: OpenAI chat JSONL, e.g. a sample of an instruction dataset "
                "the base was tuned on); only the bundled tiny model has its own"
            )
        policy = policy_of_examples(new) or (trained_policy(parent) if parent is not None else None)
        if policy is not None and policy.policy != "keep":
            # Served, the model sees every request under its trained system prompt (`generation.SystemPromptPolicy`),
            # general questions included: replay them under it too, or the prompt alone tells the model "agent task"
            # and general skill survives only under prompts it will never be served with.
            picked = [_under(e, policy) for e in picked]
            general["system_prompt"] = policy.record()
        mix += [_marked(e, "general") for e in picked]
        sources.append({"source": "general", **general, "examples": len(picked), "share": replay.general})
    rng.shuffle(mix)
    path = out / MIX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(path, mix)
    return {"path": str(path.resolve()), "sha256": sha256_file(path), "examples": len(mix), "sources": sources}


def describe(mix: dict[str, Any]) -> str:
    parts = [f"{s['examples']} {s['source']}" for s in mix["sources"]]
    return f"training on {mix['examples']} examples ({', '.join(parts)}) in {mix['path']}"
