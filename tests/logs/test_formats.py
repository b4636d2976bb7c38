"""Each OpenClaw store format, the tree/branch rules and compactions, on small hand-written sessions."""

import json
import sqlite3
from collections import Counter
from pathlib import Path

import zstandard

from clawtune.data.build import TrainingDataOptions, export_training_data
from clawtune.logs.convert import ConvertOptions, convert_segment
from clawtune.logs.sessions import iter_sessions
from clawtune.logs.tree import COMPACTION_PREFIX, active_branch, segments
from clawtune.problems import Problems
from clawtune.sample.agent import STORE_SCHEMA

from ..conftest import HEADER, call, msg, read_jsonl, result, text, write_jsonl


def convert(path: Path, **options):
    problems = Problems()
    (session,) = list(iter_sessions([path], problems))
    branch = active_branch(session, problems)
    stats: Counter = Counter()
    convs = [convert_segment(session, s, ConvertOptions(**options), problems, stats) for s in segments(branch)]
    return convs, problems, stats


def test_v3_tree_takes_the_active_branch_only(tmp_path):
    path = write_jsonl(
        tmp_path / "s1.jsonl",
        [
            HEADER,
            msg("a1", None, "user", "Sales for May?"),
            text("a2", "a1", "About a million."),  # abandoned branch
            call("a3", "a1", "c1", "query_database", {"query": "SELECT 1"}),
            result("a4", "a3", "c1", '{"sum": 5}'),
            text("a5", "a4", "Sales were $5."),
        ],
    )
    (conv,), problems, _ = convert(path)
    assert [m["role"] for m in conv.messages] == ["user", "assistant", "tool", "assistant"]
    assert "About a million." not in json.dumps(conv.messages)
    assert conv.messages[1]["tool_calls"][0]["function"] == {
        "name": "query_database",
        "arguments": '{"query": "SELECT 1"}',
    }
    assert conv.messages[2] == {"role": "tool", "tool_call_id": "c1", "content": '{"sum": 5}'}
    assert len(problems) == 0


def test_v1_file_without_ids_is_a_linear_list(tmp_path):
    path = write_jsonl(
        tmp_path / "old.jsonl",
        [
            {"type": "message", "timestamp": "2026-01-02T10:00:00Z", "message": {"role": "user", "content": "hi"}},
            {
                "type": "message",
                "timestamp": "2026-01-02T10:00:01Z",
                "message": {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
            },
        ],
    )
    (conv,), _, _ = convert(path)
    assert conv.messages == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def test_dangling_parent_is_reported_and_the_branch_starts_there(tmp_path):
    path = write_jsonl(tmp_path / "s1.jsonl", [HEADER, msg("b1", "missing", "user", "hi"), text("b2", "b1", "hello")])
    (conv,), problems, _ = convert(path)
    assert len(conv.messages) == 2
    assert problems.counts["dangling-parent"] == 1
    assert (
        str(problems.items[0])
        == f"{path}:2, key \"parentId\": parentId 'missing' names no entry; the branch starts here"
    )


def test_compaction_gives_the_context_the_model_saw(tmp_path):
    path = write_jsonl(
        tmp_path / "s1.jsonl",
        [
            HEADER,
            msg("c1", None, "user", "first question"),
            text("c2", "c1", "first answer"),
            msg("c3", "c2", "user", "second question"),
            text("c4", "c3", "second answer"),
            {
                "type": "compaction",
                "id": "c5",
                "parentId": "c4",
                "timestamp": "2026-04-02T11:00:00Z",
                "summary": "Asked two questions.",
                "firstKeptEntryId": "c3",
                "tokensBefore": 50000,
            },
            msg("c6", "c5", "user", "third question"),
            text("c7", "c6", "third answer"),
        ],
    )
    before, after = convert(path)[0]
    assert [m["content"] for m in before.messages] == [
        "first question",
        "first answer",
        "second question",
        "second answer",
    ]
    assert after.messages[0][
        "content"
    ] == COMPACTION_PREFIX + "Asked two questions.\n\nsecond question" or after.messages[0]["content"].startswith(
        COMPACTION_PREFIX
    )
    contents = [m["content"] for m in after.messages]
    assert "first question" not in json.dumps(contents)
    assert contents[-2:] == ["third question", "third answer"]
    kept = [m for m in after.messages if m["content"] == "second answer"]
    assert kept and kept[0]["weight"] == 0, "kept context is not trained twice"


def test_failures_are_signals_and_failed_turns_are_never_trained(tmp_path):
    path = write_jsonl(
        tmp_path / "s1.jsonl",
        [
            HEADER,
            msg("d1", None, "user", "Sales?"),
            text("d2", "d1", "Let me", errorMessage="aborted by user")
            | {
                "message": {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "Let me"}],
                    "stopReason": "aborted",
                }
            },
            msg("d3", "d2", "user", "Sales please?"),
            call("d4", "d3", "k1", "query_database", {"query": "bad"}),
            result("d5", "d4", "k1", "ERROR", isError=True, details={"exitCode": 1}),
            call("d6", "d5", "k2", "query_database", {"query": "good"}, stop="error"),
            {
                "type": "custom",
                "customType": "openclaw:prompt-error",
                "id": "d7",
                "parentId": "d6",
                "timestamp": "2026-04-02T10:00:05Z",
                "data": {"error": "timeout"},
            },
        ],
    )
    (conv,), _, stats = convert(path)
    types = [s["type"] for s in conv.signals]
    assert types == ["assistant_aborted", "tool_error", "assistant_error", "prompt_error"]
    aborted = conv.messages[1]
    assert aborted["content"] == "Let me" and aborted["weight"] == 0
    # The errored call had no result: it is dropped, and the conversation ends at the last assistant turn.
    assert conv.messages[-1]["role"] == "assistant" and conv.messages[-1]["tool_calls"][0]["id"] == "k1"
    assert stats["unanswered_tool_calls_dropped"] == 1


