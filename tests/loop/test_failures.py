"""collect-failures on OpenClaw stores: each signal, the correction heuristic, recovery, a person's and a teacher's
corrections, the hold-out split, the output folder's rules, and the seed's command on the sample agent."""

import json
import os
import shutil
from pathlib import Path

import pytest

from clawtune.cli import main
from clawtune.data.validate import validate_files
from clawtune.loop.failures.signals import is_correction, is_retry, reaction_events

from ..conftest import HEADER, call, chat_server, msg, read_jsonl, result, text, write_jsonl

AGENT = "a"


def user(i, parent, content):
    return msg(i, parent, "user", content)


def session(state: Path, name: str, entries: list) -> Path:
    header = {**HEADER, "id": name}
    return write_jsonl(state / "agents" / AGENT / "sessions" / f"{name}.jsonl", [header, *entries])


def collect(state: Path, out: Path, *extra: str) -> int:
    return main(
        ["agent", "collect-failures", "--agent-id", AGENT, "--output", str(out), "--state-dir", str(state), *extra]
    )


def by_session(path: Path) -> dict:
    return {e["metadata"]["session_id"]: e for e in read_jsonl(path)}


@pytest.fixture
def state(tmp_path):
    """One session per signal, plus sessions that must not count."""
    state = tmp_path / "state"
    session(
        state,
        "tool-error",
        [
            user("1", None, "What were sales in North for January?"),
            call("2", "1", "c1", "query_database", {"query": "SELECT * FROM nope", "database": "prod_sales"}),
            result("3", "2", "c1", 'ERROR: relation "nope" does not exist', isError=True, details={"exitCode": 1}),
            call(
                "4", "3", "c2", "query_database", {"query": "SELECT SUM(amount) FROM sales", "database": "prod_sales"}
            ),
            result("5", "4", "c2", '{"rows": [{"sum": 451965}]}'),
            text("6", "5", "Total sales in North for January were $451,965."),
        ],
    )
    session(
        state,
        "exit-code",
        [
            user("1", None, "Run the nightly report."),
            call("2", "1", "c1", "query_database", {"query": "CALL nightly()", "database": "finance_dw"}),
            result("3", "2", "c1", "permission denied", details={"exitCode": 2}),
            text("4", "3", "The report could not run: permission denied."),
        ],
    )
    session(
        state,
        "aborted",
        [
            user("1", None, "Give me the breakdown of January sales by region."),
            msg("2", "1", "assistant", [{"type": "text", "text": "Let me pull"}], stopReason="aborted"),
            user("3", "2", "try again"),
            call("4", "3", "c1", "query_database", {"query": "SELECT region, SUM(amount)", "database": "prod_sales"}),
            result("5", "4", "c1", '{"rows": [{"region": "North", "sum": 1}]}'),
            text("6", "5", "North: $1."),
        ],
    )
    session(
        state,
        "error",
        [
            user("1", None, "Chart the March sales."),
            msg(
                "2",
                "1",
                "assistant",
                [{"type": "text", "text": "Charting"}],
                stopReason="error",
                errorMessage="upstream 500",
            ),
        ],
    )
    session(
        state,
        "prompt-error",
        [
            user("1", None, "What is EBITDA?"),
            text("2", "1", "Earnings before interest, taxes, depreciation and amortization."),
            user("3", "2", "And gross margin?"),
            {
                "type": "custom",
                "id": "4",
                "parentId": "3",
                "customType": "openclaw:prompt-error",
                "data": {"error": "context overflow"},
            },
            user("5", "4", "hello?"),
            text("6", "5", "Gross margin is revenue minus cost of goods sold, over revenue."),
        ],
    )
    session(
        state,
        "correction-en",
        [
            user("1", None, "What were sales in the East region for March?"),
            text("2", "1", "Sales in the North region for March were $100."),
            user("3", "2", "No, I meant the East region, not North."),
            call("4", "3", "c1", "query_database", {"query": "SELECT 'East'", "database": "prod_sales"}),
            result("5", "4", "c1", '{"rows": [{"sum": 200}]}'),
            text("6", "5", "Sales in the East region for March were $200."),
        ],
    )
    session(
        state,
        "correction-zh",
        [
            user("1", None, "三月西区的销售额是多少?"),
            text("2", "1", "三月北区的销售额是100元。"),
            user("3", "2", "不对,我问的是西区。"),
            text("4", "3", "三月西区的销售额是200元。"),
        ],
    )
    session(
        state,
        "reaction",
        [
            user("1", None, "What is the EUR/USD rate today?"),
            text("2", "1", "It is 1.5."),
            user(
                "3",
                "2",
                "System: [2026-04-02 10:00:05 UTC] Telegram reaction added: 👎 by Alice (@alice) on msg 42\n\nAnything else?",
            ),
            text("4", "3", "Anything else I can help with?"),
        ],
    )
    session(
        state,
        "fine",
        [
            user("1", None, "What is YoY?"),
            text("2", "1", "Year over year."),
            user("3", "2", "No thanks, that's all."),
            text("4", "3", "You're welcome."),
            user("5", "4", "System: [2026-04-02 10:00:05 UTC] Telegram reaction added: 👍 by Bob on msg 7"),
            text("6", "5", "Glad it helped."),
        ],
    )
    return state


