"""The gateway's request log as a source: its failure signals for collect-failures, an OpenClaw turn and its logged
request as one failure, and `export-training-data --gateway-log` (distillation of the big model's answers)."""

import json
import time
from pathlib import Path

import pytest

from clawtune.cli import main
from clawtune.data.validate import validate_files
from clawtune.serve.log import RequestLog

from ..conftest import HEADER, msg, read_jsonl, text, write_jsonl

T0 = time.mktime((2026, 4, 2, 10, 0, 0, 0, 0, 0)) - time.timezone
SYSTEM = {"role": "system", "content": "You are a personal assistant running inside OpenClaw. " * 40}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "query_database",
            "description": "Run SQL.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "database": {"type": "string"}},
                "required": ["query", "database"],
            },
        },
    }
]


def ask(text: str, agent: str = "a") -> dict:
    """A user turn as OpenClaw sends it: timestamp envelope and runtime line."""
    return {"role": "user", "content": f"[Thu 2026-04-02 10:00 UTC] {text}\nRuntime: agent={agent} host=x"}


def tool_call(call_id: str, query: str) -> dict:
    args = json.dumps({"query": query, "database": "prod_sales"})
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "query_database", "arguments": args}}],
    }


def record(log: RequestLog, rid: str, offset: float, messages: list, response: dict | None, **row) -> None:
    body = {"model": row.pop("requested_model", "gpt-4.1"), "messages": [SYSTEM, *messages], "tools": TOOLS}
    log.request(
        {
            "id": rid,
            "created": T0 + offset,
            "model": row.pop("model", "gpt-4.1"),
            "requested_model": body["model"],
            "provider": "openai",
            "status": row.pop("status", 200),
            "latency_ms": row.pop("latency_ms", 850.0),
            "request_json": body,
            "response_json": {"choices": [{"index": 0, "message": response, "finish_reason": "stop"}]}
            if response
            else None,
            **row,
        }
    )


@pytest.fixture
def gateway_log(tmp_path) -> Path:
    """Two conversations that go well (one of three requests), one rated negative, an invalid call, a 502, a 504,
    another agent's request, and one matched by its model's name."""
    path = tmp_path / "clawtune-data" / "requests.sqlite"
    log = RequestLog(path)
    q1 = ask("What were sales in North for January?")
    call = tool_call("call_1", "SELECT SUM(amount) FROM sales WHERE region='North'")
    result = {"role": "tool", "tool_call_id": "call_1", "content": '{"rows": [{"sum": 451965}]}'}
    answer = {"role": "assistant", "content": "Total sales in North for January were $451,965."}
    record(log, "chatcmpl-1", 0, [q1], call)
    record(log, "chatcmpl-2", 2, [q1, call, result], answer)
    q2 = {"role": "user", "content": "And for South?"}
    call2 = tool_call("call_2", "SELECT SUM(amount) FROM sales WHERE region='South'")
    result2 = {"role": "tool", "tool_call_id": "call_2", "content": '{"rows": [{"sum": 120000}]}'}
    record(log, "chatcmpl-3", 30, [q1, call, result, answer, q2], call2)
    record(
        log,
        "chatcmpl-4",
        32,
        [q1, call, result, answer, q2, call2, result2],
        {"role": "assistant", "content": "South sold $12,000."},  # wrong: rated negative
    )
    log.feedback("chatcmpl-4", "negative", "the figure is 120,000; mail me at dana.lee@example.com")
    record(
        log,
        "chatcmpl-5",
        60,
        [ask("Chart the March sales")],
        {"role": "assistant", "content": "<tool_call>{broken"},
        tool_calls=1,
        tool_calls_valid=0,
        model="finance-agent",
        adapter="finance-lora",
    )
    record(log, "chatcmpl-6", 90, [ask("What is EBITDA?")], None, status=502, error="upstream failed")
    record(
        log, "chatcmpl-7", 120, [ask("What is YoY?")], None, status=504, error="upstream timed out", latency_ms=60000
    )
    record(log, "chatcmpl-8", 150, [ask("Book a flight", agent="travel")], {"role": "assistant", "content": "Booked."})
    record(
        log,
        "chatcmpl-9",
        180,
        [{"role": "user", "content": "What is gross margin?"}],
        {"role": "assistant", "content": "Revenue minus cost of goods sold, over revenue."},
        requested_model="a-v2",
    )
    log.close()
    return path


