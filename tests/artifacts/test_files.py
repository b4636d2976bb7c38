"""The one atomic writer: a file or a folder is the old one or the new one, never half of one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from clawtune.artifacts.files import atomic_write, replace_folder, write_json_atomic, write_jsonl_atomic, write_reports


def test_a_replaced_file_keeps_its_mode_and_its_secret_is_never_readable_on_the_way(tmp_path: Path) -> None:
    path = tmp_path / "openclaw.json"
    path.write_text('{"apiKey": "old"}')
    path.chmod(0o600)
    with atomic_write(path) as f:
        f.write('{"apiKey": "new"}')
        staged = [p for p in tmp_path.iterdir() if p != path]
        assert len(staged) == 1 and stat.S_IMODE(staged[0].stat().st_mode) == 0o600  # private from the start
    assert path.read_text() == '{"apiKey": "new"}' and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(tmp_path.iterdir()) == [path]


def test_a_new_file_gets_the_usual_mode(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "report.json", {"a": "é"})
    finally:
        os.umask(umask)
    assert (tmp_path / "report.json").read_text(encoding="utf-8") == '{\n  "a": "é"\n}\n'
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o644


def test_an_error_inside_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    write_jsonl_atomic(path, [{"n": 1}])
    with pytest.raises(RuntimeError), atomic_write(path, binary=True) as f:
        f.write(b'{"n": 2}\n')
        raise RuntimeError("changed meanwhile")
    assert path.read_text() == '{"n": 1}\n' and sorted(tmp_path.iterdir()) == [path]


def test_replace_folder_swaps_whole_folders(tmp_path: Path) -> None:
    target = tmp_path / "export"
    for round_ in ("first", "second"):
        staging = tmp_path / f".export.partial-{round_}"
        staging.mkdir()
        (staging / f"{round_}.txt").write_text(round_)
        replace_folder(staging, target)
        assert [p.name for p in target.iterdir()] == [f"{round_}.txt"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging or old folder left


def test_replace_folder_puts_the_old_folder_back_when_the_new_one_cannot_go_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "export"
    target.mkdir()
    (target / "old.txt").write_text("old")
    staging = tmp_path / "staging"
    staging.mkdir()
    real_replace = os.replace

    def failing(src: object, dst: object) -> None:
        if Path(str(src)) == staging:
            raise OSError("disk gone")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="disk gone"):
        replace_folder(staging, target)
    assert (target / "old.txt").read_text() == "old"


def test_a_report_is_written_as_three_whole_files_that_name_each_other(tmp_path: Path) -> None:
    """evaluate's and ab-test's reports: JSON (values JSON has no type for as text), Markdown and HTML, each whole, and
    the JSON names all three; a second write with a failing renderer leaves the first files as they were."""
    from datetime import date

    folder = tmp_path / "eval"
    paths = write_reports(folder, "eval-report", {"when": date(2026, 12, 3), "n": 1}, "# report\n", "<p>report</p>")
    assert sorted(p.name for p in folder.iterdir()) == ["eval-report.html", "eval-report.json", "eval-report.md"]
    import json

    written = json.loads((folder / "eval-report.json").read_text())
    assert written == {"when": "2026-12-03", "n": 1, "files": paths}
    assert (folder / "eval-report.md").read_text() == "# report\n"
    with pytest.raises(TypeError):
        write_reports(folder, "eval-report", {"n": 2}, "# new\n", None)  # type: ignore[arg-type]
    assert json.loads((folder / "eval-report.json").read_text())["n"] == 2  # written before the failure, whole
    assert (folder / "eval-report.md").read_text() == "# new\n"
    assert (folder / "eval-report.html").read_text() == "<p>report</p>"  # the old one, not half of the new
    assert sorted(p.name for p in folder.iterdir()) == ["eval-report.html", "eval-report.json", "eval-report.md"]
