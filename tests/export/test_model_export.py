"""`clawtune ft export`: every format from one tiny LoRA checkpoint, the parity check, the manifest refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clawtune.artifacts.adapter import Adapter
from clawtune.artifacts.manifest import MANIFEST, read_manifest, write_manifest
from clawtune.cli import main
from clawtune.export import parity
from clawtune.export.gguf import (
    QWEN2_SPLIT,
    GGUFExportError,
    check_output_lora,
    permute_rows,
    pre_tokenizer_name,
    read_gguf,
)
from clawtune.export.run import ExportError, ExportOptions, check_finite, export, vllm_check
from clawtune.models import load_tokenizer
from clawtune.models.checkpoint import load_for_inference

from ..conftest import copy_run

torch = pytest.importorskip("torch")


# ---- exports from a trained checkpoint ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_lora: Path) -> Path:
    """The session's tiny LoRA run (four steps on every linear layer, a large step so the adapter matters), copied."""
    return copy_run(tiny_lora, tmp_path_factory.mktemp("export-ckpt") / "out")


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "finance-agent"
    code = main(
        ["ft", "export", "--model-dir", str(checkpoint), "--output", str(out), "--format", "all", "--dtype", "float32"]
    )
    assert code == 0
    return out


def _logits(model: Any, ids: list[int]) -> Any:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def _ids(tokenizer: Any) -> list[int]:
    text = parity.training_renderer(tokenizer)(parity.SAMPLE["messages"][:6], parity.SAMPLE["tools"])
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_every_format_is_written_with_a_manifest_and_card(exported: Path) -> None:
    summary = json.loads((exported / "export-summary.json").read_text())
    assert set(summary["formats"]) == {"openclaw-lora", "merged", "gguf", "ollama", "vllm"}
    renderers = [p["renderer"] for p in summary["parity"]]
    assert "the Ollama TEMPLATE" in renderers and "the exported chat template" in renderers
    for fmt in summary["formats"]:
        manifest = read_manifest(exported / fmt)
        assert manifest["base_model"] == "clawtune/tiny-agent" and manifest["base_fingerprint"].startswith("sha256:")
        assert manifest["config"]["lora"]["r"] == 8 and "README.md" in manifest["files"]
        card = (exported / fmt / "README.md").read_text()
        assert "## Train/serve parity" in card
        use = card.split("```sh\n", 1)[1].split("```", 1)[0]
        assert use.strip() and "\n\n" not in use, f"{fmt}: the card's command block is empty"
    ollama_card = (exported / "ollama" / "README.md").read_text()
    assert all(c in ollama_card for c in summary["formats"]["ollama"]["commands"])
    assert summary["formats"]["vllm"]["command"] in (exported / "vllm" / "README.md").read_text()
    lora = exported / "openclaw-lora"
    assert {"adapter_config.json", "adapter_model.safetensors", "chat_template.jinja", "tokenizer.json"} <= {
        p.name for p in lora.iterdir()
    }
    assert not list(exported.parent.glob(".finance-agent.*")), "no staging or work folders left behind"


def test_adapter_reloads_identically_and_merged_equals_adapter(exported: Path, checkpoint: Path) -> None:
    original = load_for_inference(str(checkpoint), device="cpu", dtype=torch.float32)
    reloaded = load_for_inference(str(exported / "openclaw-lora"), device="cpu", dtype=torch.float32)
    merged = load_for_inference(str(exported / "merged"), device="cpu", dtype=torch.float32)
    ids = _ids(original.tokenizer)
    a, b, m = (_logits(x.model, ids) for x in (original, reloaded, merged))
    base = _logits(load_for_inference("clawtune/tiny-agent", device="cpu", dtype=torch.float32).model, ids)
    assert torch.equal(a, b)
    assert torch.allclose(a, m, atol=1e-4), (a - m).abs().max()
    assert (a - base).abs().max() > 1.0, "the adapter changes the model, so the comparisons mean something"


def test_gguf_adapter_reads_back_with_metadata_and_permuted_tensors(exported: Path, checkpoint: Path) -> None:
    from safetensors.torch import load_file

    fields, tensors = read_gguf(exported / "gguf" / "adapter.gguf")
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "llama" and fields["adapter.lora.alpha"] == pytest.approx(16.0)
    peft = {k: v.float().numpy() for k, v in load_file(str(checkpoint / "adapter_model.safetensors")).items()}
    prefix = "base_model.model.model.layers.1."
    q_a, q_b = peft[prefix + "self_attn.q_proj.lora_A.weight"], peft[prefix + "self_attn.q_proj.lora_B.weight"]
    k_b = peft[prefix + "self_attn.k_proj.lora_B.weight"]
    v_b = peft[prefix + "self_attn.v_proj.lora_B.weight"]
    assert q_a.shape == (8, 192) and q_b.shape == (192, 8)
    np.testing.assert_array_equal(tensors["blk.1.attn_q.weight.lora_a"], q_a)
    np.testing.assert_array_equal(tensors["blk.1.attn_q.weight.lora_b"], permute_rows(q_b, 6))  # 6 query heads
    np.testing.assert_array_equal(tensors["blk.1.attn_k.weight.lora_b"], permute_rows(k_b, 2))  # 2 key/value heads
    np.testing.assert_array_equal(tensors["blk.1.attn_v.weight.lora_b"], v_b)  # values are not permuted
    assert not np.array_equal(permute_rows(q_b, 6), q_b)
    assert len(tensors) == 2 * 7 * 4  # A and B for 7 linear layers in 4 blocks
    assert {"blk.0.ffn_gate.weight.lora_a", "blk.3.attn_output.weight.lora_b"} <= set(tensors)


