"""Fuzzing the inputs users give: bad input of any shape gets the project's one clear error or a correct result.

Each property draws inputs near the valid ones (a valid task, predictions file or answer, then mutated) as well as
the shapes that broke the code before: oversized numbers, deep nesting, NaN, lone surrogates, U+2028 and NEL inside
strings, byte-order marks, invalid UTF-8. `make test` runs them with the derandomized `ci` profile; `make fuzz` with
the `deep` one (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import tempfile
import traceback
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ttsi import jsonio
from ttsi.arith import parse_number
from ttsi.benchmarks import get_benchmark
from ttsi.cli import app
from ttsi.errors import TaskError, TTSIError
from ttsi.evaluation.records import read_records
from ttsi.evaluation.score import read_predictions, score_predictions
from ttsi.formats import AnswerParseError, format_names, get_format
from ttsi.prompts import answer_messages
from ttsi.schema import CallError, check_calls
from ttsi.task import Call, Task, load_tasks

from .conftest import weather_task

pytestmark = pytest.mark.fuzz

SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=16)
# JSON texts that Python's json reads but that crashed or misled the project before.
HOSTILE = st.sampled_from([
    "1" * 5000, "[" * 100_000 + "]" * 100_000, '{"a":' * 3000 + "1" + "}" * 3000, "NaN", "-Infinity", "1e999",
    '"\\ud800"', '"x\\udfff"', '"\\ud83d\\ude00"', '"a\u2028b"', '"a\x85b"', '"a\u2029b\x1cc"', "\ufeff{}", "",
    '{"a": 1, "a": 2}', "[]", "{}", "null",
])
DELETE = object()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if new is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return value


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any], max_edits: int = 3) -> Any:
    """`valid` with up to `max_edits` of its values (at any depth) replaced by arbitrary JSON or removed."""
    value = copy.deepcopy(valid)
    for _ in range(draw(st.integers(0, max_edits))):
        paths = _paths(value)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        new = draw(VALUES | st.just(DELETE)) if path else draw(VALUES)
        value = _replace(value, path, new)
    return value


@st.composite
def json_text(draw: st.DrawFn, value: Any) -> str:
    """`value` as JSON text, sometimes with a hostile fragment spliced in or a character changed."""
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    edit = draw(st.sampled_from(["none", "splice", "replace", "truncate"]))
    if text and edit != "none":
        at = draw(st.integers(0, len(text) - 1))
        if edit == "splice":
            text = text[:at] + draw(HOSTILE) + text[at:]
        elif edit == "replace":
            text = text[:at] + draw(st.characters(exclude_categories=["Cs"])) + text[at + 1:]
        else:
            text = text[:at]
    return text


def _clear(error: Exception) -> None:
    """The project's error contract: a non-empty message, on one line."""
    message = str(error)
    assert message.strip() and "\n" not in message and "Traceback" not in message, message


def _usable(task: Task) -> None:
    """A loaded task works everywhere a task goes: prompts, schema checks, the record writer."""
    try:
        fmt = get_format(task.format)
    except TaskError as e:
        _clear(e)
        return
    answer_messages(task, fmt)
    for calls in (task.answer or [], [Call(t.name, {"x": 1}) for t in task.tools]):
        with contextlib.suppress(CallError):  # a call may break the schema; only CallError may say so
            check_calls(calls, task.tools)
    json.dumps(task.to_dict(), ensure_ascii=False).encode("utf-8")


GOOD_TASK = weather_task().to_dict()


@given(st.data())
def test_task_files_load_or_name_the_problem(data):
    tasks = data.draw(st.lists(mutated(GOOD_TASK), min_size=1, max_size=3))
    jsonl = data.draw(st.booleans())
    if jsonl:
        text = "\n".join(data.draw(json_text(t)) for t in tasks)
    else:
        text = data.draw(json_text(tasks if len(tasks) > 1 else tasks[0]))
    raw = text.encode("utf-8", "surrogatepass")
    if data.draw(st.booleans()):
        at = data.draw(st.integers(0, len(raw)))
        raw = raw[:at] + data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\x00", b"\r\n"])) + raw[at:]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("tasks.jsonl" if jsonl else "tasks.json")
        path.write_bytes(raw)
        try:
            loaded = load_tasks(path)
        except TaskError as e:
            _clear(e)
            return
    for task in loaded:
        _usable(task)


