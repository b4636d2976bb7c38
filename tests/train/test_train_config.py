"""The training config: the seed's ft-config.yaml verbatim, every error path, and `ft init`."""

import shutil
from pathlib import Path

import pytest

from clawtune.cli import main
from clawtune.train.config import ConfigError, FTConfig, config_help, load_config

SEED_CONFIG = Path(__file__).parent.parent / "seed" / "ft-config.yaml"  # a verbatim copy of shared/seed/ft-config.yaml


def test_the_seed_config_is_accepted_as_written(tmp_path):
    config_path = tmp_path / "ft-config.yaml"
    shutil.copy(SEED_CONFIG, config_path)
    (tmp_path / "ft-data").mkdir()
    for name in ("augmented.jsonl", "validation.jsonl"):
        (tmp_path / "ft-data" / name).write_text("{}\n")
    config = load_config(config_path)
    assert config.base_model == "meta-llama/Llama-3.1-8B" and config.method == "lora"
    assert config.training.learning_rate == 0.0002 and isinstance(config.training.learning_rate, float)
    assert (config.lora.r, config.lora.alpha, config.lora.dropout) == (16, 32, 0.1)
    assert config.lora.target_modules == ["q_proj", "v_proj", "k_proj", "o_proj"]
    assert (config.training.batch_size, config.training.epochs, config.training.warmup_steps) == (4, 3, 100)
    assert (config.training.max_seq_length, config.training.save_steps) == (4096, 500)
    assert config.use_unsloth is True and config.bfloat16 is True
    assert config.data.train == tmp_path / "ft-data" / "augmented.jsonl", "paths are relative to the config file"


def test_every_problem_is_listed_at_once_with_key_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "base_model: tiny\n"
        "method: lorra\n"
        "data:\n"
        "  train: ./missing.jsonl\n"
        "lora:\n"
        "  r: -4\n"
        "  alpah: 32\n"
        "  dropout: 1.5\n"
        "training:\n"
        "  batch_size: four\n"
        "  learning_rate: 2e-4\n"
        "  epoch: 3\n"
        "learnin_rate: 1\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    problems = raised.value.problems
    expected = [
        "line 2, key \"method\": Input should be 'lora', 'qlora' or 'full'",
        'line 6, key "lora.r": Input should be greater than 0',
        "line 7, key \"lora.alpah\": unknown key; did you mean 'lora.alpha'?",
        'line 8, key "lora.dropout": Input should be less than 1',
        'line 10, key "training.batch_size": Input should be a valid integer',
        "line 12, key \"training.epoch\": unknown key; did you mean 'training.epochs'?",
        'line 13, key "learnin_rate": unknown key',
    ]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)
    assert len(problems) == len(expected)


def test_missing_keys_files_and_bad_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: full\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.problems == ['key "base_model": required', 'key "data": required']
    path.write_text("base_model: x\ndata:\n  train: nope.jsonl\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.problems == [f'line 3, key "data.train": no such file {tmp_path / "nope.jsonl"}']
    path.write_text("base_model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_init_writes_the_seed_values_and_does_not_overwrite(tmp_path, capsys):
    config = tmp_path / "ft-config.yaml"
    args = [
        "ft",
        "init",
        "--base-model",
        "meta-llama/Llama-3.1-8B",
        "--method",
        "lora",
        "--output-dir",
        "./fine-tuned-model/",
        "--config",
        str(config),
    ]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    loaded = load_config(config, check_files=False)
    seed = load_config(SEED_CONFIG, check_files=False)
    assert loaded.model_dump(exclude={"data", "output_dir", "training"}) == seed.model_dump(
        exclude={"data", "output_dir", "training"}
    )
    assert loaded.training.model_dump(
        exclude={"gradient_accumulation_steps", "packing", "scheduler", "seed"}
    ) == seed.training.model_dump(exclude={"gradient_accumulation_steps", "packing", "scheduler", "seed"})
    assert loaded.output_dir == tmp_path / "fine-tuned-model"
    assert "# LoRA rank" in config.read_text()
    assert loaded.objective == "sft" and "# sft | dpo" in config.read_text(), "the objective is a line to change"
    config.write_text(config.read_text().replace('objective: "sft"', 'objective: "dpo"'))
    assert load_config(config, check_files=False).objective == "dpo"
    assert main(args) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main([*args[:5], "qlora", *args[6:], "--force"]) == 0
    assert load_config(config, check_files=False).method == "qlora"
    assert main(["ft", "init", "--base-model", "x", "--method", "dora", "--config", str(tmp_path / "o.yaml")]) == 2


def test_every_setting_is_documented():
    rows = config_help()
    assert all(description for _, description, _ in rows)
    assert {"training.learning_rate", "lora.r", "qlora.bits", "tracking.wandb"} <= {key for key, _, _ in rows}
    assert FTConfig.model_fields["base_model"].description
