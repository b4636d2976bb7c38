"""The improvement loop's first step with the real OpenClaw: a failing tool call recorded through `clawtune serve`, a
negative `/v1/feedback`, and `collect-failures` finds both; the same traffic exports as training data.

About a minute: two headless agent turns through the gateway (its forwarded engine is the scripted fake model).
"""

import json
import urllib.request

import pytest
import yaml

from clawtune.cli import main
from clawtune.data.validate import validate_files

from ..conftest import read_jsonl
from .fake_openai import FakeOpenAI
from .openclaw_cli import OpenClaw, install_openclaw

pytestmark = pytest.mark.integration


def test_collect_failures_finds_a_real_failing_tool_call_and_negative_feedback(tmp_path, capsys):
    from clawtune.serve.app import Gateway, Server
    from clawtune.serve.config import load
    from clawtune.serve.log import iter_requests

    oc = OpenClaw(install_openclaw(), tmp_path / "home")
    oc.run("setup", "--baseline")
    data_dir = tmp_path / "serve-data"
    with FakeOpenAI() as fake:
        models = {
            "models": [{"id": "big-model", "provider": "openai", "model": "fake-model", "endpoint": fake.base_url}],
            "server": {"port": 0, "data_dir": str(data_dir)},
        }
        (tmp_path / "models.yaml").write_text(yaml.safe_dump(models))
        with Server(Gateway(load(tmp_path / "models.yaml"))) as server:
            register = ["openclaw", "register", "--model-id", "big-model", "--endpoint", server.url]
            register += ["--config", str(oc.state / "openclaw.json"), "--agent", "main", "--primary"]
            assert main(register) == 0, capsys.readouterr().err
            oc.turn("Hi there, who are you?")
            oc.turn("run false", session_key="agent:main:second")  # exec exits 1: a failing tool call
            server.gateway.log.flush()
            requests = list(iter_requests(server.gateway.log.path))
            greeting = next(
                (r for r in requests if "Hi there" in json.dumps(r["request"]["messages"]) and r["response"]), None
            )
            assert greeting is not None, [(r["status"], r["request"]["messages"][-1]) for r in requests]
            body = json.dumps({"request_id": greeting["id"], "rating": "negative", "comment": "too vague"}).encode()
            feedback = urllib.request.Request(
                server.url + "/v1/feedback", data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(feedback, timeout=30) as reply:
                assert json.loads(reply.read())["recorded"] is True
    assert len(requests) >= 3 and all(r["status"] == 200 for r in requests)

    out = tmp_path / "failure-cases"
    args = ["agent", "collect-failures", "--agent-id", "main", "--output", str(out), "--state-dir", str(oc.state)]
    args += ["--gateway-log", str(data_dir), "--criteria", "user_feedback=negative OR tool_call_error=true"]
    assert main([*args, "--holdout", "0"]) == 0, capsys.readouterr().err
    failures = read_jsonl(out / "failures.jsonl")
    signals = sorted(sorted({s["type"] for s in f["metadata"]["signals"]}) for f in failures)
    assert signals == [["negative_feedback"], ["tool_error"]], signals
    negative = next(f for f in failures if f["metadata"]["signals"][0]["type"] == "negative_feedback")
    tool_error = next(f for f in failures if f["metadata"]["signals"][0]["type"] == "tool_error")
    # OpenClaw keeps the gateway's response id on the answer: the feedback and the stored turn are one failure
    assert negative["metadata"]["request_id"] == greeting["id"]
    assert negative["metadata"]["sources"] == ["openclaw", "gateway"]
    assert negative["metadata"]["session_key"] == "agent:main:main"
    assert negative["messages"][-2] == {"role": "user", "content": "Hi there, who are you?"}
    assert tool_error["metadata"]["session_key"] == "agent:main:second"
    assert [(s["tool"], s["exit_code"]) for s in tool_error["metadata"]["signals"]] == [("exec", 1)]
    report = json.loads((out / "failures-report.json").read_text())
    assert report["failures"] == 2 and report["skipped_input"]["total"] == 0

    # The same traffic as training data, from the gateway's log alone: nothing truncated, the rated answer left out.
    data = tmp_path / "ft-data"
    export = ["agent", "export-training-data", "--agent-id", "main", "--output", str(data)]
    assert main([*export, "--gateway-log", str(data_dir), "--split", "100:0:0"]) == 0, capsys.readouterr().err
    examples = read_jsonl(data / "raw.jsonl")
    assert validate_files([data / "raw.jsonl"]).ok
    assert len(examples) == 1  # the "run false" conversation; the greeting was rated negative
    assert len(examples[0]["tools"]) == len(greeting["request"]["tools"]) >= 5, "every tool schema OpenClaw sent"
    calls = [c["function"] for m in examples[0]["messages"] for c in m.get("tool_calls") or []]
    assert [c["name"] for c in calls] == ["exec"]
