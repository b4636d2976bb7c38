"""Training: assistant-only masks, isolated packing, the trainer end to end, checkpoints, resume and retraining.

Every run uses the bundled tiny model (`clawtune/tiny-agent`) on a slice of the exported sample agent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from clawtune.artifacts.manifest import MANIFEST, checkpoints, read_manifest
from clawtune.artifacts.render import IGNORE, TemplateError, render_example
from clawtune.cli import main
from clawtune.models import load_model, load_tokenizer
from clawtune.train.attention import document_mask, flatten, isolate, model_implementation
from clawtune.train.config import load_config
from clawtune.train.data import Collator, pack
from clawtune.train.options import TrainOptions
from clawtune.train.plan import TrainError
from clawtune.train.run import train
from clawtune.train.trainer import CRASH_AT_STEP, selective_loss

from ..conftest import copy_sample, read_jsonl, tool_call, write_jsonl

torch = pytest.importorskip("torch")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_exchange_rate",
            "description": "Latest rate between two currencies.",
            "parameters": {
                "type": "object",
                "properties": {"base": {"type": "string"}, "quote": {"type": "string"}},
                "required": ["base", "quote"],
            },
        },
    }
]
TOOL_EXAMPLE = {
    "messages": [
        {"role": "system", "content": "You are the treasury assistant."},
        {"role": "user", "content": "What is EUR to USD today?"},
        tool_call("c1", "get_exchange_rate", '{"base": "EUR", "quote": "USD"}'),
        {"role": "tool", "tool_call_id": "c1", "content": '{"rate": 1.0842}'},
        {"role": "assistant", "content": "1 EUR = 1.0842 USD."},
        {"role": "user", "content": "And in GBP?"},
        {"role": "assistant", "content": "I was wrong here", "weight": 0},
        {"role": "user", "content": "Try again."},
        {"role": "assistant", "content": "Let me check GBP."},
    ],
    "tools": TOOLS,
}

# A Llama-3-style template: no {% generation %} markers, special tokens for headers, the tools in the first turn.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% if tools %}Tools: {{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}"
    '{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}'
    "{% endfor %}{% else %}{{ m.content }}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer("clawtune/tiny-agent")[0]


def supervised(tokenizer: Any, rendered: Any) -> str:
    return str(
        tokenizer.decode([t for t, label in zip(rendered.input_ids, rendered.labels, strict=True) if label != IGNORE])
    )


def test_masks_cover_assistant_turns_and_tool_calls_only(tokenizer: Any) -> None:
    rendered = render_example(tokenizer, TOOL_EXAMPLE)
    assert supervised(tokenizer, rendered) == (
        '<tool_call>\n{"name": "get_exchange_rate", "arguments": {"base":"EUR","quote":"USD"}}\n</tool_call>'
        "<|im_end|>1 EUR = 1.0842 USD.<|im_end|>Let me check GBP.<|im_end|>"
    )
    # Supervised tokens are exactly the ones that equal their label; the rest are all IGNORE.
    assert all(label in (IGNORE, token) for token, label in zip(rendered.input_ids, rendered.labels, strict=True))
    text = tokenizer.decode(rendered.input_ids)
    assert "I was wrong here" in text and "treasury assistant" in text and "1.0842}" in text


def test_masks_without_tools_and_without_generation_markers(tokenizer: Any) -> None:
    llama = load_tokenizer("clawtune/tiny-agent")[0]
    llama.add_special_tokens(
        {"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|begin_of_text|>"]}
    )
    llama.bos_token = "<|begin_of_text|>"
    llama.chat_template = LLAMA3_TEMPLATE
    rendered = render_example(llama, TOOL_EXAMPLE)
    assert supervised(llama, rendered) == (
        '{"name": "get_exchange_rate", "parameters": {"base": "EUR", "quote": "USD"}}<|eot_id|>'
        "1 EUR = 1.0842 USD.<|eot_id|>Let me check GBP.<|eot_id|>"
    )
    plain = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello there."}]}
    assert supervised(tokenizer, render_example(tokenizer, plain)) == "Hello there.<|im_end|>"


def test_template_that_rewrites_history_is_refused(tokenizer: Any) -> None:
    odd = load_tokenizer("clawtune/tiny-agent")[0]
    odd.chat_template = (
        "{% for m in messages %}{% if loop.last %}[last]{% endif %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    )
    chat = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "Hello again."},
        ]
    }
    with pytest.raises(TemplateError, match="renders earlier turns differently") as refused:
        render_example(odd, chat)
    assert refused.value.rule == "history-dependent"


def test_pack_places_every_example_once_within_capacity() -> None:
    lengths = [700, 300, 512, 90, 1000, 24, 24, 400, 1024, 5]
    rows = pack(lengths, 1024)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 1024 for row in rows)
    assert len(rows) == 4  # best-fit decreasing reaches the lower bound ceil(4079 / 1024) here


@pytest.mark.parametrize(
    "attention",
    ["sdpa_varlen", "sdpa", "eager", pytest.param("flex_attention", marks=pytest.mark.slow)],  # flex: torch.compile
)
def test_packed_example_logits_equal_alone(tokenizer: Any, attention: str) -> None:
    implementation = model_implementation(attention)
    model = load_model("clawtune/tiny-agent", dtype=torch.float32, attn_implementation=implementation).eval()
    first = render_example(tokenizer, TOOL_EXAMPLE)
    second = render_example(
        tokenizer, {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}]}
    )
    collate = Collator(tokenizer.pad_token_id)
    # Three rows: two examples packed, the second alone and padded to the first row's width, the first alone.
    packed = collate([[first, second], [second], [first]])
    alone = collate([[second]])

    def logits(batch: dict[str, Any], **isolation: Any) -> Any:
        with torch.no_grad():
            return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], **isolation).logits

    n, k = len(first.input_ids), len(second.input_ids)
    reference = logits(alone, **isolate(alone["document_ids"], attention, torch.float32))[0, :k]
    out = logits(packed, **isolate(packed["document_ids"], attention, torch.float32))
    assert torch.allclose(out[0, n : n + k], reference, atol=1e-5)
    assert torch.allclose(out[1, :k], reference, atol=1e-5)  # padding after it changes nothing
    assert torch.allclose(out[2, :n], out[0, :n], atol=1e-5)
    assert torch.isfinite(out).all()  # padding positions too
    # Restarting positions with the usual padding mask does not isolate: the second example sees the first.
    leaky = logits(packed, attention_mask=torch.ones_like(packed["input_ids"]))[0, n : n + k]
    assert not torch.allclose(leaky, reference, atol=1e-3)
    assert packed["labels"][0, n] == IGNORE  # no example is trained to follow the previous one


def test_varlen_attention_keeps_padding_masks_without_packing(tokenizer: Any) -> None:
    """Unpacked batches (and DPO's) pass a 2-D padding mask: the registered implementation honours it like sdpa."""
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    got = {}
    for attention in ("sdpa_varlen", "sdpa"):
        model = load_model(
            "clawtune/tiny-agent", dtype=torch.float32, attn_implementation=model_implementation(attention)
        )
        with torch.no_grad():
            got[attention] = model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(got["sdpa_varlen"], got["sdpa"], atol=1e-6)


def test_selective_logits_give_the_stock_loss_and_gradients(tokenizer: Any) -> None:
    model = load_model("clawtune/tiny-agent", dtype=torch.float32).eval()
    short = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello there."}]}
    first, second = render_example(tokenizer, TOOL_EXAMPLE), render_example(tokenizer, short)
    batch = Collator(tokenizer.pad_token_id)([[first, second], [second]])
    inputs = {
        "input_ids": batch["input_ids"],
        "position_ids": batch["position_ids"],
        "attention_mask": document_mask(batch["document_ids"], "sdpa", torch.float32),
        "labels": batch["labels"],
    }
    stock = model(**inputs).loss
    stock.backward()
    expected = model.model.layers[0].self_attn.q_proj.weight.grad.clone()
    model.zero_grad()
    trained = (batch["labels"][:, 1:] != IGNORE).sum()
    ours = selective_loss(model, dict(inputs), trained)
    ours.backward()
    assert torch.allclose(ours, stock, atol=1e-6)
    assert torch.allclose(model.model.layers[0].self_attn.q_proj.weight.grad, expected, atol=1e-6)


def test_flattened_varlen_batch_gives_the_padded_batchs_loss_and_gradients(tokenizer: Any) -> None:
    """varlen training lays a batch's rows end to end without padding: same loss and gradients as the masked batch."""
    first, second = (
        render_example(tokenizer, TOOL_EXAMPLE),
        render_example(
            tokenizer,
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello there."}]},
        ),
    )
    batch = Collator(tokenizer.pad_token_id)([[first, second], [second], [first]])
    trained = (batch["labels"][:, 1:] != IGNORE).sum()
    results = []
    for attention in ("sdpa", "sdpa_varlen"):
        model = load_model(
            "clawtune/tiny-agent", dtype=torch.float32, attn_implementation=model_implementation(attention)
        )
        inputs = {k: batch[k] for k in ("input_ids", "labels", "position_ids")}
        if attention == "sdpa":
            inputs.update(isolate(batch["document_ids"], attention, torch.float32))
        else:
            inputs = flatten(inputs, batch["document_ids"])
            assert inputs["input_ids"].shape == (1, int((batch["document_ids"] >= 0).sum()))
        loss = selective_loss(model, inputs, trained)
        loss.backward()
        results.append((loss.detach(), model.model.layers[1].mlp.down_proj.weight.grad.clone()))
    (masked, masked_grad), (flat, flat_grad) = results
    assert torch.allclose(flat, masked, atol=1e-5)
    assert torch.allclose(flat_grad, masked_grad, atol=1e-5)


# ----------------------------------------------------------------------------------------------- trainer runs


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, sample_data: Path) -> Path:
    out = copy_sample(tmp_path_factory.mktemp("train-data"), sample_data)
    examples = read_jsonl(out / "raw.jsonl")
    write_jsonl(out / "small.jsonl", examples[:24])
    write_jsonl(out / "more.jsonl", examples[24:40])
    return out


