"""Loading a trained model for inference (evaluate, serve, chat): a checkpoint, a training output or a plain model.

A folder with a clawtune manifest is checked before use: its files must still have the sha256 the manifest records,
and an adapter's base model must be the one it was trained on (same fingerprint: architecture config and
vocabulary), because an adapter on another base behaves erratically (the founding document's warning: after a base
upgrade, retrain). `allow_base_mismatch` overrides the second check, never the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clawtune.artifacts.manifest import MANIFEST, read_manifest, sha256_file
from clawtune.models import ModelLoadError, fingerprint, load_model, load_tokenizer, resolve


@dataclass
class Loaded:
    """A model ready to generate, with the tokenizer (and template) it was trained with."""

    name: str
    model: Any
    tokenizer: Any
    manifest: dict[str, Any] | None
    base_model: str
    merged: bool = False  # an adapter folded into the base weights (`merge`)


def verify_files(folder: Path, manifest: dict[str, Any]) -> None:
    for name, digest in (manifest.get("files") or {}).items():
        path = folder / name
        if not path.is_file():
            raise ModelLoadError(f"{folder}: {name} is listed in {MANIFEST} but missing")
        if sha256_file(path) != digest:
            raise ModelLoadError(
                f"{path}: its sha256 no longer matches {MANIFEST}; the file was changed after training"
            )


def verify_base(folder: Path, manifest: dict[str, Any], allow_base_mismatch: bool = False) -> None:
    """An adapter's base model must be the one it was trained on: same architecture config and vocabulary."""
    expected = manifest.get("base_fingerprint")
    if manifest.get("kind") == "full" or not expected or allow_base_mismatch:
        return
    from transformers import AutoConfig

    base_name = manifest["base_model"]
    try:
        config = AutoConfig.from_pretrained(resolve(base_name))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{base_name}: cannot load the base model's config: {exc}") from None
    base_tokenizer, _ = load_tokenizer(base_name)
    found = fingerprint(config.to_dict(), base_tokenizer)
    if found != expected:
        raise ModelLoadError(
            f"{folder}: this adapter was trained on a different {base_name} (fingerprint {expected[:19]}..., "
            f"this one {found[:19]}...). After a base model upgrade, retrain the adapter; "
            "--allow-base-mismatch loads it anyway."
        )


def load_for_inference(
    name: str,
    *,
    device: str | None = None,
    dtype: Any = None,
    allow_base_mismatch: bool = False,
    merge: bool = False,
) -> Loaded:
    """A clawtune checkpoint or output folder (adapter or full model), or any model id or folder.

    `merge` folds an adapter into the base weights (faster generation; one model per process)."""
    import torch

    folder = Path(name).expanduser()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device == "cuda" else torch.float32)
    manifest = read_manifest(folder) if (folder / MANIFEST).is_file() else None
    if manifest is None:
        tokenizer, _ = load_tokenizer(name)
        model = load_model(name, dtype=dtype).to(device).eval()
        return Loaded(name, model, tokenizer, None, name)
    verify_files(folder, manifest)
    tokenizer, _ = load_tokenizer(str(folder))
    base_name = manifest["base_model"]
    if manifest.get("kind") == "full":
        model = load_model(str(folder), dtype=dtype)
    else:
        from peft import PeftModel

        verify_base(folder, manifest, allow_base_mismatch)
        base = load_model(base_name, dtype=dtype)
        model = PeftModel.from_pretrained(base, str(folder))
        if merge:
            model = model.merge_and_unload()
    merged = merge and manifest.get("kind") != "full"
    return Loaded(str(folder), model.to(device).eval(), tokenizer, manifest, base_name, merged)
