"""Preference training (`objective: dpo`): TRL's DPOTrainer on collect-failures' pairs.jsonl, continuing a checkpoint
with that checkpoint as the reference, into a new checkpoint that loads like any other adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from clawtune.artifacts.manifest import checkpoints, read_manifest, sha256_file
from clawtune.cli import main
from clawtune.problems import Problems
from clawtune.train.config import ConfigError, load_config
from clawtune.train.options import TrainOptions
from clawtune.train.plan import TrainError
from clawtune.train.run import train

from ..conftest import export_sample, read_jsonl, write_jsonl

pytest.importorskip("torch")
pytest.importorskip("trl")
pytestmark = pytest.mark.slow  # every test trains

WRONG = "I cannot look that up for you."


def as_pair(example: dict[str, Any]) -> dict[str, Any]:
    """The example's last answer as the chosen side, a refusal as the rejected one."""
    messages = example["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    pair = {
        "prompt": messages[:last],
        "chosen": [{k: v for k, v in messages[last].items() if k != "weight"}],
        "rejected": [{"role": "assistant", "content": WRONG}],
    }
    if example.get("tools"):
        pair["tools"] = example["tools"]
    return pair


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, sample_state: Path) -> Path:
    """A tiny-model LoRA checkpoint (SFT) to continue, and a failure folder with pairs."""
    out = tmp_path_factory.mktemp("dpo")
    export_sample(out, sample_state, "--date-range", "2026-04-01:2026-05-20")
    examples = read_jsonl(out / "raw.jsonl")
    write_jsonl(out / "first.jsonl", examples[:8])
    failures = out / "failure-cases"
    pairs = [as_pair(e) for e in examples[8:12]]
    write_jsonl(failures / "pairs.jsonl", pairs)
    write_jsonl(failures / "corrected.jsonl", examples[8:12])
    summary = train(TrainOptions(config=load_config(config_file(out, "v1")), quiet=True, max_steps=2))[0]
    assert summary["steps"] == 2
    return out


def config_file(folder: Path, output: str, **extra: Any) -> Path:
    config = {
        "base_model": "clawtune/tiny-agent",
        "method": "lora",
        "data": {"train": str(folder / "first.jsonl")},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "lm_head"]},
        "training": {
            "batch_size": 2,
            "epochs": 1,
            "learning_rate": 5e-3,
            "warmup_steps": 0,
            "max_seq_length": 1024,
            "save_steps": 50,
            "logging_steps": 1,
            "seed": 3,
        },
        "output_dir": output,
        "tracking": {"tensorboard": False},
        **extra,
    }
    path = folder / f"{output}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def margins(checkpoint: Path, pairs: Path) -> list[float]:
    """log p(chosen) - log p(rejected) of each pair under a checkpoint, over the tokens DPO scores."""
    import torch

    from clawtune.models.checkpoint import load_for_inference
    from clawtune.train.dpo import PairCollator, as_rows, read_pairs

    loaded = load_for_inference(str(checkpoint), device="cpu")
    data = read_pairs(pairs, loaded.tokenizer, 1024, "truncate", Problems())
    batch = PairCollator(loaded.tokenizer.pad_token_id)(as_rows(data))
    with torch.no_grad():
        logits = loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token = logps.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1) * batch["completion_mask"][:, 1:]
    chosen, rejected = token.sum(dim=1).chunk(2)
    return (chosen - rejected).tolist()


