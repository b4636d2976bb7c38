"""What the dashboard shows, read from the files and the database the commands write (never a copy of them).

Each reader goes through the module that owns the format: the checkpoint manifest (`artifacts.manifest`), the data mix
(`data.recipe`), the evaluation report (`evaluate/report.py` writes `eval-report.json`), the request log and the
experiments (`serve.log`), the review file (`loop.failures.collect`). The one file written here is a review.jsonl.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clawtune.artifacts.files import atomic_write
from clawtune.artifacts.manifest import LOSS_PLOT, MANIFEST, SUMMARY, checkpoint_step, checkpoints, read_manifest
from clawtune.data.holdout import REPORT as EXPORT_REPORT
from clawtune.evaluate.report import ROWS as EVAL_ROWS
from clawtune.loop.failures.collect import FILES as FAILURE_FILES
from clawtune.loop.failures.collect import check_correction
from clawtune.problems import InputError

# Folders never worth walking into when looking for runs and reports (hidden ones neither: .git, .venv, a
# checkpoint's .staging, a collect-failures swap in progress).
SKIP_DIRS = {"venv", "node_modules", "__pycache__", "site-packages"}
MAX_DEPTH = 5
EVAL_REPORT = "eval-report.json"


class UIError(InputError):
    """A request the dashboard refuses (unknown item, bad correction); the message says why."""


def walk(root: Path, max_depth: int = MAX_DEPTH) -> Iterator[tuple[Path, list[str], list[str]]]:
    """os.walk under `root`, `max_depth` levels deep, skipping hidden and heavy folders."""
    base = len(root.parts)
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        depth = len(here.parts) - base
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        if depth >= max_depth:
            dirs[:] = []
        yield here, dirs, files


def _json(path: Path) -> dict[str, Any] | None:
    return _read(path)[0]


def _read(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A JSON object from a file, or why not (shown on the page: a damaged report is reported, not hidden)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return None, f"{path}: cannot read: {exc.strerror}"
    except ValueError as exc:
        return None, f"{path}: not JSON: {exc}"
    return (data, None) if isinstance(data, dict) else (None, f"{path}: not a JSON object")


def _unreadable(root: Path, path: Path, problem: str) -> dict[str, Any]:
    return {"id": _rel(root, path), "path": str(path), "problem": problem, "modified": path.stat().st_mtime}


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix() or "."
    except ValueError:
        return str(path)


def _clean(value: Any) -> Any:
    """JSON that browsers parse: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


# ---- runs ---------------------------------------------------------------------------------------------------------


