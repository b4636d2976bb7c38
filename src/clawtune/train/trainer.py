"""clawtune's subclass of transformers' Trainer: the model forward and the loss, the checkpoints.

- Packed examples are kept apart from each row's document ids (see `attention.py`).
- Logits are computed only where a label is trained (`logits_to_keep` with the positions whose next token carries
  loss): in agent data most tokens are system prompts, tool schemas and tool results, and a 128k-vocabulary model's
  full logits (fp32, with their gradient) are the largest tensor of a step. The loss is the same as the stock one
  (a test compares them), normalised by the trained tokens of the whole accumulated batch as transformers does.
- Checkpoints are written to a staging folder and renamed into place with their manifest: whole or absent.

Only the standard library, torch and transformers are imported here, so the benchmark can run it on machines that
have nothing else of clawtune's dependencies.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clawtune.artifacts.files import replace_folder
from clawtune.artifacts.manifest import rotate, write_manifest
from clawtune.artifacts.render import IGNORE
from clawtune.train.attention import VARLEN, flatten, isolate


def selective_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any) -> Any:
    """Cross-entropy over trained labels, with logits computed only at positions some row trains on."""
    import torch

    labels = inputs.pop("labels")
    targets = labels[:, 1:]
    keep = (targets != IGNORE).any(dim=0).nonzero().squeeze(-1)  # positions p whose token p+1 is trained
    outputs = model(**inputs, logits_to_keep=keep, use_cache=False)
    logits = outputs.logits  # [batch, len(keep), vocab]
    chosen = targets[:, keep]
    trained = chosen != IGNORE
    loss = torch.nn.functional.cross_entropy(logits[trained].float(), chosen[trained], reduction="sum")
    if num_items_in_batch is None:
        return loss / trained.sum().clamp(min=1)
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


# A test hook: the process SIGKILLs itself at the end of this step (numbered as its checkpoints are), after the
# optimizer step and before that step's checkpoint is written, so the resume test crashes at the same point however
# busy the machine is (polling for a checkpoint and killing from outside could miss it, or kill after the last step).
CRASH_AT_STEP = "CLAWTUNE_TEST_CRASH_AT_STEP"


def crash_at_step(step: int, offset: Callable[[], int]) -> Any:
    """The callback behind `CLAWTUNE_TEST_CRASH_AT_STEP`."""
    import signal

    from transformers import TrainerCallback

    class CrashAtStep(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step + offset() == step:
                os.kill(os.getpid(), signal.SIGKILL)

    return CrashAtStep()


class AtomicCheckpoints:
    """Mixed into a transformers Trainer (clawtune's, or TRL's DPOTrainer): checkpoints written to a staging folder,
    given their manifest and renamed into place (whole or absent), numbered after the run this one continues, rotated
    by clawtune, never written over the checkpoint the run resumed from."""

    clawtune_manifest: dict[str, Any] = {}  # noqa: RUF012 - set per instance before training
    clawtune_keep = 3
    clawtune_step_offset = 0  # a run continuing another numbers its checkpoints after it
    clawtune_protect: Path | None = None  # the checkpoint this run resumed from: never written over or rotated
    _staging: str | None = None
    # provided by the Trainer this is mixed into
    args: Any
    state: Any
    accelerator: Any
    add_callback: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        crash_at = os.environ.get(CRASH_AT_STEP)
        if crash_at:
            self.add_callback(crash_at_step(int(crash_at), lambda: self.clawtune_step_offset))

    def _get_output_dir(self, trial: Any) -> str:
        return self._staging or super()._get_output_dir(trial)  # type: ignore[misc]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Write to `.staging/checkpoint-N`, add the manifest, then rename into place: whole or absent."""
        run_dir = Path(super()._get_output_dir(trial))  # type: ignore[misc]
        staging = run_dir / ".staging"
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self._staging = str(staging)
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            step = self.state.global_step + self.clawtune_step_offset
            written = staging / f"checkpoint-{self.state.global_step}"
            write_manifest(written, {**self.clawtune_manifest, "step": step, "step_offset": self.clawtune_step_offset})
            final = run_dir / f"checkpoint-{step}"
            protect = self.clawtune_protect
            if protect is not None and final.resolve() == protect.resolve():
                raise RuntimeError(f"refusing to write over {protect}, the checkpoint this run resumed from")
            replace_folder(written, final)
            shutil.rmtree(staging, ignore_errors=True)
            rotate(run_dir, self.clawtune_keep, protect)
        self.accelerator.wait_for_everyone()


def make_trainer_class() -> type:
    """The Trainer subclass, defined lazily so `clawtune --help` never imports transformers."""
    from transformers import Trainer

    class ClawtuneTrainer(AtomicCheckpoints, Trainer):  # type: ignore[misc]
        """Trainer with document masks built on the device, selective logits, token counters, atomic checkpoints."""

        clawtune_attention = "sdpa"
        clawtune_meter: Any = None

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            import torch

            inputs = dict(inputs)
            documents = inputs.pop("document_ids")
            # a packed row: keep its examples apart (varlen also skips the padding of unpacked rows)
            if model.training and self.clawtune_meter is not None:
                self.clawtune_meter.count(documents, inputs["labels"])
            if self.clawtune_attention == VARLEN and not return_outputs:
                inputs.update(flatten(inputs, documents))  # no padding at all: one row of every example
            elif int(documents.max()) > 0 or self.clawtune_attention == VARLEN:
                dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
                inputs.update(isolate(documents, self.clawtune_attention, dtype))
            else:
                inputs["attention_mask"] = (documents >= 0).to(torch.long)
            if return_outputs:  # evaluation wants the full logits, in the batch's own shape
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = selective_loss(model, inputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as the stock compute_loss does
            return loss

    return ClawtuneTrainer