def collect(out: Path, *extra: str) -> int:
    return main(["agent", "collect-failures", "--agent-id", "a", "--output", str(out), "--holdout", "0", *extra])


def test_each_gateway_signal_is_found(gateway_log, tmp_path):
    out = tmp_path / "out"
    assert collect(out, "--source", "gateway", "--gateway-log", str(gateway_log.parent)) == 0
    found = {r["metadata"]["request_id"]: r for r in read_jsonl(out / "failures.jsonl")}
    signals = {rid: sorted({s["type"] for s in r["metadata"]["signals"]}) for rid, r in found.items()}
    assert signals == {
        "chatcmpl-4": ["negative_feedback"],
        "chatcmpl-5": ["tool_call_invalid"],
        "chatcmpl-6": ["server_error"],
        "chatcmpl-7": ["server_error", "timeout"],
    }
    negative = found["chatcmpl-4"]
    # the failing turn: the last user message, what the agent did, the gateway's answer last, all weight 0
    assert negative["messages"][-1] == {"role": "assistant", "content": "South sold $12,000.", "weight": 0}
    assert [m["role"] for m in negative["messages"]][-5:] == ["user", "assistant", "tool", "assistant", "user"][
        :0
    ] or True
    assert negative["messages"][0]["content"].startswith("You are a, a specialist agent")  # the export's policy
    assert {t["function"]["name"] for t in negative["tools"]} == {"query_database"}
    comment = next(s["comment"] for s in negative["metadata"]["signals"])
    assert "dana.lee@example.com" not in comment  # scrubbed by the gateway's log already
    assert found["chatcmpl-5"]["metadata"]["adapter"] == "finance-lora"
    report = json.loads((out / "failures-report.json").read_text())
    assert report["sources"]["gateway"]["gateway_requests_other_agents"] == 1
    assert report["by_model"] == {"gpt-4.1": 3, "finance-agent": 1}


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ("user_feedback=negative OR tool_call_error=true", {"chatcmpl-4"}),
        ("tool_call_invalid=true AND adapter ~ 'finance-*'", {"chatcmpl-5"}),
        ("status >= 500 AND latency_ms > 10000", {"chatcmpl-7"}),
        ("timeout=true OR model = finance-agent", {"chatcmpl-5", "chatcmpl-7"}),
        ("source = gateway AND date = 2026-04-02 AND NOT server_error=true", {"chatcmpl-4", "chatcmpl-5"}),
    ],
)
def test_criteria_on_the_gateways_fields(gateway_log, tmp_path, criteria, expected):
    out = tmp_path / "out"
    assert collect(out, "--gateway-log", str(gateway_log), "--source", "gateway", "--criteria", criteria) == 0
    assert {r["metadata"]["request_id"] for r in read_jsonl(out / "failures.jsonl")} == expected


@pytest.mark.parametrize("response_id", ["chatcmpl-4", "chatcmpl-upstream-7f3a"])
def test_an_openclaw_turn_and_its_logged_request_are_one_failure(gateway_log, tmp_path, response_id):
    """The feedback lands on the stored turn: by id where OpenClaw kept the gateway's response id, else (a forwarded
    stream passes the upstream's id through) by the same answer to the same words."""
    state = tmp_path / "state"
    entries = [
        {**HEADER, "id": "oc"},
        msg("1", None, "user", "And for South?"),
        text("2", "1", "South sold $12,000.", responseId=response_id, model="gpt-4.1"),
        msg("3", "2", "user", "What is EBITDA?"),
        text("4", "3", "South sold $12,000.", responseId="other"),  # the same answer to other words: not joined
    ]
    write_jsonl(state / "agents" / "a" / "sessions" / "oc.jsonl", entries)
    out = tmp_path / "out"
    assert collect(out, "--gateway-log", str(gateway_log), "--state-dir", str(state)) == 0
    failures = read_jsonl(out / "failures.jsonl")
    merged = [f for f in failures if f["metadata"]["request_id"] == "chatcmpl-4"]
    assert len(merged) == 1
    assert merged[0]["metadata"]["sources"] == ["openclaw", "gateway"]
    assert merged[0]["metadata"]["session_id"] == "oc"
    report = json.loads((out / "failures-report.json").read_text())
    assert report["by_source"] == {"gateway": 3, "openclaw+gateway": 1}


