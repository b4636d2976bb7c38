"""Which data a checkpoint was trained on, and the system-prompt policy that data used: read back from the
checkpoint's manifest and its training file, by export (parity samples, the manifest it ships) and serve (the policy
applied to requests).

Here, not in `artifacts/` with the manifest: reading the training file back goes through the data stage's own
example reader (`data.validate.iter_examples`), and `artifacts/` sits below the data stage."""

from __future__ import annotations

from typing import Any

from clawtune.artifacts.manifest import training_file
from clawtune.data.validate import iter_examples
from clawtune.generation import SystemPromptPolicy, policy_of_examples
from clawtune.problems import Problems


def training_examples(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversations the checkpoint was trained on, if the training file is still where the manifest says."""
    train = training_file(manifest)
    if train is None:
        return []
    return [e for _, e in iter_examples(train, Problems())]


def trained_policy(manifest: dict[str, Any], examples: list[dict[str, Any]] | None = None) -> SystemPromptPolicy | None:
    """The system-prompt policy a checkpoint (or export) was trained under, which serving and evaluation both apply:
    an export's manifest records it; a checkpoint's is read from its training data (`examples` when already read).
    None when unknown (the request's own prompt is then kept)."""
    recorded = SystemPromptPolicy.from_record(manifest.get("system_prompt"))
    if recorded is not None:
        return recorded
    return policy_of_examples(training_examples(manifest) if examples is None else examples)