@given(mutated(GOOD_TASK, max_edits=4))
def test_task_objects_from_the_library_api(value):
    try:
        task = Task.from_dict(value)
    except TaskError as e:
        _clear(e)
        return
    _usable(task)


@given(HOSTILE)
def test_hostile_json_is_refused_or_read_exactly(text):
    try:
        value = jsonio.parse(text)
    except jsonio.BadJSON as e:
        _clear(e)
        return
    jsonio.check_text(value)
    assert json.loads(json.dumps(value)) == value  # finite, text only: it round-trips through the record writer


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x1c", "\x0b", "\x0c"])
def test_json_lines_split_on_newline_only(tmp_path, separator):
    task = weather_task(messages=[{"role": "user", "content": f"weather{separator}in Paris"}]).to_dict()
    path = tmp_path / "tasks.jsonl"
    path.write_text("\ufeff" + json.dumps(task, ensure_ascii=False) + "\n" + json.dumps(task | {"id": "w-2"},
                                                                                       ensure_ascii=False) + "\n")
    loaded = load_tasks(path)
    assert [t.id for t in loaded] == ["w-1", "w-2"]
    assert loaded[0].query == f"weather{separator}in Paris"


# ---- model output: every answer format parses anything a model may write, or says why not --------------------

FRAGMENTS = st.sampled_from([
    '[{"name": "get_weather", "arguments": ', '{"city": "Paris"}', "}]", "{", "}", "[", "]", '"', "'", ",", ":",
    "Action: get_weather\nAction Input: ", "Final Answer:", "[get_weather(city='Paris')]", "Call: get_weather(",
    "API-Request: [", "]->", "[{'api': 'f', 'parameters': {'a': 1}, 'responses': ['API_call_0']}]", "JSON:",
    "```json\n", "```", "<tool_call>", "\n", " ", "\\", "\\u", "NaN", "1e999",
])
OUTPUTS = st.lists(FRAGMENTS | HOSTILE | st.text(max_size=6), max_size=12).map("".join)


@pytest.mark.parametrize("name", format_names())
@given(text=OUTPUTS)
def test_every_format_parses_any_output_or_says_why(name, text):
    fmt = get_format(name)
    try:
        calls = fmt.parse(text)
    except AnswerParseError as e:
        _clear(e)
        return
    if fmt.kind != "tools":  # a free-form answer: text on one line (math: a number), with its normal form
        assert isinstance(calls, str) and calls.strip() and "\n" not in calls and isinstance(fmt.key(calls), str)
        assert fmt.kind != "math" or parse_number(calls) is not None
        calls.encode("utf-8")
        return
    for call in calls:
        assert isinstance(call.name, str) and isinstance(call.arguments, dict)
        json.dumps(call.to_dict(), ensure_ascii=False).encode("utf-8")


# ---- predictions: read or refused; a summary always equals the records it came from ------------------------

TOY = get_benchmark("toy")
TOY_TASKS = TOY.load(None, "unseen")
TOY_IDS = [t.id for t in TOY_TASKS]
PREDICTION = st.fixed_dictionaries({"id": st.sampled_from(TOY_IDS), "output": OUTPUTS})


@given(st.data())
def test_predictions_are_scored_exactly_or_refused(data):
    rows = data.draw(st.lists(PREDICTION | mutated({"id": TOY_IDS[0], "output": "[]"}), max_size=20))
    lines = [data.draw(json_text(row)) if data.draw(st.integers(0, 9)) == 0 else json.dumps(row) for row in rows]
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "predictions.jsonl", Path(tmp) / "scored"
        path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
        try:
            outputs = read_predictions(path)
            summary = score_predictions(TOY, "unseen", TOY_TASKS, path, out, allow_missing=True)
        except TTSIError as e:
            _clear(e)
            return
        records = read_records(out / "results.jsonl")
    assert sorted(r["id"] for r in records) == sorted(TOY_IDS)
    for record in records:
        task = next(t for t in TOY_TASKS if t.id == record["id"])
        output = outputs.get(record["id"])
        assert record["correct"] == (output is not None and TOY.score(task, output).correct)
    assert summary["accuracy"]["mean"] == pytest.approx(sum(r["correct"] for r in records) / len(records))


