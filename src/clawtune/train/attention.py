"""Attention that keeps the examples of a packed row apart.

Position ids alone do NOT isolate packed examples with every attention implementation (measured: transformers 5.x
with sdpa/eager/flex lets a packed example see its neighbours), so each row carries document ids (`data.Collator`),
and the trainer turns them into one of:

- `sdpa_varlen` (the default with packing): PyTorch's sdpa run on each example of the row by itself, causal. A mask
  makes sdpa compute every query against every key of the row and throw the cross-example blocks away; run per
  example, the causal kernel skips them, and the blocks above each example's diagonal too. Flash-attention's varlen
  kernels do this on CUDA only, and flex attention needs torch.compile; this runs on every device with the stock
  kernel. In training the batch's rows are also laid end to end without their padding (`flatten`). Measured by
  `bench/train_bench.py` on 2 CPU cores: 1.21x the tokens/s of the mask (bench/RESULTS.md).
- a 4-D boolean block-diagonal causal mask for `sdpa`, an additive one for `eager`, a sparse BlockMask for
  `flex_attention`.

A test checks that an example's logits are the same packed or alone with each of them.

Only the standard library, torch and transformers are imported here (the benchmark runs it without clawtune's other
dependencies).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

VARLEN = "sdpa_varlen"
# The name transformers knows the implementation by (its registry is global: a prefix keeps it ours).
REGISTERED = {VARLEN: "clawtune_sdpa_varlen"}


def model_implementation(attention: str) -> str:
    """The `attn_implementation` to load a model with for the config's `attention`, registered on first use."""
    if attention == VARLEN:
        register()
    return REGISTERED.get(attention, attention)


def register() -> None:
    """Teach transformers `clawtune_sdpa_varlen`: sdpa's masks, and sdpa per example where a row is packed."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(REGISTERED[VARLEN], varlen_attention)
    # Without a mask function of its own, transformers would drop a padding mask (for unpacked batches and DPO).
    AttentionMaskInterface.register(REGISTERED[VARLEN], sdpa_mask)


def varlen_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """sdpa on each span of `document_spans` (per row: [start, end) of each example); plain sdpa without them.

    query [batch, heads, length, dim]; key and value [batch, kv heads, length, dim]. Positions after a row's last
    example (padding) get zeros: they carry no loss and nothing attends to them.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    spans = kwargs.get("document_spans")
    if spans is None or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    _, heads, length, dim = query.shape
    p = dropout if module.training else 0.0
    rows = []
    for b, row in enumerate(spans):
        pieces = [
            torch.nn.functional.scaled_dot_product_attention(
                query[b : b + 1, :, start:end],
                key[b : b + 1, :, start:end],
                value[b : b + 1, :, start:end],
                dropout_p=p,
                is_causal=True,
                scale=scaling,
                enable_gqa=key.shape[1] != heads,
            )
            for start, end in row
        ]
        end = row[-1][1] if row else 0
        if end < length:
            pieces.append(query.new_zeros(1, heads, length - end, dim))
        rows.append(torch.cat(pieces, dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def document_spans(documents: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Each row's examples as [start, end) spans, from document ids (0, 0, 1, 1, 1, -1: two examples, padding)."""
    spans = []
    for row in documents.tolist():
        found: list[tuple[int, int]] = []
        start = 0
        for i in range(1, len(row) + 1):
            if i == len(row) or row[i] != row[start]:
                if row[start] >= 0:
                    found.append((start, i))
                start = i
        spans.append(found)
    return spans


def flatten(inputs: dict[str, Any], documents: torch.Tensor) -> dict[str, Any]:
    """A batch's rows laid end to end in one row without their padding, with the spans of its examples (varlen).

    Each example still attends only to itself, so the result equals the padded batch's; the padding (a fifth of the
    demo's tokens) is no longer pushed through every linear layer. An example's first label is ignored by the
    collator, so no row is trained to follow the one before it.
    """
    import torch

    real = documents >= 0
    out = {key: inputs[key][real].unsqueeze(0) for key in ("input_ids", "labels", "position_ids")}
    row = torch.arange(documents.shape[0], device=documents.device).unsqueeze(1)
    unique = documents + row * (int(documents.max()) + 1)  # example ids that differ between rows too
    out["document_spans"] = document_spans(unique[real].unsqueeze(0))
    out["attention_mask"] = None
    return out


def isolate(documents: torch.Tensor, attention: str, dtype: torch.dtype) -> dict[str, Any]:
    """The model inputs that keep each packed row's examples apart with `attention` (the config's name)."""
    if attention == VARLEN:
        return {"attention_mask": None, "document_spans": document_spans(documents)}
    return {"attention_mask": document_mask(documents, attention, dtype)}


def document_mask(documents: torch.Tensor, implementation: str, dtype: torch.dtype) -> Any:
    """The attention mask that lets each token see only earlier tokens of its own example.

    Padding (document -1) attends to earlier padding only, so no softmax row is empty; it carries no loss.
    """
    import torch

    batch, length = documents.shape
    if implementation == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        def mask_mod(b: Any, h: Any, q: Any, kv: Any) -> Any:
            return (documents[b, q] == documents[b, kv]) & (q >= kv)

        return create_block_mask(mask_mod, batch, None, length, length, device=documents.device)
    causal = torch.ones(length, length, dtype=torch.bool, device=documents.device).tril()
    mask = (documents[:, :, None] == documents[:, None, :]) & causal
    mask = mask[:, None]
    if implementation == "eager":
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask
