"""The seed's export command on the sample agent, end to end through the CLI."""

import json
import re
from pathlib import Path

from clawtune.cli import main
from clawtune.data.validate import validate_files
from clawtune.sample.agent import CARDS, PHONES, SECRETS

from ..conftest import HEADER, export_sample, msg, read_jsonl

SEED_ARGS = [
    "agent",
    "export-training-data",
    "--agent-id",
    "my-agent",
    "--output",
    "OUT",
    "--format",
    "jsonl",
    "--min-samples",
    "100",
    "--date-range",
    "2026-04-01:2026-05-20",
]


def run_seed_command(out: Path, state: Path, *extra: str) -> int:
    args = [a if a != "OUT" else str(out) for a in SEED_ARGS]
    return main([*args, "--state-dir", str(state), *extra])


def test_seed_command_writes_three_valid_splits_and_report(tmp_path, sample_state, capsys):
    out = tmp_path / "ft-data"
    assert run_seed_command(out, sample_state) == 0
    printed = capsys.readouterr().out
    assert "examples written" in printed and "redactions" in printed
    report = json.loads((out / "export-report.json").read_text())
    splits = {name: read_jsonl(out / name) for name in ("raw.jsonl", "validation.jsonl", "test.jsonl")}
    assert sum(len(v) for v in splits.values()) == report["examples_written"] >= 100
    assert all(splits.values()), "every split gets examples"
    result = validate_files([out / n for n in splits])
    assert result.ok, [str(p) for p in result.problems.items]
    # No session in two splits.
    sessions = {n: {e["metadata"]["session_id"] for e in v} for n, v in splits.items()}
    assert not sessions["raw.jsonl"] & sessions["test.jsonl"]
    assert not sessions["raw.jsonl"] & sessions["validation.jsonl"]
    assert not sessions["validation.jsonl"] & sessions["test.jsonl"]
    # Every example's trained turn falls in the date range.
    for examples in splits.values():
        for e in examples:
            assert "2026-04-01" <= e["metadata"]["trained_at"][:10] <= "2026-05-20"
    assert 0.7 < report["splits"]["train"]["examples"] / report["examples_written"] < 0.9
    assert report["tool_call_share"] > 0.3
    assert report["dropped"]["outside_date_range"] > 0


