"""The README's walkthrough runs as written: every `bash` block of its Walkthrough section, in order, in one shell.

Blocks preceded by `<!-- not run by tests/test_readme.py: ... -->` (the real-base variants, which need an 8B model and a
GPU) are left out. Two things differ from a person at a terminal, and only these: the port 8000 becomes a free one
(other servers may hold 8000 on a shared machine), and after `clawtune serve ... &` the shell waits until the port
answers before the next command (a person reads the output first).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
SKIP = re.compile(r"<!-- not run by tests/test_readme\.py:[^>]*-->\s*$")


def walkthrough_blocks(text: str) -> list[str]:
    """The `bash` blocks between `## Walkthrough` and the next `## ` heading, without the marked ones."""
    section = text.split("\n## Walkthrough\n", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for match in re.finditer(r"```bash\n(.*?)```", section, re.S):
        before = section[: match.start()].rstrip()
        if not SKIP.search(before):
            blocks.append(match.group(1))
    return blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_walkthrough_blocks_are_found() -> None:
    blocks = walkthrough_blocks(README.read_text(encoding="utf-8"))
    commands = " ".join(blocks)
    for step in (
        "agent export-training-data",
        "ft validate",
        "ft data-stats",
        "ft augment-data",
        "ft init",
        "ft train",
    ):
        assert f"clawtune {step}" in commands
    for step in ("ft evaluate", "ft export", "openclaw register", "serve --config", "chat --model"):
        assert f"clawtune {step}" in commands
    assert "Llama-3.1-8B" not in commands, "the real-base variants are marked and left out"


def walkthrough_script(port: int) -> str:
    """The blocks as one bash script that stops at the first failing command."""
    script = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for block in walkthrough_blocks(README.read_text(encoding="utf-8")):
        for line in block.replace("8000", str(port)).splitlines():
            script.append(line)
            if re.match(r"clawtune serve .*&", line):
                script.append(
                    f'"{sys.executable}" -c "import socket, time\n'
                    "for _ in range(600):\n"
                    "    try: socket.create_connection(('127.0.0.1', %d), 1).close(); break\n"
                    '    except OSError: time.sleep(0.2)"' % port
                )
    return "\n".join(script)


@pytest.mark.slow
def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "HOME": str(tmp_path),  # nothing of the user's ~/.openclaw, W&B or Hugging Face settings
        "HF_HUB_OFFLINE": "1",
        "CLAWTUNE_ENDPOINT": f"http://127.0.0.1:{port}/v1",  # `clawtune chat`'s default, moved with the port
        "COLUMNS": "160",
    }
    env.pop("OPENCLAW_STATE_DIR", None)
    env.pop("OPENCLAW_CONFIG_PATH", None)
    work = tmp_path / "walkthrough"
    work.mkdir()
    result = subprocess.run(
        ["bash", "-c", walkthrough_script(port)], cwd=work, env=env, capture_output=True, text=True, timeout=540
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Traceback" not in output, output[-6000:]
    # What each step leaves behind, as the README says.
    for path in ("ft-data/raw.jsonl", "ft-data/augmented.jsonl", "ft-config.yaml", "fine-tuned-model/eval"):
        assert (work / path).exists(), path
    assert (work / "exports" / "finance-agent-v1" / "adapter_model.safetensors").is_file()
    assert "registered clawtune/finance-agent-v1" in output
    assert "clawtune/finance-agent-v1" in (work / "openclaw-state" / "openclaw.json").read_text()
