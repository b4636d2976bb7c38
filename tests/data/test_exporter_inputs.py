"""The exporter on what real state folders hold besides transcripts: folders it may not read, symbolic links that loop,
FIFOs, folders named like transcripts, and lines far longer than any session writes. Each is reported by name; none
ends in a traceback, a hang or a silent skip, and a long line is never held several times over."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import HEADER, export_sample, msg, read_jsonl, text, write_jsonl


def session(sid: str, question: str = "What were sales in May?", answer: str = "They were $5.") -> list[dict]:
    return [HEADER | {"id": sid}, msg("a", None, "user", question), text("b", "a", answer)]


def make_state(root: Path) -> Path:
    """A state folder with two good sessions of my-agent."""
    sessions = root / "agents" / "my-agent" / "sessions"
    write_jsonl(sessions / "s1.jsonl", session("s1"))
    write_jsonl(sessions / "s2.jsonl", session("s2", "And in June?", "They were $7."))
    return root


def drop_privileges() -> list[str]:
    """A command prefix under which file permissions apply. CI runs as root, which reads any file: there the process
    keeps uid 0 but loses the capabilities that bypass permissions (setpriv, util-linux)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop the privilege of reading unreadable folders")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def export_unprivileged(state: Path, out: Path) -> subprocess.CompletedProcess[str]:
    command = [*drop_privileges(), sys.executable, "-m", "clawtune", "agent", "export-training-data"]
    command += ["--agent-id", "my-agent", "--output", str(out), "--state-dir", str(state)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})


@pytest.mark.parametrize("unreadable", ["sessions", "agent", "agent-folder"])
def test_unreadable_folders_are_reported_not_a_traceback(tmp_path: Path, unreadable: str) -> None:
    state = make_state(tmp_path / "state")
    agent_dir = state / "agents" / "my-agent"
    (agent_dir / "agent").mkdir()
    folder = {"sessions": agent_dir / "sessions", "agent": agent_dir / "agent", "agent-folder": agent_dir}[unreadable]
    folder.chmod(0)
    try:
        result = export_unprivileged(state, tmp_path / "out")
    finally:
        folder.chmod(0o755)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert "cannot list this folder: Permission denied" in output
    if unreadable == "agent":  # the transcripts beside it are still exported
        assert result.returncode == 0, output
        report = json.loads((tmp_path / "out" / "export-report.json").read_text())
        assert report["skipped_input"]["by_reason"] == {"unreadable-folder": 1}
        assert str(folder) in report["skipped_input"]["first"][0]
    else:
        assert result.returncode == 2, output
        assert "no sessions found for agent 'my-agent'" in output and str(folder) in output


def test_symlink_loops_fifos_and_folders_named_like_transcripts_are_reported(tmp_path: Path) -> None:
    state = make_state(tmp_path / "state")
    sessions = state / "agents" / "my-agent" / "sessions"
    (sessions / "loop.jsonl").symlink_to("loop.jsonl")
    (sessions / "gone.jsonl").symlink_to("nowhere.jsonl")
    os.mkfifo(sessions / "pipe.jsonl")  # opening it for reading would block the export forever
    (sessions / "folder.jsonl").mkdir()
    (sessions / "cold").mkdir()
    os.mkfifo(sessions / "cold" / "archive.jsonl.zst")
    out = tmp_path / "out"
    assert export_sample(out, state) == 0
    report = json.loads((out / "export-report.json").read_text())
    assert report["examples_written"] == 2
    reasons = report["skipped_input"]["by_reason"]
    assert reasons == {"symlink-loop": 1, "broken-symlink": 1, "not-a-file": 3}, reasons
    first = "\n".join(report["skipped_input"]["first"])
    assert f"{sessions / 'pipe.jsonl'}: a FIFO (named pipe), not a file" in first
    assert f"{sessions / 'folder.jsonl'}: a folder named like a transcript" in first
    assert f"{sessions / 'loop.jsonl'}: a symbolic link that loops" in first
    assert f"{sessions / 'cold' / 'archive.jsonl.zst'}: a FIFO" in first
    # Named explicitly with --sessions, a FIFO is reported too, not opened.
    assert export_sample(tmp_path / "out2", state, "--sessions", str(sessions / "pipe.jsonl")) == 2


