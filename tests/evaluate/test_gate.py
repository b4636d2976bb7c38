"""The gate after a retrain: the verdict's rules, and `ft evaluate --held-out` end to end on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clawtune.evaluate.gate import FAILED, INCONCLUSIVE, PASSED, gate
from clawtune.evaluate.metrics import Score
from clawtune.evaluate.run import compare

from ..conftest import copy_sample, read_jsonl, write_jsonl


def paired(fixed: int, broken: int, same: int = 20) -> dict[str, object]:
    """A comparison where the new side fixes `fixed` items and breaks `broken`, with `same` agreeing."""
    old = [Score("text", False, 0)] * fixed + [Score("text", True, 1)] * broken + [Score("text", True, 1)] * same
    new = [Score("text", True, 1)] * fixed + [Score("text", False, 0)] * broken + [Score("text", True, 1)] * same
    return compare(old, new)


def test_passes_only_when_the_fix_is_significant_and_nothing_drops() -> None:
    assert gate(paired(12, 0), paired(1, 1), paired(0, 0), 0.05)["verdict"] == PASSED
    result = gate(paired(3, 1), paired(1, 1), paired(0, 0), 0.05)
    assert result["verdict"] == INCONCLUSIVE and "3 held-out items fixed, 1 broken" in result["why"]
    dropped = gate(paired(12, 0), paired(0, 10), paired(0, 0), 0.05)
    assert dropped["verdict"] == FAILED and "original test set" in dropped["why"]
    assert [c["passed"] for c in dropped["checks"]] == [True, False, True]


def test_forgetting_fails_on_a_significant_drop_or_one_past_the_threshold() -> None:
    assert gate(paired(12, 0), paired(0, 0), paired(0, 9), 0.05)["verdict"] == FAILED  # significant
    small = gate(paired(12, 0), paired(0, 0), paired(0, 3, same=17), 0.05)  # 3 of 20: not significant, but 15%
    assert small["verdict"] == FAILED and "general" in small["why"]
    assert gate(paired(12, 0), paired(0, 0), paired(0, 3, same=17), 0.2)["verdict"] == PASSED


pytest.importorskip("torch")


@pytest.mark.slow
def test_ft_evaluate_held_out_compares_the_retrain_with_its_parent(
    tmp_path_factory: pytest.TempPathFactory, sample_data: Path
) -> None:
    from clawtune.cli import main

    from ..train.test_train import write_config

    root = Path(tmp_path_factory.mktemp("gate"))
    copy_sample(root, sample_data)
    examples = read_jsonl(root / "raw.jsonl")
    write_jsonl(root / "small.jsonl", examples[:8])
    failures = root / "failure-cases"
    failures.mkdir()
    write_jsonl(failures / "corrected.jsonl", examples[8:12])
    write_jsonl(failures / "held-out.jsonl", examples[12:15])
    config = write_config(root, root, eval_steps=None)
    assert main(["ft", "train", "--config", str(config), "--max-steps", "2"]) == 0
    retrain = write_config(root, root, output="v2", eval_steps=None)
    assert main(["ft", "train", "--config", str(retrain), "--data", str(failures), "--resume", str(root / "out"),
                 "--max-steps", "2"]) == 0  # fmt: skip
    code = main(
        ["ft", "evaluate", "--model-dir", str(root / "v2"), "--test-set", str(root / "test.jsonl"), "--held-out",
         str(failures), "--limit", "6", "--forgetting-size", "4", "--max-new-tokens", "16", "--batch-size", "4"]
    )  # fmt: skip
    report = json.loads((root / "v2" / "eval" / "eval-report.json").read_text())
    assert report["baseline"]["name"] == str((root / "out" / "checkpoint-2").resolve())  # the parent, by default
    verdict = report["gate"]["verdict"]
    assert code == (0 if verdict == PASSED else 3)
    assert verdict in (PASSED, FAILED, INCONCLUSIVE) and len(report["gate"]["checks"]) == 3
    assert report["held_out"]["items"] == sum(1 for r in read_jsonl(root / "v2" / "eval" / "eval-items.jsonl")
                                              if r["set"] == "held_out")  # fmt: skip
    rows = read_jsonl(root / "v2" / "eval" / "eval-items.jsonl")
    assert {r["set"] for r in rows} == {"test", "general", "held_out"}
    assert sum(r["set"] == "test" for r in rows) == 6
    for row in rows:
        assert row["change"] in ("fixed", "broken", "same") and "answer" in row["baseline"]
        assert row["fine_tuned"]["correct"] in (True, False) and row["input"]
    assert (
        main(["ft", "evaluate", "--model-dir", str(root / "out"), "--test-set", str(root / "test.jsonl"),
              "--held-out", str(failures)]) == 2
    )  # fmt: skip  # a first training has no parent: the error says to give --baseline
