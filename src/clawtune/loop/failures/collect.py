"""`clawtune agent collect-failures`: the agent's failing turns, corrected where possible, ready to retrain on.

The story: find the failing turns (the gateway's log first, so an OpenClaw turn it flagged is one failure, not two;
then the agent's OpenClaw stores) -> the date range and the criteria -> refuse the sessions an earlier export held
out -> hold out a share of the failing sessions -> corrections (the agent's own recovery, a person's from
`--corrections`, a teacher model) -> scrub -> write failures, corrected, pairs, review, held-out and the report into a
staging folder, then swap it into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clawtune.artifacts.files import staged_folder
from clawtune.data.build import Exporter
from clawtune.data.holdout import HeldOut
from clawtune.data.options import TrainingDataOptions
from clawtune.data.scrub import Scrubber
from clawtune.data.teacher import tool_call_problems
from clawtune.logs.lines import iter_json_lines
from clawtune.loop.failures.criteria import Criteria, parse_criteria
from clawtune.loop.failures.model import Failure
from clawtune.loop.failures.options import CollectOptions
from clawtune.messages import Example, Message
from clawtune.problems import InputError, Problems

FILES = {
    "failures": "failures.jsonl",
    "corrected": "corrected.jsonl",
    "pairs": "pairs.jsonl",
    "review": "review.jsonl",
    "held_out": "held-out.jsonl",
    "report": "failures-report.json",
}
REVIEW_NOTE = (
    "Write the right answer in `correction`: a string (the assistant's reply), or a list of messages (assistant "
    "messages with tool_calls, tool results, the final answer). Then run collect-failures again with "
    "--corrections THIS_FILE."
)
TEACHER_INSTRUCTION = (
    "You are answering in place of an agent whose answer to the last user message failed. Answer that message "
    "correctly: call one of the offered tools when the request needs data, otherwise reply directly."
)


class Collector:
    """Holds the counters of one run; `run()` is the whole command."""

    def __init__(self, options: CollectOptions) -> None:
        self.options = options
        self.criteria: Criteria = parse_criteria(options.criteria)
        self.problems = Problems(strict=options.strict)
        self.stats: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.sources_used: dict[str, Any] = {}
        # The export's own shaping: the same system-prompt policy and tool catalog as `export-training-data`.
        self.shaper = Exporter(
            TrainingDataOptions(
                agent_id=options.agent_id,
                output=options.output,
                state_dirs=options.state_dirs,
                sessions=options.sessions,
                system_prompt=options.system_prompt,
                strict=options.strict,
                progress=options.progress,
            )
        )
        self.shaper.problems = self.problems
        self.scrubber = Scrubber()
        self.teacher_stats: Counter[str] = Counter()
        self.teacher_rejections: Counter[str] = Counter()
        self.person: dict[str, Any] = {}

    # -- the story --
    def run(self) -> dict[str, Any]:
        options = self.options
        self.check_output()
        person = self.read_corrections() if options.corrections else {}
        failures = self.find()
        failures = self.refuse_held_out_by_exports(failures)
        held = self.holdout_sessions(failures)
        self.correct(failures, held, person)
        report = self.write(failures, held)
        return report

    # -- output folder --
    def check_output(self) -> None:
        """Refuse a folder that holds another run's files (or anything else) unless --force."""
        out = self.options.output
        if not out.exists() or self.options.force:
            return
        if not out.is_dir():
            raise InputError(f"--output {out}: exists and is not a folder")
        present = {p.name for p in out.iterdir()}
        if not present:
            return
        report = out / FILES["report"]
        if report.is_file():
            try:
                previous = json.loads(report.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                previous = {}
            if previous.get("run", {}).get("fingerprint") == self.options.fingerprint() and present <= set(
                FILES.values()
            ):
                return
            raise InputError(
                f"--output {out} holds the files of another collect-failures run (other agent, criteria, sources, "
                "dates, hold-out or seed); choose another folder, or pass --force to replace them"
            )
        raise InputError(f"--output {out} is not empty and holds no collect-failures run; pass --force to replace it")

    # -- finding --
    def find(self) -> list[Failure]:
        options = self.options
        gateway: dict[str, Failure] = {}
        if "gateway" in options.sources:
            gateway = self.from_gateway()
        found: list[Failure] = []
        if "openclaw" in options.sources:
            found += list(self.from_openclaw(gateway))
        found += list(gateway.values())
        if options.eval_items:
            found += self.from_eval_items()
        kept = []
        for failure in found:
            self.stats["failing_turns"] += 1
            if options.dates and not self.in_range(failure):
                self.dropped["outside_date_range"] += 1
                continue
            if not self.criteria.matches(failure.fields):
                self.dropped["criteria_not_met"] += 1
                continue
            kept.append(failure)
        return kept

    def in_range(self, failure: Failure) -> bool:
        assert self.options.dates is not None
        day = failure.fields.get("date")
        return day is not None and self.options.dates[0] <= day <= self.options.dates[1]

    def from_gateway(self) -> dict[str, Failure]:
        """Failing requests of the agent in the gateway's log, by request id."""
        from clawtune.loop.failures.gateway import request_failure, signals_of
        from clawtune.loop.gateway import Matcher, iter_agent_requests, resolve_log

        options = self.options
        path = resolve_log(options.gateway_log)
        if not path.is_file():
            message = f"no gateway log at {path} (clawtune serve writes DATA_DIR/requests.sqlite; --gateway-log PATH)"
            if options.explicit_sources or options.gateway_log:
                raise InputError(message)
            self.sources_used["gateway"] = {"log": str(path), "read": False, "why": message}
            return {}
        since = None
        if options.dates:
            since = datetime.combine(options.dates[0], datetime.min.time(), UTC).timestamp()
        counts: dict[str, int] = {}
        out: dict[str, Failure] = {}
        matcher = Matcher(options.agent_id, options.gateway_models)
        for request in iter_agent_requests(path, matcher, counts, since):
            self.stats["gateway_requests"] += 1
            signals = signals_of(request)
            if signals:
                out[request.id] = request_failure(request, self.shaper, options.agent_id, path, signals)
        self.sources_used["gateway"] = {"log": str(path), "read": True, **counts}
        return out

    def from_eval_items(self) -> list[Failure]:
        """The test items an evaluated model answered wrong, each corrected by its reference (checked like any other
        correction: one that fails the checks leaves the failure for review)."""
        from clawtune.loop.failures.evalitems import eval_failures, items_file

        found: list[Failure] = []
        files = [items_file(p) for p in self.options.eval_items]
        for path in files:
            for failure in eval_failures(path, self.options.agent_id, self.problems, self.dropped):
                self.stats["eval_items_wrong"] += 1
                assert failure.correction is not None
                problems = _response_problems(failure.correction, failure.tools)
                if problems:
                    self.problems.add(
                        str(path), None, "bad-correction", f"{failure.location}: the reference: " + "; ".join(problems)
                    )
                    self.stats["eval_references_rejected"] += 1
                    failure.correction = failure.correction_how = failure.correction_from = None
                found.append(failure)
        self.sources_used["eval"] = {"read": True, "files": [str(p) for p in files]}
        return found

    def from_openclaw(self, gateway: dict[str, Failure]) -> Iterator[Failure]:
        """Failing turns of the agent's OpenClaw sessions; a gateway failure of the same answer is merged in."""
        from clawtune.loop.failures.gateway import merge_into, same_answer
        from clawtune.loop.failures.openclaw import Context, session_failures, store_paths, store_reactions

        options = self.options
        try:
            sources, index = self.shaper.find_sources()
        except InputError as exc:
            if (options.explicit_sources and "gateway" not in options.sources) or options.sessions:
                raise
            self.sources_used["openclaw"] = {"read": False, "why": str(exc)}
            return
        ctx = Context(
            shaper=self.shaper,
            negative=frozenset(options.negative),
            positive=frozenset(options.positive_reactions),
            problems=self.problems,
            stats=self.stats,
            max_context_tokens=options.max_tokens,
            flagged=set(gateway),
        )
        for g in gateway.values():
            for key in g.links:
                ctx.flagged_answers.setdefault(key, []).append(g.asked)
        for store in store_paths(sources):
            for session_id, rows in store_reactions(store, self.problems).items():
                ctx.store_reactions.setdefault(session_id, []).extend(rows)
        self.stats["store_reaction_rows"] += sum(len(v) for v in ctx.store_reactions.values())
        self.sources_used["openclaw"] = {"read": True, "sources": len(sources)}
        for session in self.shaper.read(sources, index):
            try:
                failures = list(session_failures(session, ctx))
            except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
                session.report(self.problems, None, "unexpected-shape", f"session skipped: {type(exc).__name__}: {exc}")
                continue
            for failure in failures:
                for rid, g in list(gateway.items()):
                    if same_answer(failure, g):
                        merge_into(failure, gateway.pop(rid))
                yield failure
        self.stats["sessions_read"] = self.shaper.stats["sessions_read"]

    # -- held-out sessions --
    def refuse_held_out_by_exports(self, failures: list[Failure]) -> list[Failure]:
        """Sessions in an earlier export's validation or test split never become training data: refused, counted."""
        held: set[str] = set()
        self.export_ids: list[Any] = []
        held_files: list[Path] = []
        for folder in self.options.exports:
            if not folder.is_dir():
                raise InputError(f"--export {folder}: no such export folder")
            report = folder / "export-report.json"
            if report.is_file():
                with contextlib.suppress(OSError, ValueError):
                    self.export_ids.append(json.loads(report.read_text(encoding="utf-8")).get("export_id"))
            for name in ("validation.jsonl", "test.jsonl"):
                path = folder / name
                if path.is_file():
                    held_files.append(path)
                    for _, example in iter_json_lines(path, self.problems):
                        session = (example.get("metadata") or {}).get("session_id")
                        if session:
                            held.add(str(session))
        # A corrected failure word for word a held-out example (another session of a templated agent): not trained
        # on either, or `ft train`'s leakage check refuses the whole folder.
        self.held_contents = HeldOut.read(held_files).contents if held_files else {}
        kept = []
        for failure in failures:
            if failure.session_id in held:
                self.dropped["in_an_export_validation_or_test_split"] += 1
            else:
                kept.append(failure)
        return kept

    def holdout_sessions(self, failures: list[Failure]) -> set[str]:
        """A seeded share of the failing sessions, by session, never trained on.

        Each session is held out by its own seeded hash, not by a split of this run's sessions: a session held out
        once stays held out when a later collection finds more failures, so a retrain is never judged on a failure
        it was trained on in an earlier round.
        """
        share = self.options.holdout_share
        held = set()
        for session in {f.session_id for f in failures}:
            digest = hashlib.sha256(f"{self.options.seed}:{session}".encode()).digest()
            if int.from_bytes(digest[:8], "big") / 2**64 < share:
                held.add(session)
        return held

    # -- corrections --
    def read_corrections(self) -> dict[str, list[Message]]:
        """A person's corrections from a filled-in review.jsonl, by failure id; bad ones are reported and skipped."""
        path = self.options.corrections
        assert path is not None
        if not path.is_file():
            raise InputError(f"--corrections {path}: no such file")
        out: dict[str, list[Message]] = {}
        self.person_lines: dict[str, tuple[int, dict[str, Any]]] = {}
        for lineno, item in iter_json_lines(path, self.problems):
            correction = item.get("correction")
            failure_id = item.get("failure_id")
            if correction in (None, "", []):
                continue
            if not isinstance(failure_id, str):
                self.problems.add(str(path), lineno, "bad-correction", "no failure_id", key="failure_id")
                continue
            messages = _person_messages(correction)
            if messages is None:
                self.problems.add(
                    str(path),
                    lineno,
                    "bad-correction",
                    "expected a string or a list of assistant/tool messages",
                    key="correction",
                )
                self.stats["person_corrections_rejected"] += 1
                continue
            out[failure_id] = messages
            self.person_lines[failure_id] = (lineno, item)
        return out

    def correct(self, failures: list[Failure], held: set[str], person: dict[str, list[Message]]) -> None:
        """Corrections, in order: the agent's own recovery (found while reading), a person's, then a teacher's."""
        path = str(self.options.corrections)
        for failure in failures:
            if failure.correction is not None or failure.id not in person:
                continue
            problems = _response_problems(person[failure.id], failure.tools)
            if problems:
                lineno = self.person_lines[failure.id][0]
                self.problems.add(path, lineno, "bad-correction", "; ".join(problems), key="correction")
                self.stats["person_corrections_rejected"] += 1
                continue
            failure.correction, failure.correction_how = person[failure.id], "person"
            failure.correction_from = f"{path}:{self.person_lines[failure.id][0]}"
        self.stats["person_corrections_unmatched"] = len(set(person) - {f.id for f in failures})
        options = self.options
        if not options.teacher_endpoint:
            return
        from clawtune.data.teacher import Teacher

        teacher = Teacher(options.teacher_endpoint, options.teacher_model or "default", options.teacher_api_key)
        self.teacher = teacher
        pending = [f for f in failures if f.correction is None]
        for failure in self._progress(pending, "asking the teacher"):
            prompt = [*failure.prompt]
            if prompt and prompt[0].get("role") == "system":
                prompt[0] = {"role": "system", "content": f"{prompt[0]['content']}\n\n{TEACHER_INSTRUCTION}"}
            else:
                prompt.insert(0, {"role": "system", "content": TEACHER_INSTRUCTION})
            reply = teacher.answer([_plain(m) for m in prompt], failure.tools)
            if reply is None:
                self.teacher_rejections["endpoint_failed"] += 1
                continue
            reason = self._teacher_refusal(reply, failure)
            if reason:
                self.teacher_rejections[reason] += 1
                continue
            self.teacher_stats["accepted"] += 1
            failure.correction, failure.correction_how = [reply], "teacher"
            failure.correction_from = f"{options.teacher_model or 'teacher'} at {options.teacher_endpoint}"

    def _teacher_refusal(self, reply: Message, failure: Failure) -> str | None:
        """Why a teacher's answer is not kept: no answer, a tool call that fails its checks, the same failed answer."""
        if not reply.get("tool_calls") and not str(reply.get("content") or "").strip():
            return "empty_answer"
        if reply.get("tool_calls"):
            from clawtune.messages import normalize_tool_call

            reply["tool_calls"] = [
                normalize_tool_call(c, f"call_teacher_{i}") for i, c in enumerate(reply["tool_calls"])
            ]
            if tool_call_problems(reply, failure.tools):
                return "invalid_tool_call"
        first = next((m for m in failure.response if m.get("role") == "assistant"), None)
        if first is not None and _same_answer(first, reply):
            return "repeats_the_failure"
        return None

    def _progress(self, items: list[Failure], what: str) -> Any:
        if not self.options.progress or not items:
            return items
        import rich

        from clawtune.progress import track

        return track(items, what, rich.get_console())

    # -- writing --
    def write(self, failures: list[Failure], held: set[str]) -> dict[str, Any]:
        """Every file into a staging folder beside the output, then swapped into place (a crash leaves the old run)."""
        counts: Counter[str] = Counter()
        with staged_folder(self.options.output) as staging:
            handles = {
                k: open(staging / name, "w", encoding="utf-8")  # noqa: SIM115 - closed below
                for k, name in FILES.items()
                if k != "report"
            }
            try:
                for failure in failures:
                    lines = list(self.lines(failure, failure.session_id in held))
                    if any(kind == "corrected" and self.same_as_held_out(line) for kind, line in lines):
                        self.dropped["same_as_an_export_validation_or_test_example"] += 1
                        lines = [(kind, line) for kind, line in lines if kind not in ("corrected", "pairs")]
                    for kind, line in lines:
                        handles[kind].write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
                        counts[kind] += 1
            finally:
                for handle in handles.values():
                    handle.close()
            report = self.report(failures, held, counts)
            (staging / FILES["report"]).write_text(
                json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
            )
        return report

    def same_as_held_out(self, example: dict[str, Any]) -> bool:
        from clawtune.data.examples import duplicate_keys
        from clawtune.messages import normalize_example

        held: dict[bytes, str] = getattr(self, "held_contents", None) or {}
        return bool(held) and duplicate_keys(normalize_example(example))[0] in held

    def lines(self, failure: Failure, held_out: bool) -> Iterator[tuple[str, dict[str, Any]]]:
        """The lines one failure contributes to each file, scrubbed."""
        if held_out:
            yield (
                "held_out",
                self.scrub(failure.corrected_example() if failure.correction else failure.failure_example()),
            )
            return
        yield "failures", self.scrub(failure.failure_example())
        if failure.correction is None:
            example = self.scrub(failure.failure_example())
            yield (
                "review",
                {
                    "failure_id": failure.id,
                    "location": failure.location,
                    "signals": self.scrub_signals(failure.signals),
                    "messages": example["messages"],
                    **({"tools": example["tools"]} if example.get("tools") else {}),
                    "correction": None,
                    "note": REVIEW_NOTE,
                },
            )
            return
        yield "corrected", self.scrub(failure.corrected_example())
        pair = failure.pair()
        if pair is not None:
            pair["metadata"]["signals"] = self.scrub_signals(pair["metadata"]["signals"])
            yield "pairs", self.scrub_pair(pair)

    def scrub(self, example: Example) -> Example:
        """The export's scrubbing of the messages, and of the signals' texts (an error can quote an API key)."""
        if not self.options.scrub:
            return example
        out = self.scrubber.scrub_example(example)
        if out.get("metadata"):
            out = {**out, "metadata": {**out["metadata"], "signals": self.scrub_signals(out["metadata"]["signals"])}}
        return out

    def scrub_signals(self, signals: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.options.scrub:
            return signals
        return [{k: self.scrubber.scrub_text(v) if isinstance(v, str) else v for k, v in s.items()} for s in signals]

    def scrub_pair(self, pair: dict[str, Any]) -> dict[str, Any]:
        """One placeholder numbering across the prompt and both answers (the same email is the same placeholder)."""
        if not self.options.scrub:
            return pair
        sizes = [len(pair["prompt"]), len(pair["chosen"])]
        joined = self.scrubber.scrub_example({"messages": [*pair["prompt"], *pair["chosen"], *pair["rejected"]]})
        messages = joined["messages"]
        return {
            **pair,
            "prompt": messages[: sizes[0]],
            "chosen": messages[sizes[0] : sizes[0] + sizes[1]],
            "rejected": messages[sizes[0] + sizes[1] :],
        }

    def report(self, failures: list[Failure], held: set[str], counts: Counter[str]) -> dict[str, Any]:
        by: dict[str, Counter[str]] = {k: Counter() for k in ("signal", "tool", "category", "model", "source")}
        for f in failures:
            for kind in {s["type"] for s in f.signals}:
                by["signal"][kind] += 1
            for tool in {s.get("tool") for s in f.signals if s.get("tool")} | set(f.fields.get("tool") or []):
                by["tool"][str(tool)] += 1
            by["category"][str(f.fields.get("category"))] += 1
            by["model"][str(f.fields.get("model") or "unknown")] += 1
            by["source"]["+".join(f.meta.get("sources") or [f.source])] += 1
        corrected = Counter(f.correction_how for f in failures if f.correction_how)
        teacher = getattr(self, "teacher", None)
        return {
            "agent_id": self.options.agent_id,
            "criteria": self.criteria.text,
            "failures": len(failures),
            "files": {k: {"file": FILES[k], "lines": counts[k]} for k in FILES if k != "report"},
            "by_signal": dict(by["signal"].most_common()),
            "by_tool": dict(by["tool"].most_common()),
            "by_category": dict(by["category"].most_common()),
            "by_model": dict(by["model"].most_common()),
            "by_source": dict(by["source"].most_common()),
            "corrected": {
                "total": sum(corrected.values()),
                "by": {how: corrected[how] for how in ("recovery", "person", "teacher", "reference")},
                "uncorrected": sum(1 for f in failures if f.correction is None and f.session_id not in held),
            },
            "teacher": (
                {
                    "endpoint": self.options.teacher_endpoint,
                    "model": self.options.teacher_model,
                    "asked": teacher.stats["requests"],
                    "accepted": self.teacher_stats["accepted"],
                    "rejected": dict(self.teacher_rejections.most_common()),
                    "last_error": teacher.stats["last_error"],
                }
                if teacher
                else None
            ),
            "held_out": {
                "share": self.options.holdout_share,
                "seed": self.options.seed,
                "sessions": len(held),
                "failures": sum(1 for f in failures if f.session_id in held),
                "sessions_of_failures": len({f.session_id for f in failures}),
            },
            "earlier_exports": {
                "folders": [str(p) for p in self.options.exports],
                "export_ids": [i for i in getattr(self, "export_ids", []) if i],
            },
            "dropped": dict(self.dropped.most_common()),
            "sources": self.sources_used,
            "counts": {k: v for k, v in sorted(self.stats.items())},
            "skipped_input": self.problems.summary(),
            "redactions": dict(self.scrubber.counts.most_common()) if self.options.scrub else "disabled (--no-scrub)",
            "system_prompt": self.shaper.policy.record(),
            "date_range": [d.isoformat() for d in self.options.dates] if self.options.dates else None,
            "run": {"fingerprint": self.options.fingerprint()},
        }


def _plain(message: Message) -> Message:
    """A message as an OpenAI endpoint takes it (no training weight)."""
    return {k: v for k, v in message.items() if k != "weight"}


def _same_answer(a: Message, b: Message) -> bool:
    def key(m: Message) -> Any:
        calls = [(c["function"].get("name"), c["function"].get("arguments")) for c in m.get("tool_calls") or []]
        return (str(m.get("content") or "").strip(), calls)

    return bool(key(a) == key(b))


def _person_messages(correction: Any) -> list[Message] | None:
    """A person's correction as messages: a string is the assistant's reply; messages are taken as written."""
    from clawtune.messages import normalize_example

    if isinstance(correction, str):
        return [{"role": "assistant", "content": correction}]
    if isinstance(correction, dict):
        correction = [correction]
    if not isinstance(correction, list) or not all(isinstance(m, dict) for m in correction):
        return None
    if not correction or any(m.get("role") not in ("assistant", "tool") for m in correction):
        return None
    messages: list[Message] = normalize_example({"messages": correction})["messages"]
    return messages


def _response_problems(messages: list[Message], tools: list[dict[str, Any]] | None) -> list[str]:
    """What is wrong with a corrected response: tool calls that fail their checks, results answering no call, an
    ending that is not the assistant's."""
    problems: list[str] = []
    pending: set[str] = set()
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            if m.get("tool_calls"):
                problems += [f"message {i}: {p}" for p in tool_call_problems(m, tools)]
                pending |= {str(c.get("id")) for c in m["tool_calls"] if isinstance(c, dict)}
            elif not str(m.get("content") or "").strip():
                problems.append(f"message {i}: an empty assistant message")
        elif m.get("tool_call_id") not in pending:
            problems.append(f"message {i}: a tool result that answers no call of the correction")
    if messages and messages[-1]["role"] == "tool":
        problems.append("the correction ends with a tool result, not the assistant's answer")
    return problems


def check_correction(correction: Any, tools: list[dict[str, Any]] | None) -> list[str]:
    """What `--corrections` would refuse in a person's correction of a review line (empty: it would be taken)."""
    messages = _person_messages(correction)
    if messages is None:
        return ["expected a string or a list of assistant/tool messages"]
    return _response_problems(messages, tools)


def collect_failures(options: CollectOptions) -> dict[str, Any]:
    """Run one collection; raises InputError (printed without a traceback) for bad input."""
    return Collector(options).run()


def print_summary(report: dict[str, Any], output: Path) -> None:
    """The run at a glance: failures by signal, tool, category and model; corrections; where the files are."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Failures of agent {report['agent_id']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("criteria", report["criteria"])
    table.add_row("failures", str(report["failures"]))
    for key in ("by_signal", "by_tool", "by_category", "by_model", "by_source"):
        table.add_row(key.replace("_", " "), ", ".join(f"{k}: {v}" for k, v in report[key].items()) or "none")
    corrected = report["corrected"]
    how = ", ".join(f"{k} {v}" for k, v in corrected["by"].items() if v) or "none"
    table.add_row("corrected", f"{corrected['total']} ({how}); {corrected['uncorrected']} left for review")
    held = report["held_out"]
    table.add_row("held out", f"{held['failures']} failures of {held['sessions']} sessions ({held['share']:.0%})")
    if report["teacher"]:
        t = report["teacher"]
        rejected = ", ".join(f"{k} {v}" for k, v in t["rejected"].items()) or "none"
        table.add_row("teacher", f"asked {t['asked']}, kept {t['accepted']}, refused: {rejected}")
    table.add_row("dropped", ", ".join(f"{k}: {v}" for k, v in report["dropped"].items()) or "none")
    skipped = report["skipped_input"]
    table.add_row("bad input skipped", ", ".join(f"{k}: {v}" for k, v in skipped["by_reason"].items()) or "none")
    for name, info in report["sources"].items():
        if not info.get("read"):
            table.add_row(f"{name} source", f"not read: {info.get('why')}")
    console.print(table)
    for line in skipped["first"][:5]:
        console.print(f"  [yellow]skipped[/] {line}", highlight=False)
    for info in report["files"].values():
        console.print(f"  {info['lines']:>6}  {output / info['file']}", highlight=False)
    console.print(f"          {output / 'failures-report.json'}", highlight=False)