# ---- the CLI: any options give a valid result (exit 0) or one `error:` line (exit 2), never a traceback ------

def _examples(n: int) -> settings:
    """`n` examples under the `ci` profile (each runs the CLI), twenty times as many under `make fuzz`."""
    return settings(max_examples=n * (20 if settings.default.max_examples > 100 else 1))


def _eval(toy_dir: Path, out: Path, *options: str) -> Any:
    return CliRunner().invoke(app, ["eval", "--model", str(toy_dir), "--benchmark", "toy:unseen",
                                    "--out", str(out), "--max-new-tokens", "24", *options])


def _contract(result: Any) -> None:
    """Exit 0 with a summary that is the records' own, or exit 2 with one line saying what is wrong."""
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        "".join(traceback.format_exception(result.exception)))
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        if lines and lines[0].startswith("Usage:"):  # an option of the wrong type: Click's usage error
            assert "Invalid value for" in result.stderr or "No such option" in result.stderr, result.stderr
            return
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def _recomputed(out: Path) -> None:
    """summary.json says exactly what its records say, and they are the plan's items and seeds, each once."""
    summary = json.loads((out / "summary.json").read_text())
    records = read_records(out / "results.jsonl")
    settings_ = summary["settings"]
    keys = [(r["id"], r["seed"]) for r in records]
    assert len(set(keys)) == len(keys) == settings_["n"] * len(settings_["seeds"])
    assert {seed for _, seed in keys} == set(settings_["seeds"])
    for seed, rate in zip(summary["seeds"], summary["accuracy"]["per_seed"], strict=True):
        mine = [r["correct"] for r in records if r["seed"] == seed]
        assert rate == pytest.approx(sum(mine) / len(mine))


OPTION_VALUES = {
    "--method": ["base", "tt-si", "tt-icl", "oracle", "nope", ""],
    "--tau": ["0.5", "0.35,0.95", "nan", "inf", "-1", "1.5", "x", ",", "1e999"],
    "--seeds": ["0", "0,1", "0,0", "-1", str(2**64), "a", ""],
    "--k": ["1", "0", "-3", "2"],
    "--epochs": ["1", "0", "1.5"],
    "--lr": ["1e-3", "inf", "nan", "-1", "0", "1e400"],
    "--max-new-tokens": ["8", "0", "-1", "99999999999999999999"],
    "--limit": ["1", "2", "0", "-2"],
    "--batch": ["1", "2", "0"],
    "--samples": ["1", "2", "0"],
    "--dtype": ["auto", "float32", "bf16", "int3", ""],
    "--device": ["cpu", "cuda", "meta", "foo", "cuda:7"],
}


