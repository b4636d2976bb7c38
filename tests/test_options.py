"""Each command's options are declared once (clawtune.options): the line `clawtune demo` prints for an options object,
given back to the command line, builds that same object, so what the demo prints is what it ran."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from clawtune.cli import main
from clawtune.data.options import AugmentOptions, TrainingDataOptions
from clawtune.evaluate.options import EvalOptions
from clawtune.export.options import ExportOptions
from clawtune.loop.failures.options import CollectOptions
from clawtune.options import command_line, command_words
from clawtune.train.config import init_config
from clawtune.train.options import TrainOptions


class Ran(Exception):
    """Raised by the stage's stand-in with the options the command line built."""


def _capture(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    module, name = target.rsplit(".", 1)

    def stand_in(options: object, *args: object, **kwargs: object) -> None:
        raise Ran(options)

    monkeypatch.setattr(importlib.import_module(module), name, stand_in)


def _cases(tmp_path: Path) -> list[tuple[str, str, object]]:
    config = tmp_path / "ft-config.yaml"
    init_config(
        config, "clawtune/tiny-agent", "lora", Path("out"), "train.jsonl", "validation.jsonl", False, "tiny-agent"
    )
    (tmp_path / "failures").mkdir()
    return [
        (
            "agent export-training-data",
            "clawtune.data.build.export_training_data",
            TrainingDataOptions(
                agent_id="my-agent",
                output=tmp_path / "ft data",
                state_dirs=[tmp_path / "a", tmp_path / "b"],
                min_samples=100,
                date_range="2026-04-01:2026-05-20",
                split="70:10:20",
                scrub=False,
                gateway_models=["m1", "m*"],
                max_line_mb=2.5,
                force=True,
            ),
        ),
        (
            "ft augment-data",
            "clawtune.data.augment.run_augment",
            AugmentOptions(input=tmp_path / "raw.jsonl", output=tmp_path / "aug.jsonl", balance=True, factor=2.0),
        ),
        (
            "agent collect-failures",
            "clawtune.loop.failures.collect.collect_failures",
            CollectOptions(
                agent_id="my-agent",
                output=tmp_path / "failure-cases",
                criteria="user_feedback=negative OR tool_call_error=true",
                source="gateway",
                holdout="10%",
                negative_reactions="👎,😡",
                exports=[tmp_path / "ft-data"],
                force=True,
            ),
        ),
        (
            "ft train",
            "clawtune.train.run.train_command",
            TrainOptions(
                config_file=config, data=tmp_path / "failures", resume=tmp_path / "ckpt", max_steps=7, force=True
            ),
        ),
        (
            "ft evaluate",
            "clawtune.evaluate.run.run_evaluation",
            EvalOptions(
                test_set=tmp_path / "test.jsonl", model_dir="m", metrics="accuracy,f1", limit=4, max_new_tokens=32
            ),
        ),
        (
            "ft export",
            "clawtune.export.run.export",
            ExportOptions(model_dir=tmp_path / "ckpt", output=tmp_path / "exports", format="gguf,vllm", force=True),
        ),
    ]


def test_the_printed_command_builds_the_same_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for command, stage, options in _cases(tmp_path):
        _capture(monkeypatch, stage)
        words = command_words(command, options)
        assert command_line(command, options).startswith(f"clawtune {command} ")
        with pytest.raises(Ran) as ran:
            main(words[1:])
        assert ran.value.args[0] == options, command


def test_defaults_are_left_out_and_switches_follow_the_field() -> None:
    options = TrainingDataOptions(agent_id="a", output=Path("o"))
    assert command_words("agent export-training-data", options) == [
        "clawtune", "agent", "export-training-data", "--agent-id", "a", "--output", "o"
    ]  # fmt: skip
    options.scrub = False
    assert command_words("agent export-training-data", options)[-1] == "--no-scrub"


def test_a_bad_option_value_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "export-training-data", "--agent-id", "a", "--output", "o", "--split", "80:20"]) == 2
    assert "error: --split '80:20': expected three non-negative ratios like 80:10:10" in capsys.readouterr().err
    with pytest.raises(Exception, match="--holdout"):
        CollectOptions(agent_id="a", output=Path("o"), holdout="150%")