def test_each_signal_is_found_and_recoveries_become_corrections(state, tmp_path):
    out = tmp_path / "out"
    assert collect(state, out, "--holdout", "0") == 0
    failures = by_session(out / "failures.jsonl") | {
        r["metadata"]["session_id"]: r for r in read_jsonl(out / "review.jsonl") if "metadata" in r
    }
    signals = {
        s: sorted({x["type"] for x in e["metadata"]["signals"]}) for s, e in by_session(out / "failures.jsonl").items()
    }
    assert signals == {
        "tool-error": ["tool_error"],
        "exit-code": ["tool_error"],
        "aborted": ["assistant_aborted", "user_correction"],  # "try again" rejects the answer
        "error": ["assistant_error"],
        "prompt-error": ["prompt_error"],
        "correction-en": ["user_correction"],
        "correction-zh": ["user_correction"],
        "reaction": ["negative_reaction"],
    }
    assert "fine" not in failures
    # every failing turn is shown, never trained: weight 0 on every assistant message
    for example in read_jsonl(out / "failures.jsonl"):
        assert all(m.get("weight") == 0 for m in example["messages"] if m["role"] == "assistant")
    # the failing turn ends the example; its context comes before it
    en = by_session(out / "failures.jsonl")["correction-en"]
    assert [m["role"] for m in en["messages"]] == ["system", "user", "assistant"]

    corrected = by_session(out / "corrected.jsonl")
    how = {s: e["metadata"]["corrected"] for s, e in corrected.items()}
    assert how == {s: "recovery" for s in ("tool-error", "aborted", "correction-en", "correction-zh")}
    # within the turn: the failed call and its result are gone, the retry and the answer are trained
    fixed = corrected["tool-error"]["messages"]
    assert "nope" not in json.dumps(fixed)
    assert [(m["role"], m.get("weight")) for m in fixed] == [
        ("system", None),
        ("user", None),
        ("assistant", 1),
        ("tool", None),
        ("assistant", 1),
    ]
    # a later turn: the original question, answered as the agent answered after the correction
    east = corrected["correction-en"]["messages"]
    assert east[1]["content"] == "What were sales in the East region for March?"
    assert east[-1] == {"role": "assistant", "content": "Sales in the East region for March were $200.", "weight": 1}
    assert corrected["correction-zh"]["messages"][-1]["content"] == "三月西区的销售额是200元。"
    assert validate_files([out / "corrected.jsonl"]).ok

    pairs = {p["metadata"]["session_id"]: p for p in read_jsonl(out / "pairs.jsonl")}
    assert set(pairs) == set(corrected)
    pair = pairs["correction-en"]
    assert pair["prompt"][-1]["role"] == "user"
    assert pair["rejected"] == [{"role": "assistant", "content": "Sales in the North region for March were $100."}]
    assert pair["chosen"][-1]["content"] == "Sales in the East region for March were $200."
    assert not any("weight" in m for m in pair["chosen"] + pair["rejected"])

    review = {r["failure_id"]: r for r in read_jsonl(out / "review.jsonl")}
    assert len(review) == 4  # exit code, error, prompt error, reaction: no recovery
    assert all(r["correction"] is None and r["messages"][-1]["role"] in ("assistant", "tool") for r in review.values())
    report = json.loads((out / "failures-report.json").read_text())
    assert report["failures"] == 8
    assert report["corrected"] == {
        "total": 4,
        "by": {"recovery": 4, "person": 0, "teacher": 0, "reference": 0},
        "uncorrected": 4,
    }
    assert report["by_signal"]["tool_error"] == 2 and report["by_tool"] == {"query_database": 2}


