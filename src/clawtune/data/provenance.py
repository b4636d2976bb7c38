"""Which data a checkpoint was trained on, and the system-prompt policy that data used: read back from the
checkpoint's manifest and its training file, by export (parity samples, the manifest it ships) and serve (the policy
applied to requests).

Here, not in `artifacts/` with the manifest: reading the training file back goes through the data stage's own
example reader (`data.validate.iter_examples`), and `artifacts/` sits below the data stage."""

from __future__ import annotations

from collections import Counter
from typing import Any

from clawtune.artifacts.manifest import training_file
from clawtune.data.validate import iter_examples
from clawtune.problems import Problems


def training_examples(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversations the checkpoint was trained on, if the training file is still where the manifest says."""
    train = training_file(manifest)
    if train is None:
        return []
    return [e for _, e in iter_examples(train, Problems())]


def training_system_prompt(
    manifest: dict[str, Any], examples: list[dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    """The system-prompt policy the training data used ({policy: keep|drop|replace, prompt}), from the export's
    per-example metadata; serving applies it so a request with the agent's long prompt reaches the model as trained."""
    policies: Counter[str] = Counter()
    prompts: Counter[str] = Counter()
    for example in training_examples(manifest) if examples is None else examples:
        policy = (example.get("metadata") or {}).get("system_prompt")
        if policy in ("keep", "drop", "replace"):
            policies[policy] += 1
            first = (example.get("messages") or [{}])[0]
            if policy == "replace" and first.get("role") == "system" and isinstance(first.get("content"), str):
                prompts[first["content"]] += 1
    if not policies:
        return None
    policy = policies.most_common(1)[0][0]
    prompt = prompts.most_common(1)[0][0] if prompts else None
    return {"policy": policy if policy != "replace" or prompt else "keep", "prompt": prompt}