def _losses_from_state(checkpoint: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A run still going (or stopped before its summary): the loss history of its newest checkpoint's trainer state."""
    state = _json(checkpoint / "trainer_state.json") or {}
    manifest = _json(checkpoint / MANIFEST) or {}
    offset = int(manifest.get("step_offset") or 0)
    history = [e for e in state.get("log_history") or [] if isinstance(e, dict)]
    train = [{"step": e["step"] + offset, "loss": e["loss"]} for e in history if "loss" in e and "step" in e]
    evals = [{"step": e["step"] + offset, "loss": e["eval_loss"]} for e in history if "eval_loss" in e and "step" in e]
    return train, evals


def find_runs(root: Path) -> list[dict[str, Any]]:
    """Every training run under `root`: a folder with `training-summary.json` or complete `checkpoint-N` folders."""
    runs = []
    for folder, dirs, files in walk(root):
        found = checkpoints(folder) if any(d.startswith("checkpoint-") for d in dirs) else []
        if SUMMARY not in files and not found:
            continue
        dirs[:] = [d for d in dirs if checkpoint_step(Path(d)) < 0]  # no run inside a checkpoint
        runs.append(run_info(root, folder, found))
    runs.sort(key=lambda r: r["modified"], reverse=True)
    return runs


def run_info(root: Path, folder: Path, found: list[Path]) -> dict[str, Any]:
    summary, problem = _read(folder / SUMMARY) if (folder / SUMMARY).exists() else (None, None)
    newest = found[-1] if found else None
    try:
        manifest = read_manifest(folder) if (folder / MANIFEST).is_file() else read_manifest(newest) if newest else {}
    except InputError:
        manifest = {}
    config = manifest.get("config") or {}
    if summary is not None:
        losses, evals = summary.get("losses") or [], summary.get("eval_losses") or []
    else:
        losses, evals = _losses_from_state(newest) if newest else ([], [])
    steps = summary.get("steps") if summary else (manifest.get("step") if manifest else None)
    if steps is not None and summary and summary.get("step_offset"):
        steps += summary["step_offset"]
    stamp = folder / SUMMARY if summary is not None else (newest or folder)
    return _clean(
        {
            "id": _rel(root, folder),
            "path": str(folder),
            "finished": summary is not None,
            "base_model": manifest.get("base_model") or (summary or {}).get("base_model"),
            "method": manifest.get("kind") or (summary or {}).get("method"),
            "data": (config.get("data") or {}).get("train"),
            "validation_data": (config.get("data") or {}).get("validation"),
            "steps": steps,
            "final_train_loss": (summary or {}).get("final_train_loss"),
            "last_loss": losses[-1]["loss"] if losses else None,
            "last_eval_loss": evals[-1]["loss"] if evals else None,
            "losses": losses,
            "eval_losses": evals,
            "checkpoints": [
                {"name": c.name, "step": checkpoint_step(c), "manifest": _json(c / MANIFEST)} for c in found
            ],
            "manifest": manifest or None,
            "summary": summary,
            "plot": (folder / LOSS_PLOT).is_file(),
            "problem": problem,
            "modified": stamp.stat().st_mtime,
        }
    )


# ---- data -----------------------------------------------------------------------------------------------------------


_stats_cache: dict[tuple[str, int, int], dict[str, Any]] = {}


def _stats_of(path: Path) -> dict[str, Any] | None:
    """`ft data-stats` on a file the export or augmentation wrote: the mix against the target, lengths, tools.
    Remembered while the file's size and time stay the same (a large file is not re-read at every page view)."""
    from clawtune.data.recipe import data_stats
    from clawtune.data.validate import iter_examples
    from clawtune.problems import Problems

    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _stats_cache:
        return _stats_cache[key]
    problems = Problems(keep=0)
    stats = data_stats([e for _, e in iter_examples(path, problems)]).to_json()
    stats["file"] = str(path)
    stats["bad_lines"] = len(problems)
    if len(_stats_cache) > 64:
        _stats_cache.clear()
    _stats_cache[key] = _clean(stats)
    return _stats_cache[key]


def find_data_reports(root: Path) -> list[dict[str, Any]]:
    """Every export report (`export-report.json`) and augmentation report (`NAME-report.json` beside `NAME.jsonl`)."""
    found = []
    for folder, _, files in walk(root):
        for name in sorted(files):
            path = folder / name
            if name == EXPORT_REPORT:
                report, problem = _read(path)
                if report is None or "splits" not in report:
                    found.append(_unreadable(root, path, problem or f"{path}: not an export report (no splits)"))
                    continue
                train = (report.get("splits") or {}).get("train") or {}
                found.append(
                    {
                        "id": _rel(root, path),
                        "kind": "export",
                        "path": str(path),
                        "report": _clean(report),
                        "stats": _stats_of(folder / str(train.get("file") or "raw.jsonl")),
                        "modified": path.stat().st_mtime,
                    }
                )
            elif name.endswith("-report.json") and name != FAILURE_FILES["report"]:
                report, problem = _read(path)
                if report is None and (folder / f"{name.removesuffix('-report.json')}.jsonl").is_file():
                    found.append(_unreadable(root, path, problem or ""))
                if report is None or "mix_after" not in report:
                    continue
                output = folder / f"{name.removesuffix('-report.json')}.jsonl"
                found.append(
                    {
                        "id": _rel(root, path),
                        "kind": "augment",
                        "path": str(path),
                        "report": _clean(report),
                        "stats": _stats_of(output),
                        "modified": path.stat().st_mtime,
                    }
                )
    found.sort(key=lambda r: r["modified"], reverse=True)
    return found


# ---- evaluations ----------------------------------------------------------------------------------------------------


def find_evaluations(root: Path) -> list[dict[str, Any]]:
    """Every `eval-report.json` under `root`, newest first, with the table's rows in the report's own order."""
    found = []
    for folder, _, files in walk(root, MAX_DEPTH + 2):  # checkpoint-N/eval/ sits deeper than runs
        if EVAL_REPORT not in files:
            continue
        path = folder / EVAL_REPORT
        report, problem = _read(path)
        if report is None or "baseline" not in report or "fine_tuned" not in report:
            found.append(_unreadable(root, path, problem or f"{path}: not an evaluation report (no baseline)"))
            continue
        found.append(
            {
                "id": _rel(root, path),
                "path": str(path),
                "report": _clean(report),
                "html": (folder / "eval-report.html").is_file(),
                "modified": path.stat().st_mtime,
            }
        )
    found.sort(key=lambda r: r["modified"], reverse=True)
    return found


def eval_rows() -> list[dict[str, str]]:
    """The evaluation table's rows: the key in a side's summary, its label, and how it is formatted."""
    return [{"key": key, "label": label, "kind": kind} for key, label, kind in EVAL_ROWS]


# ---- traffic --------------------------------------------------------------------------------------------------------

NICE_BUCKETS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)