def test_the_seed_criteria_select_and_the_date_range_filters(state, tmp_path):
    out = tmp_path / "seed"
    code = collect(state, out, "--criteria", "user_feedback=negative OR tool_call_error=true", "--holdout", "0")
    assert code == 0
    found = {e["metadata"]["session_id"] for e in read_jsonl(out / "failures.jsonl")}
    assert found == {"tool-error", "exit-code", "reaction"}
    report = json.loads((out / "failures-report.json").read_text())
    assert report["dropped"]["criteria_not_met"] == 5
    assert collect(state, tmp_path / "none", "--date-range", "2026-05-01:2026-05-31") == 0
    report = json.loads((tmp_path / "none" / "failures-report.json").read_text())
    assert report["failures"] == 0 and report["dropped"]["outside_date_range"] == 8


def test_a_bad_criteria_fails_before_reading_anything(state, tmp_path, capsys):
    assert collect(state, tmp_path / "out", "--criteria", "tool_call_eror=true") == 2
    err = capsys.readouterr().err
    assert "did you mean tool_call_error" in err and "^" in err
    assert not (tmp_path / "out").exists()


def test_negative_reactions_are_configurable(state, tmp_path):
    out = tmp_path / "out"
    assert collect(state, out, "--negative-reactions", "👍", "--holdout", "0") == 0
    found = {e["metadata"]["session_id"] for e in read_jsonl(out / "failures.jsonl")}
    assert "fine" in found and "reaction" not in found


def test_a_person_corrects_through_review_jsonl(state, tmp_path):
    out = tmp_path / "out"
    assert collect(state, out, "--holdout", "0") == 0
    review = read_jsonl(out / "review.jsonl")
    filled = out / "review.jsonl"  # filled in place: read before the folder is replaced
    for item in review:
        if "nightly" in json.dumps(item["messages"]):
            item["correction"] = [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "p1",
                            "type": "function",
                            "function": {
                                "name": "query_database",
                                "arguments": '{"query": "CALL nightly_ro()", "database": "finance_dw"}',
                            },
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "p1", "content": "ok"},
                {"role": "assistant", "content": "The nightly report ran."},
            ]
        elif "EUR/USD" in json.dumps(item["messages"]):
            item["correction"] = "EUR/USD is 1.08 today."
        elif "Chart" in json.dumps(item["messages"]):
            # names a tool that was not offered: refused, reported with its line
            item["correction"] = [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "x", "type": "function", "function": {"name": "rm_rf", "arguments": "{}"}}],
                },
                {"role": "tool", "tool_call_id": "x", "content": "done"},
                {"role": "assistant", "content": "Done."},
            ]
    write_jsonl(filled, review)
    # the same run again, with the corrections: allowed into the same folder
    assert collect(state, out, "--holdout", "0", "--corrections", str(filled)) == 0
    corrected = by_session(out / "corrected.jsonl")
    assert corrected["exit-code"]["metadata"]["corrected"] == "person"
    assert corrected["exit-code"]["messages"][-1] == {
        "role": "assistant",
        "content": "The nightly report ran.",
        "weight": 1,
    }
    assert corrected["reaction"]["messages"][-1]["content"] == "EUR/USD is 1.08 today."
    assert "error" not in corrected
    report = json.loads((out / "failures-report.json").read_text())
    assert report["corrected"]["by"]["person"] == 2 and report["counts"]["person_corrections_rejected"] == 1
    assert any("rm_rf" in p and "review.jsonl:" in p for p in report["skipped_input"]["first"])
    assert len(read_jsonl(out / "review.jsonl")) == 2


