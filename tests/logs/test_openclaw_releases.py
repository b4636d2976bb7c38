"""Stores written by the real OpenClaw releases (`tests/fixtures/openclaw-*`, recorded by
`scripts/record_openclaw_fixtures.py`) export every user turn, tool call and tool result exactly once."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from clawtune.cli import main
from clawtune.data.validate import validate_files

from ..conftest import read_jsonl

FIXTURES = Path(__file__).parent.parent / "fixtures"
RELEASES = ["openclaw-2026.7.35", "openclaw-2026.8.2", "openclaw-2026.9.6", "openclaw-upgraded-2026.7.35-2026.9.6"]
STORE = Path("agents/main/agent/openclaw-agent.sqlite")
ARCHIVE = Path("agents/main/session-sqlite-import-archive")


def export(state: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    args = ["agent", "export-training-data", "--agent-id", "main", "--output", str(out), "--state-dir", str(state)]
    assert main([*args, "--split", "100:0:0"]) == 0, capsys.readouterr().err
    assert validate_files([out / "raw.jsonl"]).ok
    return json.loads((out / "export-report.json").read_text()), read_jsonl(out / "raw.jsonl")


def turns(examples: list[dict[str, Any]]) -> tuple[Counter[Any], Counter[Any], Counter[Any]]:
    """(session key, user text), (tool call id, name, arguments) and answered call ids, counted over every example."""
    users: Counter[Any] = Counter()
    calls: Counter[Any] = Counter()
    results: Counter[Any] = Counter()
    for example in examples:
        key = example["metadata"]["session_key"]
        for m in example["messages"]:
            if m["role"] == "user":
                users[(key, m["content"])] += 1
            for call in m.get("tool_calls") or []:
                fn = call["function"]
                calls[(call["id"], fn["name"], json.dumps(json.loads(fn["arguments"]), sort_keys=True))] += 1
            if m["role"] == "tool":
                results[m["tool_call_id"]] += 1
    return users, calls, results


def expected_turns(expected: dict[str, Any]) -> tuple[Counter[Any], Counter[Any], Counter[Any]]:
    users = Counter((t["session_key"], t["content"]) for t in expected["user_turns"])
    calls = Counter(
        (c["id"], c["name"], json.dumps(json.loads(c["arguments"]), sort_keys=True)) for c in expected["tool_calls"]
    )
    return users, calls, Counter(c["id"] for c in expected["tool_calls"])


@pytest.mark.parametrize("release", RELEASES)
def test_every_turn_of_a_real_release_store_is_exported_exactly_once(
    tmp_path: Path, release: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fixture = FIXTURES / release
    expected = json.loads((fixture / "expected.json").read_text())
    state = tmp_path / "state"
    shutil.copytree(fixture / "state", state)  # the reader must not touch the committed files
    report, examples = export(state, tmp_path / "out", capsys)
    assert report["skipped_input"]["total"] == 0, report["skipped_input"]
    assert turns(examples) == expected_turns(expected)
    tool_errors = [s for e in examples for s in e["metadata"]["signals"] if s["type"] == "tool_error"]
    assert {s["tool"] for s in tool_errors} == {"exec", "read"}, "the failed command and the missing file"


def test_the_fixtures_are_what_each_release_writes() -> None:
    """What makes each store different (see shared/reference/openclaw-formats.md), checked on the recordings."""
    sessions = FIXTURES / "openclaw-2026.7.35/state/agents/main/sessions"
    jsonl = sorted(p for p in sessions.glob("*.jsonl") if not p.name.endswith(".trajectory.jsonl"))
    assert len(jsonl) == 2
    lines = [json.loads(line) for line in jsonl[0].read_text().splitlines()]
    assert lines[0]["type"] == "session" and lines[0]["version"] == 3 and len(lines[1]["id"]) == 8
    assert any("partialArgs" in json.dumps(line) for line in lines)

    for release, schema, zstd in (("openclaw-2026.8.2", 19, False), ("openclaw-2026.9.6", 23, True)):
        conn = sqlite3.connect(f"file:{FIXTURES / release / 'state' / STORE}?mode=ro&immutable=1", uri=True)
        columns = {r[1] for r in conn.execute("pragma table_info(transcript_events)")}
        assert conn.execute("select schema_version from schema_meta").fetchone()[0] == schema
        assert ("event_zstd" in columns) is zstd
        if zstd:
            assert conn.execute("select count(*) from transcript_events where event_zstd is not null").fetchone()[0]
        conn.close()

    upgraded = FIXTURES / "openclaw-upgraded-2026.7.35-2026.9.6" / "state"
    assert len(list((upgraded / ARCHIVE).glob("*.jsonl.imported-*"))) == 4  # two sessions and their trajectories


def test_a_session_in_the_store_and_in_the_upgrade_archive_is_exported_once_and_one_only_archived_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After `openclaw doctor --fix`, the imported JSONL stays in `session-sqlite-import-archive/`: those sessions come
    from the store once; one that only the archive holds (its import lost, say) is exported as well."""
    fixture = FIXTURES / "openclaw-upgraded-2026.7.35-2026.9.6"
    expected = json.loads((fixture / "expected.json").read_text())
    state = tmp_path / "state"
    shutil.copytree(fixture / "state", state)
    archived = sorted((state / ARCHIVE).glob("agent_main_second.*[0-9a-f].jsonl.imported-*"))[0]
    (call_id,) = [c["id"] for c in expected["tool_calls"] if "MISSING" in c["arguments"]]
    lost = "0123abcd-0000-4000-8000-000000000001"
    text = archived.read_text().replace(archived.name.split(".")[1], lost)
    text = text.replace("MISSING.txt", "LOST.txt").replace(call_id, "call_lost1")
    (state / ARCHIVE / f"agent_main_lost.{lost}.jsonl.imported-1796209332649").write_text(text)

    report, examples = export(state, tmp_path / "out", capsys)
    assert report["sessions_read"] == 3 and len(report["sessions_found_twice"]) == 2
    lost_example = next(e for e in examples if e["metadata"]["session_id"] == lost)
    assert lost_example["metadata"]["source"].startswith(str(state / ARCHIVE))
    users, calls, results = expected_turns(expected)
    users[(lost_example["metadata"]["session_key"], "Please read LOST.txt")] += 1
    calls[("call_lost1", "read", '{"path": "LOST.txt"}')] += 1
    results["call_lost1"] += 1
    assert turns(examples) == (users, calls, results)


def test_an_agent_folder_given_as_sessions_reads_the_store_and_the_archive_not_the_lock_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixture = FIXTURES / "openclaw-upgraded-2026.7.35-2026.9.6"
    state = tmp_path / "state"
    shutil.copytree(fixture / "state", state)
    for lock in ("openclaw-agent.sqlite.reindex-lock.sqlite", "openclaw-agent.sqlite.generation-lock.sqlite"):
        conn = sqlite3.connect(state / STORE.parent / lock)  # OpenClaw keeps these beside its store
        conn.execute("create table lock_owner (pid integer)")
        conn.close()
    out = tmp_path / "out"
    args = ["agent", "export-training-data", "--agent-id", "main", "--output", str(out), "--split", "100:0:0"]
    assert main([*args, "--sessions", str(state / "agents" / "main")]) == 0, capsys.readouterr().err
    report = json.loads((out / "export-report.json").read_text())
    assert report["skipped_input"]["total"] == 0 and len(report["sessions_found_twice"]) == 2
    assert turns(read_jsonl(out / "raw.jsonl")) == expected_turns(json.loads((fixture / "expected.json").read_text()))
