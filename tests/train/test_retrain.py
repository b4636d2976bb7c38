"""The seed's retraining command (`ft train --data ./failure-cases/ --resume ./fine-tuned-model/`) and replay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from clawtune.artifacts.manifest import checkpoints, read_manifest, sha256_file, training_file
from clawtune.cli import main
from clawtune.models.general import forgetting_set
from clawtune.train.config import ConfigError, load_config
from clawtune.train.options import TrainOptions
from clawtune.train.plan import TrainError
from clawtune.train.replay import MIX_FILE, replay_counts
from clawtune.train.run import train

from ..conftest import copy_sample, read_jsonl, write_jsonl

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, sample_data: Path) -> Path:
    out = copy_sample(tmp_path_factory.mktemp("retrain-data"), sample_data)
    examples = read_jsonl(out / "raw.jsonl")
    write_jsonl(out / "first.jsonl", examples[:12])
    failures = out / "failure-cases"
    failures.mkdir()
    write_jsonl(failures / "corrected.jsonl", examples[12:16])
    write_jsonl(failures / "held-out.jsonl", examples[16:18])
    return out


def config_file(folder: Path, data: Path, output: str, replay: dict[str, Any] | None = None) -> Path:
    config = {
        "base_model": "clawtune/tiny-agent",
        "method": "lora",
        "data": {"train": str(data / "first.jsonl")},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "training": {
            "batch_size": 4,
            "epochs": 1,
            "learning_rate": 1e-3,
            "warmup_steps": 0,
            "max_seq_length": 1024,
            "save_steps": 50,
            "seed": 3,
            **({"replay": replay} if replay else {}),
        },
        "output_dir": output,
        "tracking": {"tensorboard": False},
    }
    path = folder / f"{output}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(config: Path, **options: Any) -> dict[str, Any]:
    return train(TrainOptions(config=load_config(config, check_files=False), quiet=True, **options))[0]


def test_shares_are_of_the_whole_mix() -> None:
    assert replay_counts(50, 0.25, 0.25) == (25, 25)  # half the mix is new data
    assert replay_counts(30, 0.0, 0.4) == (0, 20)


@pytest.mark.slow
def test_the_seeds_retraining_command_reads_the_failure_folder_and_writes_a_new_checkpoint(
    tmp_path: Path, data: Path
) -> None:
    first = config_file(tmp_path, data, "v1")
    run(first)
    v1 = checkpoints(tmp_path / "v1")[-1]
    before = sha256_file(v1 / "adapter_model.safetensors")
    second = config_file(tmp_path, data, "v2", replay={"original": 0.25, "general": 0.25, "seed": 11})
    assert main(["ft", "train", "--config", str(second), "--data", str(data / "failure-cases"), "--resume",
                 str(tmp_path / "v1")]) == 0  # fmt: skip
    v2 = checkpoints(tmp_path / "v2")[-1]
    assert sha256_file(v1 / "adapter_model.safetensors") == before, "the resumed checkpoint is never written over"
    manifest = read_manifest(v2)
    assert manifest["parent"]["path"] == str(v1.resolve()) and manifest["parent"]["how"] == "new data"
    mix = manifest["training_data"]
    sources = {s["source"]: s for s in mix["sources"]}
    assert sources["data"]["path"] == str(data / "failure-cases" / "corrected.jsonl")
    assert sources["data"]["examples"] == 4 and sources["original"]["examples"] == 2
    assert sources["general"]["examples"] == 2 and sources["general"]["seed"] == 7
    assert training_file(manifest) == tmp_path / "v2" / MIX_FILE
    rows = read_jsonl(tmp_path / "v2" / MIX_FILE)
    assert len(rows) == mix["examples"] == 8
    assert sorted(str((r.get("metadata") or {}).get("replay")) for r in rows) == [
        "None", "None", "None", "None", "general", "general", "original", "original"
    ]  # fmt: skip
    originals = {json.dumps(e["messages"]) for e in read_jsonl(data / "first.jsonl")}
    assert all(json.dumps(r["messages"]) in originals for r in rows if r["metadata"].get("replay") == "original")
    forgetting = {json.dumps(e["messages"]) for e in forgetting_set()}
    assert not any(json.dumps(r["messages"]) in forgetting for r in rows), "replay never holds a forgetting item"

    # A retrain of the retrain replays what v2 was trained on, never v2's own replayed general conversations twice.
    third = config_file(tmp_path, data, "v3", replay={"original": 0.25})
    summary = run(third, data=data / "failure-cases", resume=tmp_path / "v2")
    v3 = read_manifest(Path(summary["checkpoint"]))
    assert v3["parent"]["path"] == str(v2.resolve())
    replayed = [r for r in read_jsonl(tmp_path / "v3" / MIX_FILE) if r["metadata"].get("replay")]
    assert replayed and all(r["metadata"]["replay"] == "original" for r in replayed)

    again = run(second, data=data / "failure-cases", resume=tmp_path / "v1", force=True)  # a rerun: same mix
    assert read_manifest(Path(again["checkpoint"]))["training_data"]["sha256"] == mix["sha256"]
    (tmp_path / "not-failures").mkdir()
    with pytest.raises(TrainError, match="not one `clawtune agent collect-failures` wrote"):
        run(second, data=tmp_path / "not-failures", resume=tmp_path / "v1", force=True)
    assert checkpoints(tmp_path / "v2"), "a bad --data is refused before --force removes the earlier run"


@pytest.mark.slow
def test_a_first_training_with_general_replay(tmp_path: Path, data: Path) -> None:
    config = config_file(tmp_path, data, "out", replay={"original": 0.25, "general": 0.5})
    options = TrainOptions(config=load_config(config), quiet=True, max_steps=1)
    summary, _ = train(options)
    manifest = read_manifest(Path(summary["checkpoint"]))
    assert [s["source"] for s in manifest["training_data"]["sources"]] == ["data", "general"]
    assert manifest["training_data"]["examples"] == 24 and manifest["parent"] is None


def test_replay_problems_are_clear(tmp_path: Path, data: Path) -> None:
    with pytest.raises(ConfigError, match=r'key "training.replay": Value error, original \+ general must stay below 1'):
        load_config(config_file(tmp_path, data, "a", replay={"original": 0.6, "general": 0.5}))
    with pytest.raises(ConfigError, match=r'key "training.replay.general_file": no such file .*missing.jsonl'):
        load_config(config_file(tmp_path, data, "b", replay={"general": 0.2, "general_file": "missing.jsonl"}))
    empty = tmp_path / "empty-failures"
    empty.mkdir()
    with pytest.raises(TrainError, match="not one `clawtune agent collect-failures` wrote"):
        run(config_file(tmp_path, data, "d"), data=empty)
    (empty / "corrected.jsonl").write_text("")
    with pytest.raises(TrainError, match=r"corrected\.jsonl is empty"):
        run(config_file(tmp_path, data, "d"), data=empty)


def test_a_real_base_takes_a_general_file_of_the_users(tmp_path: Path, data: Path) -> None:
    from clawtune.train.replay import ReplayError, build_mix

    config = load_config(config_file(tmp_path, data, "e", replay={"general": 0.5}))
    config = config.model_copy(update={"base_model": "Qwen/Qwen2.5-7B-Instruct"})
    with pytest.raises(ReplayError, match=r"training\.replay\.general_file"):
        build_mix(config, data / "first.jsonl", None, tmp_path / "e", [])
    mine = write_jsonl(tmp_path / "general.jsonl", read_jsonl(data / "raw.jsonl")[30:33])
    replay = config.training.replay.model_copy(update={"general_file": mine})  # type: ignore[union-attr]
    config = config.model_copy(update={"training": config.training.model_copy(update={"replay": replay})})
    mix = build_mix(config, data / "first.jsonl", None, tmp_path / "e", [])
    assert mix is not None and mix["sources"][1]["path"] == str(mine) and mix["sources"][1]["examples"] == 12


def test_general_replay_is_trained_under_the_system_prompt_the_model_is_served_with(tmp_path: Path, data: Path) -> None:
    """Serving applies the trained prompt to every request, general ones too: replay them under it."""
    from clawtune.generation import policy_of_examples
    from clawtune.models.general import replay_set
    from clawtune.train.replay import build_mix

    config = load_config(config_file(tmp_path, data, "f", replay={"general": 0.5}))
    first = read_jsonl(data / "first.jsonl")
    policy = policy_of_examples(first)
    assert policy is not None and policy.policy == "replace"  # the sample agent's export replaces OpenClaw's prompt
    mix = build_mix(config, data / "first.jsonl", None, tmp_path / "f", [])
    assert mix is not None and mix["sources"][1]["system_prompt"] == policy.record()
    general = [e for e in read_jsonl(Path(mix["path"])) if e["metadata"].get("replay") == "general"]
    assert len(general) == 12
    assert all(e["messages"][0] == {"role": "system", "content": policy.prompt} for e in general)
    assert all(sum(m["role"] == "system" for m in e["messages"]) == 1 for e in general)
    assert sorted(json.dumps(e["messages"][1:]) for e in general) == sorted(  # the mix is shuffled
        json.dumps([m for m in e["messages"] if m["role"] != "system"]) for e in replay_set(12)
    )
    # data exported keeping each session's own prompt: the general conversations keep theirs
    kept = write_jsonl(tmp_path / "kept.jsonl", [{**e, "metadata": {"system_prompt": "keep"}} for e in first])
    mix = build_mix(config, kept, None, tmp_path / "g", [])
    assert mix is not None and "system_prompt" not in mix["sources"][1]
    general = [e for e in read_jsonl(Path(mix["path"])) if e["metadata"].get("replay") == "general"]
    assert sorted(json.dumps(e["messages"]) for e in general) == sorted(
        json.dumps(e["messages"]) for e in replay_set(12)
    )
