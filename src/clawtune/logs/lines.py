"""Stream JSON objects out of a JSONL file (plain or zstd), reporting every bad line instead of raising.

A line is held once: short lines are slices of the chunk read, a long one is assembled in one growing buffer that
the JSON parser reads in place (readline would join its pieces into a second copy, and stripping the newline makes
a third). A line over the size limit is skipped as it streams past, reported with its size, and never held whole.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Generator, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any

import orjson

from clawtune.problems import Problems

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MB = 1024 * 1024
# No real session line comes near this: OpenClaw caps tool results and images far below it. A larger line is a
# runaway tool output (a whole table, a binary dump); it is skipped and reported unless the user raises the limit.
DEFAULT_MAX_LINE_BYTES = 64 * MB
CHUNK = 1 * MB
LEAN_ABOVE = 8 * MB  # longer lines are parsed the lean way (see _parse_text)
# The limit is a run-wide policy set once by the command (`--max-line-mb`) for every reader below it, however deep;
# a context variable spares threading it through each store's reader.
_max_line_bytes: ContextVar[int] = ContextVar("clawtune_max_line_bytes", default=DEFAULT_MAX_LINE_BYTES)


@contextlib.contextmanager
def line_limit(max_bytes: int) -> Iterator[None]:
    """Within the block, lines (and SQLite events) longer than `max_bytes` are skipped and reported."""
    token = _max_line_bytes.set(max_bytes)
    try:
        yield
    finally:
        _max_line_bytes.reset(token)


def max_line_bytes() -> int:
    """The line size limit in force."""
    return _max_line_bytes.get()


def read_lines(fh: IO[bytes], limit: int | None = None) -> Iterator[bytes | bytearray | int]:
    """Each line of a binary stream (with its newline), or, for a line longer than `limit` bytes, its size (an int):
    that line is skipped as it streams past, never held.

    Every real line is one readline of at most LEAN_ABOVE bytes (C speed). A longer one grows in one buffer that the
    parser reads in place (an unbounded readline would join its pieces into a second copy), and is yielded without
    being bound to a local: a suspended generator would otherwise keep it alive while the caller parses it."""
    limit = max_line_bytes() if limit is None else limit
    cap = min(limit + 1, LEAN_ABOVE)
    while first := fh.readline(cap):
        if len(first) < cap or first.endswith(b"\n"):
            yield first  # the whole line (the last one may lack its newline), within the limit
            continue
        box = [first]
        del first
        yield _rest_of_line(fh, box, limit)


def _rest_of_line(fh: IO[bytes], box: list[bytes], limit: int) -> bytearray | int:
    """A long line from its first piece (taken out of `box`) on: the line, or its size when over `limit`."""
    first = box.pop()
    size = len(first)
    line: bytearray | None = bytearray(first) if size <= limit else None
    del first
    ended = False
    while not ended and (piece := fh.readline(CHUNK)):
        ended = piece.endswith(b"\n")
        size += len(piece)
        if line is not None and size - ended <= limit:
            line += piece
        else:
            line = None
    return line if line is not None else size - ended


def open_maybe_zstd(path: Path) -> IO[bytes]:
    """Open a file for binary reading, decompressing zstd transparently (cold `.jsonl.zst` archives)."""
    fh: Any = open(path, "rb", buffering=1 << 20)  # noqa: SIM115 - returned to the caller, who closes it
    if fh.peek(4)[:4] == ZSTD_MAGIC:
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(fh, closefd=True), buffer_size=1 << 20)
    return fh


def iter_json_lines(
    path: Path, problems: Problems, what: str = "line"
) -> Generator[tuple[int, dict[str, Any]], None, None]:
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
            for raw in read_lines(fh):
                lineno += 1
                if isinstance(raw, int):
                    report_too_long(file, lineno, raw, problems, what)
                    continue
                if len(raw) > LEAN_ABOVE:
                    text = _decode(raw, file, lineno, problems, what)
                    del raw  # freed before parsing: the text and the object are the only copies at the peak
                    obj = _parse_text(text, file, lineno, problems, what) if text is not None else None
                    del text
                else:
                    obj = parse_json_line(raw, file, lineno, problems, what)
                    del raw  # the line's bytes go before its object is used: one copy of a line at a time
                if obj is not None:
                    yield lineno, obj
        except Exception as exc:  # a corrupt zstd frame or an I/O error mid-file: keep what was read
            problems.add(str(path), lineno + 1, "corrupt-file", f"stopped reading: {type(exc).__name__}: {exc}")


def report_too_long(file: str, lineno: int | None, size: int, problems: Problems, what: str = "line") -> None:
    """A line over the size limit: skipped, with its size and the flag that raises the limit."""
    problems.add(
        file,
        lineno,
        "line-too-long",
        f"{what} of {size / MB:,.1f} MB is over the {max_line_bytes() / MB:g} MB limit; skipped "
        "(--max-line-mb raises the limit)",
    )


def parse_json_line(
    raw: bytes | bytearray, file: str, lineno: int, problems: Problems, what: str = "line"
) -> dict[str, Any] | None:
    """Decode one line; report (and return None for) non-UTF-8, malformed, truncated, over-long or non-object lines."""
    if not raw or raw.isspace():
        return None
    size = len(raw) - raw.endswith(b"\n")
    if size > max_line_bytes():  # an SQLite event (file lines are held to the limit as they are read)
        report_too_long(file, lineno, size, problems, what)
        return None
    try:
        # orjson parses bytes in place (surrounding white space included) and is several times faster than json;
        # errors are diagnosed below.
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        _diagnose(bytes(raw).strip(), file, lineno, problems, what)
        return None
    if not isinstance(obj, dict):
        problems.add(file, lineno, "not-an-object", f"{what} is JSON but not an object ({type(obj).__name__})")
        return None
    return obj


def _decode(raw: bytes | bytearray, file: str, lineno: int, problems: Problems, what: str) -> str | None:
    """A long line as text (None, reported, when it is not UTF-8)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        kind, why = ("binary", "contains NUL bytes (binary data, not JSON)") if b"\x00" in raw else ("not-utf8", "")
        problems.add(file, lineno, kind, f"{what} {why or f'is not UTF-8 (byte {exc.start})'}")
        return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_text(text: str, file: str, lineno: int, problems: Problems, what: str) -> dict[str, Any] | None:
    """A long line parsed with the standard library: orjson (yyjson) copies its input before parsing, which for a
    200 MB line meant three copies at once; here the bytes are gone and the text and the object are the only two."""
    if text.isspace():
        return None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        _report_decode_error(exc, text, file, lineno, problems)
        return None
    except (ValueError, RecursionError):
        _report_not_strict(file, lineno, problems, what)
        return None
    if not isinstance(obj, dict):
        problems.add(file, lineno, "not-an-object", f"{what} is JSON but not an object ({type(obj).__name__})")
        return None
    return obj


def _report_decode_error(exc: json.JSONDecodeError, text: str, file: str, lineno: int, problems: Problems) -> None:
    if "\x00" in text:
        problems.add(file, lineno, "binary", "contains NUL bytes (binary data, not JSON)")
        return
    # A line cut off mid-write ends inside a string or before its closing braces.
    end = len(text.rstrip())
    truncated = exc.msg.startswith("Unterminated string") or (exc.pos >= end - 1 and exc.msg != "Extra data")
    kind = "truncated" if truncated else "malformed"
    problems.add(file, lineno, f"{kind}-json", f"{kind} JSON at column {exc.colno}: {exc.msg}")


def _report_not_strict(file: str, lineno: int, problems: Problems, what: str) -> None:
    # Python's json accepts what orjson does not (NaN, lone surrogates, huge integers, deep nesting).
    problems.add(
        file,
        lineno,
        "malformed-json",
        f"{what} is not strict JSON (NaN, a lone surrogate, a huge integer or deep nesting)",
    )


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
        _report_decode_error(exc, text, file, lineno, problems)
        return
    except RecursionError:
        pass
    _report_not_strict(file, lineno, problems, what)
