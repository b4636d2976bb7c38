"""collect-failures --eval-items: the test items an evaluated model got wrong become failures, corrected by their
reference answers, through the same hold-out, scrubbing and output files as the other sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clawtune.cli import main
from clawtune.evaluate.backends import Generation, Item
from clawtune.evaluate.gate import item_rows, write_items
from clawtune.evaluate.metrics import Score
from clawtune.evaluate.run import Side

from ..conftest import read_jsonl

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "query_database",
            "description": "Run SQL",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "database": {"type": "string"}},
                "required": ["query", "database"],
            },
        },
    }
]
SYSTEM = {"role": "system", "content": "You are a finance agent."}
CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [
        {
            "id": "call_0",
            "type": "function",
            "function": {"name": "query_database", "arguments": '{"query": "SELECT 1", "database": "prod"}'},
        }
    ],
}


def item(n: int, question: str, reference: dict, session: str) -> Item:
    return Item(f"test.jsonl:{n}#2", "tool-call", [SYSTEM, {"role": "user", "content": question}], TOOLS, reference,
                session)  # fmt: skip


def side(answers: list[dict]) -> Side:
    return Side("x", "m", "local", generations=[Generation(a, "") for a in answers])


def scores(correct: list[bool]) -> list[Score]:
    return [Score("tool_call", c, float(c), None if c else "no tool call") for c in correct]


@pytest.fixture
def evaluation(tmp_path: Path) -> Path:
    """An eval folder as ft evaluate writes it: a test item answered wrong, one right, a held-out and a general one
    wrong, then two bad lines."""
    wrong = {"role": "assistant", "content": "Sales were fine."}
    items = [item(1, "Sales in North?", CALL, "s-north"), item(2, "Sales in South?", CALL, "s-south")]
    rows = item_rows("test", items, side([wrong, wrong]), side([wrong, CALL]), (scores([False, False]),
                     scores([False, True])))  # fmt: skip
    held = [item(3, "Sales in East?", CALL, "s-east")]
    rows += item_rows("held_out", held, side([wrong]), side([wrong]), (scores([False]), scores([False])))
    general = [Item("general:0#1", "normal", [{"role": "user", "content": "Hi"}], None, {"role": "assistant",
                    "content": "Hello!"})]  # fmt: skip
    rows += item_rows("general", general, side([wrong]), side([wrong]), (scores([False]), scores([False])))
    folder = tmp_path / "eval"
    write_items(rows, folder)
    with open(folder / "eval-items.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({**rows[0], "prompt": "not messages"}) + "\n")
        old = {k: v for k, v in rows[0].items() if k not in ("prompt", "reference_message", "tool_schemas")}
        f.write(json.dumps(old) + "\n")
    return folder


def test_wrong_test_items_become_corrected_failures_and_pairs(
    tmp_path: Path, evaluation: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no gateway log here
    (tmp_path / "state").mkdir()
    out = tmp_path / "failures"
    argv = ["agent", "collect-failures", "--agent-id", "a", "--output", str(out), "--state-dir", str(tmp_path / "state"),
            "--eval-items", str(evaluation), "--holdout", "0"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "failures-report.json").read_text())
    assert report["failures"] == 1 and report["by_source"] == {"eval": 1}
    assert report["corrected"]["by"]["reference"] == 1
    assert report["dropped"] == {"eval_items_held_out_set": 1, "eval_items_general_set": 1}
    skipped = report["skipped_input"]["first"]
    items_file = evaluation / "eval-items.jsonl"
    assert any(f'{items_file}:5, key "prompt": expected the messages' in s for s in skipped), skipped
    assert any(f'{items_file}:6, key "prompt": no prompt: written by an older clawtune' in s for s in skipped)

    (corrected,) = read_jsonl(out / "corrected.jsonl")
    assert corrected["messages"][:2] == [SYSTEM, {"role": "user", "content": "Sales in North?"}]
    answer = corrected["messages"][2]
    assert answer["weight"] == 1 and answer["tool_calls"][0]["function"]["name"] == "query_database"
    assert corrected["tools"] == TOOLS
    meta = corrected["metadata"]
    assert meta["source"] == "eval" and meta["corrected"] == "reference" and meta["session_id"] == "s-north"
    assert meta["signals"][0]["type"] == "eval_wrong" and meta["signals"][0]["item"] == "test.jsonl:1#2"
    (pair,) = read_jsonl(out / "pairs.jsonl")
    assert pair["rejected"] == [{"role": "assistant", "content": "Sales were fine."}]
    assert pair["chosen"][0]["tool_calls"][0]["function"]["name"] == "query_database"

    # The same run again into the same folder: the same output.
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".jsonl"}
    assert main(argv) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".jsonl"} == before

    # The pairs are what `objective: dpo` trains on: they render with the tiny model's template.
    pytest.importorskip("torch")
    from clawtune.models import load_tokenizer
    from clawtune.problems import Problems
    from clawtune.train.dpo import read_pairs

    tokenizer, _ = load_tokenizer("clawtune/tiny-agent", training=True)
    problems = Problems()
    data = read_pairs(out / "pairs.jsonl", tokenizer, 1024, "truncate", problems)
    assert len(data.pairs) == 1 and not problems.items
    assert sum(data.pairs[0].chosen_mask) > 0 and sum(data.pairs[0].rejected_mask) > 0

    # Criteria see them: eval_wrong, source eval.
    assert main([*argv, "--criteria", "source=gateway", "--force"]) == 0
    assert json.loads((out / "failures-report.json").read_text())["failures"] == 0


def test_a_missing_eval_items_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["agent", "collect-failures", "--agent-id", "a", "--output", str(tmp_path / "o"), "--eval-items",
            str(tmp_path / "nope")]  # fmt: skip
    assert main(argv) != 0
    assert "--eval-items" in capsys.readouterr().err
