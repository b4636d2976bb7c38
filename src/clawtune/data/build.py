"""`clawtune agent export-training-data`: an agent's OpenClaw sessions -> scrubbed, split OpenAI chat JSONL.

The story: find sources -> read sessions one at a time -> active branch -> segments at compactions -> OpenAI messages
-> system-prompt policy -> pieces under max tokens -> date filter -> scrub -> dedup -> spool -> split -> write + report.
Only the spool file and small per-session counters grow with the input.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from clawtune.artifacts.files import atomic_write, write_json_atomic
from clawtune.data.examples import (
    approx_tokens,
    as_context,
    called_tools,
    chunk_indices,
    duplicate_keys,
    infer_tool_schema,
)
from clawtune.data.holdout import REPORT, read_export
from clawtune.data.options import TrainingDataOptions
from clawtune.data.scrub import Scrubber
from clawtune.data.split import SPLITS, assign_splits
from clawtune.generation import parse_choice
from clawtune.logs.convert import Conversation, ConvertOptions, convert_segment, entry_time, iso
from clawtune.logs.lines import line_limit, read_lines
from clawtune.logs.sessions import (
    RawSession,
    agent_sources,
    default_state_dirs,
    expand_paths,
    iter_sessions,
    load_index,
)
from clawtune.logs.tree import active_branch, segments
from clawtune.messages import Example, is_trained
from clawtune.problems import InputError, Problems

FAILED_REPORT = "export-report.failed.json"  # a failed export's report, beside an earlier export's own

SPLIT_FILES = {"train": "raw.jsonl", "validation": "validation.jsonl", "test": "test.jsonl"}
# Examples are spooled before the split (and so the export id) is known: each ends with this placeholder id, which the
# split pass replaces by the real one without parsing the example again.
ID_PLACEHOLDER = "0" * 16
ID_TAIL = b'"export_id":"' + ID_PLACEHOLDER.encode() + b'"}}\n'


class Exporter:
    """Holds the counters of one export run; `run()` is the whole command."""

    def __init__(self, options: TrainingDataOptions) -> None:
        self.options = options
        self.problems = Problems(strict=options.strict)
        self.stats: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.scrubber = Scrubber()
        self.session_examples: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()  # sessions found again in another store (after an upgrade)
        self.seen_exact: set[bytes] = set()
        self.seen_near: set[bytes] = set()
        self.policy = parse_choice(options.system_prompt, options.agent_id)
        self.splits: dict[str, str] = {}
        self.export_id = ""  # derived from what is exported, once the split is known (see `derive_export_id`)
        self.content = hashlib.blake2b(digest_size=16)

    def run(self) -> dict[str, Any]:
        """Export, write the three split files and the report, and return the report."""
        options = self.options
        if options.output.exists() and not options.output.is_dir():
            raise InputError(f"--output {options.output} is a file; give the folder to write the export to")
        earlier = earlier_export_files(options.output)
        if earlier and not options.force:
            raise InputError(
                f"{options.output} holds the files of an earlier export ({', '.join(earlier)}); pass --force to "
                "replace them (--force removes only the files an export wrote, nothing else in the folder), or "
                "export into another folder"
            )
        options.output.mkdir(parents=True, exist_ok=True)
        with line_limit(options.max_line_bytes):
            return self._run()

    def spool(self, spool: Any, key: bytes, example: dict[str, Any]) -> None:
        """One spool line, `"<session id>"\t<example>`, counted into the export's content hash; written in pieces
        (concatenating would copy a long example twice more)."""
        data = orjson.dumps(example, option=orjson.OPT_APPEND_NEWLINE)
        self.content.update(key)
        self.content.update(data)
        spool.write(key)
        spool.write(data)

    def _run(self) -> dict[str, Any]:
        options = self.options
        sources, index = self.find_sources()
        spool = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept past the with-block for the split pass
            "wb", dir=options.output, prefix=".spool-", suffix=".jsonl", delete=False
        )
        try:
            with spool:
                for session in self.read(sources, index):
                    # Each spool line is `"<session id>"\t<example>`: the split pass routes it without parsing.
                    # Written in pieces: concatenating would copy a long example twice more.
                    key = orjson.dumps(session.session_id) + b"\t"
                    for example in self.examples(session):
                        self.spool(spool, key, example)
                for session, conv in options.extra_conversations or ():
                    key = orjson.dumps(session.session_id) + b"\t"
                    for example in self.conversation_examples(session, conv):
                        self.spool(spool, key, example)
            written = sum(self.session_examples.values())
            if written < options.min_samples:
                # No split files, but the report: it says what was read, dropped and skipped, and why. An earlier
                # export kept in the folder (a --force run that failed) keeps its own report: it is what records
                # which files that export owns.
                message = self.too_few_message(written)
                name = FAILED_REPORT if earlier_export_files(options.output) else REPORT
                failed = self.report(dict.fromkeys(SPLITS, 0), len(sources)) | {"error": message, "written": [name]}
                write_report(options.output, failed, name)
                raise InputError(message + self.bad_input_listing(options.output / name))
            self.splits = assign_splits(self.session_examples, options.ratios, options.seed)
            self.export_id = self.derive_export_id()
            remove_earlier_export(options.output, keep=set(SPLIT_FILES.values()))
            counts = self.write_splits(Path(spool.name), self.splits)
        finally:
            Path(spool.name).unlink(missing_ok=True)
        report = self.report(counts, len(sources))
        report["stale_files"] = stale_files(options.output, self.export_id)
        write_report(options.output, report)
        return report

    def find_sources(self) -> tuple[list[Path], dict[str, dict[str, Any]]]:
        """Explicit `--sessions` paths, or the agent's stores under each state folder."""
        options = self.options
        if not options.read_openclaw:
            return [], {}
        if options.sessions:
            return expand_paths(options.sessions, self.problems), {}
        sources: list[Path] = []
        index: dict[str, dict[str, Any]] = {}
        state_dirs = options.state_dirs or default_state_dirs()
        for state_dir in state_dirs:
            sources += agent_sources(state_dir, options.agent_id, self.problems)
            index.update(load_index(state_dir, options.agent_id, self.problems))
        if not sources:
            looked = ", ".join(str(d / "agents" / options.agent_id) for d in state_dirs)
            why = "".join(f"\n  {problem}" for problem in self.problems.items[:10])
            raise InputError(f"no sessions found for agent {options.agent_id!r} (looked in {looked}){why}")
        return sources, index

    def read(self, sources: list[Path], index: dict[str, dict[str, Any]]) -> Any:
        """Sessions that pass the agent, key and channel filters, with a progress bar over the sources."""
        options = self.options
        import rich

        from clawtune.progress import progress_bar

        with progress_bar("reading sessions", rich.get_console() if options.progress else None) as progress:
            task = progress.add_task("reading sessions", total=len(sources))
            done_sources: set[str] = set()
            for session in iter_sessions(sources, self.problems, index, self.duplicates):
                self.stats["sessions_read"] += 1
                if session.source not in done_sources:
                    done_sources.add(session.source)
                    progress.update(task, completed=len(done_sources))
                if session.agent_id and session.agent_id != options.agent_id:
                    self.dropped["other_agent"] += 1
                elif options.session_key and not fnmatch.fnmatchcase(session.session_key or "", options.session_key):
                    self.dropped["session_key_filter"] += 1
                elif options.channel and (session.channel or "") != options.channel:
                    self.dropped["channel_filter"] += 1
                else:
                    yield session

    def examples(self, session: RawSession) -> Any:
        """The examples one session yields; a session of a shape no reader expected is reported and skipped."""
        try:
            examples = list(self.session_examples_of(session))
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            session.report(self.problems, None, "unexpected-shape", f"session skipped: {type(exc).__name__}: {exc}")
            return []
        self.session_examples[session.session_id] += len(examples)
        self.stats["sessions_used"] += bool(examples)
        return examples

    def conversation_examples(self, session: RawSession, conv: Conversation) -> list[Example]:
        """The examples of a conversation another source already converted (the gateway's log)."""
        self.stats["sessions_read"] += 1
        examples = [e for e in self.pieces(session, conv) if self.keep(e)]
        self.session_examples[session.session_id] += len(examples)
        self.stats["sessions_used"] += bool(examples)
        return examples

    def session_examples_of(self, session: RawSession) -> Any:
        """The examples one session yields, filtered, scrubbed and deduplicated."""
        options = self.options
        if options.dates and not self.may_overlap(session):
            self.dropped["outside_date_range"] += 1
            return
        convert = ConvertOptions(keep_thinking=options.keep_thinking, keep_images=options.keep_images)
        branch = active_branch(session, self.problems)
        self.stats["entries_off_branch"] += len(session.entries) - len(branch)
        parts = segments(branch)
        self.stats["compactions"] += sum(1 for s in parts if s.summary is not None)
        for part in parts:
            conv = convert_segment(session, part, convert, self.problems, self.stats)
            for example in self.pieces(session, conv):
                if self.keep(example):
                    yield example

    def may_overlap(self, session: RawSession) -> bool:
        """Whether a session's span (first to last entry, appended in time order) can touch the date range."""
        assert self.options.dates is not None
        stamps = [t for t in (entry_time(session.entries[0]), entry_time(session.entries[-1])) if t is not None]
        if not stamps:
            return True
        first, last = (datetime.fromtimestamp(t / 1000, UTC).date() for t in (min(stamps), max(stamps)))
        return first <= self.options.dates[1] and last >= self.options.dates[0]

    def pieces(self, session: RawSession, conv: Conversation) -> Any:
        """Split a conversation under max tokens and dress each piece as an example with its metadata."""
        options = self.options
        system = self.system_message(session)
        tools = self.tools_for(session, conv)
        fixed = (approx_tokens(json.dumps(tools)) if tools else 0) + (approx_tokens(system["content"]) if system else 0)
        pieces, oversized = chunk_indices(conv.messages, max(options.max_tokens - fixed, 256))
        self.stats["turns_over_max_tokens"] += oversized
        self.stats["sessions_split"] += len(pieces) > 1
        for context, body in pieces:
            if not any(is_trained(conv.messages[i]) for i in body):
                self.dropped["no_trained_turn"] += 1
                continue
            indices = [*context, *body]
            times = [t for t in (conv.times[i] for i in indices) if t is not None]
            lines = [n for n in (conv.lines[i] for i in indices) if n is not None]
            first_trained = next((conv.times[i] for i in body if is_trained(conv.messages[i])), None)
            messages = [as_context(conv.messages[i]) for i in context] + [conv.messages[i] for i in body]
            example: Example = {"messages": ([system] if system else []) + messages}
            if tools:
                example["tools"] = tools
            low, high = (min(lines), max(lines)) if lines else (None, None)
            example["metadata"] = {
                "agent_id": session.agent_id or options.agent_id,
                "session_id": session.session_id,
                "session_key": session.session_key,
                "channel": session.channel,
                "start": iso(min(times)) if times else None,
                "end": iso(max(times)) if times else None,
                "trained_at": iso(first_trained),
                "source": f"{session.where(low)}-{high}" if lines else session.where(None),
                "signals": [s for s in conv.signals if low is not None and low <= (s.get("line") or 0) <= (high or 0)],
                "system_prompt": self.policy.policy,
                "export_id": ID_PLACEHOLDER,  # the last key: write_splits puts the real id in place of it
            }
            yield example

    def tools_for(self, session: RawSession, conv: Conversation) -> list[dict[str, Any]] | None:
        """The recorded tool catalog; where OpenClaw truncated it, only the tools called. Schemas of called tools
        that were not recorded are inferred from their arguments, so every call names a tool the example offers."""
        recorded = session.tools or []
        calls = called_tools(conv.messages)
        tools = [t for t in recorded if t["function"]["name"] in calls] if session.tools_truncated else list(recorded)
        known = {t["function"]["name"] for t in tools}
        for name, args in calls.items():
            if name not in known:
                tools.append(infer_tool_schema(name, args))
                self.stats["tool_schemas_inferred"] += 1
        return tools or None

    def system_message(self, session: RawSession) -> dict[str, Any] | None:
        if self.policy.policy == "keep" and not session.system_prompt:
            self.stats["system_prompt_unknown"] += 1
        return self.policy.system_message(session.system_prompt)

    def keep(self, example: Example) -> bool:
        """Date range, failure and duplicate filters; scrubbing happens here, after filtering, before keys."""
        options = self.options
        meta = example["metadata"]
        if options.dates:
            stamp = meta.get("trained_at") or meta.get("start")
            if stamp is None:
                self.dropped["no_timestamp"] += 1
                return False
            day = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC).date()
            if not options.dates[0] <= day <= options.dates[1]:
                self.dropped["outside_date_range"] += 1
                return False
        if options.drop_failures and meta["signals"]:
            self.dropped["failure_signals"] += 1
            return False
        if options.scrub:
            example["messages"] = self.scrubber.scrub_example(example)["messages"]
        exact, near = duplicate_keys(example)
        if exact in self.seen_exact:
            self.dropped["exact_duplicate"] += 1
            return False
        if near in self.seen_near:
            self.dropped["near_duplicate"] += 1
            return False
        self.seen_exact.add(exact)
        self.seen_near.add(near)
        self.stats["examples_with_tool_calls"] += any(m.get("tool_calls") for m in example["messages"])
        return True

    def write_splits(self, spool: Path, splits: dict[str, str]) -> dict[str, int]:
        """Stream the spool into the three split files, each written to a temp name and renamed when all are
        complete."""
        out = self.options.output
        tail = ID_TAIL.replace(ID_PLACEHOLDER.encode(), self.export_id.encode())
        counts = dict.fromkeys(SPLITS, 0)
        with contextlib.ExitStack() as stack:
            handles = {s: stack.enter_context(atomic_write(out / SPLIT_FILES[s], binary=True)) for s in SPLITS}
            with open(spool, "rb") as fh:
                for line in read_lines(fh, limit=1 << 62):
                    assert not isinstance(line, int) and line.endswith(ID_TAIL)
                    tab = line.index(b"\t")
                    split = splits[orjson.loads(line[:tab])]
                    with memoryview(line) as view:  # the example is written from the line, not copied out of it
                        handles[split].write(view[tab + 1 : len(line) - len(ID_TAIL)])
                    handles[split].write(tail)
                    counts[split] += 1
                    del line
        return counts

    def too_few_message(self, written: int) -> str:
        why = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in self.dropped.most_common()) or "none dropped"
        return (
            f"only {written} examples for agent {self.options.agent_id!r} after filtering, fewer than "
            f"--min-samples {self.options.min_samples} (sessions read: {self.stats['sessions_read']}; dropped: {why}; "
            f"bad input: {len(self.problems)})"
        )

    def bad_input_listing(self, report: Path, shown: int = 5) -> str:
        """Each bad input's file and reason, the first few of them, and where the rest are."""
        lines = [f"\n  {problem}" for problem in self.problems.items[:shown]]
        rest = len(self.problems) - len(lines)
        if rest > 0:
            lines.append(f"\n  and {rest} more, see {report}")
        elif not lines:
            lines.append(f"\n  (no bad input; see {report})")
        return "".join(lines)

    def derive_export_id(self) -> str:
        """The export's id: a digest of every example written and of how they were split. The same logs exported
        with the same options get the same id (and identical files); another split gets another id."""
        digest = hashlib.blake2b(self.content.digest(), digest_size=8)
        digest.update(orjson.dumps([self.options.ratios, self.options.seed, sorted(self.splits.items())]))
        return digest.hexdigest()

    def report(self, counts: dict[str, int], n_sources: int) -> dict[str, Any]:
        total = sum(counts.values())
        return {
            "export_id": self.export_id,
            "written": [*SPLIT_FILES.values(), REPORT],
            "agent_id": self.options.agent_id,
            "sources": n_sources,
            "sessions_read": self.stats["sessions_read"],
            "sessions_used": self.stats["sessions_used"],
            "sessions_found_twice": dict(self.duplicates),
            "examples_written": total,
            "splits": {s: {"file": SPLIT_FILES[s], "examples": counts[s]} for s in SPLITS},
            "sessions_by_split": dict(Counter(self.splits.values())),
            "dropped": dict(self.dropped.most_common()),
            "skipped_input": self.problems.summary(),
            "redactions": dict(self.scrubber.counts.most_common()) if self.options.scrub else "disabled (--no-scrub)",
            "tool_call_share": round(self.stats["examples_with_tool_calls"] / total, 4) if total else 0.0,
            "system_prompt": self.policy.record(),
            "conversion": {k: v for k, v in sorted(self.stats.items()) if k not in ("sessions_read", "sessions_used")},
            "date_range": [d.isoformat() for d in self.options.dates] if self.options.dates else None,
            "max_tokens": self.options.max_tokens,
            "seed": self.options.seed,
            **({"gateway": self.options.extra_stats} if self.options.extra_stats is not None else {}),
        }


