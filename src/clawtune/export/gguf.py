"""GGUF for llama.cpp and Ollama: a LoRA adapter file, and a whole model (the merged fine-tune, or the base).

Written with the `gguf` package (llama.cpp's own writer). Tensor names come from its name map for the base's
architecture. For llama-architecture bases, llama.cpp's converter permutes the rows of q_proj and k_proj (Hugging
Face keeps rotary halves apart, llama.cpp interleaves them); a LoRA's B matrix of those projections gets the same
permutation (A is untouched), as llama.cpp's `convert_lora_to_gguf.py` does. A whole-model GGUF also carries the
tokenizer (byte-level BPE only) and the chat template, so `llama-server --jinja` renders what training saw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from clawtune.artifacts.adapter import Adapter, read_adapter
from clawtune.extras import require
from clawtune.problems import InputError


class GGUFExportError(InputError):
    """The model or adapter cannot be written as GGUF; says why and what to use instead."""


# Hugging Face architecture -> (GGUF architecture, permute q/k like llama.cpp's LlamaModel does)
ARCHITECTURES = {
    "LlamaForCausalLM": ("llama", True),
    "MistralForCausalLM": ("llama", True),
    "Qwen2ForCausalLM": ("qwen2", False),
}


def gguf_architecture(config: dict[str, Any]) -> tuple[str, bool]:
    for name in config.get("architectures") or []:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise GGUFExportError(
        f"GGUF export supports {', '.join(ARCHITECTURES)} bases; this one is {config.get('architectures')}. "
        "Export the merged model (--format merged) and convert it with llama.cpp's convert_hf_to_gguf.py."
    )


def permute_rows(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row permutation (rotate-half layout -> interleaved pairs), over the output dimension."""
    out = weights.shape[0]
    return weights.reshape(n_head, 2, out // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _heads(config: dict[str, Any], projection: str) -> int | None:
    if projection == "q_proj":
        return int(config["num_attention_heads"])
    if projection == "k_proj":
        return int(config.get("num_key_value_heads") or config["num_attention_heads"])
    return None


def _name_map(arch: str, n_blocks: int) -> Any:
    gguf = require("gguf", "export", "GGUF export")

    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    return gguf.get_tensor_name_map(arch_id, n_blocks)


def _gguf_name(name_map: Any, hf_name: str) -> str:
    found = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if found is None:
        raise GGUFExportError(f"no GGUF name for tensor {hf_name}")
    return str(found)


# ---- LoRA adapter --------------------------------------------------------------------------------------------

# What one GGUF LoRA cannot carry: a DoRA magnitude, whole modules, per-module ranks or alphas (one alpha per
# file), biases (llama.cpp's LoRA has A and B only).
REFUSED = ("dora", "modules_to_save", "rank_pattern", "bias")


def lora_alpha_for_gguf(adapter: Adapter) -> float:
    """The alpha llama.cpp needs: it scales a LoRA by alpha / r, so the alpha that gives the adapter's own scale (an
    rsLoRA adapter trains with alpha / sqrt(r))."""
    return adapter.scale * adapter.rank


def check_adapter_for_gguf(adapter: Adapter) -> None:
    adapter.refuse(REFUSED, "a GGUF LoRA", "export the merged model instead", GGUFExportError)


def check_output_lora(adapter: Adapter, base_config: dict[str, Any]) -> None:
    """llama.cpp has no output tensor for a base that ties it to the embeddings, so a LoRA on lm_head has nothing to
    apply to there."""
    targets = [adapter.target_modules] if isinstance(adapter.target_modules, str) else adapter.target_modules
    if base_config.get("tie_word_embeddings", False) and any(t.rsplit(".", 1)[-1] == "lm_head" for t in targets):
        raise GGUFExportError(
            "the adapter trains lm_head, which this base ties to its embeddings: llama.cpp has no separate output "
            "tensor to apply it to; export the merged model instead"
        )


def lora_tensors(adapter_dir: Path, base_config: dict[str, Any]) -> tuple[dict[str, np.ndarray], str]:
    """The adapter's tensors under their GGUF names (`<base tensor>.lora_a` / `.lora_b`), and the architecture."""
    adapter = read_adapter(adapter_dir)
    check_adapter_for_gguf(adapter)
    check_output_lora(adapter, base_config)
    arch, permute = gguf_architecture(base_config)
    name_map = _name_map(arch, int(base_config["num_hidden_layers"]))
    tensors: dict[str, np.ndarray] = {}
    for module, (a, b) in adapter.tensors().items():
        heads = _heads(base_config, module.rsplit(".", 1)[-1]) if permute else None
        b_rows = b.float().numpy()  # numpy has no bfloat16: torch converts
        if heads is not None:
            b_rows = permute_rows(b_rows, heads)
        name = _gguf_name(name_map, module + ".weight")
        tensors[name + ".lora_a"] = np.ascontiguousarray(a.float().numpy())
        tensors[name + ".lora_b"] = np.ascontiguousarray(b_rows)
    return tensors, arch


def write_lora_gguf(adapter_dir: Path, base_config: dict[str, Any], path: Path, name: str) -> dict[str, Any]:
    """`adapter.gguf`: what `llama-server --lora` and Ollama's ADAPTER read."""
    gguf = require("gguf", "export", "GGUF export")

    adapter = read_adapter(adapter_dir)
    tensors, arch = lora_tensors(adapter_dir, base_config)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_name(name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    alpha = lora_alpha_for_gguf(adapter)
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for tensor_name in sorted(tensors):
        writer.add_tensor(tensor_name, tensors[tensor_name])
    _finish(writer)
    return {"architecture": arch, "tensors": len(tensors), "alpha": alpha, "rank": adapter.rank}


def _finish(writer: Any) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# ---- a whole model -------------------------------------------------------------------------------------------


# llama.cpp's name for each pre-tokenizer split recognised here (its `llama-vocab.cpp` holds the same regexes).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def pre_tokenizer_name(pre: dict[str, Any]) -> str | None:
    """`gpt-2` for ByteLevel with its own regex, `qwen2` for Qwen2's split then ByteLevel; None for any other."""
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    steps = pre.get("pretokenizers") or []
    if (
        pre.get("type") == "Sequence"
        and len(steps) == 2
        and steps[0].get("type") == "Split"
        and (steps[0].get("pattern") or {}).get("Regex") == QWEN2_SPLIT
        and str(steps[0].get("behavior")).lower() == "isolated"
        and not steps[0].get("invert")
        and steps[1].get("type") == "ByteLevel"
        and not steps[1].get("use_regex", True)
    ):
        return "qwen2"
    return None


def _tokenizer_vocab(model_dir: Path) -> dict[str, Any]:
    """Tokens, types, merges and llama.cpp's pre-tokenizer name for GGUF's `gpt2` (byte-level BPE) tokenizer."""
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model, pre = tokenizer.get("model") or {}, tokenizer.get("pre_tokenizer") or {}
    pre_name = pre_tokenizer_name(pre)
    if model.get("type") != "BPE" or pre_name is None:
        raise GGUFExportError(
            "a whole-model GGUF is written here only for byte-level BPE tokenizers with GPT-2's or Qwen2's "
            "pre-tokenizer; for this base use llama.cpp's convert_hf_to_gguf.py on the merged model (it knows each "
            "model family's pre-tokenizer), or the GGUF LoRA adapter on a GGUF of the base"
        )
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in tokenizer.get("added_tokens") or []}
    for content, token in added.items():
        vocab[content] = token["id"]
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [5] * size  # UNUSED until filled
    for content, index in vocab.items():
        tokens[index] = content
        token = added.get(content)
        types[index] = (3 if token.get("special") else 4) if token else 1
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return {"tokens": tokens, "types": types, "merges": merges, "pre": pre_name}


def _load_float32(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file as float32 numpy arrays (numpy has no bfloat16, so torch reads it)."""
    from safetensors.torch import load_file

    return {k: v.float().numpy() for k, v in load_file(str(path)).items()}


def write_model_gguf(model_dir: Path, path: Path, name: str, chat_template: str | None, f16: bool = False) -> dict:
    """A whole Hugging Face model folder (safetensors) as one GGUF: weights, hyper-parameters, tokenizer, template."""
    gguf = require("gguf", "export", "GGUF export")

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch, permute = gguf_architecture(config)
    vocab = _tokenizer_vocab(model_dir)
    heads, kv_heads = int(config["num_attention_heads"]), int(config.get("num_key_value_heads") or 0)
    kv_heads = kv_heads or heads
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    rope = config.get("rope_parameters") or {}
    rope_theta = float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0)
    if rope.get("rope_type", "default") not in ("default", None):
        raise GGUFExportError(f"rope scaling {rope.get('rope_type')} is not written by clawtune's GGUF export")

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(int(config.get("max_position_embeddings") or 4096))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope_theta)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-6))
    writer.add_vocab_size(len(vocab["tokens"]))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    for key, setter in (("bos_token_id", writer.add_bos_token_id), ("pad_token_id", writer.add_pad_token_id)):
        if isinstance(config.get(key), int):
            setter(config[key])
    eos = config.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    if isinstance(eos, int):
        writer.add_eos_token_id(eos)
    writer.add_bool(gguf.Keys.Tokenizer.ADD_BOS, False)
    if chat_template:
        writer.add_chat_template(chat_template)

    name_map = _name_map(arch, int(config["num_hidden_layers"]))
    count = 0
    for file in sorted(model_dir.glob("*.safetensors")):
        for key, array in _load_float32(file).items():
            if key.endswith("rotary_emb.inv_freq"):
                continue
            projection = key.rsplit(".", 2)[-2]
            if permute and key.endswith(".weight") and projection in ("q_proj", "k_proj"):
                array = permute_rows(array, heads if projection == "q_proj" else kv_heads)
            if f16 and array.ndim > 1:
                array = array.astype(np.float16)
            writer.add_tensor(_gguf_name(name_map, key), np.ascontiguousarray(array))
            count += 1
    _finish(writer)
    return {"architecture": arch, "tensors": count, "dtype": "f16" if f16 else "f32"}


def read_gguf(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A GGUF file's metadata (scalars and strings decoded) and tensors (in the shape they were written)."""
    gguf = require("gguf", "export", "GGUF export")

    reader = gguf.GGUFReader(str(path))
    fields: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        fields[key] = field.contents()
    tensors = {t.name: np.array(t.data).reshape(tuple(reversed([int(d) for d in t.shape]))) for t in reader.tensors}
    return fields, tensors
