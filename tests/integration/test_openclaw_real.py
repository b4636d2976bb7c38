"""The real OpenClaw writes sessions (its SQLite store at schema 19 and 23, zstd rows included); clawtune exports them,
and serves the agent's turns after a `clawtune openclaw register` with defaults only.

Installs Node 24 (PyPI) and each openclaw release from npm into a cache on first use; skipped, saying so, only when the
registry cannot be reached. A few minutes: each headless agent turn is 11-14 s, mostly OpenClaw's start-up.
"""

import json
import sqlite3

import pytest

from clawtune.cli import main
from clawtune.data.validate import validate_files

from ..conftest import read_jsonl
from .fake_openai import FakeOpenAI
from .openclaw_cli import OPENCLAW_VERSION, OpenClaw, install_openclaw

pytestmark = pytest.mark.integration
# The releases that write the SQLite store: schema 19 (event_json only) and schema 23 (zstd rows).
STORE_RELEASES = ["2026.8.2", "2026.9.6"]
OUTPUT_LIMIT = 24  # server.max_tokens_limit of the serve test


@pytest.fixture(scope="module")
def openclaw_binary():
    return install_openclaw()


@pytest.fixture(scope="module", params=STORE_RELEASES)
def release(request):
    """(version, binary) of each release that wrote a different SQLite store."""
    return request.param, install_openclaw(request.param)


def test_real_openclaw_sessions_export_to_valid_training_data(tmp_path, release, capsys):
    version, binary = release
    oc = OpenClaw(binary, tmp_path / "home")
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
    schema = conn.execute("select schema_version from schema_meta").fetchone()[0]
    columns = {r[1] for r in conn.execute("pragma table_info(transcript_events)")}
    if version == "2026.8.2":
        assert schema == 19 and "event_zstd" not in columns, "2026.8.2 stores every event as plain event_json"
    else:
        assert schema == 23
        zstd_rows = conn.execute("select count(*) from transcript_events where event_zstd is not null").fetchone()[0]
        assert zstd_rows >= 1, "the long turn was stored as a zstd row"
    conn.close()

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
    assert any("notes in mind" in (m.get("content") or "") for m in messages), "the long turn was read"
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


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, sample_state):
    """The tiny model fine-tuned for two steps on the sample agent and exported as an adapter (once per module)."""
    import yaml

    from ..conftest import export_sample, write_jsonl

    tmp_path = tmp_path_factory.mktemp("tiny-export")
    data = tmp_path / "data"
    export_sample(data, sample_state, "--date-range", "2026-04-01:2026-05-20")
    write_jsonl(data / "small.jsonl", read_jsonl(data / "raw.jsonl")[:8])
    train_config = {
        "base_model": "clawtune/tiny-agent",
        "method": "lora",
        "data": {"train": str(data / "small.jsonl")},
        "lora": {"r": 8, "alpha": 16, "target_modules": "all-linear"},
        "training": {"batch_size": 2, "epochs": 1, "learning_rate": 0.005, "warmup_steps": 0},
        "output_dir": str(tmp_path / "ft"),
        "tracking": {"tensorboard": False},
    }
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(train_config))
    assert main(["ft", "train", "--config", str(tmp_path / "ft.yaml"), "--max-steps", "2"]) == 0
    assert main(["ft", "export", "--model-dir", str(tmp_path / "ft"), "--output", str(tmp_path / "export")]) == 0
    return tmp_path / "export"


# What each release sends where. 2026.8.2 only to the forwarded engine: its prompt and tool schemas come to 51,608
# tokens of the tiny model's tokenizer (2026.9.6's: 26,347), more than that model's context of 32,768 (the base model
# answers context_length_exceeded), and still 32,573 with the fine-tune's short prompt: too close to the edge to test on.
SERVED = {OPENCLAW_VERSION: ("engine-tools", "tiny-ft", "tiny-base"), "2026.8.2": ("engine-tools",)}


