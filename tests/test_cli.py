"""What a user notices first: a fast --help, no heavy imports, and errors without tracebacks."""

import json
import sqlite3
import subprocess
import sys

import pytest

from clawtune.cli import main
from clawtune.data.build import TrainingDataOptions, export_training_data
from clawtune.logs import sessions as sessions_module
from clawtune.sample.agent import STORE_SCHEMA

from .conftest import HEADER, export_sample, msg, read_jsonl, text, write_jsonl


def test_help_lists_working_commands_and_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from clawtune.cli import main\n"
        "rc = main(['--help'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'rich.progress', 'orjson', 'openai', 'gguf') "
        "if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    for command in ("agent", "ft", "openclaw", "serve", "chat", "demo", "ui"):
        assert command in out


def test_export_path_never_imports_torch(tmp_path, sample_state):
    code = (
        "import sys\nfrom clawtune.cli import main\n"
        f"rc = main(['agent', 'export-training-data', '--agent-id', 'my-agent', '--output', {str(tmp_path)!r}, '--state-dir', {str(sample_state)!r}])\n"
        "assert rc == 0, rc\nprint('TORCH', 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "TORCH False" in out


def test_missing_state_folder_is_one_clear_error(tmp_path, capsys):
    assert export_sample(tmp_path / "o", tmp_path, agent="nobody") == 2
    err = capsys.readouterr().err
    assert "no sessions found for agent 'nobody'" in err and str(tmp_path / "agents" / "nobody") in err
    assert "Traceback" not in err


def test_unknown_option_is_a_usage_error(capsys):
    assert main(["agent", "export-training-data", "--agent-idd", "x"]) == 2
    assert "No such option" in capsys.readouterr().err


def test_near_duplicates_are_dropped(tmp_path):
    def session(sid, question):
        return [HEADER | {"id": sid}, msg("a", None, "user", question), text("b", "a", "It was $5.")]

    folder = tmp_path / "s"
    write_jsonl(folder / "s1.jsonl", session("s1", "What were sales in May?"))
    write_jsonl(folder / "s2.jsonl", session("s2", "what were sales in may"))
    write_jsonl(folder / "s3.jsonl", session("s3", "What were sales in June?"))
    report = export_training_data(
        TrainingDataOptions(agent_id="a", output=tmp_path / "o", sessions=[folder], split="1:0:0")
    )
    assert report["dropped"] == {"near_duplicate": 1}
    assert len(read_jsonl(tmp_path / "o" / "raw.jsonl")) == 2


def test_locked_store_is_reported_and_the_rest_exported(tmp_path, monkeypatch):
    monkeypatch.setattr(sessions_module, "SQLITE_BUSY_TIMEOUT_S", 0.1)
    store = tmp_path / "openclaw-agent.sqlite"
    writer = sqlite3.connect(store, isolation_level=None)
    writer.executescript(STORE_SCHEMA)
    writer.execute("begin exclusive")  # OpenClaw in the middle of a write (rollback-journal mode)
    good = write_jsonl(tmp_path / "s1.jsonl", [HEADER, msg("a", None, "user", "hi"), text("b", "a", "hello")])
    try:
        report = export_training_data(
            TrainingDataOptions(agent_id="a", output=tmp_path / "o", sessions=[store, good], split="1:0:0")
        )
    finally:
        writer.close()
    assert report["examples_written"] == 1
    (problem,) = report["skipped_input"]["first"]
    assert str(store) in problem and "locked" in problem


def test_report_is_written_with_every_count(tmp_path, sample_state):
    out = tmp_path / "o"
    assert export_sample(out, sample_state) == 0
    report = json.loads((out / "export-report.json").read_text())
    for key in (
        "sessions_read",
        "examples_written",
        "splits",
        "dropped",
        "skipped_input",
        "redactions",
        "tool_call_share",
        "system_prompt",
    ):
        assert key in report
    assert report["skipped_input"]["by_reason"] == {"truncated-json": 1}, "the sample's crash-truncated line"
    assert report["conversion"]["compactions"] == 1 and report["conversion"]["entries_off_branch"] > 0
    assert report["conversion"]["images_dropped"] > 0 and report["conversion"]["thinking_blocks_dropped"] > 0


def test_strict_fails_the_run_at_the_first_bad_line(tmp_path, sample_state, capsys):
    assert export_sample(tmp_path / "o", sample_state, "--strict") == 2
    err = capsys.readouterr().err
    assert "truncated JSON" in err and ".jsonl:" in err and "Traceback" not in err


def test_invalid_training_file_does_not_raise(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage\n[1,2]\n")
    assert main(["ft", "validate", str(path), str(tmp_path / "missing.jsonl")]) == 1
    err = capsys.readouterr().err
    assert f"{path}:1: line contains NUL bytes" in err and f"{path}:2: line is JSON but not an object" in err
    assert f"{tmp_path / 'missing.jsonl'}: no such file" in err


@pytest.mark.slow
def test_demo_runs_every_stage_that_exists(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --output, as `make demo` gives
    assert main(["demo", "--output", "demo-out", "--train-steps", "2", "--eval-limit", "4"]) == 0
    tmp_path = tmp_path / "demo-out"
    out = capsys.readouterr().out
    stages = ("export-training-data", "ft validate", "ft augment-data", "ft train --config", "ft evaluate", "ft export")
    for stage in stages:
        assert stage in out
    model = tmp_path / "fine-tuned-model"
    summary = json.loads((model / "training-summary.json").read_text())
    assert summary["steps"] == 2 and summary["examples"]["used"] == 745  # 559 + a quarter general replay
    assert (model / "adapter_model.safetensors").is_file() and (model / "loss-curve.png").is_file()
    from safetensors import safe_open

    with safe_open(str(model / "adapter_model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
    assert any("lm_head.lora_A" in k for k in keys), "the demo's LoRA trains the output layer"
    assert not any("base_layer" in k for k in keys), "the adapter holds LoRA weights only, not the frozen lm_head"
    assert (model / "checkpoint-2" / "clawtune-manifest.json").is_file()
    assert (model / "checkpoint-2" / "eval" / "eval-report.html").is_file()
    exports = tmp_path / "exports" / "demo-agent"
    assert {p.name for p in exports.iterdir()} >= {"openclaw-lora", "merged", "gguf", "ollama", "vllm"}
    assert "the Ollama TEMPLATE" in out and "ollama create demo-agent -f Modelfile" in out
    assert '+          "primary": "clawtune/demo-agent"' in out, "the OpenClaw registration it would make"
    assert not (tmp_path / "openclaw-state" / "openclaw.json").exists(), "a dry run writes nothing"
    assert "POST /v1/chat/completions model=demo-agent" in out and "stopped; every request is in" in out
    assert "A/B verdict: " in out, "the demo ends with a short A/B test of the base against the fine-tune"
    ab_report = json.loads((tmp_path / "ab-test" / "ab-test-report.json").read_text())
    assert ab_report["result"]["arms"]["A"]["requests"] + ab_report["result"]["arms"]["B"]["requests"] > 0
    # the loop: simulated traffic rated through /v1/feedback, failures collected and corrected, a retrain, the gate
    assert "SIMULATED: 24 requests to demo-agent" in out and "SIMULATED: a scripted reviewer" in out
    failures = tmp_path / "failure-cases"
    assert (failures / "corrected.jsonl").stat().st_size > 0 and (failures / "held-out.jsonl").stat().st_size > 0
    report = json.loads((failures / "failures-report.json").read_text())
    assert report["dropped"].get("in_an_export_validation_or_test_split"), "the export's held-out sessions stay out"
    retrained = tmp_path / "fine-tuned-model-v2" / "checkpoint-4"
    manifest = json.loads((retrained / "clawtune-manifest.json").read_text())
    assert manifest["parent"]["path"] == str((model / "checkpoint-2").resolve())
    assert {s["source"] for s in manifest["training_data"]["sources"]} == {"data", "original", "general"}
    assert "  learning_rate: 1e-3   # a retrain" in (tmp_path / "ft-config-v2.yaml").read_text()
    gate = json.loads((retrained / "eval" / "eval-report.json").read_text())["gate"]
    assert f"GATE {gate['verdict']}" in out
