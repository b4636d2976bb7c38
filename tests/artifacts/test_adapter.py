"""The one PEFT adapter reader, and what each consumer (GGUF export, vLLM export, the serving engine) refuses.

The adapters here are saved by PEFT itself from a tiny random-weight Llama, so the reader is checked against the key
names and the scale PEFT really uses; broken adapters are made by editing a saved one."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from clawtune.artifacts.adapter import CONFIG, WEIGHTS, Adapter, AdapterError, read_adapter

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

BASE_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 64,
    "tie_word_embeddings": False,
}


def tiny_peft(**lora: Any) -> Any:
    """A PEFT LoRA model on a 2-layer, 32-wide random Llama."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in BASE_CONFIG.items() if k != "architectures"}))
    config = peft.LoraConfig(
        **{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM", **lora}
    )
    model = peft.get_peft_model(base, config)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero: give it values so the adapter changes the output
            torch.nn.init.normal_(param, std=0.5)
    return model


def saved(tmp_path: Path, name: str = "adapter", **lora: Any) -> tuple[Path, Any]:
    model = tiny_peft(**lora)
    folder = tmp_path / name
    model.save_pretrained(str(folder))
    return folder, model


def edit_config(folder: Path, **changes: Any) -> None:
    config = json.loads((folder / CONFIG).read_text())
    (folder / CONFIG).write_text(json.dumps({**config, **changes}))


def test_reads_what_peft_saved(tmp_path: Path) -> None:
    folder, model = saved(tmp_path)
    adapter = read_adapter(folder)
    assert (adapter.rank, adapter.alpha, adapter.features()) == (4, 8.0, [])
    pairs = adapter.tensors()
    assert sorted(pairs) == [f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")]
    layer = model.base_model.model.model.layers[1].self_attn.v_proj
    a, b = pairs["model.layers.1.self_attn.v_proj"]
    assert torch.equal(a, layer.lora_A["default"].weight) and torch.equal(b, layer.lora_B["default"].weight)
    assert adapter.scale == layer.scaling["default"] == 2.0


@pytest.mark.parametrize("rslora", [False, True])
def test_the_scale_is_the_one_peft_applies(tmp_path: Path, rslora: bool) -> None:
    """rsLoRA scales by alpha / sqrt(r): the reader's scale, the serving engine's folded A and the GGUF alpha all
    reproduce PEFT's own output (a reader computing alpha / r for rsLoRA fails here)."""
    from clawtune.export.gguf import lora_alpha_for_gguf
    from clawtune.serve.lora import adapter_matrices

    folder, model = saved(tmp_path, r=4, lora_alpha=8, use_rslora=rslora)
    adapter = read_adapter(folder)
    expected = 8 / math.sqrt(4) if rslora else 8 / 4
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert adapter.rslora is rslora and adapter.scale == pytest.approx(expected) == layer.scaling["default"]
    # llama.cpp applies alpha / r: the GGUF alpha must give the same scale
    assert lora_alpha_for_gguf(adapter) / adapter.rank == pytest.approx(expected)
    x = torch.randn(3, 32)
    a, b = adapter_matrices(folder)["model.layers.0.self_attn.q_proj"]
    with torch.no_grad():
        peft_delta = layer(x) - layer.base_layer(x)
    torch.testing.assert_close((x @ a.t()) @ b.t(), peft_delta)


def test_a_module_without_its_b_matrix_is_refused_by_every_reader(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from clawtune.export.gguf import lora_tensors
    from clawtune.serve.lora import adapter_matrices

    folder, _ = saved(tmp_path)
    tensors = load_file(str(folder / WEIGHTS))
    dropped = next(k for k in tensors if k.endswith("layers.1.self_attn.v_proj.lora_B.weight"))
    save_file({k: v for k, v in tensors.items() if k != dropped}, str(folder / WEIGHTS))
    message = "model.layers.1.self_attn.v_proj has no lora_B matrix"
    with pytest.raises(AdapterError, match=message):
        read_adapter(folder).tensors()
    with pytest.raises(AdapterError, match=message):
        lora_tensors(folder, BASE_CONFIG)
    with pytest.raises(AdapterError, match=message):
        adapter_matrices(folder)


def test_mismatched_shapes_and_foreign_tensors_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder, _ = saved(tmp_path)
    tensors = load_file(str(folder / WEIGHTS))
    key = next(k for k in tensors if k.endswith("layers.0.self_attn.q_proj.lora_A.weight"))
    save_file({**tensors, key: torch.zeros(2, 32)}, str(folder / WEIGHTS))
    with pytest.raises(AdapterError, match=r"q_proj: lora_A \(2, 32\) and lora_B \(32, 4\) do not multiply"):
        read_adapter(folder).tensors()
    save_file({**tensors, "base_model.model.lm_head.weight": torch.zeros(64, 32)}, str(folder / WEIGHTS))
    with pytest.raises(AdapterError, match=r"unexpected tensor base_model\.model\.lm_head\.weight"):
        read_adapter(folder).tensors()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"bias": "all"}, r"trained biases \(bias: all\)"),
        ({"bias": "lora_only"}, r"trained biases \(bias: lora_only\)"),
        ({"lora_bias": True}, r"a bias on B \(lora_bias\)"),
        ({"use_dora": True}, r"a DoRA adapter \(use_dora\)"),
        ({"modules_to_save": ["lm_head"]}, r"whole modules trained beside the LoRA \(modules_to_save: \['lm_head'\]\)"),
    ],
)
def test_every_consumer_refuses_what_it_cannot_carry(tmp_path: Path, change: dict[str, Any], words: str) -> None:
    """Bias was refused by the vLLM check only; DoRA and modules_to_save by each in its own words. Now each consumer
    names the same feature the same way, before reading any weight."""
    from clawtune.export.gguf import GGUFExportError, lora_tensors
    from clawtune.export.run import ExportError, vllm_check
    from clawtune.serve.lora import LoRAError, adapter_matrices

    folder, _ = saved(tmp_path)
    edit_config(folder, **change)
    adapter = read_adapter(folder)
    assert len(adapter.features()) == 1
    with pytest.raises(GGUFExportError, match=f"{CONFIG}: a GGUF LoRA cannot take {words}"):
        lora_tensors(folder, BASE_CONFIG)
    with pytest.raises(LoRAError, match=f"clawtune's multi-adapter engine cannot take {words}"):
        adapter_matrices(folder)
    with pytest.raises(ExportError, match=f"vLLM cannot take {words}"):
        vllm_check(adapter)