def test_a_teacher_corrects_when_its_tool_calls_check_out(state, tmp_path):
    def reply(body):
        last = body["messages"][-1]["content"]
        offered = {t["function"]["name"] for t in body.get("tools") or []}
        if "nightly" in last:  # a tool that was not offered: refused
            return {
                "content": None,
                "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "shell", "arguments": "{}"}}],
            }
        if "Chart" in last:  # arguments the schema refuses (database must be one of the enum)
            assert "query_database" in offered
            return {
                "content": None,
                "tool_calls": [
                    {
                        "id": "t2",
                        "type": "function",
                        "function": {"name": "query_database", "arguments": '{"query": 1}'},
                    }
                ],
            }
        if "EUR/USD" in last:
            return {"content": "EUR/USD is 1.08 today."}
        return {"content": ""}

    tools = [
        {
            "type": "context.compiled",
            "data": {
                "tools": [
                    {
                        "name": "query_database",
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "query": {"type": "string"},
                                "database": {"enum": ["prod_sales", "finance_dw"]},
                            },
                            "required": ["query", "database"],
                        },
                    }
                ]
            },
        }
    ]
    for name in ("exit-code", "error", "reaction", "prompt-error"):
        write_jsonl(state / "agents" / AGENT / "sessions" / f"{name}.trajectory.jsonl", tools)
    out = tmp_path / "out"
    with chat_server(reply) as (url, seen):
        code = collect(state, out, "--holdout", "0", "--teacher-endpoint", url, "--teacher-model", "big")
    assert code == 0
    assert len(seen) == 4 and all(b["model"] == "big" for b in seen)
    assert all(b["messages"][0]["role"] == "system" for b in seen)
    corrected = by_session(out / "corrected.jsonl")
    assert corrected["reaction"]["metadata"]["corrected"] == "teacher"
    assert corrected["reaction"]["messages"][-1] == {
        "role": "assistant",
        "content": "EUR/USD is 1.08 today.",
        "weight": 1,
    }
    report = json.loads((out / "failures-report.json").read_text())
    assert report["teacher"]["accepted"] == 1
    assert report["teacher"]["rejected"] == {"invalid_tool_call": 2, "empty_answer": 1}


