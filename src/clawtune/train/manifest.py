"""The manifest every checkpoint (and every export) carries: what base model, template and config made it.

A checkpoint folder is complete only once its manifest is in place: checkpoints are written to a staging folder and
renamed into place with the manifest inside, so a folder named `checkpoint-N` is always whole. Evaluate, export and
serve read the manifest to load the right base model and to refuse a different one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clawtune.problems import InputError

MANIFEST = "clawtune-manifest.json"
FORMAT = "clawtune-checkpoint/1"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Trainer state needed only to resume, not to evaluate or serve: not hashed.
_RESUME_ONLY = re.compile(r"^(optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth|trainer_state\.json)$")


class CheckpointError(InputError):
    """A folder is not a complete clawtune checkpoint."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_jsonl_atomic(path: Path, rows: Any) -> None:
    """One JSON object per line, written to a temporary file beside `path` (named per process: several processes
    of one run may write the same file) and renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_manifest(folder: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Write `folder/clawtune-manifest.json` with `info` plus the sha256 of every file needed to use the model."""
    files = {
        p.name: sha256_file(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST and not _RESUME_ONLY.match(p.name)
    }
    manifest = {"format": FORMAT, "created": datetime.now(UTC).isoformat(timespec="seconds"), **info, "files": files}
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a complete clawtune checkpoint (no {MANIFEST})")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable manifest: {exc}") from None
    return manifest


def training_file(manifest: dict[str, Any]) -> Path | None:
    """The training data a checkpoint was trained on (the replay mix or the --data file of a retrain, else the config's
    file), if the file is still there."""
    train = (manifest.get("training_data") or {}).get("path") or ((manifest.get("config") or {}).get("data") or {}).get(
        "train"
    )
    return Path(train) if train and Path(train).is_file() else None


def training_examples(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversations a checkpoint was trained on, if the training file is still where the manifest says."""
    train = training_file(manifest)
    if train is None:
        return []
    from clawtune.data.validate import iter_examples
    from clawtune.problems import Problems

    return [e for _, e in iter_examples(train, Problems())]


def checkpoint_step(path: Path) -> int:
    """The step in a `checkpoint-N` folder's name (-1 for another name)."""
    match = CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else -1


def checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints under `folder`, oldest step first (staging and half-written folders are ignored)."""
    found = []
    if folder.is_dir():
        for child in folder.iterdir():
            match = CHECKPOINT.match(child.name)
            if match and (child / MANIFEST).is_file():
                found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def find_checkpoint(path: Path) -> Path:
    """`path` itself if it is a complete checkpoint, else the newest complete checkpoint inside it."""
    if (path / MANIFEST).is_file() and (path / "trainer_state.json").is_file():
        return path
    found = checkpoints(path)
    if not found:
        raise CheckpointError(f"{path}: no complete checkpoint here (a checkpoint-N folder with {MANIFEST})")
    return found[-1]


def rotate(folder: Path, keep: int, protect: Path | None = None) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints, never `protect` (the one a run resumed from); return
    the deleted ones."""
    found = checkpoints(folder)
    kept = protect.resolve() if protect is not None else None
    doomed = [p for p in (found[:-keep] if keep > 0 else []) if p.resolve() != kept]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed
