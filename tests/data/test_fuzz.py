"""Random bytes and mangled lines into every reader: a clean report, never an exception."""

import json
import sqlite3

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clawtune.data.build import Exporter, TrainingDataOptions, export_training_data
from clawtune.problems import InputError

from ..conftest import HEADER, call, msg, result, text

VALID = [
    json.dumps(entry)
    for entry in (
        HEADER,
        msg("a", None, "user", "hi"),
        call("b", "a", "c", "q", {"x": 1}),
        result("c", "b", "c", "1"),
        text("d", "c", "one"),
    )
]

mangle = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(VALID).map(lambda s: s.encode()),
    st.tuples(st.sampled_from(VALID), st.integers(0, 300)).map(lambda t: t[0][: t[1]].encode()),
    st.sampled_from(VALID).map(lambda s: s.replace('"a"', '"zz"').replace("parentId", "parent").encode()),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(
                st.sampled_from(["type", "id", "parentId", "message", "role", "content", "arguments"]), c, max_size=4
            )
        ),
        max_leaves=12,
    ).map(lambda o: json.dumps(o).encode()),
)


def run_export(tmp_path, sources):
    exporter = Exporter(TrainingDataOptions(agent_id="a", output=tmp_path / "out", sessions=sources, force=True))
    try:
        report = exporter.run()
    except InputError as exc:  # a clear, expected message: nothing usable was left
        assert "fewer than --min-samples" in str(exc)
        report = None
    # The per-session safety net must never be what caught a problem: each reader reports its own.
    assert exporter.problems.counts["unexpected-shape"] == 0, exporter.problems.summary()
    assert report is None or report["examples_written"] >= 1
    return report


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(mangle, max_size=12))
def test_jsonl_reader_survives_anything(tmp_path, lines):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\n".join(lines))
    run_export(tmp_path, [path])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=400), zstd_prefix=st.booleans(), sqlite_prefix=st.booleans())
def test_random_files_of_every_kind_are_reported_not_raised(tmp_path, blob, zstd_prefix, sqlite_prefix):
    prefix = b"\x28\xb5\x2f\xfd" if zstd_prefix else b"SQLite format 3\x00" if sqlite_prefix else b""
    (tmp_path / "x.jsonl").write_bytes(prefix + blob)
    (tmp_path / "y.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd" + blob)
    (tmp_path / "z.sqlite").write_bytes(b"SQLite format 3\x00" + blob)
    run_export(tmp_path, [tmp_path / "x.jsonl", tmp_path / "y.jsonl.zst", tmp_path / "z.sqlite"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.text(max_size=50), st.sampled_from(VALID)),
            st.one_of(st.none(), st.binary(max_size=40)),
        ),
        max_size=6,
    )
)
def test_sqlite_rows_of_any_shape(tmp_path, rows):
    db = tmp_path / "openclaw-agent.sqlite"
    db.unlink(missing_ok=True)
    conn = sqlite3.connect(db)
    conn.execute(
        "create table transcript_events(session_id text, seq integer, event_json text, created_at integer, event_zstd blob, event_utf8_bytes integer, navigation_json text)"
    )
    for seq, (event, blob) in enumerate(rows):
        conn.execute("insert into transcript_events values ('s', ?, ?, 0, ?, 10, null)", (seq, event, blob))
    conn.commit()
    conn.close()
    run_export(tmp_path, [db])


def test_strict_stops_at_the_first_bad_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join([VALID[0], "{broken", *VALID[1:]]))
    assert run_export(tmp_path, [path])["skipped_input"]["by_reason"] == {"malformed-json": 1}
    try:
        export_training_data(TrainingDataOptions(agent_id="a", output=tmp_path / "o2", sessions=[path], strict=True))
    except InputError as exc:
        assert f"{path}:2" in str(exc)
    else:
        raise AssertionError("strict mode did not stop")
