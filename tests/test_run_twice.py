"""Safe to run twice: a second run, into the same folder, never destroys or leaks data, and says what it will not do.

- augment-data never writes over its input, and replaces an existing output only with --force;
- an export owns its folder (an export id in its report and every example), refuses an earlier export's files without
  --force (which removes only what an export recorded), and augmentation and training find the held-out files of the
  export that made their data through that id;
- ft train refuses a folder holding another run's checkpoints, never writes over the checkpoint a run resumed from,
  and reports the loss of the steps it ran.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from clawtune.artifacts.manifest import checkpoints, read_manifest
from clawtune.cli import main
from clawtune.train.config import load_config
from clawtune.train.options import TrainOptions
from clawtune.train.plan import TrainError
from clawtune.train.run import train

from .conftest import copy_sample, export_sample, read_jsonl, write_jsonl


@pytest.fixture(scope="module")
def exported(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = copy_sample(tmp_path_factory.mktemp("export") / "ft-data", sample_data)
    return out


def test_augment_never_writes_over_its_input_and_needs_force_for_an_existing_output(
    tmp_path: Path, exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ft-data"
    folder.mkdir()
    for name in ("raw.jsonl", "validation.jsonl", "test.jsonl", "export-report.json"):
        (folder / name).write_bytes((exported / name).read_bytes())
    raw = folder / "raw.jsonl"
    before = raw.read_bytes()
    args = ["ft", "augment-data", "--input", str(raw), "--factor", "2"]
    assert main([*args, "--output", str(raw)]) == 2
    assert "is the input: augmenting would replace the originals" in capsys.readouterr().err
    assert main([*args, "--output", str(folder / ".." / "ft-data" / "raw.jsonl"), "--force"]) == 2
    assert raw.read_bytes() == before, "the originals are untouched"

    out = folder / "augmented.jsonl"
    assert main([*args, "--output", str(out)]) == 0
    first = out.read_bytes()
    out.write_text("my own edits\n")
    assert main([*args, "--output", str(out)]) == 2
    assert f"--output {out} exists; pass --force to replace it" in capsys.readouterr().err
    assert out.read_text() == "my own edits\n"
    assert main([*args, "--output", str(out), "--force"]) == 0
    assert out.read_bytes() == first


def test_an_export_owns_its_folder(
    tmp_path: Path, sample_state: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # the summary's lines unwrapped
    folder = tmp_path / "ft-data"
    assert export_sample(folder, sample_state, "--date-range", "2026-04-01:2026-05-20") == 0
    report = json.loads((folder / "export-report.json").read_text())
    export_id = report["export_id"]
    assert export_id and report["written"] == ["raw.jsonl", "validation.jsonl", "test.jsonl", "export-report.json"]
    for name in ("raw.jsonl", "validation.jsonl", "test.jsonl"):
        assert {e["metadata"]["export_id"] for e in read_jsonl(folder / name)} == {export_id}
    files = {name: (folder / name).read_bytes() for name in report["written"]}
    assert export_sample(folder, sample_state, "--date-range", "2026-04-01:2026-05-20", "--force") == 0
    assert {name: (folder / name).read_bytes() for name in report["written"]} == files, "the same export, byte for byte"
    assert (
        main(["ft", "augment-data", "--input", str(folder / "raw.jsonl"), "--output", str(folder / "augmented.jsonl")])
        == 0
    )
    augmented = read_jsonl(folder / "augmented.jsonl")
    assert {e["metadata"]["export_id"] for e in augmented} == {export_id}, "synthesized examples carry it too"
    (folder / "notes.txt").write_text("mine")
    capsys.readouterr()

    # A second export into the folder, with another split: refused, then --force replaces only the export's files.
    again = ("--date-range", "2026-04-01:2026-05-20", "--seed", "7")
    assert export_sample(folder, sample_state, *again) == 2
    err = capsys.readouterr().err
    assert "holds the files of an earlier export (raw.jsonl, validation.jsonl, test.jsonl, export-report.json)" in err
    assert json.loads((folder / "export-report.json").read_text())["export_id"] == export_id, "nothing changed"
    assert export_sample(folder, sample_state, *again, "--force") == 0
    out = capsys.readouterr().out
    second = json.loads((folder / "export-report.json").read_text())
    assert second["export_id"] != export_id
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "augmented.jsonl").is_file()
    assert second["stale_files"] == [{"file": "augmented.jsonl", "export_id": export_id}]
    assert "augmented.jsonl was made from export" in out

    # The old augmented file now leaks the new split's held-out sessions: augmenting it again and training on it are
    # refused, each naming the export that made it and the one the folder now holds.
    assert (
        main(["ft", "augment-data", "--input", str(folder / "augmented.jsonl"), "--output", str(tmp_path / "x.jsonl")])
        == 2
    )
    err = capsys.readouterr().err
    assert "refusing to augment" in err and "overlap held-out data" in err
    assert f"made by export {export_id}" in err and f"is export {second['export_id']}" in err
    config = tmp_path / "ft-config.yaml"
    assert main(["ft", "init", "--base-model", "clawtune/tiny-agent", "--config", str(config)]) == 0
    assert main(["ft", "train", "--config", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "refusing to train" in err and f"made by export {export_id}" in err and "Traceback" not in err
    # Augmenting the new raw.jsonl (as the warning says) gives data that trains.
    assert (
        main(
            [
                "ft",
                "augment-data",
                "--input",
                str(folder / "raw.jsonl"),
                "--output",
                str(folder / "augmented.jsonl"),
                "--force",
            ]
        )
        == 0
    )
    assert main(["ft", "train", "--config", str(config), "--dry-run"]) == 0


# ----------------------------------------------------------------------------------------------- training


def write_config(folder: Path, data: Path, **training: Any) -> Path:
    config = {
        "base_model": "clawtune/tiny-agent",
        "data": {"train": str(data / "small.jsonl")},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "training": {"batch_size": 2, "max_seq_length": 1024, "warmup_steps": 0, "save_steps": 2, "logging_steps": 1}
        | training,
        "output_dir": "out",
        "tracking": {"tensorboard": False},
    }
    path = folder / "ft-config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(exported: Path) -> Path:
    examples = read_jsonl(exported / "raw.jsonl")
    write_jsonl(exported / "small.jsonl", examples[:12])
    write_jsonl(exported / "more.jsonl", examples[12:20])
    return exported


def run(config: Path, **options: Any) -> dict[str, Any]:
    return train(TrainOptions(config=load_config(config), quiet=True, **options))[0]


def sha(folder: Path) -> str:
    return hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
def test_train_refuses_an_earlier_run_and_never_writes_over_the_checkpoint_it_resumed_from(
    tmp_path: Path, data: Path
) -> None:
    config = write_config(tmp_path, data, save_total_limit=1)
    out = tmp_path / "out"
    run(config, max_steps=2)
    with pytest.raises(TrainError, match=r"holds an earlier run \(checkpoint-2\).*--resume .*--force"):
        run(config, max_steps=2)
    kept = sha(out / "checkpoint-2")

    # Continued on new data: a fresh schedule, checkpoints numbered after the one it started from, which stays.
    summary = run(config, resume=out, data=data / "more.jsonl", max_steps=4)
    assert [p.name for p in checkpoints(out)] == ["checkpoint-2", "checkpoint-6"], "numbered on, never rotated away"
    assert sha(out / "checkpoint-2") == kept and read_manifest(out / "checkpoint-2")["step"] == 2
    assert summary["checkpoint"] == str(out / "checkpoint-6") and read_manifest(out / "checkpoint-6")["step"] == 6
    assert [e["step"] for e in summary["losses"]] == [3, 4, 5, 6]

    # Resuming from a checkpoint with later ones after it would write over them: refused without --force.
    with pytest.raises(TrainError, match=r"holds checkpoints after checkpoint-2 \(checkpoint-6\)"):
        run(config, resume=out / "checkpoint-2", data=data / "more.jsonl", max_steps=2)

    # --force replaces the earlier run: its checkpoints and files go, then it trains from scratch.
    fresh = run(config, max_steps=2, force=True)
    assert [p.name for p in checkpoints(out)] == ["checkpoint-2"], "checkpoint-6 of the earlier run is gone"
    assert fresh["steps"] == 2 and fresh["initialised_from"] is None and fresh["resumed_from"] is None


@pytest.mark.slow
def test_a_resumed_run_reports_the_loss_of_the_steps_it_ran(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, data)
    run(config, max_steps=2)
    assert main(["ft", "train", "--config", str(config), "--resume", str(tmp_path / "out"), "--max-steps", "4"]) == 0
    summary = json.loads((tmp_path / "out" / "training-summary.json").read_text())
    ran = [e["loss"] for e in summary["losses"] if e["step"] > 2]
    assert len(ran) == 2
    assert summary["final_train_loss"] == pytest.approx(sum(ran) / 2, rel=1e-4), "the loss of steps 3-4"
    assert summary["this_run"]["steps"] == 2
    assert summary["this_run"]["last_loss"] == pytest.approx(ran[-1])
    out = capsys.readouterr().out
    assert f"2 steps (steps 3-4), mean loss over them {sum(ran) / 2:.4f}" in out


@pytest.mark.slow
def test_wandb_without_a_key_logs_offline_and_says_so(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("wandb")
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_IDENTITY_TOKEN_FILE", "NETRC"):
        monkeypatch.setenv(name, "")  # so that what the run sets is undone after the test
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no wandb settings
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = write_config(tmp_path, data)
    assert main(["ft", "train", "--config", str(config), "--max-steps", "1", "--wandb"]) == 0
    assert "no Weights & Biases API key" in capsys.readouterr().err
    assert list((tmp_path / "out" / "wandb").glob("offline-run-*/run-*.wandb"))


def test_warm_up_longer_than_the_run_is_said(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, data, warmup_steps=100, epochs=1)
    assert main(["ft", "train", "--config", str(config), "--dry-run"]) == 0
    assert "warmup_steps 100 is longer than this run (6 steps)" in capsys.readouterr().err
    # ft init says it too, when the training file is already there.
    assert (
        main(
            [
                "ft",
                "init",
                "--base-model",
                "clawtune/tiny-agent",
                "--preset",
                "seed",
                "--config",
                str(tmp_path / "c.yaml"),
                "--train",
                str(data / "small.jsonl"),
            ]
        )
        == 0
    )
    assert "warmup_steps 100 is longer than a run on" in capsys.readouterr().err