@pytest.mark.parametrize("version", list(SERVED))
def test_real_openclaw_agent_turns_through_clawtune_serve(tmp_path, version, tiny_export, capsys):
    """The whole loop with the real agent: OpenClaw, pointed at `clawtune serve` by `clawtune openclaw register` with
    defaults only (the limits come from the server's /v1/models), completes turns with tools (a forwarded engine that
    calls tools, the fine-tuned tiny adapter, the tiny base model taking OpenClaw's whole 48,000-character prompt),
    every request lands in the log, and the turns OpenClaw recorded export back into training data."""
    import sqlite3

    import yaml

    from clawtune.openclaw import json5
    from clawtune.serve.app import Gateway, Server
    from clawtune.serve.config import load

    openclaw_binary = install_openclaw(version)
    oc = OpenClaw(openclaw_binary, tmp_path / "home")
    oc.run("setup", "--baseline")
    (oc.workspace / "HELLO.txt").write_text("The quarterly owner is the finance team.\n")
    with FakeOpenAI() as fake:
        models = {
            "models": [
                {"id": "engine-tools", "provider": "openai", "model": "fake-model", "endpoint": fake.base_url},
                {
                    "id": "tiny-ft",
                    "provider": "clawtune",
                    "model": "clawtune/tiny-agent",
                    "adapters": {"ft": {"path": str(tiny_export)}},
                },
                {"id": "tiny-base", "provider": "clawtune", "model": "clawtune/tiny-agent", "system_prompt": "keep"},
            ],
            # A short output limit keeps the tiny model's CPU answers short; register reads it from /v1/models.
            "server": {"port": 0, "data_dir": str(tmp_path / "serve-data"), "max_tokens_limit": OUTPUT_LIMIT},
        }
        (tmp_path / "models.yaml").write_text(yaml.safe_dump(models))
        with Server(Gateway(load(tmp_path / "models.yaml"))) as server:
            config = str(oc.state / "openclaw.json")
            for model_id in SERVED[version]:
                register = [
                    "openclaw",
                    "register",
                    "--model-id",
                    model_id,
                    "--endpoint",
                    server.url,
                    "--config",
                    config,
                ]
                register += ["--agent", "main", "--primary"]  # contextWindow and maxTokens: from the server
                assert main(register) == 0, capsys.readouterr().err
                assert "Config valid" in oc.run("config", "validate").stdout
                if model_id == "engine-tools":
                    oc.turn("Please read HELLO.txt")  # forwarded: the engine calls read, OpenClaw runs it, then answers
                else:
                    oc.turn("Hi there, who are you?", session_key=f"agent:main:{model_id}")
            log = server.gateway.log.path
    conn = sqlite3.connect(log)
    rows = conn.execute(
        "select model, status, stream, prompt_tokens, prompt_tokens_original, finish_reason, request_json "
        "from requests order by created"
    ).fetchall()
    conn.close()
    assert rows and all(r[1] == 200 and r[2] == 1 for r in rows), [r[:6] for r in rows]
    by_model = {}
    for row in rows:
        by_model.setdefault(row[0], []).append(row)
    # register wrote what the server publishes: the tiny model's context and the server's output limit, and
    # OpenClaw never asked for more.
    registered = json5.loads((oc.state / "openclaw.json").read_text())["models"]["providers"]["clawtune"]["models"]
    limits = {m["id"]: (m.get("contextWindow"), m.get("maxTokens")) for m in registered}
    expected_limits = {
        "engine-tools": (None, OUTPUT_LIMIT),  # the fake engine's /v1/models states no context
        "tiny-ft": (32768, OUTPUT_LIMIT),
        "tiny-base": (32768, OUTPUT_LIMIT),
    }
    assert limits == {m: expected_limits[m] for m in SERVED[version]}
    asked = [json.loads(r[6]).get("max_completion_tokens") for r in rows]
    assert all(isinstance(a, int) and a <= OUTPUT_LIMIT for a in asked), asked

    out = tmp_path / "loop-data"
    args = ["agent", "export-training-data", "--agent-id", "main", "--output", str(out), "--state-dir", str(oc.state)]
    assert main([*args, "--split", "100:0:0"]) == 0, capsys.readouterr().err
    assert validate_files([out / "raw.jsonl"]).ok
    examples = read_jsonl(out / "raw.jsonl")
    assert len(examples) >= len(SERVED[version])
    calls = [c["function"]["name"] for e in examples for m in e["messages"] for c in m.get("tool_calls") or []]
    assert "read" in calls
    assert len(by_model["engine-tools"]) >= 2 and by_model["engine-tools"][0][5] == "tool_calls"
    assert any('"role": "tool"' in r[6] or '"role":"tool"' in r[6] for r in by_model["engine-tools"])
    if version != OPENCLAW_VERSION:
        return

    first = json.loads(by_model["tiny-ft"][0][6])
    assert len(first["messages"][0]["content"]) > 20_000 and len(first["tools"]) >= 5, "OpenClaw's real request"
    ft = by_model["tiny-ft"][0]
    assert ft[4] > 5 * ft[3], "the adapter's short system prompt replaced OpenClaw's"
    base = by_model["tiny-base"][0]
    assert base[3] > 5000 and base[3] == base[4], "the tiny model took OpenClaw's whole prompt"