def earlier_export_files(folder: Path) -> list[str]:
    """The files in `folder` that an earlier export wrote: those its report lists (an export before ids: the split
    files and the report), plus any split file an export would overwrite."""
    if not folder.is_dir():
        return []
    record = read_export(folder)
    names = [*SPLIT_FILES.values(), REPORT]
    if record is not None and isinstance(record.report.get("written"), list):
        names = [str(n) for n in record.report["written"]] + names
    return [n for n in dict.fromkeys(names) if (folder / n).is_file() and Path(n).name == n]


def remove_earlier_export(folder: Path, keep: set[str]) -> None:
    """Delete the files an earlier export recorded (not `keep`, which are about to be replaced atomically), the
    report first, so a crash never leaves a report that describes files of another export."""
    names = earlier_export_files(folder)
    for name in sorted(names, key=lambda n: n != REPORT):
        if name not in keep:
            (folder / name).unlink(missing_ok=True)


def stale_files(folder: Path, export_id: str) -> list[dict[str, Any]]:
    """Data files in the export folder made from another export (an `augmented.jsonl` of the previous split): they
    are left in place, but training on them would leak the new held-out sessions, so they are named."""
    from clawtune.logs.lines import iter_json_lines

    stale = []
    for path in sorted(folder.glob("*.jsonl")):
        if path.name in SPLIT_FILES.values() or not path.is_file():
            continue
        with contextlib.closing(iter_json_lines(path, Problems(keep=0))) as lines:  # type: ignore[type-var]
            first = next(lines, None)
        made_by = ((first[1].get("metadata") or {}).get("export_id") if first else None) or None
        if first is not None and made_by != export_id:
            stale.append({"file": path.name, "export_id": made_by})
    return stale


def write_report(folder: Path, report: dict[str, Any], name: str = REPORT) -> None:
    """The report, written to a temporary name and renamed into place."""
    write_json_atomic(folder / name, report)


def export_training_data(options: TrainingDataOptions) -> dict[str, Any]:
    """Run one export; raises `InputError` (printed without a traceback) when it cannot produce enough data."""
    return Exporter(options).run()
