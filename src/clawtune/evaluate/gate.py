"""The gate after a retrain: did the new checkpoint fix the failures it was retrained on, without breaking the rest?

`ft evaluate --model-dir NEW --baseline OLD --held-out FAILURE_DIR` scores both checkpoints on three sets, paired
item by item, and reads one verdict off three tests (McNemar's exact test on the paired outcomes, alpha 0.05):
- the held-out failures (`held-out.jsonl` of the collect-failures folder: failing sessions the retrain never saw):
  the new checkpoint must be significantly better (superiority);
- the original test set: no significant drop (non-inferiority in the sense a paired test can give: a drop would
  have to be significant to count, so a small set makes this check weak, and the report gives the interval);
- the forgetting set (general-assistant turns): no significant drop, and a drop no larger than the threshold.
PASSED only when all three hold; FAILED when either guard finds a significant drop (or the failures get worse);
INCONCLUSIVE when nothing broke but the fix is not significant (more failures, or a longer retrain, would tell).

Every item of every set is written to `eval-items.jsonl` with both sides' answers, verdicts and reasons, so a person
(or `collect-failures --eval-items`) can see which items changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PASSED, FAILED, INCONCLUSIVE = "PASSED", "FAILED", "INCONCLUSIVE"
ITEMS_FILE = "eval-items.jsonl"


def held_out_file(path: Path) -> Path:
    """--held-out: the collect-failures folder (its held-out.jsonl) or a file of held-out examples."""
    return path / "held-out.jsonl" if path.is_dir() else path


def _drop(comparison: dict[str, Any]) -> bool:
    return bool(
        comparison["significant"] and comparison["baseline_only_correct"] > comparison["fine_tuned_only_correct"]
    )


def _gain(comparison: dict[str, Any]) -> bool:
    return bool(
        comparison["significant"] and comparison["fine_tuned_only_correct"] > comparison["baseline_only_correct"]
    )


def gate(
    failures: dict[str, Any], test: dict[str, Any], forgetting: dict[str, Any] | None, threshold: float
) -> dict[str, Any]:
    """The verdict from the three paired comparisons (each as `evaluate.run.compare` returns it)."""
    checks: list[dict[str, Any]] = [
        {
            "check": "fixes the held-out failures",
            "passed": _gain(failures),
            "comparison": failures,
            "needs": "significantly more held-out failures answered right by the new checkpoint",
        },
        {
            "check": "no drop on the original test set",
            "passed": not _drop(test),
            "comparison": test,
            "needs": "no significant drop in accuracy",
        },
    ]
    if forgetting is not None:
        difference = forgetting["accuracy_difference"]["value"] or 0.0
        checks.append(
            {
                "check": "no forgetting of general skills",
                "passed": not _drop(forgetting) and -difference <= threshold,
                "comparison": forgetting,
                "needs": f"no significant drop in general accuracy, and none above {threshold:.0%}",
            }
        )
    broken = [c for c in checks[1:] if not c["passed"]] + ([checks[0]] if _drop(failures) else [])
    if broken:
        verdict = FAILED
        why = "; ".join(f"{c['check']}: {c['comparison']['verdict']}" for c in broken)
    elif checks[0]["passed"]:
        verdict = PASSED
        why = f"the retrain fixes held-out failures ({failures['verdict']}) and breaks nothing measured"
    else:
        verdict = INCONCLUSIVE
        why = (
            f"nothing broke, but the fix is not significant ({failures['fine_tuned_only_correct']} held-out items "
            f"fixed, {failures['baseline_only_correct']} broken, McNemar p = {failures['mcnemar_p']:.3g}): collect "
            "more failures or retrain longer, then gate again"
        )
    return {"verdict": verdict, "why": why, "checks": checks, "alpha": failures["alpha"]}


def item_rows(
    set_name: str, items: list[Any], base: Any, tuned: Any, scores: tuple[list[Any], list[Any]]
) -> list[dict[str, Any]]:
    """One row per item: its id and set, the question, the reference, both answers with verdict and reason (shown as
    text, and as the messages they were), and the item itself (prompt, tool schemas, reference message)."""
    from clawtune.evaluate.run import _show
    from clawtune.messages import content_text

    rows = []
    for i, item in enumerate(items):
        last_user = next((content_text(m.get("content")) for m in reversed(item.prompt) if m["role"] == "user"), "")
        b, t = scores[0][i], scores[1][i]
        rows.append(
            {
                "set": set_name,
                "id": item.id,
                "category": item.category,
                "tools": sorted((tool.get("function") or {}).get("name", "") for tool in item.tools or []),
                "input": last_user,
                "reference": _show(item.reference),
                "baseline": {
                    "answer": _show(base.generations[i].message),
                    "correct": b.correct,
                    "reason": b.reason,
                    "error": base.generations[i].error,
                    "message": base.generations[i].message,
                },
                "fine_tuned": {
                    "answer": _show(tuned.generations[i].message),
                    "correct": t.correct,
                    "reason": t.reason,
                    "error": tuned.generations[i].error,
                    "message": tuned.generations[i].message,
                },
                # The item whole, so `collect-failures --eval-items` can turn a wrong answer into a failure with the
                # reference as its correction: the conversation before the turn, the tool schemas, the reference.
                "session_id": item.session,
                "prompt": item.prompt,
                "tool_schemas": item.tools,
                "reference_message": item.reference,
                "change": "fixed"
                if t.correct and not b.correct
                else "broken"
                if b.correct and not t.correct
                else "same",
            }
        )
    return rows


def write_items(rows: list[dict[str, Any]], folder: Path) -> Path:
    from clawtune.artifacts.files import write_jsonl_atomic

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ITEMS_FILE
    write_jsonl_atomic(path, rows)
    return path


def print_gate(result: dict[str, Any], console: Any) -> None:
    colour = {PASSED: "green", FAILED: "red", INCONCLUSIVE: "yellow"}[result["verdict"]]
    console.print(f"[bold {colour}]GATE {result['verdict']}[/]: {result['why']}", highlight=False)
    for check in result["checks"]:
        mark = "[green]ok[/]" if check["passed"] else f"[{colour}]no[/]"
        c = check["comparison"]
        console.print(
            f"  {mark} {check['check']}: {c['fine_tuned_only_correct']} fixed, {c['baseline_only_correct']} broken, "
            f"McNemar p = {c['mcnemar_p']:.3g} (needs {check['needs']})",
            highlight=False,
        )
