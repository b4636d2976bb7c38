"""Every scrubber, the split, and the validator's messages."""

import json
from pathlib import Path

import pytest

from clawtune.cli import main
from clawtune.data.scrub import Scrubber, luhn_ok
from clawtune.data.split import assign_splits
from clawtune.data.validate import validate_files

from ..conftest import read_jsonl, tool_call, write_jsonl

SEED_EXAMPLE = str(Path(__file__).parent.parent / "seed" / "tool-call-example.jsonl")  # verbatim from shared/seed/


@pytest.mark.parametrize(
    ("kind", "text", "secret"),
    [
        ("OPENAI_KEY", "key sk-proj-Zx8Qw2Er4Ty6Ui8Op0As2Df4Gh6 ok", "sk-proj-Zx8Qw2Er4Ty6Ui8Op0As2Df4Gh6"),
        ("ANTHROPIC_KEY", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx_yz0", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx_yz0"),
        ("AWS_ACCESS_KEY", "id AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        (
            "AWS_SECRET_KEY",
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("GITHUB_TOKEN", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        (
            "GITHUB_TOKEN",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        ),
        ("SLACK_TOKEN", "xoxb-2048-123456789012-abcdefghijklmnop", "xoxb-2048-123456789012-abcdefghijklmnop"),
        ("GOOGLE_API_KEY", "AIzaSyD-1234567890abcdefghijklmnopqrstu", "AIzaSyD-1234567890abcdefghijklmnopqrstu"),
        (
            "JWT",
            "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "eyJhbGciOiJIUzI1NiJ9",
        ),
        ("BEARER_TOKEN", "Authorization: Bearer abcdef0123456789abcdef", "abcdef0123456789abcdef"),
        ("PRIVATE_KEY", "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "MIIEow"),
        ("URL_PASSWORD", "postgres://analyst:Pa55w0rd!@dw.internal:5432/db", "Pa55w0rd!"),
        ("EMAIL", "mail li.wei@example.cn.", "li.wei@example.cn"),
        ("PHONE", "call +1 415-555-0134 now", "415-555-0134"),
        ("PHONE", "打 13812345678", "13812345678"),
        ("CARD", "card 4111 1111 1111 1111.", "4111 1111 1111 1111"),
    ],
)
def test_each_scrubber(kind, text, secret):
    scrubber = Scrubber()
    out = scrubber.scrub_text(text)
    assert secret not in out
    assert f"<{kind}_1>" in out
    assert scrubber.counts[kind] == 1


def test_scrubber_leaves_amounts_dates_and_luhn_failures():
    text = "Total $1,234,567.89 on 2026-04-01, id 20260401, order 4111 1111 1111 1112, ts 1795543246394"
    assert Scrubber().scrub_text(text) == text
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_same_value_same_placeholder_and_arguments_stay_json():
    example = {
        "messages": [
            {"role": "user", "content": "Email bob@example.com the total"},
            tool_call("c", "send_report", json.dumps({"to": "bob@example.com", "body": 'say "hi"'})),
            {"role": "tool", "tool_call_id": "c", "content": "sent to bob@example.com"},
        ]
    }
    out = Scrubber().scrub_example(example)["messages"]
    assert out[0]["content"] == "Email <EMAIL_1> the total"
    assert json.loads(out[1]["tool_calls"][0]["function"]["arguments"]) == {"to": "<EMAIL_1>", "body": 'say "hi"'}
    assert out[2]["content"] == "sent to <EMAIL_1>"


def test_split_by_session_close_to_ratios_and_deterministic():
    counts = {f"s{i}": 1 + i % 3 for i in range(200)}
    a = assign_splits(counts, (0.8, 0.1, 0.1), seed=1)
    assert a == assign_splits(counts, (0.8, 0.1, 0.1), seed=1)
    assert a != assign_splits(counts, (0.8, 0.1, 0.1), seed=2)
    total = sum(counts.values())
    share = {s: sum(c for k, c in counts.items() if a[k] == s) / total for s in ("train", "validation", "test")}
    assert abs(share["train"] - 0.8) < 0.02 and abs(share["test"] - 0.1) < 0.02
    few = assign_splits({"a": 5, "b": 1, "c": 1}, (0.8, 0.1, 0.1), seed=3)
    assert set(few.values()) == {"train", "validation", "test"}


def test_validate_accepts_the_seed_example_and_adds_ids(tmp_path, capsys):
    out = tmp_path / "norm.jsonl"
    assert main(["ft", "validate", SEED_EXAMPLE, "--output", str(out)]) == 0
    assert "OK: 1 examples" in capsys.readouterr().out
    (example,) = read_jsonl(out)
    call = example["messages"][2]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "query_database" and call["id"]
    assert example["messages"][3]["tool_call_id"] == call["id"]


def test_validate_lists_every_problem_with_line_message_and_key(tmp_path, capsys):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            good,
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    tool_call("c1", "nope", "{bad"),
                    {"role": "user", "content": "again"},
                    {"role": "assistant", "content": "a", "weight": 0},
                ],
                "tools": [
                    {"type": "function", "function": {"name": "query_database", "parameters": {"type": "object"}}}
                ],
            },
            {
                "messages": [
                    {"role": "assistant", "content": "first"},
                    {"role": "tool", "tool_call_id": "zz", "content": "x"},
                    {"role": "robot", "content": 1},
                ]
            },
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]},
        ],
    )
    with path.open("a") as fh:
        fh.write('{"messages": [\n')
    assert main(["ft", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    for expected in [
        f"{path}:2, message 1, key \"tool_calls[0].function.name\": calls 'nope', which is not in `tools`",
        f'{path}:2, message 1, key "tool_calls[0].function.arguments": not valid JSON',
        f"{path}:2, message 2, key \"tool_calls\": tool call(s) ['c1'] are not answered",
        f'{path}:4, key "messages": no assistant message is trained',
        f'{path}:3, message 0, key "role": the first message after the system prompt must be from the user',
        f'{path}:3, message 1, key "tool_call_id": answers no pending tool call',
        f'{path}:3, message 2, key "role": expected one of',
        f"{path}:5: truncated JSON",
    ]:
        assert expected in err, expected
    result = validate_files([path])
    assert result.examples == 4 and result.valid == 1


def test_redactions_are_counted_once_and_clean_examples_are_untouched():
    scrubber = Scrubber()
    call = {"id": "c", "type": "function", "function": {"name": "q", "arguments": '{"to":"bob@example.com"}'}}
    example = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call]}]
    }
    scrubber.scrub_example(example)
    assert scrubber.counts == {"EMAIL": 1}
    clean = {"messages": [{"role": "user", "content": "Sales on 2026-04-01 were $1,234,567."}]}
    assert scrubber.scrub_example(clean) is clean