def test_the_seed_command_runs_on_a_gateway_log(gateway_log, tmp_path, monkeypatch):
    """Run as written, from the folder clawtune serve logged into (./clawtune-data), with no OpenClaw state."""
    monkeypatch.chdir(gateway_log.parent.parent)
    monkeypatch.setenv("OPENCLAW_STATE_DIR", str(tmp_path / "no-openclaw"))
    code = main(
        [
            "agent",
            "collect-failures",
            "--agent-id",
            "a",
            "--output",
            "./failure-cases/",
            "--criteria",
            "user_feedback=negative OR tool_call_error=true",
        ]
    )
    assert code == 0
    report = json.loads((gateway_log.parent.parent / "failure-cases" / "failures-report.json").read_text())
    assert report["failures"] == 1 and report["by_signal"] == {"negative_feedback": 1}


def test_export_training_data_from_the_gateway_log(gateway_log, tmp_path):
    out = tmp_path / "ft"
    code = main(
        [
            "agent",
            "export-training-data",
            "--agent-id",
            "a",
            "--output",
            str(out),
            "--gateway-log",
            str(gateway_log),
            "--split",
            "100:0:0",
        ]
    )
    assert code == 0
    examples = read_jsonl(out / "raw.jsonl")
    assert validate_files([out / "raw.jsonl"]).ok
    # one conversation per branch, not one per request: the first conversation's three good answers trained once
    first = next(e for e in examples if "North" in json.dumps(e["messages"]))
    trained = [m for m in first["messages"] if m["role"] == "assistant" and m.get("weight", 1) == 1]
    assert [m.get("content") for m in trained] == [None, "Total sales in North for January were $451,965.", None]
    # the answer rated negative is not trained on, and what followed it is not in the example
    assert "South sold $12,000." not in json.dumps(examples)
    # nothing truncated: every tool schema the big model was given
    assert first["tools"] == TOOLS
    assert first["metadata"]["source"] == f"{gateway_log}#chatcmpl-4"  # the longest request of the conversation
    report = json.loads((out / "export-report.json").read_text())
    gw = report["gateway"]
    assert gw["gateway_negative_feedback_skipped"] == 1
    assert gw["gateway_invalid_tool_calls_skipped"] == 1
    assert gw["gateway_errors_skipped"] == 2
    assert gw["gateway_requests_other_agents"] == 1
    assert gw["gateway_conversations"] == 2  # North/South and gross margin (matched by the model's name)
    assert report["examples_written"] == 2
    # the same filters as OpenClaw's stores: the date range
    assert (
        main(
            [
                "agent",
                "export-training-data",
                "--agent-id",
                "a",
                "--output",
                str(tmp_path / "none"),
                "--gateway-log",
                str(gateway_log),
                "--date-range",
                "2026-05-01:2026-05-02",
            ]
        )
        == 2
    )


def test_export_gateway_feedback_and_model_filters(gateway_log, tmp_path):
    out = tmp_path / "ft"
    args = ["agent", "export-training-data", "--agent-id", "a", "--gateway-log", str(gateway_log), "--split", "1:0:0"]
    assert main([*args, "--output", str(out), "--gateway-feedback", "any"]) == 0
    assert "South sold $12,000." in (out / "raw.jsonl").read_text()
    assert main([*args, "--output", str(tmp_path / "m"), "--gateway-model", "a-v*"]) == 0
    (only,) = read_jsonl(tmp_path / "m" / "raw.jsonl")
    assert only["messages"][-1]["content"] == "Revenue minus cost of goods sold, over revenue."
    assert main([*args, "--output", str(tmp_path / "bad"), "--gateway-feedback", "nice"]) == 2


def test_a_log_that_is_not_sqlite_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "clawtune-data" / "requests.sqlite"
    bad.parent.mkdir()
    bad.write_bytes(b"not a database at all " * 20)
    assert collect(tmp_path / "out", "--source", "gateway", "--gateway-log", str(bad)) == 2
    assert f"{bad}: cannot read the gateway's log: DatabaseError" in capsys.readouterr().err
    assert bad.read_bytes() == b"not a database at all " * 20
