import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path
from typing import Any

import pytest

from clawtune.sample import make_state_dir


@pytest.fixture(scope="session")
def sample_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample agent's state folder, generated once per test run."""
    return make_state_dir(tmp_path_factory.mktemp("sample"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, objs: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


def export_sample(out: Path, state: Path, *extra: str, agent: str = "my-agent") -> int:
    """Run `clawtune agent export-training-data` in-process on a state folder; returns the exit code."""
    from clawtune.cli import main

    return main(
        ["agent", "export-training-data", "--agent-id", agent, "--output", str(out), "--state-dir", str(state), *extra]
    )