def traffic(log: Path) -> dict[str, Any]:
    """Requests over time per model, adapter and arm; latency; tokens and the system-prompt policy's savings;
    feedback: counted from the log and its archives in SQL (a log of a million rows is not loaded)."""
    import numpy as np

    from clawtune.serve.log import log_files, traffic_groups, traffic_latencies, traffic_span

    files = log_files(log)
    span = traffic_span(log) if files else None
    if span is None:
        return {"log": str(log), "files": [f.name for f in files], "requests": 0}
    first, last, total = span
    bucket = next((b for b in NICE_BUCKETS if max(last - first, 1.0) / b <= 60), NICE_BUCKETS[-1])
    start = math.floor(first / bucket) * bucket
    n = int((last - start) // bucket) + 1
    series: dict[str, dict[str, list[int]]] = {k: defaultdict(lambda: [0] * n) for k in ("model", "adapter", "arm")}
    sums = "requests errors prompt_tokens completion_tokens tokens_saved tool_calls tool_calls_valid positive negative"
    per_model: dict[str, dict[str, Any]] = {}
    for group in traffic_groups(log, start, bucket):
        i = min(max(int(group["bucket"]), 0), n - 1)
        model = group["model"] or "(none)"
        series["model"][model][i] += group["requests"]
        series["adapter"][group["adapter"] or "(base)"][i] += group["requests"]
        if group["experiment"]:
            series["arm"][f"{group['experiment']}: {group['arm'] or '?'}"][i] += group["requests"]
        stats = per_model.setdefault(model, {"model": model, **dict.fromkeys(sums.split(), 0)})
        for key in sums.split():
            stats[key] += group[key] or 0
    times: dict[str, list[float]] = defaultdict(list)
    values: dict[str, list[float]] = defaultdict(list)
    for created, model, latency in traffic_latencies(log):
        times[model or "(none)"].append(created)
        values[model or "(none)"].append(latency)
    p50: list[float | None] = [None] * n
    p95: list[float | None] = [None] * n
    if values:
        every_time = np.concatenate([np.asarray(times[m]) for m in values])
        every_value = np.concatenate([np.asarray(values[m]) for m in values])
        index = np.clip(((every_time - start) // bucket).astype(int), 0, n - 1)
        order = np.argsort(index, kind="stable")
        index, every_value = index[order], every_value[order]
        bounds = np.searchsorted(index, np.arange(n + 1))
        for i in range(n):
            chunk = every_value[bounds[i] : bounds[i + 1]]
            if len(chunk):
                p50[i], p95[i] = (float(v) for v in np.percentile(chunk, [50, 95]))
    for model, stats in per_model.items():
        found = np.percentile(values[model], [50, 95]) if values.get(model) else [None, None]
        stats["latency_p50_ms"], stats["latency_p95_ms"] = (None if v is None else float(v) for v in found)
    feedback = {k: sum(s[k] for s in per_model.values()) for k in ("positive", "negative")}
    return _clean(
        {
            "log": str(log),
            "files": [f.name for f in files],
            "requests": total,
            "first": first,
            "last": last,
            "bucket_s": bucket,
            "times": [start + i * bucket for i in range(n)],
            "series": {k: dict(v) for k, v in series.items()},
            "latency_p50_ms": p50,
            "latency_p95_ms": p95,
            "models": sorted(per_model.values(), key=lambda s: -s["requests"]),
            "feedback": feedback,
            "tokens_saved": sum(s["tokens_saved"] for s in per_model.values()),
        }
    )


# ---- experiments ----------------------------------------------------------------------------------------------------


def experiments(log: Path) -> list[dict[str, Any]]:
    """Every experiment in the log's database with its refreshes (each refresh holds the test's figures then) and its
    decisions (`experiment_events`: start, the canary's steps, stop, a guardrail's rollback, promote), oldest first."""
    from clawtune.serve.log import ExperimentStore, connect_readonly

    if not log.exists():
        return []
    connect_readonly(log).close()  # a log of an older clawtune is migrated first (it has no experiments table)
    store = ExperimentStore(log)
    out = []
    for experiment in reversed(store.all()):
        refreshes = store.refreshes(experiment["id"])
        out.append({**experiment, "refreshes": refreshes, "events": store.events(experiment["id"])})
    return _clean(out)


# ---- failures -------------------------------------------------------------------------------------------------------

_review_lock = threading.Lock()


def find_failure_folders(root: Path) -> list[dict[str, Any]]:
    """Every collect-failures output under `root`: its report and the review file's items."""
    found = []
    for folder, _, files in walk(root):
        if FAILURE_FILES["review"] not in files and FAILURE_FILES["report"] not in files:
            continue
        report = _json(folder / FAILURE_FILES["report"])
        items = review_items(folder / FAILURE_FILES["review"])
        found.append(
            {
                "id": _rel(root, folder),
                "path": str(folder),
                "report": _clean(report),
                "review": str(folder / FAILURE_FILES["review"]),
                "items": items,
            }
        )
    return found


def review_items(path: Path) -> list[dict[str, Any]]:
    """The review file's lines (a line that is not a JSON object is shown as a problem, never dropped)."""
    if not path.is_file():
        return []
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            items.append({"line": number, "problem": f"not JSON: {exc}"})
            continue
        if not isinstance(item, dict):
            items.append({"line": number, "problem": "not a JSON object"})
            continue
        items.append({"line": number, **_clean(item)})
    return items


def save_correction(root: Path, folder_id: str, failure_id: str, correction: Any) -> dict[str, Any]:
    """Write a person's correction into the review file's line for `failure_id` (the file collect-failures reads with
    --corrections); every other line stays as it was, byte for byte. A correction the command would refuse is
    refused here, with the same reasons."""
    folders = {f["id"]: Path(f["path"]) for f in find_failure_folders(root)}
    if folder_id not in folders:
        raise UIError(f"no collect-failures output {folder_id!r} under {root}")
    path = folders[folder_id] / FAILURE_FILES["review"]
    with _review_lock:
        try:
            seen = path.stat()
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except OSError as exc:
            raise UIError(f"{path}: cannot read: {exc.strerror}") from None
        for i, line in enumerate(lines):
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if not isinstance(item, dict) or item.get("failure_id") != failure_id:
                continue
            if correction not in (None, "", []):
                problems = check_correction(correction, item.get("tools"))
                if problems:
                    raise UIError(f"{path}:{i + 1}: correction: " + "; ".join(problems))
            item["correction"] = None if correction in ("", []) else correction
            lines[i] = json.dumps(item, ensure_ascii=False) + "\n"
            _write_atomic(path, "".join(lines), seen)
            return {"review": str(path), "line": i + 1, "failure_id": failure_id, "correction": item["correction"]}
    raise UIError(f"{path}: no line for failure {failure_id!r}")


def _write_atomic(path: Path, text: str, seen: os.stat_result) -> None:
    """Replace the file whole (a reader never sees half of it), with its mode kept; refused when the file changed
    since it was read (collect-failures wrote a new review meanwhile: that one is not overwritten)."""
    with atomic_write(path) as f:
        f.write(text)
        try:
            now = path.stat()
        except OSError:
            now = None
        if now is None or (now.st_ino, now.st_mtime_ns, now.st_size) != (seen.st_ino, seen.st_mtime_ns, seen.st_size):
            raise UIError(
                f"{path} changed while the correction was being saved (collect-failures ran?): reload the page"
            )


__all__ = [
    "UIError",
    "eval_rows",
    "experiments",
    "find_data_reports",
    "find_evaluations",
    "find_failure_folders",
    "find_runs",
    "save_correction",
    "traffic",
]