def test_dpo_continues_the_checkpoint_against_it_and_raises_the_preference_margin(
    tmp_path: Path, first_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v1 = checkpoints(first_run / "v1")[-1]
    before = sha256_file(v1 / "adapter_model.safetensors")
    failures = tmp_path / "failure-cases"
    pairs = read_jsonl(first_run / "failure-cases" / "pairs.jsonl")
    write_jsonl(failures / "pairs.jsonl", pairs)
    with open(failures / "pairs.jsonl", "a", encoding="utf-8") as f:
        f.write("{not json\n")
        f.write(json.dumps({**pairs[0], "chosen": []}) + "\n")
        f.write(json.dumps({**pairs[0], "rejected": [{"role": "user", "content": "hi"}]}) + "\n")
    config = config_file(first_run, "v2", objective="dpo", dpo={"beta": 0.1})
    config.write_text(config.read_text().replace("output_dir: v2", f"output_dir: {tmp_path / 'v2'}"))
    argv = ["ft", "train", "--config", str(config), "--data", str(failures), "--resume", str(first_run / "v1")]
    assert main([*argv, "--max-steps", "8"]) == 0
    err = capsys.readouterr().err
    pairs_path = failures / "pairs.jsonl"
    assert f"{pairs_path}:5: malformed JSON" in err
    assert f'{pairs_path}:6, key "chosen": expected a non-empty list of messages' in err
    assert f'{pairs_path}:7, key "rejected": message 0: expected a role among assistant, tool' in err

    v2 = checkpoints(tmp_path / "v2")[-1]
    assert sha256_file(v1 / "adapter_model.safetensors") == before, "the resumed checkpoint is never written over"
    manifest = read_manifest(v2)
    assert manifest["objective"] == "dpo" and manifest["kind"] == "lora"
    assert manifest["parent"]["path"] == str(v1.resolve())
    assert manifest["training_data"]["path"] == str(pairs_path.resolve())
    assert manifest["training_data"]["pairs"] == 4
    assert manifest["training_data"]["sha256"] == sha256_file(pairs_path)
    assert manifest["step"] == 2 + 8, "numbered after the checkpoint it continues"
    assert not (v2 / "ref").exists() and not (tmp_path / "v2" / "ref").exists(), "the reference copy is not saved"
    summary = json.loads((tmp_path / "v2" / "training-summary.json").read_text())
    assert summary["objective"] == "dpo" and summary["pairs"]["used"] == 4 and summary["pairs"]["read"] == 6

    # The point of it: relative to the reference (the resumed checkpoint), the chosen answers gained on the rejected.
    reference = margins(v1, first_run / "failure-cases" / "pairs.jsonl")
    tuned = margins(tmp_path / "v2", first_run / "failure-cases" / "pairs.jsonl")
    gains = [t - r for t, r in zip(tuned, reference, strict=True)]
    assert all(g > 0 for g in gains), (reference, tuned)
    assert sum(gains) / len(gains) > 1.0, (reference, tuned)

    # It loads as any adapter does: the serving engine's reader and the inference loader.
    from clawtune.serve.lora import adapter_matrices

    weights = adapter_matrices(tmp_path / "v2")
    assert any("lm_head" in name for name in weights) and any("q_proj" in name for name in weights)
    assert read_manifest(tmp_path / "v2")["objective"] == "dpo"

    # An interrupted DPO run resumes (no --data) with the reference it had: its parent, not its own last checkpoint.
    assert main(["ft", "train", "--config", str(config), "--resume", str(tmp_path / "v2"), "--max-steps", "10"]) == 0
    resumed = read_manifest(checkpoints(tmp_path / "v2")[-1])
    assert resumed["step"] == 2 + 10 and resumed["parent"]["path"] == str(v1.resolve())
    assert str(v1) in resumed["dpo"]["reference"]
    assert json.loads((tmp_path / "v2" / "training-summary.json").read_text())["this_run"]["steps"] == 2


def test_dpo_is_an_objective_and_bad_settings_say_so(tmp_path: Path) -> None:
    (tmp_path / "first.jsonl").write_text("")
    config = config_file(tmp_path, "out", method="dpo")
    with pytest.raises(ConfigError, match=r'key "method": .*dpo is an objective, not a method.*objective: dpo'):
        load_config(config)
    config = config_file(tmp_path, "out", objective="dpo", dpo={"loss_type": ["sigmoid", "sft"], "loss_weights": [1]})
    with pytest.raises(ConfigError, match=r'key "dpo".*1 loss_weights for 2 loss_type values'):
        load_config(config)


def test_a_folder_without_pairs_and_a_file_without_usable_pairs_are_refused(tmp_path: Path) -> None:

    (tmp_path / "first.jsonl").write_text("")
    config = load_config(config_file(tmp_path, "out", objective="dpo"), check_files=False)
    (tmp_path / "folder").mkdir()
    with pytest.raises(TrainError, match=r"no pairs\.jsonl in it"):
        train(TrainOptions(config=config, data=tmp_path / "folder", quiet=True))
    write_jsonl(tmp_path / "bad.jsonl", [{"prompt": [], "chosen": [], "rejected": []}])
    with pytest.raises(TrainError, match=r"bad.jsonl: no usable preference pair \(1 read"):
        train(TrainOptions(config=config, data=tmp_path / "bad.jsonl", quiet=True))

    # A dry run reads and renders the pairs, says what would run, and trains nothing.
    pair = {
        "prompt": [{"role": "user", "content": "Say hello."}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "No."}],
    }
    write_jsonl(tmp_path / "good.jsonl", [pair, pair, pair])
    report, trainer = train(TrainOptions(config=config, data=tmp_path / "good.jsonl", dry_run=True, quiet=True))
    assert trainer is None and report["pairs"] == 3 and report["steps"] == 2 and report["tokens"] > 0
    assert not (tmp_path / "out").exists()


def test_without_trl_only_dpo_needs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from clawtune.train import dpo

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    with pytest.raises(TrainError, match=r"pip install 'clawtune\[dpo\]'"):
        dpo.require_trl()


def test_nothing_but_objective_dpo_imports_trl() -> None:
    """The device machines have no TRL: the CLI, the SFT run and the config import without it."""
    import subprocess
    import sys

    code = (
        "import sys, clawtune.cli, clawtune.train.run, clawtune.train.config, clawtune.train.trainer; "
        "assert 'trl' not in sys.modules and 'datasets' not in sys.modules, 'trl imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
