"""Re-record `tests/fixtures/openclaw-*`: session stores written by the real OpenClaw releases, driven by a fake model.

Each release that wrote a different store gets the same short script of agent turns (a plain turn, a tool call, a tool
that fails, a second session whose tool call errors), answered by the scripted fake model of the integration tests
(`tests/integration/fake_openai.py`), so nothing in the fixtures is real. Recorded:

- `openclaw-2026.7.35/`: JSONL transcripts (`agents/main/sessions/`), header version 3
- `openclaw-2026.8.2/`: the SQLite store at schema version 19 (`event_json` only)
- `openclaw-2026.9.6/`: the SQLite store at schema version 23, a long turn stored as a zstd row
- `openclaw-upgraded-2026.7.35-2026.9.6/`: the 2026.7.35 state after 2026.9.6's `openclaw doctor --fix --non-interactive`
  (the JSONL imported into the store, the originals in `session-sqlite-import-archive/`), then one more 2026.9.6 turn

Beside each `state/` folder, `expected.json` lists what the driver sent and what the fake model called: every user turn,
every tool call. The tests export each store and check that each comes out exactly once.

Usage (Node 24 from the dev extras; the releases install into ~/.cache/clawtune on first use, about 30 s each):

    .venv/bin/python scripts/record_openclaw_fixtures.py [--out tests/fixtures] [--work /tmp/clawtune-openclaw-record]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.fake_openai import FakeOpenAI  # noqa: E402
from tests.integration.openclaw_cli import OpenClaw, install_openclaw  # noqa: E402

MAIN = "agent:main:main"
# (session key, message): the same turns for every release.
TURNS = [
    (MAIN, "Hi there, who are you?"),
    (MAIN, "Please read HELLO.txt"),
    (MAIN, "Now run false"),  # exec exits 1: a failed tool
    ("agent:main:second", "Please read MISSING.txt"),  # no such file: a tool error
]
# An event of 1024 bytes or more is stored zstd-compressed from schema 23 on.
LONG_TURN = (MAIN, "Please keep these notes in mind: " + " ".join(f"note {i} about revenue." for i in range(60)))
AFTER_UPGRADE = (MAIN, "Hello again after the upgrade")
STORE = Path("agents/main/agent/openclaw-agent.sqlite")


def record(release: str, work: Path, turns: list[tuple[str, str]], prefix: str) -> tuple[OpenClaw, dict[str, Any]]:
    """A fresh OpenClaw home of `release`, the turns played against the fake model; returns it and what was sent."""
    home = work / release
    shutil.rmtree(home, ignore_errors=True)
    oc = OpenClaw(install_openclaw(release), home)
    oc.run("setup", "--baseline")
    (oc.workspace / "HELLO.txt").write_text("The quarterly owner is the finance team.\n")
    expected: dict[str, Any] = {"user_turns": [], "tool_calls": []}
    play(oc, turns, prefix, expected)
    if not expected["tool_calls"]:
        raise SystemExit(f"{oc.binary}: the fake model made no tool calls (were read and exec offered?)")
    return oc, expected


def play(oc: OpenClaw, turns: list[tuple[str, str]], prefix: str, expected: dict[str, Any]) -> None:
    with FakeOpenAI(call_prefix=prefix) as fake:
        oc.use_model_server(fake.base_url)
        for key, message in turns:
            oc.turn(message, session_key=None if key == MAIN else key)
            expected["user_turns"].append({"session_key": key, "content": message})
    expected["tool_calls"] += fake.calls


def save(oc: OpenClaw, out: Path, release: str, expected: dict[str, Any], parts: list[Path], note: str) -> None:
    """Copy the transcript parts of the state (relative paths) and write expected.json."""
    shutil.rmtree(out, ignore_errors=True)
    for part in parts:
        source = oc.state / part
        if not source.exists():
            raise SystemExit(f"{source}: missing after the recording")
        target = out / "state" / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.lock"))
        elif source.suffix == ".sqlite":
            copy_store(source, target)
        else:
            shutil.copy2(source, target)
    meta = {
        "release": release,
        "recorded": datetime.now(UTC).date().isoformat(),
        "how": note,
        "agent_id": "main",
        **expected,
    }
    (out / "expected.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def copy_store(source: Path, target: Path) -> None:
    """The store as one file: SQLite's backup copies the pages as OpenClaw wrote them (WAL folded in), without
    re-inserting rows (the tables' CHECKs call octet_length(), which Python's older SQLite lacks)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # a read-only checkout needs no -wal/-shm beside it
    finally:
        src.close()
        dst.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures")
    parser.add_argument("--work", type=Path, default=Path("/tmp/clawtune-openclaw-record"))
    args = parser.parse_args(argv)
    out: Path = args.out
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)

    oc, expected = record("2026.7.35", work, TURNS, "a")
    sessions = Path("agents/main/sessions")
    save(oc, out / "openclaw-2026.7.35", "2026.7.35", expected, [sessions], "JSONL transcripts")
    # The same home, upgraded: 2026.9.6 imports the JSONL into its store and archives the originals.
    upgraded = OpenClaw(install_openclaw("2026.9.6"), oc.home)
    upgraded.run("doctor", "--fix", "--non-interactive")
    play(upgraded, [AFTER_UPGRADE], "u", expected)
    archive = Path("agents/main/session-sqlite-import-archive")
    save(
        upgraded,
        out / "openclaw-upgraded-2026.7.35-2026.9.6",
        "2026.7.35 -> 2026.9.6",
        expected,
        [STORE, archive],
        "2026.7.35 turns, then 2026.9.6 `openclaw doctor --fix --non-interactive`, then one 2026.9.6 turn",
    )

    oc, expected = record("2026.8.2", work, TURNS, "b")
    save(oc, out / "openclaw-2026.8.2", "2026.8.2", expected, [STORE], "SQLite store, schema 19")

    oc, expected = record("2026.9.6", work, [*TURNS, LONG_TURN], "c")
    save(oc, out / "openclaw-2026.9.6", "2026.9.6", expected, [STORE], "SQLite store, schema 23, one zstd row")
    for folder in sorted(out.glob("openclaw-*")):
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"{folder}: {size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
