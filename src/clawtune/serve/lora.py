"""Many LoRA adapters on one base model, each batch row with its own adapter, in one forward pass.

PEFT can mix adapters in a batch, but it splits the batch per adapter in every layer, so a batch spread over four
adapters costs four small passes per layer. Serving engines (S-LoRA, Punica, vLLM) instead stack every adapter's A
and B matrices and gather them per row: the LoRA term of a mixed batch is two batched matmuls, whatever the mix.
This module does that for `torch.nn.Linear` layers: `adapter_matrices` reads a PEFT adapter folder (through
`artifacts.adapter`, the one reader), `MultiLoRA.add` puts it into slots of the stacks, `rows(...)` tells the wrapped
layers which slot each row uses for the next forward.

Slot 0 is all zeros (the base model). Ranks are padded with zeros to the largest loaded rank, which changes nothing
numerically. An adapter's scale (alpha / r, or alpha / sqrt(r) for rsLoRA, times the configured weight) is folded
into its A rows; several adapters served as one model are concatenated along the rank (exact, like PEFT's `cat`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clawtune.artifacts.adapter import read_adapter
from clawtune.problems import InputError

# What the stacked slots cannot hold: a DoRA magnitude, whole modules, per-module ranks (one rank per adapter here),
# biases.
REFUSED = ("dora", "modules_to_save", "rank_pattern", "bias")


class LoRAError(InputError):
    """An adapter cannot be served this way; says why."""


def adapter_matrices(folder: Path, weight: float = 1.0) -> dict[str, tuple[Any, Any]]:
    """{module path: (A scaled, B)} in float32 from a PEFT adapter folder, the scale (times `weight`) folded into A."""
    adapter = read_adapter(folder)
    adapter.refuse(
        REFUSED,
        "clawtune's multi-adapter engine",
        "export the merged model and serve that, or serve the adapter with vLLM",
        LoRAError,
    )
    scale = weight * adapter.scale
    return {module: (a.float() * scale, b.float()) for module, (a, b) in adapter.tensors().items()}


class _State(threading.local):
    rows: Any = None  # LongTensor (batch,) of slot indices, or an int slot for the whole batch
    generation: int = 0  # bumped for each `rows` block: layers gather their per-row matrices once per block


class MultiLoRALinear:
    """Replaces a Linear's forward: base(x) + per-row LoRA from stacked slots."""

    def __init__(self, base: Any, state: _State) -> None:
        import torch

        self.base = base
        self.state = state
        device, dtype = base.weight.device, base.weight.dtype
        self.A = torch.zeros((1, 0, base.in_features), device=device, dtype=dtype)
        self.B = torch.zeros((1, base.out_features, 0), device=device, dtype=dtype)
        self.original_forward = base.forward
        self.cached: tuple[int, Any, Any] | None = None
        base.forward = self.forward

    def set_slot(self, slot: int, a: Any, b: Any, rank: int) -> None:
        """Put (A, B) in `slot`, growing the stacks (slots and rank) as needed."""
        import torch

        slots = max(self.A.shape[0], slot + 1)
        rank = max(rank, self.A.shape[1])
        if slots != self.A.shape[0] or rank != self.A.shape[1]:
            A = torch.zeros((slots, rank, self.A.shape[2]), device=self.A.device, dtype=self.A.dtype)
            B = torch.zeros((slots, self.B.shape[1], rank), device=self.B.device, dtype=self.B.dtype)
            A[: self.A.shape[0], : self.A.shape[1]] = self.A
            B[: self.B.shape[0], :, : self.B.shape[2]] = self.B
            self.A, self.B = A, B
        self.cached = None
        self.A[slot].zero_()
        self.B[slot].zero_()
        if a is not None:
            self.A[slot, : a.shape[0]] = a.to(self.A)
            self.B[slot, :, : b.shape[1]] = b.to(self.B)

    def forward(self, x: Any) -> Any:
        import torch

        y = self.original_forward(x)
        rows = self.state.rows
        if rows is None or (isinstance(rows, int) and rows == 0) or self.A.shape[1] == 0:
            return y
        if self.cached is None or self.cached[0] != self.state.generation:
            if isinstance(rows, int):  # the whole batch uses one adapter: plain matmuls
                a, b = self.A[rows].t().contiguous(), self.B[rows].t().contiguous()
            else:  # gathered per row once per batch (the rows do not change while it decodes)
                a, b = self.A.index_select(0, rows).transpose(1, 2), self.B.index_select(0, rows).transpose(1, 2)
            self.cached = (self.state.generation, a, b)
        _, a, b = self.cached
        if isinstance(rows, int):
            return y + (x @ a) @ b
        shape = x.shape
        flat = x.reshape(shape[0], -1, shape[-1])
        delta = torch.bmm(torch.bmm(flat, a), b)
        return y + delta.reshape(*shape[:-1], -1)


class MultiLoRA:
    """The adapters loaded into a base model, by name, and the per-batch slot selection."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.state = _State()
        self.layers: dict[str, MultiLoRALinear] = {}
        self.slots: dict[str, int] = {}

    def _layer(self, module: str) -> MultiLoRALinear:
        import torch

        if module not in self.layers:
            try:
                target = self.model.get_submodule(module)
            except AttributeError:
                raise LoRAError(f"the adapter targets {module}, which this base model does not have") from None
            if not isinstance(target, torch.nn.Linear):
                raise LoRAError(
                    f"the adapter targets {module}, a {type(target).__name__}: only Linear layers are served"
                )
            self.layers[module] = MultiLoRALinear(target, self.state)
        return self.layers[module]

    def add(self, name: str, parts: list[dict[str, tuple[Any, Any]]]) -> int:
        """Load one adapter (or several concatenated along the rank) into a free slot."""
        if name in self.slots:
            raise LoRAError(f"an adapter named {name!r} is already loaded")
        merged: dict[str, list[tuple[Any, Any]]] = {}
        for part in parts:
            for module, ab in part.items():
                merged.setdefault(module, []).append(ab)
        used = set(self.slots.values())
        slot = next(i for i in range(1, len(used) + 2) if i not in used)
        import torch

        for module, pairs in merged.items():
            a = torch.cat([p[0] for p in pairs], dim=0)
            b = torch.cat([p[1] for p in pairs], dim=1)
            self._layer(module).set_slot(slot, a, b, a.shape[0])
        for module, layer in self.layers.items():  # layers this adapter leaves alone stay zero in its slot
            if module not in merged:
                layer.set_slot(slot, None, None, 0)
        self.slots[name] = slot
        return slot

    def remove(self, name: str) -> None:
        slot = self.slots.pop(name)
        for layer in self.layers.values():
            if layer.A.shape[0] > slot:
                layer.set_slot(slot, None, None, 0)

    @contextlib.contextmanager
    def rows(self, names: list[str | None], device: Any) -> Iterator[None]:
        """Within the block, forward passes apply adapter `names[i]` (None: the base) to batch row i."""
        import torch

        slots = [self.slots[n] if n else 0 for n in names]
        previous = self.state.rows
        self.state.rows = slots[0] if len(set(slots)) == 1 else torch.tensor(slots, device=device)
        self.state.generation += 1
        try:
            yield
        finally:
            self.state.rows = previous
            self.state.generation += 1
