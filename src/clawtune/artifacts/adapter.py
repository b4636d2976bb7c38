"""The one reader of a PEFT LoRA adapter folder (`adapter_config.json` + `adapter_model.safetensors`).

It returns what the adapter is (rank, alpha and the scale PEFT applies, and the features not every consumer can take:
DoRA, whole modules trained beside the LoRA, per-module ranks or alphas, trained biases) and its A/B matrices, every
module with both. Each consumer (the GGUF export, the vLLM export, the multi-adapter serving engine) states which
features it refuses with `Adapter.refuse`, so the refusals read the same everywhere and none is forgotten.

Written here rather than through `peft.PeftModel.from_pretrained`: the consumers need the raw matrices without
loading the base model (the GGUF export and the serving engine place them themselves).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawtune.problems import InputError

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
FILES = (CONFIG, WEIGHTS)
# PEFT's key for a LoRA matrix: `base_model.model.<module>.lora_A.weight` (`.default` before `.weight` in some saves).
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.(?P<kind>weight|bias)$")

# The features a consumer may refuse, each with the words that name it in a refusal.
FEATURES = ("dora", "modules_to_save", "rank_pattern", "bias")


class AdapterError(InputError):
    """The folder is not a LoRA adapter clawtune can read, or a consumer cannot take one of its features."""


@dataclass(frozen=True)
class Adapter:
    """A PEFT LoRA adapter's configuration, read from `adapter_config.json`; `tensors()` reads its matrices."""

    where: str  # the config file (or a label for a config given as a dict), named in every error
    rank: int
    alpha: float
    rslora: bool = False
    dora: bool = False
    modules_to_save: list[str] = field(default_factory=list)
    rank_pattern: dict[str, Any] = field(default_factory=dict)
    alpha_pattern: dict[str, Any] = field(default_factory=dict)
    bias: str = "none"  # PEFT's `bias` ("none", "all", "lora_only"), or "lora_bias" for a bias on B
    target_modules: list[str] | str = field(default_factory=list)  # a str is a regex
    folder: Path | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str = CONFIG, folder: Path | None = None) -> Adapter:
        """An adapter described by a parsed `adapter_config.json`; a missing or bad rank or alpha is refused."""
        if config.get("peft_type", "LORA") != "LORA":
            raise AdapterError(f"{where}: peft_type {config.get('peft_type')!r}: only LoRA adapters are supported")
        missing = [key for key in ("r", "lora_alpha") if key not in config]
        if missing:
            raise AdapterError(f"{where}: no {' or '.join(missing)} (PEFT writes both)")
        try:
            rank = int(config["r"])
            alpha = float(config["lora_alpha"])
        except (TypeError, ValueError):
            raise AdapterError(f"{where}: r and lora_alpha must be numbers") from None
        if rank <= 0:
            raise AdapterError(f"{where}: r must be a positive integer, not {config['r']!r}")
        bias = str(config.get("bias") or "none")
        if bias == "none" and config.get("lora_bias"):
            bias = "lora_bias"
        return cls(
            where=where,
            rank=rank,
            alpha=alpha,
            rslora=bool(config.get("use_rslora")),
            dora=bool(config.get("use_dora")),
            modules_to_save=list(config.get("modules_to_save") or []),
            rank_pattern=dict(config.get("rank_pattern") or {}),
            alpha_pattern=dict(config.get("alpha_pattern") or {}),
            bias=bias,
            target_modules=config.get("target_modules") or [],
            folder=folder,
        )

    @property
    def scale(self) -> float:
        """The factor PEFT multiplies B @ A by: alpha / r, or alpha / sqrt(r) with rsLoRA."""
        return self.alpha / math.sqrt(self.rank) if self.rslora else self.alpha / self.rank

    @property
    def targets(self) -> list[str]:
        """The targeted module names (empty when `target_modules` is a regex)."""
        return [] if isinstance(self.target_modules, str) else list(self.target_modules)

    def features(self) -> list[str]:
        """Which of `FEATURES` this adapter uses."""
        found = {
            "dora": self.dora,
            "modules_to_save": bool(self.modules_to_save),
            "rank_pattern": bool(self.rank_pattern or self.alpha_pattern),
            "bias": self.bias != "none",
        }
        return [name for name in FEATURES if found[name]]

    def describe(self, feature: str) -> str:
        """A feature in words, with the config key that holds it."""
        return {
            "dora": "a DoRA adapter (use_dora)",
            "modules_to_save": f"whole modules trained beside the LoRA (modules_to_save: {self.modules_to_save})",
            "rank_pattern": "per-module ranks or alphas (rank_pattern / alpha_pattern)",
            "bias": f"trained biases (bias: {self.bias})" if self.bias != "lora_bias" else "a bias on B (lora_bias)",
        }[feature]

    def refuse(self, features: Iterable[str], consumer: str, fix: str, error: type[InputError] = AdapterError) -> None:
        """Raise `error` for the first of `features` this adapter uses: "<where>: <consumer> cannot take <feature>;
        <fix>"."""
        unknown = set(features) - set(FEATURES)
        assert not unknown, f"unknown adapter features {unknown}"
        for feature in self.features():
            if feature in features:
                raise error(f"{self.where}: {consumer} cannot take {self.describe(feature)}; {fix}")

    def tensors(self) -> dict[str, tuple[Any, Any]]:
        """{module path: (A, B)} as stored (torch tensors), every module with both matrices and matching shapes.

        Refuse the features you cannot take first: a bias or a module saved whole is an unexpected tensor here."""
        if self.folder is None:
            raise AdapterError(f"{self.where}: no adapter folder to read the weights from")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.folder / WEIGHTS
        if not path.is_file():
            raise AdapterError(f"{path}: missing; the adapter's weights are not there")
        try:
            stored = load_file(str(path))
        except (OSError, SafetensorError) as exc:
            raise AdapterError(f"{path}: not a readable safetensors file: {exc}") from None
        parts: dict[str, dict[str, Any]] = {}
        for key, tensor in stored.items():
            match = _KEY.match(key)
            if match is None or match.group("kind") != "weight":
                what = "a bias (refuse the bias feature first)" if key.endswith(".bias") else "not a LoRA A/B matrix"
                raise AdapterError(f"{path}: unexpected tensor {key}: {what}")
            ab = parts.setdefault(match.group("module"), {})
            if match.group("ab") in ab:
                raise AdapterError(f"{path}: {match.group('module')} has two lora_{match.group('ab')} matrices")
            ab[match.group("ab")] = tensor
        if not parts:
            raise AdapterError(f"{path}: no LoRA matrices in it")
        out = {}
        for module, ab in sorted(parts.items()):
            if set(ab) != {"A", "B"}:
                missing = "B" if "A" in ab else "A"
                raise AdapterError(f"{path}: {module} has no lora_{missing} matrix (a truncated or foreign adapter)")
            a, b = ab["A"], ab["B"]
            if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
                raise AdapterError(
                    f"{path}: {module}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} do not multiply"
                )
            if not self.rank_pattern and a.shape[0] != self.rank:
                raise AdapterError(f"{path}: {module}: rank {a.shape[0]}, but {CONFIG} says r={self.rank}")
            out[module] = (a, b)
        return out


def read_adapter(folder: Path) -> Adapter:
    """The adapter in `folder` (its config read now, its weights by `tensors()`)."""
    path = folder / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"{folder}: not a LoRA adapter (no {CONFIG})") from None
    except OSError as exc:
        raise AdapterError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{path}: expected a JSON object")
    return Adapter.from_config(config, str(path), folder)
