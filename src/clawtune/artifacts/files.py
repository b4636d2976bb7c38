"""Writing a file or a folder so that a reader (or a crash) never sees half of it: the one place that does it.

A file is written to a temporary name beside it (same filesystem, so the rename is atomic), flushed to disk and
renamed over the target. A replaced file keeps its permissions: `openclaw.json` holds API keys and a user who made it
private keeps it private (the temporary file is private from the start, so the new text is never readable by others
on the way). A folder is built in a staging folder and swapped in; the old one is moved aside first and removed only
once the new one is in place.

Written by hand: the libraries that do this (atomicwrites is archived; `safer`, `atomicwrites-homer`) keep neither a
replaced file's mode nor a private temporary file, and none swaps folders.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing; when the block ends without an exception it is flushed to
    disk and renamed over `path`, else it is removed and `path` is left as it was.

    Raising inside the block after writing is the way to refuse at the last moment (a file that changed meanwhile).
    The temporary name carries the process id: several processes of one run may write the same file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    # A replaced file's content may be secret: its temporary copy starts private and gets the old mode at the end.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if mode is not None else 0o666)
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if mode is not None:
                os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) in one rename."""
    with atomic_write(path) as f:
        f.write(text)


def write_json_atomic(path: Path, data: Any, default: Callable[[Any], Any] | None = None) -> None:
    """`data` as indented JSON (UTF-8, not ASCII-escaped, a final newline), replacing `path` in one rename; `default`
    as json.dump's, for values JSON has no type for."""
    with atomic_write(path) as f:
        json.dump(data, f, indent=2, ensure_ascii=False, default=default)
        f.write("\n")


def write_reports(folder: Path, stem: str, report: dict[str, Any], markdown: str, html: str) -> dict[str, str]:
    """A report as `{stem}.json` (with the paths of all three), `{stem}.md` and `{stem}.html` in `folder`, each
    replaced in one rename; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {kind: folder / f"{stem}.{ext}" for kind, ext in (("json", "json"), ("markdown", "md"), ("html", "html"))}
    paths = {kind: str(path) for kind, path in files.items()}
    write_json_atomic(files["json"], {**report, "files": paths}, default=str)
    write_text_atomic(files["markdown"], markdown)
    write_text_atomic(files["html"], html)
    return paths


def write_jsonl_atomic(path: Path, rows: Iterable[Any]) -> None:
    """One JSON object per line, replacing `path` in one rename."""
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A fresh staging folder beside `target` to build the new `target` in; when the block ends without an exception
    it replaces `target` whole (`replace_folder`), else it is removed and `target` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
        replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(staging: Path, target: Path) -> None:
    """Put the finished `staging` folder at `target`: an old `target` is moved aside first and removed only once the
    new one is in place, so `target` is at every moment the old folder or the new one (absent only in between the
    two renames, never half-written)."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    had_old = target.exists()
    if had_old:
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if had_old:
            os.replace(old, target)  # the new folder could not go in: the old one comes back
        raise
    if had_old:
        shutil.rmtree(old, ignore_errors=True)
