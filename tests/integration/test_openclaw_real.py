"""The real OpenClaw writes sessions (its SQLite store, zstd rows included); clawtune exports them.

Installs Node 24 (PyPI) and openclaw from npm into a cache on first use; skipped, saying so, only when the registry
cannot be reached. About a minute: each headless agent turn is 11-14 s, mostly OpenClaw's start-up.
"""

import json
import sqlite3

import pytest

from clawtune.cli import main
from clawtune.data.validate import validate_files

from ..conftest import read_jsonl
from .fake_openai import FakeOpenAI
from .openclaw_cli import OpenClaw, install_openclaw

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def openclaw_binary():
    return install_openclaw()


def test_real_openclaw_sessions_export_to_valid_training_data(tmp_path, openclaw_binary, capsys):
    oc = OpenClaw(openclaw_binary, tmp_path / "home")
    oc.run("setup", "--baseline")
    with FakeOpenAI() as fake:
        oc.use_model_server(fake.base_url)
        (oc.workspace / "HELLO.txt").write_text("The quarterly owner is dana.lee@example.com.\n")
        oc.turn("Hi there, who are you?")
        oc.turn("Please read HELLO.txt")
        oc.turn("Now run echo 42")
        # An event of 1024 bytes or more is stored zstd-compressed.
        oc.turn("Please keep these notes in mind: " + " ".join(f"note {i} about revenue." for i in range(120)))
        oc.turn("run false", session_key="agent:main:second")
        assert all(r.get("stream") is True for r in fake.requests), "OpenClaw always streams"

    store = oc.state / "agents" / "main" / "agent" / "openclaw-agent.sqlite"
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    zstd_rows = conn.execute("select count(*) from transcript_events where event_zstd is not null").fetchone()[0]
    conn.close()
    assert zstd_rows >= 1, "the long turn was stored as a zstd row"

    out = tmp_path / "ft-data"
    code = main(
        [
            "agent",
            "export-training-data",
            "--agent-id",
            "main",
            "--output",
            str(out),
            "--state-dir",
            str(oc.state),
            "--split",
            "100:0:0",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "export-report.json").read_text())
    assert report["sessions_read"] == 2 and report["skipped_input"]["total"] == 0
    assert validate_files([out / "raw.jsonl"]).ok
    examples = read_jsonl(out / "raw.jsonl")
    main_session = next(e for e in examples if e["metadata"]["session_key"] == "agent:main:main")
    messages = main_session["messages"]
    roles = [m["role"] for m in messages]
    assert roles[0] == "system" and roles.count("user") == 4 and roles.count("tool") == 2
    calls = [c["function"] for m in messages for c in m.get("tool_calls") or []]
    assert {"name": "read", "arguments": json.dumps({"path": "HELLO.txt"})} in calls
    assert {"name": "exec", "arguments": json.dumps({"command": "echo 42"})} in calls
    assert {t["function"]["name"] for t in main_session["tools"]} >= {"read", "exec"}
    # The transcript keeps the raw user text (no timestamp prefix, no internal context message).
    assert messages[1]["content"] == "Hi there, who are you?"
    assert not any("OPENCLAW_INTERNAL_CONTEXT" in json.dumps(m) for m in messages)
    assert any("notes in mind" in (m.get("content") or "") for m in messages), "the zstd row was read"
    assert "dana.lee@example.com" not in (out / "raw.jsonl").read_text()
    assert report["redactions"]["EMAIL"] >= 1
    second = next(e for e in examples if e["metadata"]["session_key"] == "agent:main:second")
    assert [s["exit_code"] for s in second["metadata"]["signals"] if s["type"] == "tool_error"] == [1]

    # The same session through OpenClaw's own trajectory bundle.
    exported = oc.run(
        "sessions",
        "export-trajectory",
        "--agent",
        "main",
        "--session-key",
        "agent:main:second",
        "--output",
        "bundle",
        "--json",
        cwd=oc.workspace,
    )
    bundle = _json_tail(exported.stdout)
    from_bundle = tmp_path / "from-bundle"
    assert (
        main(
            [
                "agent",
                "export-training-data",
                "--agent-id",
                "main",
                "--output",
                str(from_bundle),
                "--sessions",
                bundle["outputDir"],
                "--split",
                "100:0:0",
            ]
        )
        == 0
    )
    (bundled,) = read_jsonl(from_bundle / "raw.jsonl")
    strip = lambda ms: [{k: v for k, v in m.items() if k != "tool_call_id"} for m in ms]  # noqa: E731
    assert strip(bundled["messages"]) == strip(second["messages"])


def _json_tail(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{") :])


def test_registered_model_gets_the_real_agents_turns(tmp_path, openclaw_binary, capsys):
    """`clawtune openclaw register` edits the real config (with comments added by hand); OpenClaw validates it and
    sends the agent's next turn to the registered endpoint and model."""
    oc = OpenClaw(openclaw_binary, tmp_path / "home")
    oc.run("setup", "--baseline")
    config = oc.state / "openclaw.json"
    config.write_text("// hand-written note: keep me\n" + config.read_text().replace('"gateway"', '/* gw */ "gateway"'))
    with FakeOpenAI() as fake:
        args = ["openclaw", "register", "--model-id", "finance-agent", "--endpoint", fake.base_url]
        args += ["--config", str(config), "--agent", "main", "--primary", "--context-window", "128000"]
        assert main(args) == 0, capsys.readouterr().err
        text = config.read_text()
        assert "// hand-written note: keep me" in text and "/* gw */" in text
        assert main(args) == 0 and config.read_text() == text  # idempotent
        assert "Config valid" in oc.run("config", "validate").stdout
        oc.turn("Hi there, who are you?")
    assert fake.requests and all(r["model"] == "finance-agent" for r in fake.requests)