def test_pre_tokenizer_names_for_llama_cpp() -> None:
    """Only splits llama.cpp reproduces get a name; anything else is refused rather than tokenized differently."""
    assert pre_tokenizer_name({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}) == "gpt-2"
    qwen2 = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False},
        ],
    }
    assert pre_tokenizer_name(qwen2) == "qwen2"
    other = json.loads(json.dumps(qwen2))
    other["pretokenizers"][0]["pattern"]["Regex"] = QWEN2_SPLIT.replace(r"\p{N}|", r"\p{N}{1,3}|")  # Llama 3's
    assert pre_tokenizer_name(other) is None
    assert pre_tokenizer_name({"type": "Metaspace", "replacement": "▁"}) is None
    tokenizer = load_tokenizer("clawtune/tiny-agent")[0]
    assert tokenizer.tokenize("$855,424") == ["$", "8", "5", "5", ",", "4", "2", "4"]  # digit by digit


def test_permutation_matches_llama_cpp_rotary_layout() -> None:
    """Rows of one head go from [x0..x(d/2-1), y0..] (rotate-half) to interleaved [x0, y0, x1, y1, ...]."""
    rows = np.arange(8, dtype=np.float32).reshape(8, 1)  # one head of dim 8
    assert permute_rows(rows, 1).ravel().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_ollama_modelfiles_and_whole_model_gguf(exported: Path, checkpoint: Path) -> None:
    folder = exported / "ollama"
    modelfile = (folder / "Modelfile").read_text()
    assert modelfile.startswith('FROM ./base.gguf\nADAPTER ./adapter.gguf\nTEMPLATE """')
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "{{ .Function.Arguments }}" in modelfile
    assert (folder / "Modelfile.merged").read_text().startswith("FROM ./model.gguf\nTEMPLATE")
    manifest = read_manifest(folder)
    assert manifest["ollama"]["commands"] == [
        "ollama create finance-agent -f Modelfile",
        "ollama create finance-agent -f Modelfile.merged",
    ]
    fields, tensors = read_gguf(folder / "model.gguf")
    tokenizer = load_tokenizer(str(checkpoint))[0]
    assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == 4
    assert fields["llama.attention.head_count_kv"] == 2 and fields["tokenizer.ggml.pre"] == "qwen2"
    assert (
        len(fields["tokenizer.ggml.tokens"]) == len(tokenizer)
        and fields["tokenizer.chat_template"] == tokenizer.chat_template
    )
    assert "output.weight" in tensors and "token_embd.weight" in tensors  # the tiny model's output layer is untied
    lm_head = Adapter.from_config({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "lm_head"]})
    with pytest.raises(GGUFExportError, match="ties to its embeddings"):
        check_output_lora(lm_head, {"tie_word_embeddings": True})
    check_output_lora(lm_head, {"tie_word_embeddings": False})
    merged = load_for_inference(str(exported / "merged"), device="cpu", dtype=torch.float32).model.state_dict()
    np.testing.assert_array_equal(
        tensors["blk.2.attn_k.weight"], permute_rows(merged["model.layers.2.self_attn.k_proj.weight"].numpy(), 2)
    )


def test_vllm_command_and_checks(exported: Path) -> None:
    command = (exported / "vllm" / "serve.sh").read_text()
    assert "--enable-lora --lora-modules finance-agent=" in command and "--max-lora-rank 8" in command
    assert "--tool-call-parser hermes" in command

    def adapter(**config: Any) -> Adapter:
        return Adapter.from_config({"lora_alpha": 16, **config})

    assert vllm_check(adapter(r=12, target_modules=["q_proj", "v_proj"])) == 16
    assert vllm_check(adapter(r=16, target_modules=["q_proj", "lm_head"])) == 16  # vLLM's LoRA covers lm_head
    assert vllm_check(adapter(r=8, rank_pattern={"q_proj": 64})) == 64  # the largest rank of any module
    for bad, message in (
        (adapter(r=1024), "largest"),
        (adapter(r=8, use_dora=True), "DoRA"),
        (adapter(r=8, modules_to_save=["lm_head"]), "modules_to_save"),
        (adapter(r=8, bias="lora_only"), "bias"),
        (adapter(r=8, target_modules=["q_proj", "input_layernorm"]), "input_layernorm"),
    ):
        with pytest.raises(ExportError, match=message):
            vllm_check(bad)