def write_config(folder: Path, data: Path, output: str = "out", tensorboard: bool = False, **training: Any) -> Path:
    config = {
        "base_model": "clawtune/tiny-agent",
        "method": "lora",
        "data": {"train": str(data / "small.jsonl"), "validation": str(data / "validation.jsonl")},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "training": {
            "batch_size": 2,
            "epochs": 1,
            "learning_rate": 1e-3,
            "warmup_steps": 0,
            "max_seq_length": 1024,
            "save_steps": 2,
            "logging_steps": 1,
            "eval_steps": 4,
            "seed": 3,
            **training,
        },
        "use_unsloth": True,
        "bfloat16": True,
        "output_dir": output,
        "tracking": {"tensorboard": tensorboard},
    }
    path = folder / "ft-config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run(config: Path, **options: Any) -> tuple[dict[str, Any], Any]:
    return train(TrainOptions(config=load_config(config), quiet=True, **options))


@pytest.mark.slow
def test_train_writes_adapter_checkpoints_summary_and_plot_and_reloads_identically(tmp_path: Path, data: Path) -> None:
    config = write_config(tmp_path, data, save_total_limit=2, tensorboard=True)
    summary, trainer = run(config)
    out = tmp_path / "out"
    assert summary["steps"] == 12  # 24 examples, each over 512 tokens: one per row of 1024, 2 rows per step
    assert summary["examples"] == {"read": 24, "used": 24}
    assert summary["trainable_parameters"] == 4 * (2 * 8 * (192 + 192) + 2 * 8 * (192 + 64))  # A+B on q,o and k,v
    assert summary["eval_losses"][-1]["loss"] < summary["eval_losses"][0]["loss"]  # it learns
    assert summary["tokens_seen"] > summary["trained_tokens_seen"] > 0
    assert [p.name for p in checkpoints(out)] == ["checkpoint-10", "checkpoint-12"]  # keep the last 2
    assert not (out / ".staging").exists()
    manifest = read_manifest(out / "checkpoint-12")
    assert manifest["base_model"] == "clawtune/tiny-agent" and manifest["step"] == 12
    assert manifest["base_fingerprint"].startswith("sha256:") and "adapter_model.safetensors" in manifest["files"]
    assert (out / "checkpoint-12" / "chat_template.jinja").is_file()
    assert (out / "loss-curve.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "training-summary.json").read_text())["steps"] == 12
    assert list((out / "runs").rglob("events.out.tfevents.*")), "TensorBoard logs by default"

    from peft import PeftModel

    tokenizer = load_tokenizer(str(out))[0]
    batch = Collator(tokenizer.pad_token_id)([[render_example(tokenizer, TOOL_EXAMPLE)]])
    trained = trainer.model.eval()
    reloaded = PeftModel.from_pretrained(
        load_model("clawtune/tiny-agent", dtype=torch.float32), str(out / "checkpoint-12")
    ).eval()
    with torch.no_grad():
        a = trained(input_ids=batch["input_ids"]).logits
        b = reloaded(input_ids=batch["input_ids"]).logits
        base = load_model("clawtune/tiny-agent", dtype=torch.float32).eval()(input_ids=batch["input_ids"]).logits
    assert torch.equal(a, b)
    assert not torch.allclose(a, base, atol=1e-3), "the adapter changed the model"


@pytest.mark.slow
def test_full_fine_tuning_and_unpacked_batches(tmp_path: Path, data: Path) -> None:
    config = write_config(tmp_path, data, packing=False, gradient_checkpointing=False)
    config.write_text(config.read_text().replace("method: lora", "method: full"))
    summary, _ = run(config, max_steps=3)
    assert summary["steps"] == 3 and summary["trainable_parameters"] == summary["total_parameters"]
    assert summary["rows"] == 24
    assert read_manifest(tmp_path / "out")["kind"] == "full"


def test_no_trained_token_is_a_clear_error(tmp_path: Path, data: Path) -> None:
    examples = read_jsonl(data / "small.jsonl")[:3]
    for example in examples:
        for message in example["messages"]:
            if message["role"] == "assistant":
                message["weight"] = 0
    write_jsonl(tmp_path / "untrained.jsonl", examples)
    config = write_config(tmp_path, data)
    with pytest.raises(TrainError, match=r"no example has a trained token \(3 read; skipped: invalid: 3\)"):
        run(config, data=tmp_path / "untrained.jsonl")
    # Truncation that cuts every assistant turn away is reported per example.
    tiny = write_config(tmp_path, data, max_seq_length=16)
    with pytest.raises(TrainError, match="skipped: no trained token: 24"):
        run(tiny)


def test_qlora_without_cuda_is_a_clear_error(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, data)
    config.write_text(config.read_text().replace("method: lora", "method: qlora"))
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["ft", "train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "method qlora" in err and "needs a CUDA GPU" in err and "Traceback" not in err


def test_dry_run_prints_the_cost_and_trains_nothing(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, data)
    assert main(["ft", "train", "--config", str(config), "--gpus", "1", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "--gpus 1: no CUDA GPU on this machine; training on the CPU instead" in captured.err
    assert "bfloat16: not supported well on cpu; training in float32 instead" in captured.err
    assert "use_unsloth: no CUDA GPU on this machine" in captured.err
    for label in ("trainable parameters", "tokens per epoch", "peak memory (estimate)", "time (estimate)"):
        assert label in captured.out
    assert "24 used of 24" in captured.out and "12 steps" in captured.out
    assert not (tmp_path / "out").exists()


def losses(summary: dict[str, Any]) -> list[tuple[int, float]]:
    return [(e["step"], round(e["loss"], 4)) for e in summary["losses"]]


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path, data: Path) -> None:
    """The trainer SIGKILLs itself at the end of step 13 (the trainer's test hook), after the optimizer step and before
    any later checkpoint: the same crash on an idle machine and a busy one."""
    reference, _ = run(write_config(tmp_path, data, output="straight", epochs=2))
    config = write_config(tmp_path, data, output="killed", epochs=2)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", CRASH_AT_STEP: "13"}
    process = subprocess.run(
        [sys.executable, "-m", "clawtune", "ft", "train", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()[-2000:]
    killed = tmp_path / "killed"
    done = checkpoints(killed)
    assert [c.name for c in done] == ["checkpoint-8", "checkpoint-10", "checkpoint-12"]  # the last 3 are kept
    resumed, _ = run(config, resume=killed)
    assert resumed["steps"] == reference["steps"] == 24
    assert resumed["resumed_from"] == str(done[-1])
    assert losses(resumed) == losses(reference)  # the curve continues exactly: same data order, RNG and optimizer


@pytest.mark.slow
def test_retrain_on_new_data_continues_the_adapter_with_a_fresh_schedule(tmp_path: Path, data: Path) -> None:
    config = write_config(tmp_path, data)
    run(config, max_steps=2)
    retrained, trainer = run(config, resume=tmp_path / "out", data=data / "more.jsonl")
    assert retrained["initialised_from"] == str(tmp_path / "out" / "checkpoint-2")
    assert retrained["examples"]["used"] == 16 and retrained["eval_losses"] == []
    assert trainer.state.log_history[0]["step"] == 1  # a new schedule from step 1
    with pytest.raises(TrainError, match="trained as lora on clawtune/tiny-agent, but the config says full"):
        config.write_text(config.read_text().replace("method: lora", "method: full"))
        run(config, resume=tmp_path / "out")


@pytest.mark.slow
@pytest.mark.parametrize(("method", "strategy"), [("lora", "DDP"), ("full", "FSDP")])
def test_two_cpu_processes(tmp_path: Path, data: Path, method: str, strategy: str) -> None:
    config = write_config(tmp_path, data)
    config.write_text(config.read_text().replace("method: lora", f"method: {method}"))
    result = subprocess.run(
        [sys.executable, "-m", "clawtune", "ft", "train", "--config", str(config), "--gpus", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "training-summary.json").read_text())
    assert summary["processes"] == 2
    assert summary["steps"] == 6  # 24 rows over 2 processes x 2 rows per step
    assert "no CUDA GPU on this machine; training on 2 CPU processes (over gloo) instead" in result.stderr
    assert f"cpu x2 {strategy}" in result.stdout
    assert (tmp_path / "out" / "checkpoint-6" / MANIFEST).is_file()
    if method == "full":  # FSDP gathered whole weights, not one process's shard: every tensor, full shape, trained
        from safetensors.torch import load_file

        saved = load_file(str(tmp_path / "out" / "model.safetensors"))
        base = load_model("clawtune/tiny-agent", dtype=torch.float32).state_dict()
        assert {k: tuple(v.shape) for k, v in saved.items()} == {k: tuple(v.shape) for k, v in base.items()}
        assert not torch.equal(
            saved["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"]
        )


@pytest.mark.slow
def test_wandb_offline(tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = write_config(tmp_path, data)
    # In a process of its own, as a user runs it: wandb keeps the first run's settings (its folder) in a process-wide
    # singleton, so an earlier wandb run in this test process would decide where this one goes.
    command = [
        sys.executable,
        "-m",
        "clawtune",
        "ft",
        "train",
        "--config",
        str(config),
        "--project-name",
        "clawtune-test",
    ]
    done = subprocess.run([*command, "--wandb"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and list(runs[0].glob("run-*.wandb"))