@pytest.mark.slow
@_examples(25)
@given(st.fixed_dictionaries({}, optional={name: st.sampled_from(values) for name, values in OPTION_VALUES.items()}))
def test_eval_options_give_a_result_or_one_error_line(toy_dir, options):
    options.setdefault("--limit", "1")
    if options.get("--method") in ("tt-si", "tt-icl", "oracle"):
        options.setdefault("--epochs", "1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        result = _eval(toy_dir, out, *(x for pair in options.items() for x in pair))
        _contract(result)
        if result.exit_code == 0:
            _recomputed(out)


@pytest.fixture(scope="module")
def finished_run(toy_dir, tmp_path_factory):
    """A finished base run of 3 items x 2 seeds, and its records by (id, seed)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = _eval(toy_dir, out, "--method", "base", "--limit", "3", "--seeds", "0,1")
    assert result.exit_code == 0, result.output
    return out, {(r["id"], r["seed"]): r for r in read_records(out / "results.jsonl")}


def _record_or_none(line: bytes) -> dict[str, Any] | None:
    try:
        return jsonio.parse(line.decode())
    except (UnicodeDecodeError, jsonio.BadJSON):
        return None


def _corrupt(out: Path, how: str, where: int) -> None:
    results, run = out / "results.jsonl", out / "run.json"
    lines = results.read_bytes().split(b"\n")[:-1]
    line = lines[where % len(lines)]
    record = next(r for r in map(_record_or_none, [line, *lines]) if r is not None)  # an earlier edit may have broken
    edits = {
        "drop": lambda: lines.pop(where % len(lines)),
        "duplicate": lambda: lines.append(line),
        "other_seed": lambda: lines.append(json.dumps(record | {"seed": 7}).encode()),
        "other_id": lambda: lines.append(json.dumps(record | {"id": "elsewhere"}).encode()),
        "other_method": lambda: lines.__setitem__(where % len(lines), json.dumps(record | {"method": "tt-si"})
                                                  .encode()),
        "no_id": lambda: lines.__setitem__(where % len(lines), json.dumps({k: v for k, v in record.items()
                                                                           if k != "id"}).encode()),
        "seed_true": lambda: lines.__setitem__(where % len(lines), json.dumps(record | {"seed": True}).encode()),
        "garbage": lambda: lines.insert(where % len(lines), b"\xff\xfe not json"),
        "deep": lambda: lines.insert(where % len(lines), b"[" * 50_000),
        "torn": lambda: lines.append(line[: len(line) // 2]),
    }
    if how in edits:
        edits[how]()
        tail = b"" if how == "torn" else b"\n"
        results.write_bytes(b"\n".join(lines) + tail)
    elif not run.exists():  # an earlier edit removed it
        return
    elif how == "no_run_json":
        run.unlink()
    elif how == "empty_run_json":
        run.write_text("")
    elif how == "list_run_json":
        run.write_text("[]")
    elif how == "other_settings":
        run.write_text(json.dumps(json.loads(run.read_text()) | {"taus": [0.5]}))
    elif how == "results_dir":
        results.unlink()
        results.mkdir()
    elif how == "results_device":
        results.unlink()
        results.symlink_to("/dev/zero")


def _resumable(source: Path, out: Path) -> bool:
    """Whether `out` is still `source`'s run after the edits, so that a resume must continue it: its run.json says
    the same, and its results are some of the original records, each at most once, perhaps followed by a line torn
    mid-write (no final newline), which a resume cuts off. Any other state must be refused."""
    results, run = out / "results.jsonl", out / "run.json"
    if results.is_symlink() or not results.is_file() or not run.is_file():
        return False
    if _record_or_none(run.read_bytes()) != json.loads((source / "run.json").read_text()):
        return False
    lines = results.read_bytes().split(b"\n")[:-1]  # less what follows the last newline: "" or a torn line
    original = (source / "results.jsonl").read_bytes().split(b"\n")[:-1]
    return all(line in original for line in lines) and len(set(lines)) == len(lines)  # byte for byte, each once


CORRUPTIONS = ["drop", "duplicate", "other_seed", "other_id", "other_method", "no_id", "seed_true", "garbage",
               "deep", "torn", "no_run_json", "empty_run_json", "list_run_json", "other_settings", "results_dir",
               "results_device"]


@pytest.mark.slow
@_examples(10)
@given(st.lists(st.tuples(st.sampled_from(CORRUPTIONS), st.integers(0, 5)), min_size=1, max_size=2))
@example([("drop", 0)])  # the resumes that must succeed, redoing what is missing
@example([("torn", 3), ("drop", 5)])
@example([("drop", 1), ("drop", 1)])
@example([("duplicate", 0), ("drop", 0)])  # the copy outlives its original: still this run's records
@example([("garbage", 2), ("drop", 2)])  # the inserted line removed again
@example([("other_method", 1), ("torn", 0)])  # refused: a record of another method
def test_a_resume_reports_only_what_its_settings_and_plan_produce(toy_dir, finished_run, edits):
    source, original = finished_run
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        shutil.copytree(source, out)
        for how, where in edits:
            if (out / "results.jsonl").is_file() and not (out / "results.jsonl").is_symlink():
                _corrupt(out, how, where)
        resumable = _resumable(source, out)
        result = _eval(toy_dir, out, "--method", "base", "--limit", "3", "--seeds", "0,1", "--resume")
        _contract(result)
        assert result.exit_code == (0 if resumable else 2), (edits, resumable, result.output)
        if result.exit_code == 0:
            _recomputed(out)
            again = {(r["id"], r["seed"]): r for r in read_records(out / "results.jsonl")}
            assert again.keys() == original.keys()
            assert all(again[k]["raw"] == original[k]["raw"] for k in original)  # greedy: the same answers