def test_existing_output_needs_force_and_a_crash_keeps_the_old_export(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "agent"
    args = ["ft", "export", "--model-dir", str(checkpoint), "--output", str(out)]
    assert main(args) == 0
    before = (out / MANIFEST).read_text()
    assert main(args) == 2 and "already exists; pass --force" in capsys.readouterr().err

    from clawtune.export import run as export_run

    def crash(ctx: Any, target: Path) -> dict[str, Any]:
        (target / "half-written.bin").write_bytes(b"x" * 10)
        raise KeyboardInterrupt

    monkeypatch.setitem(export_run.WRITERS, "openclaw-lora", crash)
    with pytest.raises(KeyboardInterrupt):
        export(ExportOptions(model_dir=checkpoint, output=out, force=True))
    assert (out / MANIFEST).read_text() == before and not (out / "half-written.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent"], "no staging folder left"
    monkeypatch.undo()
    (out / "left-by-the-old-export").write_text("x")
    assert main([*args, "--force"]) == 0 and not (out / "left-by-the-old-export").exists(), "replaced as a whole"
    assert (out / MANIFEST).is_file()


def test_manifest_refusals(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(checkpoint, changed)
    with open(changed / "adapter_model.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x00\x80\x7f")
    assert main(["ft", "export", "--model-dir", str(changed), "--output", str(tmp_path / "x")]) == 2
    assert "sha256 no longer matches" in capsys.readouterr().err

    other_base = tmp_path / "other-base"
    shutil.copytree(checkpoint, other_base)
    manifest = read_manifest(other_base)
    manifest["base_fingerprint"] = "sha256:" + "0" * 64
    (other_base / MANIFEST).write_text(json.dumps(manifest))
    assert main(["ft", "export", "--model-dir", str(other_base), "--output", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "trained on a different clawtune/tiny-agent" in err and "retrain" in err
    args = ["ft", "export", "--model-dir", str(other_base), "--output", str(tmp_path / "y"), "--allow-base-mismatch"]
    assert main(args) == 0


def test_a_different_shipped_template_is_refused(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = (checkpoint / "chat_template.jinja").read_text()
    other = tmp_path / "other.jinja"
    other.write_text(template.replace('<tool_call>\\n{"name": "', '<tool_call>{"name": "'))
    args = [
        "ft",
        "export",
        "--model-dir",
        str(checkpoint),
        "--output",
        str(tmp_path / "o"),
        "--chat-template",
        str(other),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the exported chat template does not render what training rendered" in err
    assert not (tmp_path / "o").exists()


def test_merge_refuses_nan(checkpoint: Path) -> None:
    model = load_for_inference(str(checkpoint), device="cpu", dtype=torch.float32, merge=True).model
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight[0, 0] = float("nan")
    with pytest.raises(ExportError, match=r"NaN or infinite.*model\.layers\.0\.self_attn\.q_proj\.weight"):
        check_finite(model)


def test_export_of_a_rewritten_manifest_still_checks_files(checkpoint: Path, tmp_path: Path) -> None:
    """write_manifest is what training calls; a re-signed folder exports (the refusal above is about drift)."""
    copy = tmp_path / "resigned"
    shutil.copytree(checkpoint, copy)
    info = {k: v for k, v in read_manifest(copy).items() if k not in ("files", "format", "created")}
    write_manifest(copy, info)
    summary = export(ExportOptions(model_dir=copy, output=tmp_path / "out", format="gguf"))
    assert summary["formats"]["gguf"]["tensors"] == 56


def test_llama_cpp_runs_the_exported_ggufs(exported: Path, checkpoint: Path) -> None:
    """With llama-cpp-python installed (optional, it compiles llama.cpp): the GGUFs give Hugging Face's logits."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (optional)")
    folder = exported / "ollama"
    tokenizer = load_tokenizer(str(checkpoint))[0]
    ids = _ids(tokenizer)[:256]

    def run(**kwargs: Any) -> Any:
        llm = llama_cpp.Llama(n_ctx=512, logits_all=True, verbose=False, n_threads=2, **kwargs)
        llm.eval(ids)
        return llm, np.array(llm.scores[: len(ids)])

    merged = _logits(load_for_inference(str(exported / "merged"), device="cpu", dtype=torch.float32).model, ids)
    llm, scores = run(model_path=str(folder / "model.gguf"))
    assert np.abs(scores - merged.numpy()).max() < 0.05
    text = tokenizer.decode(ids)
    assert (
        llm.tokenize(text.encode(), add_bos=False, special=True)
        == tokenizer(text, add_special_tokens=False)["input_ids"]
    )
    adapter = _logits(load_for_inference(str(checkpoint), device="cpu", dtype=torch.float32).model, ids)
    _, scores = run(model_path=str(folder / "base.gguf"), lora_path=str(folder / "adapter.gguf"))
    assert np.abs(scores - adapter.numpy()).max() < 0.05
