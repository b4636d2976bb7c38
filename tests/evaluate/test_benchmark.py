"""`ft evaluate --benchmark bfcl:...`: BFCL's cases answered by both sides, scored by BFCL's own checker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clawtune.cli import main

from ..conftest import read_jsonl, write_jsonl

pytest.importorskip("torch")


@pytest.mark.slow
def test_bfcl_cases_are_answered_by_both_sides_and_scored_by_its_checker(tmp_path: Path) -> None:
    test_set = write_jsonl(
        tmp_path / "test.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "Hello?"},
                    {"role": "assistant", "content": "Hello! How can I help?"},
                ]
            }
        ],
    )
    out = tmp_path / "eval"
    code = main(
        ["ft", "evaluate", "--model-dir", "clawtune/tiny-agent", "--baseline", "clawtune/tiny-agent", "--test-set",
         str(test_set), "--metrics", "accuracy", "--benchmark", "bfcl:simple,irrelevance", "--benchmark-limit", "3",
         "--max-new-tokens", "24", "--output", str(out)]
    )  # fmt: skip
    assert code == 0
    bench = json.loads((out / "eval-report.json").read_text())["benchmark"]
    assert bench["cases"] == 6 and set(bench["categories"]) == {"simple_python", "irrelevance"}
    for entry in bench["categories"].values():
        assert entry["cases"] == 3 and 0 <= entry["fine_tuned_accuracy"]["value"] <= 1
    # the same model on both sides, greedy: the same verdicts, so no discordant pair
    assert bench["comparison"]["fine_tuned_only_correct"] == bench["comparison"]["baseline_only_correct"] == 0
    rows = [r for r in read_jsonl(out / "eval-items.jsonl") if r["set"] == "bfcl"]
    assert len(rows) == 6 and all(r["id"] and r["tools"] for r in rows)
    irrelevant = [r for r in rows if r["category"] == "irrelevance"]
    assert all(r["reference"] == "(no call)" for r in irrelevant)
    for r in rows:  # BFCL's verdict, with its reason when wrong
        assert r["fine_tuned"]["correct"] or r["fine_tuned"]["reason"]


def test_an_unknown_benchmark_category_fails_before_any_model_answers(tmp_path: Path, capsys) -> None:
    test_set = write_jsonl(
        tmp_path / "t.jsonl", [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}]
    )
    code = main(["ft", "evaluate", "--model-dir", "clawtune/tiny-agent", "--baseline", "clawtune/tiny-agent",
                 "--test-set", str(test_set), "--benchmark", "bfcl:simpel"])  # fmt: skip
    assert code == 2 and "unknown BFCL categories simpel" in capsys.readouterr().err
