"""Stream JSON objects out of a JSONL file (plain or zstd), reporting every bad line instead of raising."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from clawtune.problems import Problems

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAX_LINE_BYTES = 256 * 1024 * 1024


def open_maybe_zstd(path: Path) -> IO[bytes]:
    """Open a file for binary reading, decompressing zstd transparently (cold `.jsonl.zst` archives)."""
    fh: Any = open(path, "rb", buffering=1 << 20)  # noqa: SIM115 - returned to the caller, who closes it
    if fh.peek(4)[:4] == ZSTD_MAGIC:
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(fh, closefd=True), buffer_size=1 << 20)
    return fh


def iter_json_lines(path: Path, problems: Problems, what: str = "line") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each JSON-object line; blank lines pass, anything else is reported and skipped."""
    try:
        fh = open_maybe_zstd(path)
    except OSError as exc:
        problems.add(str(path), None, "unreadable-file", f"cannot open: {exc.strerror or exc}")
        return
    file = str(path)
    with fh:
        lineno = 0
        try:
            for raw in fh:
                lineno += 1
                obj = parse_json_line(raw, file, lineno, problems, what)
                if obj is not None:
                    yield lineno, obj
        except Exception as exc:  # a corrupt zstd frame or an I/O error mid-file: keep what was read
            problems.add(str(path), lineno + 1, "corrupt-file", f"stopped reading: {type(exc).__name__}: {exc}")


def parse_json_line(
    raw: bytes, file: str, lineno: int, problems: Problems, what: str = "line"
) -> dict[str, Any] | None:
    """Decode one line; report (and return None for) non-UTF-8, malformed, truncated or non-object lines."""
    stripped = raw.strip()
    if not stripped:
        return None
    try:
        # orjson parses bytes directly and is several times faster than json; errors are diagnosed below.
        obj = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        _diagnose(stripped, file, lineno, problems, what)
        return None
    if not isinstance(obj, dict):
        problems.add(file, lineno, "not-an-object", f"{what} is JSON but not an object ({type(obj).__name__})")
        return None
    return obj


def _diagnose(raw: bytes, file: str, lineno: int, problems: Problems, what: str) -> None:
    """Say why a line is not JSON: binary data, not UTF-8, truncated, or malformed (with the column)."""
    if b"\x00" in raw:
        problems.add(file, lineno, "binary", f"{what} contains NUL bytes (binary data, not JSON)")
        return
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.add(file, lineno, "not-utf8", f"{what} is not UTF-8 (byte {exc.start})")
        return
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        # A line cut off mid-write ends inside a string or before its closing braces.
        truncated = exc.msg.startswith("Unterminated string") or (exc.pos >= len(text) - 1 and exc.msg != "Extra data")
        kind = "truncated" if truncated else "malformed"
        problems.add(file, lineno, f"{kind}-json", f"{kind} JSON at column {exc.colno}: {exc.msg}")
        return
    except RecursionError:
        pass
    # Python's json accepts what orjson does not (NaN, lone surrogates, huge integers, deep nesting).
    problems.add(
        file,
        lineno,
        "malformed-json",
        f"{what} is not strict JSON (NaN, a lone surrogate, a huge integer or deep nesting)",
    )
