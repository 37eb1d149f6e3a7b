"""JSON in: the one path every input the project reads goes through (files, lines, HTTP bodies, model output).

Python's `json` alone accepts things that later crash or silently mislead: nesting deep enough to raise
`RecursionError`, integers too long to convert (`ValueError`), `NaN`/`Infinity` and `1e999` (which become
non-finite floats and make the output invalid JSON), and lone surrogates such as `"\\ud800"` (legal JSON, but not
text: tokenizers and UTF-8 writers fail on them). Here each of these is a `BadJSON` with a short reason, and the
readers turn it, and every file-system failure, into the caller's one clear error naming the file and line.

JSON Lines are split on `\\n` only: `str.splitlines()` also splits on U+2028, NEL and other characters that JSON
strings may hold raw. A UTF-8 byte-order mark at the start of a file is skipped.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ttsi.errors import TaskError, TTSIError

MAX_DEPTH = 256  # function schemas nest a handful of levels; thousands only ever come from a fuzzer or an attack
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_TEXT_CHARS = 64 * 1024 * 1024  # one JSON document or line held in memory

_BOM = "\ufeff"
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class BadJSON(ValueError):
    """Text that is not a JSON value this project can use; `msg` says why in a few words, `reason` is a code
    (`too_deep` for nesting past the limit, `invalid` for anything else)."""

    def __init__(self, msg: str, reason: str = "invalid"):
        super().__init__(msg)
        self.msg, self.reason = msg, reason


def _constant(name: str) -> Any:
    raise BadJSON(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJSON(f"the number {text[:20]} is too large")
    return value


_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_finite)


def check_depth(text: str, limit: int = MAX_DEPTH, start: int = 0) -> None:
    """BadJSON when the value at `start` nests brackets (outside strings) deeper than `limit`.

    The scan stops where that value's brackets close or the limit is passed, so checking each of many starting
    points in one text (as answer parsers do) costs no more than the values found there.
    """
    if start == 0 and text.count("[") + text.count("{") <= limit:
        return
    depth = 0
    for token in _TOKENS.finditer(text, start):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > limit:
                raise BadJSON(f"nested more than {limit} levels deep", "too_deep")
        elif char in "]}":
            depth -= 1
            if depth <= 0:
                return


def check_text(value: Any) -> None:
    """BadJSON when a string (or key) anywhere in `value` holds a lone UTF-16 surrogate, which is not text."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise BadJSON("a string holds a lone surrogate (such as \\ud800), which is not valid Unicode text")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def parse(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value `text` holds, or BadJSON (never RecursionError, a non-finite number or a lone surrogate)."""
    value, end = decode(text, 0, max_depth)
    if text[end:].strip():
        raise BadJSON(f"extra data after the JSON value at character {end}")
    return value


def decode(text: str, start: int = 0, max_depth: int = MAX_DEPTH) -> tuple[Any, int]:
    """The JSON value starting at `text[start]` (after any whitespace) and the index where it ends; BadJSON."""
    if len(text) - start > MAX_TEXT_CHARS:
        raise BadJSON(f"longer than {MAX_TEXT_CHARS:,} characters")
    check_depth(text, max_depth, start)
    try:
        while start < len(text) and text[start] in " \t\n\r":
            start += 1
        value, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as e:
        raise BadJSON(f"{e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:  # only with a limit above what the interpreter's stack allows
        raise BadJSON("nested too deeply", "too_deep") from None
    except BadJSON:
        raise
    except ValueError as e:  # an integer of more digits than int() converts
        raise BadJSON(str(e).split(";")[0]) from None
    if _SURROGATE_ESCAPE.search(text, start, end):
        check_text(value)
    return value, end


def loads(text: str, where: str, error: type[TTSIError] = TaskError) -> Any:
    """`parse`, with any problem raised as `error` naming `where` (a file, a file:line, a request body)."""
    try:
        return parse(text.removeprefix(_BOM))
    except BadJSON as e:
        raise error(f"{where} is not valid JSON: {e.msg}") from None


def read_text(path: str | Path, what: str, error: type[TTSIError] = TaskError,
              max_bytes: int = MAX_FILE_BYTES) -> str:
    """A regular file's UTF-8 text (BOM skipped); a missing, unreadable, oversized or non-UTF-8 file is `error`.

    `what` names the file in messages ("task file", "predictions file", ...). Devices, pipes and directories are
    refused before reading, so a link to /dev/zero or /dev/full cannot be read without end.
    """
    path = Path(path)
    size = file_size(path, what, error)
    if size > max_bytes:
        raise error(f"{what} {path} is {size:,} bytes, more than the {max_bytes:,} this reads")
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"{what} {path} cannot be read: {describe_os_error(e)}") from None
    if len(data) > max_bytes:  # grew while we read it (a file under /proc reports size 0)
        raise error(f"{what} {path} is more than the {max_bytes:,} bytes this reads")
    try:
        return data.decode("utf-8").removeprefix(_BOM)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise error(f"{what} {path} is not UTF-8 text (byte {data[e.start]:#04x} on line {line})") from None


def file_size(path: Path, what: str, error: type[TTSIError] = TaskError) -> int:
    """The size of a regular file; a missing one, a directory, a device, a pipe or a broken link is `error`."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise error(f"{what} {path} is a link to {os.readlink(path)}, which does not exist") from None
        raise error(f"{what} {path} does not exist") from None
    except OSError as e:
        raise error(f"{what} {path} cannot be read: {describe_os_error(e)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{what} {path} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} {path} is not a regular file (a device, pipe or socket)")
    return info.st_size


def read_json(path: str | Path, what: str, error: type[TTSIError] = TaskError) -> Any:
    """The JSON value a file holds; every problem is one `error` naming the file."""
    return loads(read_text(path, what, error), f"{what} {path}", error)


def lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of JSON Lines text, split on `\\n` only; blank lines are skipped."""
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            yield n, line.removesuffix("\r")


def read_jsonl(path: str | Path, what: str, error: type[TTSIError] = TaskError) -> list[tuple[int, Any]]:
    """(line number, value) of every non-blank line of a JSON Lines file; a bad line is `error` naming it."""
    text = read_text(path, what, error)
    return [(n, loads(line, f"{path}:{n}", error)) for n, line in lines(text)]


def describe_os_error(e: OSError) -> str:
    """An OSError in a few words, without Python's `[Errno N]` prefix."""
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    return e.strerror or str(e) if e.errno else str(e)


def plain(value: Any) -> Any:
    """`value` as strict JSON can hold it: NaN and infinities as null, lone surrogates as U+FFFD, tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """JSON text every strict reader accepts (`plain`); the one writing path for what ttsi prints and records."""
    return json.dumps(plain(value), allow_nan=False, **kwargs)


def clean_text(text: str) -> str:
    """`text` with any lone surrogate replaced by U+FFFD (for text that is only displayed or recorded)."""
    return _SURROGATE.sub("\ufffd", text)


__all__ = ["MAX_DEPTH", "BadJSON", "check_depth", "check_text", "clean_text", "decode", "describe_os_error", "dumps",
           "file_size", "lines", "loads", "parse", "plain", "read_json", "read_jsonl", "read_text"]
