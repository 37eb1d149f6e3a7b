"""The one JSON reading path: each reproducer the fuzz campaign found, and the writer's strictness."""

from __future__ import annotations

import json
import os
import time

import pytest

from ttsi import jsonio
from ttsi.errors import FileError, TaskError


@pytest.mark.parametrize(("text", "says"), [
    ("1" * 5000, "4300 digits"),
    ("[" * 100_000 + "]" * 100_000, "nested more than 256 levels deep"),
    ('{"a":' * 300 + "1" + "}" * 300, "nested more than 256 levels deep"),
    ("NaN", "NaN is not a JSON number"),
    ("[Infinity]", "Infinity is not a JSON number"),
    ("1e999", "too large"),
    ('"\\ud800"', "lone surrogate"),
    ('{"\\udfff": 1}', "lone surrogate"),
    ('{"a": 1} {"b": 2}', "extra data"),
    ("{'a': 1}", "Expecting property name"),
])
def test_hostile_json_is_one_bad_json(text, says):
    with pytest.raises(jsonio.BadJSON, match=says):
        jsonio.parse(text)


def test_what_json_allows_still_reads():
    assert jsonio.parse('"\\ud83d\\ude00"') == "\U0001f600"  # a surrogate pair is one character
    assert jsonio.parse('["a\u2028b\x85c"]') == ["a\u2028b\x85c"]
    deepest: list = []  # 256 levels: the deepest nesting allowed reads as that many lists, one inside the other
    for _ in range(255):
        deepest = [deepest]
    assert jsonio.parse("[" * 256 + "]" * 256) == deepest
    assert jsonio.parse('"' + "[" * 10_000 + '"') == "[" * 10_000  # brackets inside a string do not nest


def test_depth_check_stops_at_the_value_it_checks():
    text = "[1] " * 50_000 + "[" * 300  # many short values, then a deep one
    start = time.perf_counter()
    for i in range(0, 400, 4):
        jsonio.check_depth(text, start=i)
    assert time.perf_counter() - start < 5  # generous: a scan to the end each time would take minutes
    with pytest.raises(jsonio.BadJSON) as e:
        jsonio.check_depth(text, start=len(text) - 300)
    assert e.value.reason == "too_deep"


def test_loads_names_where_and_raises_the_callers_error():
    with pytest.raises(FileError, match=r"^body of request 7 is not valid JSON: NaN"):
        jsonio.loads("NaN", "body of request 7", FileError)
    assert jsonio.loads("\ufeff[1]", "x") == [1]


def test_json_lines_split_on_newline_only(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"text": "a\u2028b"}, {"text": "c\x85d\x1ce\x0bf"}]
    path.write_text("\ufeff" + "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    assert jsonio.read_jsonl(path, "rows file") == [(1, rows[0]), (2, rows[1])]
    path.write_text('{"a": 1}\n{"a": NaN}\n')
    with pytest.raises(TaskError, match=r"rows\.jsonl:2 is not valid JSON: NaN"):
        jsonio.read_jsonl(path, "rows file")


def test_files_that_cannot_be_read_are_named(tmp_path):
    with pytest.raises(TaskError, match=r"task file .* does not exist"):
        jsonio.read_text(tmp_path / "nope.json", "task file")
    with pytest.raises(TaskError, match="is a directory, not a file"):
        jsonio.read_text(tmp_path, "task file")
    (tmp_path / "zero").symlink_to("/dev/zero")
    with pytest.raises(FileError, match="not a regular file"):
        jsonio.read_text(tmp_path / "zero", "results file", FileError)  # refused, not read without end
    (tmp_path / "bad.json").write_bytes(b'{"a":\n "\xff"}')
    with pytest.raises(TaskError, match=r"not UTF-8 text \(byte 0xff on line 2\)"):
        jsonio.read_text(tmp_path / "bad.json", "task file")
    (tmp_path / "big.json").write_bytes(b" " * 100)
    with pytest.raises(TaskError, match="more than the 10 this reads"):
        jsonio.read_text(tmp_path / "big.json", "task file", max_bytes=10)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file_is_named(tmp_path):
    path = tmp_path / "secret.json"
    path.write_text("{}")
    path.chmod(0)
    with pytest.raises(TaskError, match="cannot be read: Permission denied"):
        jsonio.read_text(path, "task file")


def test_dumps_writes_only_strict_json():
    text = jsonio.dumps({"loss": float("nan"), "lr": float("inf"), "name": "a\ud800b", "pair": (1, 2)})
    assert json.loads(text) == {"loss": None, "lr": None, "name": "a\ufffdb", "pair": [1, 2]}
    text.encode("utf-8")