def test_min_samples_above_what_exists_fails_with_counts(tmp_path, sample_state, capsys):
    code = main(
        [
            "agent",
            "export-training-data",
            "--agent-id",
            "my-agent",
            "--output",
            str(tmp_path / "o"),
            "--min-samples",
            "100000",
            "--date-range",
            "2026-04-01:2026-05-20",
            "--state-dir",
            str(sample_state),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(r"only \d+ examples .* fewer than --min-samples 100000", err)
    assert "outside date range" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "raw.jsonl").exists()


def test_too_few_examples_names_each_bad_input_and_still_writes_the_report(tmp_path, capsys):
    sessions = tmp_path / "agents" / "a" / "sessions"
    sessions.mkdir(parents=True)
    for i in range(7):  # a user turn, then the answer cut off mid-write: no example, one bad line each
        lines = [json.dumps(HEADER | {"id": f"s{i}"}), json.dumps(msg("u1", None, "user", "hi")), '{"type": "mess']
        (sessions / f"s{i}.jsonl").write_text("\n".join(lines))
    out = tmp_path / "out"
    args = ["agent", "export-training-data", "--agent-id", "a", "--output", str(out), "--state-dir", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "only 0 examples" in err and "bad input: 7" in err
    for i in range(5):
        assert f"{sessions / f's{i}.jsonl'}:3: truncated JSON" in err
    assert "s5.jsonl" not in err and f"and 2 more, see {out / 'export-report.json'}" in err
    report = json.loads((out / "export-report.json").read_text())
    assert report["skipped_input"]["total"] == 7 and report["examples_written"] == 0
    assert report["error"].startswith("only 0 examples") and not (out / "raw.jsonl").exists()


def test_no_planted_secret_reaches_the_output_and_scrub_can_be_disabled(tmp_path, sample_state):
    out = tmp_path / "scrubbed"
    assert export_sample(out, sample_state) == 0
    text = "".join((out / n).read_text() for n in ("raw.jsonl", "validation.jsonl", "test.jsonl"))
    for planted in [*SECRETS, *CARDS, *PHONES, "Pa55w0rd!", "alice.chen@example.com"]:
        assert planted not in text, planted
    report = json.loads((out / "export-report.json").read_text())
    assert report["redactions"]["EMAIL"] > 0 and report["redactions"]["URL_PASSWORD"] > 0
    raw = tmp_path / "raw"
    assert export_sample(raw, sample_state, "--no-scrub") == 0
    assert "Pa55w0rd!" in "".join((raw / n).read_text() for n in ("raw.jsonl", "validation.jsonl", "test.jsonl"))


def test_split_is_deterministic_by_seed(tmp_path, sample_state):
    def split_of(out: Path, seed: str) -> dict[str, set[str]]:
        assert export_sample(out, sample_state, "--seed", seed, "--force") == 0
        return {n: {e["metadata"]["session_id"] for e in read_jsonl(out / n)} for n in ("raw.jsonl", "test.jsonl")}

    assert split_of(tmp_path / "a", "1") == split_of(tmp_path / "b", "1")
    assert split_of(tmp_path / "a", "1") != split_of(tmp_path / "c", "2")


def test_system_prompt_policies(tmp_path, sample_state):
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("You are the finance agent.")
    for policy, check in [
        ("drop", lambda m: m[0]["role"] == "user"),
        (str(prompt_file), lambda m: m[0] == {"role": "system", "content": "You are the finance agent."}),
        ("keep", lambda m: m[0]["role"] == "system" and "running inside OpenClaw" in m[0]["content"]),
    ]:
        out = tmp_path / f"p{len(policy)}"
        assert export_sample(out, sample_state, "--system-prompt", policy, "--force") == 0
        examples = read_jsonl(out / "raw.jsonl")
        # keep: the JSONL-era sessions recorded their prompt in the trajectory sibling; the store truncated it.
        assert any(check(e["messages"]) for e in examples), policy
        expected = "keep" if policy == "keep" else "drop" if policy == "drop" else "replace"
        assert json.loads((out / "export-report.json").read_text())["system_prompt"]["policy"] == expected


def test_filters_by_agent_session_key_and_channel(tmp_path, sample_state):
    out = tmp_path / "tg"
    assert export_sample(out, sample_state, "--channel", "telegram", "--session-key", "agent:my-agent:telegram:*") == 0
    examples = read_jsonl(out / "raw.jsonl")
    assert examples and all(e["metadata"]["channel"] == "telegram" for e in examples)
    assert all(e["metadata"]["session_key"].startswith("agent:my-agent:telegram:") for e in examples)
    other = tmp_path / "ops"
    assert export_sample(other, sample_state, agent="ops-agent") == 0
    assert all(e["metadata"]["agent_id"] == "ops-agent" for e in read_jsonl(other / "raw.jsonl"))


def test_long_sessions_are_split_at_turn_boundaries_with_context(tmp_path, sample_state):
    out = tmp_path / "short"
    assert export_sample(out, sample_state, "--max-tokens", "300") == 0
    report = json.loads((out / "export-report.json").read_text())
    assert report["conversion"]["sessions_split"] > 0
    examples = read_jsonl(out / "raw.jsonl") + read_jsonl(out / "validation.jsonl") + read_jsonl(out / "test.jsonl")
    continued = [e for e in examples if any(m.get("weight") == 0 for m in e["messages"] if m["role"] == "assistant")]
    assert continued, "later pieces carry earlier turns as untrained context"
    assert validate_files([out / "raw.jsonl"]).ok


def test_bad_date_range_is_a_clear_error(tmp_path, sample_state, capsys):
    assert (
        main(
            [
                "agent",
                "export-training-data",
                "--agent-id",
                "my-agent",
                "--output",
                str(tmp_path),
                "--date-range",
                "2026-05-01:2026-04-01",
                "--state-dir",
                str(sample_state),
            ]
        )
        == 2
    )
    assert "end is before the start" in capsys.readouterr().err