def test_thinking_and_images_dropped_with_counts_or_kept_by_flag(tmp_path):
    path = write_jsonl(
        tmp_path / "s1.jsonl",
        [
            HEADER,
            msg(
                "e1",
                None,
                "user",
                [{"type": "text", "text": "See this"}, {"type": "image", "data": "AAAA", "mimeType": "image/png"}],
            ),
            msg(
                "e2",
                "e1",
                "assistant",
                [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Nice chart."}],
                stopReason="stop",
            ),
        ],
    )
    (conv,), _, stats = convert(path)
    assert conv.messages == [{"role": "user", "content": "See this"}, {"role": "assistant", "content": "Nice chart."}]
    assert stats["images_dropped"] == 1 and stats["thinking_blocks_dropped"] == 1
    (conv,), _, stats = convert(path, keep_thinking=True, keep_images=True)
    assert conv.messages[0]["content"] == "See this\n[image]"
    assert conv.messages[1]["reasoning_content"] == "hmm"


def test_cold_zstd_archive_reads_like_the_plain_file(tmp_path):
    lines = [HEADER, msg("f1", None, "user", "hi"), text("f2", "f1", "hello")]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    path = tmp_path / "abc.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(data))
    (conv,), _, _ = convert(path)
    assert [m["content"] for m in conv.messages] == ["hi", "hello"]


def test_sqlite_store_reads_zstd_rows_read_only_and_uses_the_active_table(tmp_path):
    db = tmp_path / "openclaw-agent.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(STORE_SCHEMA)
    long_answer = "A long answer. " * 100
    events = [
        HEADER | {"version": 4},
        msg("g1", None, "user", "hi"),
        text("g2", "g1", "abandoned"),
        text("g3", "g1", long_answer),
    ]
    for seq, e in enumerate(events):
        raw = json.dumps(e).encode()
        if len(raw) >= 1024:
            conn.execute(
                "insert into transcript_events values (?,?,?,?,?,?,?)",
                ("s1", seq, None, 0, zstandard.ZstdCompressor().compress(raw), len(raw), "{}"),
            )
        else:
            conn.execute(
                "insert into transcript_events values (?,?,?,?,?,?,?)",
                ("s1", seq, raw.decode(), 0, None, len(raw), None),
            )
    for pos, seq in enumerate([1, 3]):
        conn.execute("insert into session_transcript_active_events values (?,?,?,?,?)", ("s1", pos, seq, None, 1))
    conn.execute(
        "insert into session_windows (session_id, session_key, channel) values ('s1', 'agent:a:main', 'telegram')"
    )
    tools = [
        {
            "name": "query_database",
            "parameters": {
                "type": "object",
                "properties": {
                    "q": {"type": "array", "items": {"truncated": True, "reason": "trajectory-depth-limit"}}
                },
            },
        },
        "[Truncated]",
    ]
    conn.execute(
        "insert into trajectory_runtime_events values (?,?,?,?,?)",
        ("s1", 1, "r", json.dumps({"type": "context.compiled", "data": {"tools": tools, "systemPrompt": "SYS"}}), 0),
    )
    conn.commit()
    conn.close()
    db.chmod(0o444)
    problems = Problems()
    (session,) = list(iter_sessions([db], problems))
    assert session.session_key == "agent:a:main" and session.channel == "telegram"
    assert session.system_prompt == "SYS" and session.tools_truncated
    assert session.tools[0]["function"]["parameters"]["properties"]["q"] == {"type": "array", "items": {}}
    branch = active_branch(session, problems)
    assert [e.obj["id"] for e in branch] == ["g1", "g3"]
    assert len(problems) == 0, problems.summary()


def test_trajectory_bundle_and_non_transcript_files(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    entries = [msg("h1", None, "user", "hi"), text("h2", "h1", "hello"), "[Truncated]"]
    (bundle / "session-branch.json").write_text(json.dumps({"header": HEADER, "leafId": "h2", "entries": entries}))
    (bundle / "tools.json").write_text(
        json.dumps([{"name": "query_database", "description": "d", "parameters": {"type": "object", "properties": {}}}])
    )
    (bundle / "manifest.json").write_text(json.dumps({"sessionKey": "agent:a:x"}))
    sessions_dir = tmp_path / "agents" / "a" / "sessions"
    write_jsonl(
        sessions_dir / "s9.jsonl", [HEADER | {"id": "s9"}, msg("i1", None, "user", "yo"), text("i2", "i1", "yo back")]
    )
    (sessions_dir / "s9.jsonl.lock").write_text("1")
    (sessions_dir / "s9.trajectory.jsonl").write_text(
        json.dumps({"type": "context.compiled", "data": {"systemPrompt": "P", "tools": []}}) + "\n"
    )
    (sessions_dir / "s9.jsonl.deleted.123").write_text("garbage")
    out = tmp_path / "out"
    report = export_training_data(
        TrainingDataOptions(agent_id="a", output=out, sessions=[bundle, sessions_dir], system_prompt="keep")
    )
    assert report["sessions_read"] == 2
    assert report["skipped_input"]["by_reason"] == {"truncated-by-openclaw": 1}
    examples = read_jsonl(out / "raw.jsonl") + read_jsonl(out / "validation.jsonl") + read_jsonl(out / "test.jsonl")
    by_key = {e["metadata"]["session_key"]: e for e in examples}
    assert by_key["agent:a:x"]["tools"][0]["function"]["name"] == "query_database"
    assert next(e for e in examples if e["metadata"]["session_id"] == "s9")["messages"][0] == {
        "role": "system",
        "content": "P",
    }