def test_per_module_ranks_are_refused_where_one_rank_or_alpha_must_do(tmp_path: Path) -> None:
    from clawtune.export.gguf import GGUFExportError, lora_tensors
    from clawtune.export.run import vllm_check
    from clawtune.serve.lora import LoRAError, adapter_matrices

    folder, _ = saved(tmp_path, rank_pattern={"v_proj": 8})
    adapter = read_adapter(folder)
    assert adapter.features() == ["rank_pattern"]
    assert {tuple(a.shape) for a, _ in adapter.tensors().values()} == {(4, 32), (8, 32)}  # no rank check then
    with pytest.raises(GGUFExportError, match="per-module ranks or alphas"):
        lora_tensors(folder, BASE_CONFIG)
    with pytest.raises(LoRAError, match="per-module ranks or alphas"):
        adapter_matrices(folder)
    assert vllm_check(adapter) == 8  # vLLM takes it, at the largest rank


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "not a LoRA adapter"),
        ("{", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"r": 8}', "no lora_alpha"),
        ('{"r": "eight", "lora_alpha": 16}', "must be numbers"),
        ('{"r": 0, "lora_alpha": 16}', "positive"),
        ('{"peft_type": "IA3", "r": 8, "lora_alpha": 16}', "only LoRA"),
    ],
)
def test_a_bad_config_is_named_not_a_traceback(tmp_path: Path, text: str | None, message: str) -> None:
    if text is not None:
        (tmp_path / CONFIG).write_text(text)
    with pytest.raises(AdapterError, match=message):
        read_adapter(tmp_path)


def test_missing_weights_are_named(tmp_path: Path) -> None:
    (tmp_path / CONFIG).write_text('{"r": 8, "lora_alpha": 16}')
    with pytest.raises(AdapterError, match=f"{WEIGHTS}: missing"):
        read_adapter(tmp_path).tensors()
    (tmp_path / WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(AdapterError, match="not a readable safetensors file"):
        read_adapter(tmp_path).tensors()
    with pytest.raises(AdapterError, match="no adapter folder"):
        Adapter.from_config({"r": 8, "lora_alpha": 16}).tensors()