def big_session(path: Path, size: int) -> None:
    """A session whose tool result is one line of `size` characters (a whole table dumped by a tool)."""
    rows = ("row 12345, value 67890; " * (size // 24 + 1))[:size]
    entries = [
        HEADER | {"id": "big"},
        msg("a", None, "user", "Dump the sales table."),
        msg(
            "b",
            "a",
            "assistant",
            [{"type": "toolCall", "id": "c1", "name": "query_database", "arguments": {"query": "SELECT *"}}],
            stopReason="toolUse",
        ),
        msg("c", "b", "toolResult", [{"type": "text", "text": rows}], toolCallId="c1", toolName="query_database"),
        text("d", "c", "Here it is."),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for entry in entries:
            f.write(json.dumps(entry) + "\n")


def test_a_line_over_the_limit_is_skipped_with_a_flag(tmp_path: Path) -> None:
    state = make_state(tmp_path / "state")
    big_session(state / "agents" / "my-agent" / "sessions" / "big.jsonl", 3 * 1024 * 1024)
    out = tmp_path / "out"
    assert export_sample(out, state, "--max-line-mb", "1") == 0
    report = json.loads((out / "export-report.json").read_text())
    assert report["skipped_input"]["by_reason"]["line-too-long"] == 1
    assert any(
        "big.jsonl:4: line of 3.0 MB is over the 1 MB limit; skipped (--max-line-mb raises the limit)" in p
        for p in report["skipped_input"]["first"]
    )
    # The default limit (64 MB) lets it through.
    assert export_sample(tmp_path / "out2", state) == 0
    rows = [r for n in ("raw", "validation", "test") for r in read_jsonl(tmp_path / "out2" / f"{n}.jsonl")]
    assert max(len(m.get("content") or "") for r in rows for m in r["messages"]) == 3 * 1024 * 1024


def peak_rss_of_export(state: Path, out: Path) -> int:
    """The peak resident memory (bytes) of `clawtune agent export-training-data` on a state folder, in its own process."""
    # VmHWM, not getrusage: Linux carries ru_maxrss across exec, so a child forked from pytest would report pytest's.
    code = (
        "import re\n"
        "from clawtune.cli import main\n"
        f"rc = main(['agent', 'export-training-data', '--agent-id', 'my-agent', '--output', {str(out)!r}, "
        f"'--state-dir', {str(state)!r}, '--max-tokens', '1000000000'])\n"
        "status = open('/proc/self/status').read()\n"
        "print('PEAK', re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1), rc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    kilobytes, rc = result.stdout.split("PEAK ")[1].split()
    assert rc == "0", result.stderr
    return int(kilobytes) * 1024


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory is read from Linux's /proc")
def test_a_long_line_is_never_held_several_times_over(tmp_path: Path) -> None:
    """Peak memory of an export with a 48 MB line, over the same export without it, measured in one run: reading,
    parsing, converting, deduplicating, spooling and splitting hold the line about twice (its text, and one serialised
    form at a time). Before, the raw line, its stripped copy, the parser's copy and the parsed text were all held."""
    size = 48 * 1024 * 1024
    small = make_state(tmp_path / "small")
    big = make_state(tmp_path / "big")
    big_session(big / "agents" / "my-agent" / "sessions" / "big.jsonl", size)
    baseline = peak_rss_of_export(small, tmp_path / "out-small")
    peak = peak_rss_of_export(big, tmp_path / "out-big")
    assert peak - baseline < 2.5 * size, f"the line costs {(peak - baseline) / size:.2f}x its size"
    rows = [r for n in ("raw", "validation", "test") for r in read_jsonl(tmp_path / "out-big" / f"{n}.jsonl")]
    assert sum(len(m.get("content") or "") for r in rows for m in r["messages"]) >= size
