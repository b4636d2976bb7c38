"""`clawtune openclaw register`: JSON5 edits that keep comments and settings, idempotent, with a backup."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clawtune.cli import main
from clawtune.openclaw import json5
from clawtune.openclaw.register import Registration, apply, base_url
from clawtune.serve.app import Gateway, Server

from .test_serve import ScriptedEngine, _config

CONFIG = """// OpenClaw config, edited by hand
{
  agents: {
    defaults: {
      workspace: '~/.openclaw/workspace', // where the agent works
      model: "anthropic/claude-sonnet-4",
    },
    entries: {
      main: { name: "main" },
    },
  },
  /* channels the gateway listens on */
  channels: { telegram: { enabled: true, token: "${TELEGRAM_TOKEN}" } },
  models: {
    mode: 'merge',
    providers: {
      anthropic: { apiKey: "${ANTHROPIC_API_KEY}", api: "anthropic-messages" },
    },
  },
  gateway: { mode: "local", port: 18789, },
}
"""


def test_json5_reads_what_openclaw_writes() -> None:
    assert json5.loads(CONFIG)["channels"]["telegram"]["token"] == "${TELEGRAM_TOKEN}"
    assert json5.loads("{a: +1, b: .5, c: 0x1F, d: [1, 2,], e: 'it\\'s', f: Infinity, // c\n}") == {
        "a": 1,
        "b": 0.5,
        "c": 31,
        "d": [1, 2],
        "e": "it's",
        "f": float("inf"),
    }
    with pytest.raises(json5.JSON5Error, match=r"cfg: line 3, column 3: expected ',' or '}'"):
        json5.loads("{\n  a: 1\n  b: 2\n}", "cfg")


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=10,
    )
)
def test_json5_round_trips_json(value: object) -> None:
    assert json5.loads(json.dumps(value, indent=2)) == value
    assert json5.loads(json5.dumps(value)) == value


@pytest.mark.parametrize("step", ["    ", "\t", "  "])
def test_json5_writes_with_the_files_own_indent(step: str) -> None:
    """A replaced or inserted value takes the file's indent step (4 spaces, tabs, 2 spaces), wherever it lands: the
    whole file reads as if written by one hand, and a second run changes nothing."""
    before = {
        "agents": {"defaults": {"model": "anthropic/claude-sonnet-4"}, "list": [{"id": "ops"}, {"id": "main"}]},
        "models": {"providers": {}},
    }
    text = json.dumps(before, indent=step)
    model = {"primary": "clawtune/m", "fallbacks": ["anthropic/claude-sonnet-4"]}
    out = json5.set_value(text, ["agents", "defaults", "model"], model)  # a string replaced by an object
    out = json5.set_value(out, ["agents", "list", 1, "model"], {"primary": "clawtune/m"})  # a key added in an item
    out = json5.set_value(out, ["models", "providers", "clawtune"], {"api": "openai-completions"})  # in an empty {}
    expected = {
        "agents": {
            "defaults": {"model": model},
            "list": [{"id": "ops"}, {"id": "main", "model": {"primary": "clawtune/m"}}],
        },
        "models": {"providers": {"clawtune": {"api": "openai-completions"}}},
    }
    # exactly what json.dumps writes with that indent (but for the short list of plain values, kept on one line)
    written = json.dumps(expected, indent=step)
    assert out == written.replace(
        f'[\n{step * 5}"anthropic/claude-sonnet-4"\n{step * 4}]', '["anthropic/claude-sonnet-4"]'
    )
    assert json5.set_value(out, ["agents", "list", -1, "model"], {"primary": "clawtune/m"}) == out


def test_json5_paths_take_array_indices() -> None:
    text = '{\n  list: [\n    { id: "a", n: 1 },\n    { id: "b" },\n  ],\n  // kept\n}'
    out = json5.set_value(text, ["list", 0, "n"], 2)
    assert out == text.replace("n: 1", "n: 2")
    out = json5.set_value(out, ["list", -1, "id"], "c")
    assert json5.loads(out) == {"list": [{"id": "a", "n": 2}, {"id": "c"}]} and "// kept" in out
    assert json5.find(json5.parse(out), ["list", 1, "id"]).value == "c"  # type: ignore[union-attr]
    assert json5.find(json5.parse(out), ["list", 5]) is None
    with pytest.raises(json5.JSON5Error, match=r"cfg: list has 2 items, no item 2"):
        json5.set_value(out, ["list", 2, "id"], "x", "cfg")
    with pytest.raises(json5.JSON5Error, match=r"cfg: list\[0\]\.id is not an array"):
        json5.set_value(out, ["list", 0, "id", 0], "x", "cfg")
    with pytest.raises(json5.JSON5Error, match=r"cfg: list is not an object"):
        json5.set_value(out, ["list", "id"], "x", "cfg")


def test_register_keeps_everything_else_and_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "openclaw.json"
    path.write_text(CONFIG)
    args = ["openclaw", "register", "--model-id", "finance-agent", "--endpoint", "http://127.0.0.1:8000"]
    args += ["--config", str(path), "--agent", "main", "--primary", "--context-window", "8192", "--max-tokens", "2048"]
    assert main(args) == 0  # both given: the endpoint is not asked
    first = path.read_text()
    assert "registered clawtune/finance-agent" in capsys.readouterr().out
    backups = list(tmp_path.glob("openclaw.json.clawtune-*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == CONFIG

    for comment in ("// OpenClaw config, edited by hand", "// where the agent works", "/* channels the gateway"):
        assert comment in first
    data = json5.loads(first)
    before = json5.loads(CONFIG)
    provider = data["models"]["providers"]["clawtune"]
    assert provider["baseUrl"] == "http://127.0.0.1:8000/v1" and provider["api"] == "openai-completions"
    assert provider["models"][0]["id"] == "finance-agent" and provider["models"][0]["contextWindow"] == 8192
    assert data["agents"]["entries"]["main"]["model"] == {"primary": "clawtune/finance-agent"}
    # Everything else is untouched.
    del data["models"]["providers"]["clawtune"], data["agents"]["entries"]["main"]["model"]
    assert data == before

    assert main(args) == 0
    assert path.read_text() == first and "already registered" in capsys.readouterr().out
    assert len(list(tmp_path.glob("openclaw.json.clawtune-*.bak"))) == 1, "no change, no new backup"


def test_dry_run_prints_a_diff_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "openclaw.json"
    path.write_text(CONFIG)
    args = ["openclaw", "register", "--model-id", "m", "--endpoint", "http://h:9/v1", "--config", str(path)]
    assert main([*args, "--primary", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert '+      model: {\n+        primary: "clawtune/m",\n+        fallbacks: ["anthropic/claude-sonnet-4"],' in out
    assert "dry run" in out and path.read_text() == CONFIG and not list(tmp_path.glob("*.bak"))


def test_primary_keeps_the_old_model_as_fallback_and_list_agents() -> None:
    text = apply(CONFIG, Registration("m", "http://h:1", primary=True), "c")
    assert json5.loads(text)["agents"]["defaults"]["model"] == {
        "primary": "clawtune/m",
        "fallbacks": ["anthropic/claude-sonnet-4"],
    }
    again = apply(text, Registration("m2", "http://h:1", primary=True), "c")
    assert json5.loads(again)["agents"]["defaults"]["model"]["fallbacks"] == ["clawtune/m", "anthropic/claude-sonnet-4"]
    listed = '{ agents: { list: [ { id: "ops" }, { id: "main", model: "openai/gpt-4o" } ] } }'
    out = json5.loads(apply(listed, Registration("m", "http://h:1", agent="main"), "c"))
    assert out["agents"]["list"][1]["model"] == {"primary": "clawtune/m", "fallbacks": ["openai/gpt-4o"]}
    assert out["agents"]["list"][0] == {"id": "ops"}


def test_plain_json_stays_json_and_ollama_urls() -> None:
    text = apply(json.dumps(json5.loads(CONFIG), indent=2), Registration("m", "http://h:11434/v1", api="ollama"), "c")
    config = json.loads(text)  # still strict JSON
    assert config["models"]["providers"]["clawtune"]["baseUrl"] == "http://h:11434"
    assert "apiKey" not in config["models"]["providers"]["clawtune"]
    assert base_url("http://h:8000/v1/chat/completions", "openai-completions") == "http://h:8000/v1"
    with pytest.raises(Exception, match="--api must be one of"):
        apply("{}", Registration("m", "http://h", api="grpc"), "c")


def test_a_broken_config_is_reported_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "openclaw.json"
    path.write_text("{ agents: { defaults: } }")
    assert main(["openclaw", "register", "--model-id", "m", "--endpoint", "http://h", "--config", str(path)]) == 2
    assert "line 1, column 23: unexpected '}'" in capsys.readouterr().err
    assert path.read_text() == "{ agents: { defaults: } }"


def _model(path: Path) -> dict[str, object]:
    return json5.loads(path.read_text())["models"]["providers"]["clawtune"]["models"][0]


def test_register_writes_the_limits_the_server_publishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = ScriptedEngine()
    engine.max_context = 32768
    config = _config(tmp_path, server={"api_keys": ["secret"], "max_tokens_limit": 4096})
    path = tmp_path / "openclaw.json"
    with Server(Gateway(config, engine=engine)) as server:  # type: ignore[arg-type]
        url = server.url + "/v1"
        args = ["openclaw", "register", "--model-id", "general", "--endpoint", url, "--config", str(path)]
        assert main(args) == 0  # no key for a server that wants one: says so, writes what is safe
        out = capsys.readouterr().out
        assert f"{url}/models answered 401 (the server wants an API key: pass --api-key)" in out
        assert "contextWindow not written" in out and "maxTokens 4096" in out
        assert _model(path)["maxTokens"] == 4096 and "contextWindow" not in _model(path)

        assert main([*args, "--api-key", "secret"]) == 0
        out = capsys.readouterr().out
        assert f"contextWindow 32768: from {url}/models" in out and f"maxTokens 4096: from {url}/models" in out
        assert (_model(path)["contextWindow"], _model(path)["maxTokens"]) == (32768, 4096)
        monkeypatch.setenv("CLAWTUNE_TEST_KEY", "secret")
        assert main([*args, "--api-key", "${CLAWTUNE_TEST_KEY}", "--max-tokens", "24"]) == 0  # a flag overrides
        assert (_model(path)["contextWindow"], _model(path)["maxTokens"]) == (32768, 24)
        assert json5.loads(path.read_text())["models"]["providers"]["clawtune"]["apiKey"] == "${CLAWTUNE_TEST_KEY}"
        assert capsys.readouterr().err == ""  # a context OpenClaw works in: no warning

        ghost = ["openclaw", "register", "--model-id", "ghost", "--endpoint", url, "--api-key", "secret"]
        assert main([*ghost, "--config", str(tmp_path / "ghost.json"), "--dry-run"]) == 0
        assert "does not list a model 'ghost' (it serves: finance, finance-ab, finance-v2, general)" in (
            capsys.readouterr().out
        )


@pytest.mark.parametrize(
    ("context", "warning"),
    [(8192, "under 16,000 tokens: OpenClaw's own prompt"), (2000, "under 4,000 tokens: OpenClaw refuses")],
)
def test_register_warns_about_a_context_openclaw_cannot_work_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], context: int, warning: str
) -> None:
    engine = ScriptedEngine()
    engine.max_context = context
    path = tmp_path / "openclaw.json"
    with Server(Gateway(_config(tmp_path), engine=engine)) as server:  # type: ignore[arg-type]
        args = ["openclaw", "register", "--model-id", "general", "--endpoint", server.url, "--config", str(path)]
        assert main(args) == 0
    captured = capsys.readouterr()
    assert warning in captured.err and "Serve the model with a longer context" in captured.err
    assert (_model(path)["contextWindow"], _model(path)["maxTokens"]) == (context, min(1000, context))


def test_register_without_a_reachable_endpoint_says_what_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "openclaw.json"
    args = ["openclaw", "register", "--model-id", "m", "--endpoint", f"http://127.0.0.1:{port}", "--config", str(path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"cannot read http://127.0.0.1:{port}/v1/models" in out
    assert "contextWindow not written" in out and "OpenClaw assumes 200,000 tokens" in out
    assert "maxTokens 4096" in out and "clawtune serve's default output limit" in out
    assert _model(path)["maxTokens"] == 4096 and "contextWindow" not in _model(path)
    assert main([*args, "--context-window", "65536"]) == 0
    assert (_model(path)["contextWindow"], _model(path)["maxTokens"]) == (65536, 4096)


def test_register_reads_vllms_max_model_len(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from .integration.fake_openai import FakeOpenAI

    path = tmp_path / "openclaw.json"
    with FakeOpenAI(card={"max_model_len": 16384}) as vllm:
        args = ["openclaw", "register", "--model-id", "fake-model", "--endpoint", vllm.base_url, "--config", str(path)]
        assert main(args) == 0
    out = capsys.readouterr().out
    assert f"contextWindow 16384: from {vllm.base_url}/models" in out and "states no output limit; 4096 at most" in out
    assert (_model(path)["contextWindow"], _model(path)["maxTokens"]) == (16384, 4096)