def test_holdout_is_by_session_seeded_stable_and_kept_out_of_the_other_files(state, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert collect(state, a, "--holdout", "40%", "--seed", "3") == 0
    assert collect(state, b, "--holdout", "40%", "--seed", "3") == 0
    held = {e["metadata"]["session_id"] for e in read_jsonl(a / "held-out.jsonl")}
    assert 0 < len(held) < 8
    assert held == {e["metadata"]["session_id"] for e in read_jsonl(b / "held-out.jsonl")}
    for name in ("failures.jsonl", "corrected.jsonl", "pairs.jsonl", "review.jsonl"):
        text_a = (a / name).read_text()
        assert text_a == (b / name).read_text()
        sessions = {json.loads(line).get("metadata", {}).get("session_id") for line in text_a.splitlines()}
        assert not sessions & held
    report = json.loads((a / "failures-report.json").read_text())
    assert report["held_out"]["sessions"] == len(held) and report["held_out"]["sessions_of_failures"] == 8
    # a later collection with more failing sessions keeps every session where it was
    for i in range(12):
        session(
            state,
            f"more-{i}",
            [
                user("1", None, f"Question {i}?"),
                msg("2", "1", "assistant", [{"type": "text", "text": "Hm."}], stopReason="aborted"),
            ],
        )
    c = tmp_path / "c"
    assert collect(state, c, "--holdout", "40%", "--seed", "3") == 0
    held_c = {e["metadata"]["session_id"] for e in read_jsonl(c / "held-out.jsonl")}
    assert held_c - held and held_c & set(by_session(a / "failures.jsonl")) == set()
    assert held <= held_c
    # another seed holds out others
    assert collect(state, tmp_path / "d", "--holdout", "40%", "--seed", "4") == 0
    assert {e["metadata"]["session_id"] for e in read_jsonl(tmp_path / "d" / "held-out.jsonl")} != held_c


def test_an_earlier_exports_held_out_sessions_are_refused(state, tmp_path):
    plain = tmp_path / "plain"
    assert collect(state, plain, "--holdout", "0") == 0
    twin = next(
        e
        for e in read_jsonl(plain / "corrected.jsonl")
        if e["metadata"]["session_id"] not in ("correction-en", "tool-error")
    )
    export = tmp_path / "ft-data"
    write_jsonl(
        export / "test.jsonl",
        [
            {"messages": [], "metadata": {"session_id": "correction-en"}},
            # another session's example, word for word a corrected failure (a templated agent repeats itself)
            {"messages": twin["messages"], "tools": twin.get("tools"), "metadata": {"session_id": "elsewhere"}},
        ],
    )
    write_jsonl(export / "validation.jsonl", [{"messages": [], "metadata": {"session_id": "tool-error"}}])
    out = tmp_path / "out"
    assert collect(state, out, "--holdout", "0", "--export", str(export)) == 0
    sessions = {e["metadata"]["session_id"] for e in read_jsonl(out / "failures.jsonl")}
    assert not sessions & {"correction-en", "tool-error"}
    assert twin["metadata"]["session_id"] in sessions, "still a failure, counted"
    assert twin["metadata"]["session_id"] not in {
        e["metadata"]["session_id"] for e in read_jsonl(out / "corrected.jsonl")
    }
    report = json.loads((out / "failures-report.json").read_text())
    assert report["dropped"]["in_an_export_validation_or_test_split"] == 2
    assert report["dropped"]["same_as_an_export_validation_or_test_example"] == 1


def test_output_folder_rules(state, tmp_path, capsys):
    out = tmp_path / "out"
    assert collect(state, out) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert collect(state, out) == 0, "the same run into the same folder"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert collect(state, out, "--criteria", "aborted=true") == 2
    assert "another collect-failures run" in capsys.readouterr().err
    assert collect(state, out, "--criteria", "aborted=true", "--force") == 0
    assert json.loads((out / "failures-report.json").read_text())["failures"] == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert collect(state, other) == 2
    assert (other / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder left behind"


def test_the_seeds_command_runs_on_the_sample_agent(sample_state, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENCLAW_STATE_DIR", str(sample_state))
    code = main(
        [
            "agent",
            "collect-failures",
            "--agent-id",
            "my-agent",
            "--output",
            "./failure-cases/",
            "--criteria",
            "user_feedback=negative OR tool_call_error=true",
        ]
    )
    assert code == 0
    out = tmp_path / "failure-cases"
    report = json.loads((out / "failures-report.json").read_text())
    assert report["failures"] > 10 and set(report["by_signal"]) == {"tool_error"}
    assert report["sources"]["gateway"]["read"] is False  # no ./clawtune-data: a note, not an error
    assert validate_files([out / "corrected.jsonl"]).ok
    # the numbers an answer must copy survive scrubbing: every answer's figure is in its tool result
    for example in read_jsonl(out / "corrected.jsonl") + read_jsonl(out / "held-out.jsonl"):
        tool = next(m["content"] for m in example["messages"] if m["role"] == "tool" and "sum" in m["content"])
        figure = json.loads(tool)["rows"][0]["sum"]
        assert f"${figure:,}" in example["messages"][-1]["content"]
        assert "<CARD" not in json.dumps(example) and "<PHONE" not in json.dumps(example)


def test_secrets_are_scrubbed(tmp_path):
    state = tmp_path / "state"
    session(
        state,
        "secret",
        [
            user("1", None, "Email the totals to dana.lee@example.com, key sk-proj-Zx8Qw2Er4Ty6Ui8Op0As2Df4Gh6Jk8Lz"),
            msg(
                "2",
                "1",
                "assistant",
                [{"type": "text", "text": "Sending to dana.lee@example.com"}],
                stopReason="aborted",
            ),
            user("3", "2", "hello?"),
            {
                "type": "custom",
                "id": "4",
                "parentId": "3",
                "customType": "openclaw:prompt-error",
                "data": {"error": "401 Incorrect API key provided: sk-proj-Ab8Qw2Er4Ty6Ui8Op0As2Df4Gh6Jk8Lz"},
            },
            user("5", "4", "hello??"),
            text("6", "5", "Hello."),
        ],
    )
    out = tmp_path / "out"
    assert collect(state, out, "--holdout", "0") == 0
    assert len(read_jsonl(out / "review.jsonl")) == 2
    everything = "".join(p.read_text() for p in out.iterdir())
    assert "dana.lee@example.com" not in everything and "sk-proj-" not in everything
    assert "<EMAIL_1>" in (out / "failures.jsonl").read_text()


@pytest.mark.parametrize(
    "text",
    [
        "No, I meant the West region.",
        "no",
        "Nope, that's the wrong month",
        "Wrong. It should be March.",
        "That's not what I asked for",
        "that is incorrect",
        "Not what I meant.",
        "Actually, I meant February.",
        "I said the West region",
        "You misunderstood me",
        "try again",
        "[Tue 2026-11-24 17:27 UTC] No, the other one",
        "不对,是西区",
        "错了,应该是三月",
        "不是北区,是西区",
        "你搞错了",
        "我说的是上个月",
        "我要的是图表",
        "应该是2025年",
    ],
)
def test_the_correction_heuristic_finds(text):
    assert is_correction(text)


@pytest.mark.parametrize(
    "text",
    [
        "No thanks, that's all.",
        "no problem",
        "Nope, that's all for now",
        "Actually, thanks, that's perfect",
        "Is there no data for March?",
        "Now show me West",
        "Notes for the meeting please",
        "What about the North region?",
        "不是很清楚,能再解释一下吗",
        "不用了,谢谢",
        "没事了",
        "那西区呢?",
        "",
    ],
)
def test_the_correction_heuristic_leaves_alone(text):
    assert not is_correction(text)


def test_retries_and_reaction_events():
    assert is_retry("Try again please") and is_retry("重试") and not is_retry("Try the West region")
    events = reaction_events(
        "System: [2026-04-02 10:00 UTC] Telegram reaction added: 👎 by Alice (@alice) on msg 42\n"
        "System: [2026-04-02 10:01 UTC] Discord reaction removed: 👎 by Alice on msg 42\n"
    )
    assert [(e.emoji, e.removed, e.channel) for e in events] == [("👎", False, "telegram"), ("👎", True, "discord")]


def test_no_source_found_is_a_clear_error(tmp_path, capsys):
    assert collect(tmp_path / "empty", tmp_path / "out", "--source", "openclaw") == 2
    assert "no sessions found for agent 'a'" in capsys.readouterr().err
    assert (
        collect(
            tmp_path / "empty", tmp_path / "out2", "--source", "gateway", "--gateway-log", str(tmp_path / "x.sqlite")
        )
        == 2
    )
    assert "no gateway log" in capsys.readouterr().err


def test_store_reaction_rows(tmp_path):
    """A `session_reactions` table (no release has one yet: its columns are found by name)."""
    import sqlite3

    from clawtune.sample.agent import AGENT_ID  # noqa: F401 - the sample's SQLite writer is exercised elsewhere

    state = tmp_path / "state"
    store = state / "agents" / AGENT / "agent" / "openclaw-agent.sqlite"
    store.parent.mkdir(parents=True)
    conn = sqlite3.connect(store)
    conn.execute(
        "create table transcript_events (session_id text, seq integer, event_json text, created_at integer, event_zstd blob, event_utf8_bytes integer)"
    )
    events = [
        HEADER,
        user("1", None, "What is the EUR/USD rate?"),
        text("2", "1", "It is 1.5."),
        user("3", "2", "What about GBP?"),
        text("4", "3", "It is 1.2."),
    ]
    conn.executemany(
        "insert into transcript_events (session_id, seq, event_json, created_at) values (?, ?, ?, 0)",
        [("s", i, json.dumps(e)) for i, e in enumerate(events)],
    )
    conn.execute(
        "create table session_reactions (session_id text, event_seq integer, emoji text, created_at integer, removed integer)"
    )
    conn.executemany(
        "insert into session_reactions values (?, ?, ?, 0, ?)",
        [("s", 2, "❌", 0), ("s", 4, "👎", 0), ("s", 4, "👎", 1)],
    )
    conn.commit()
    conn.close()
    out = tmp_path / "out"
    assert collect(state, out, "--holdout", "0") == 0
    (only,) = read_jsonl(out / "failures.jsonl")
    assert only["messages"][-1]["content"] == "It is 1.5."
    assert only["metadata"]["signals"][0] == {"type": "negative_reaction", "reactions": ["❌"]}


def test_runs_with_no_environment_state(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENCLAW_STATE_DIR", str(tmp_path / "nothing"))
    monkeypatch.chdir(tmp_path)
    assert os.environ["OPENCLAW_STATE_DIR"]
    assert main(["agent", "collect-failures", "--agent-id", "x", "--output", "out"]) == 0
    report = json.loads((tmp_path / "out" / "failures-report.json").read_text())
    assert report["failures"] == 0 and not report["sources"]["openclaw"]["read"]


FIXTURE = Path(__file__).parent / "fixtures" / "openclaw-2026.9.6-reactions"


def test_reactions_on_a_store_recorded_by_the_real_openclaw(tmp_path):
    """The real 2026.9.6 store: a reaction system event in a user turn, and a session_reactions row (see its README)."""
    expected = json.loads((FIXTURE / "expected.json").read_text())
    state = tmp_path / "state"
    shutil.copytree(FIXTURE / "state", state)  # a copy: reading must not touch the fixture, but check it anyway
    out = tmp_path / "out"
    code = main(
        [
            "agent",
            "collect-failures",
            "--agent-id",
            "main",
            "--output",
            str(out),
            "--state-dir",
            str(state),
            "--holdout",
            "0",
        ]
    )
    assert code == 0
    failures = read_jsonl(out / "review.jsonl")
    assert len(failures) == 2
    reactions = [[s["reactions"] for s in f["signals"] if s["type"] == "negative_reaction"] for f in failures]
    assert sorted(reactions) == [[["👎"]], [["😡"]]]
    by_reaction = {f["signals"][0]["reactions"][0]: f for f in failures}
    # 👎 is about the first answer (the system event came with the second message); 😡 about the third, by its seq
    assert by_reaction["👎"]["messages"][-2]["content"] == expected["turns"][0]
    assert by_reaction["😡"]["messages"][-2]["content"] == expected["turns"][2]
    assert by_reaction["😡"]["location"].endswith(
        f"#{expected['session_id']}:{expected['reacted_answer_seqs'][-1] - 1}"
    )
    report = json.loads((out / "failures-report.json").read_text())
    assert report["counts"]["store_reaction_rows"] == 1 and report["skipped_input"]["total"] == 0
