"""The run directory: run.json replaced atomically, one writer at a time, every record checked on resume, and every
file-system failure one clear error (GitHub issue 17)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttsi.benchmarks import get_benchmark
from ttsi.cli import app
from ttsi.errors import ConfigError, FileError, TaskError
from ttsi.evaluation import records as records_module
from ttsi.evaluation.lock import RunLock
from ttsi.evaluation.records import FIELDS, RunDir, read_records
from ttsi.evaluation.report import write_report
from ttsi.evaluation.score import read_predictions, score_predictions

SETTINGS = {"model": "m", "seeds": [0, 1], "agent": {"method": "tt-si"}}
PLAN = [(item, seed) for seed in (0, 1) for item in ("a", "b", "c")]


def record(item: str = "a", seed: int = 0, **fields) -> dict:
    base = dict.fromkeys(FIELDS) | {"id": item, "seed": seed, "method": "tt-si", "correct": True, "adapted": False}
    return base | fields


def open_run(path: Path, resume: bool = False, settings: dict = SETTINGS, **kw) -> RunDir:
    return RunDir(path, settings, resume, plan=kw.pop("plan", PLAN), method=kw.pop("method", "tt-si"), **kw)


def started(path: Path, *recs: dict) -> Path:
    """A run directory holding `recs` (a run interrupted after them)."""
    with open_run(path) as run:
        for r in recs:
            run.append(r)
    return path


def test_a_run_resumes_with_its_records_and_the_torn_line_cut_off(tmp_path):
    started(tmp_path, record("a"), record("b", correct=False))
    with (tmp_path / "results.jsonl").open("a") as f:
        f.write('{"id": "c", "se')  # killed mid-write
    with open_run(tmp_path, resume=True) as run:
        assert run.done == {("a", 0), ("b", 0)}
        run.append(record("c"))
    assert [r["id"] for r in read_records(tmp_path / "results.jsonl")] == ["a", "b", "c"]


# 1. run.json is replaced atomically, and only when it changes


def test_run_json_is_replaced_atomically_and_only_when_it_changes(tmp_path, monkeypatch):
    run_file = tmp_path / "run.json"
    open_run(tmp_path).close()
    inode = run_file.stat().st_ino
    (tmp_path / ".run.json.x1.tmp").write_text('{"half": ')  # left by a process killed while replacing it
    open_run(tmp_path, resume=True).close()
    assert run_file.stat().st_ino == inode, "unchanged settings are not rewritten"
    assert not list(tmp_path.glob(".run.json.*")), "a leftover temporary file is cleared away"

    def killed(src, dst):  # the process dies between writing the new file and renaming it over the old
        raise KeyboardInterrupt

    monkeypatch.setattr(records_module.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        open_run(tmp_path, settings={"model": "other"})
    assert json.loads(run_file.read_text()) == SETTINGS  # the old one, whole
    assert not list(tmp_path.glob(".run.json.*"))
    monkeypatch.undo()
    open_run(tmp_path, settings={"model": "other"}).close()
    assert json.loads(run_file.read_text()) == {"model": "other"}


# 2. one writer at a time


def test_a_second_writer_in_the_same_process_is_refused_until_the_first_closes(tmp_path):
    with open_run(tmp_path), pytest.raises(ConfigError, match=rf"is in use by ttsi pid {os.getpid()} on host "):
        open_run(tmp_path, resume=True)
    open_run(tmp_path, resume=True).close()


HOLDER = """
import sys
from ttsi.evaluation.records import RunDir
run = RunDir(sys.argv[1], {"model": "m"}, False, plan=[("a", 0)], method="tt-si")
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.mark.subprocess
def test_a_run_directory_held_by_another_process_is_refused_naming_it(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        with pytest.raises(ConfigError) as e:
            open_run(tmp_path, resume=True, settings={"model": "m"}, plan=[("a", 0)])
        assert str(e.value).startswith(f"{tmp_path} is in use by ttsi pid {proc.pid} on host ")
        assert str(e.value).endswith("; wait for it to finish or choose another --out")
    finally:
        proc.kill()  # the kernel releases the lock of a killed holder: a stale lock never blocks a resume
        proc.wait(timeout=30)
    open_run(tmp_path, resume=True, settings={"model": "m"}, plan=[("a", 0)]).close()


# 3. a resume checks every record and run.json


@pytest.mark.parametrize(("line", "message"), [
    (json.dumps(record("a", seed=7)), r"line 2, holds item 'a' seed 7, which is not among this run's items and seeds"),
    (json.dumps(record("z")), r"line 2, holds item 'z' seed 0, which is not among"),
    (json.dumps(record("a")), r"line 2, repeats item 'a' seed 0 \(first on line 1\)"),
    (json.dumps(record("b", method="base")), r"line 2, was made by method 'base', not 'tt-si'"),
    (json.dumps({k: v for k, v in record("b").items() if k != "id"}), r"line 2, is not a ttsi record: it lacks id"),
    (json.dumps(record("b", seed=True)), r"line 2, is not a ttsi record: 'seed' must be an integer, got true"),
    (json.dumps(record("b", seed="0")), r"line 2, is not a ttsi record: 'seed' must be an integer"),
    (json.dumps(record("b", correct="yes")), r"line 2, is not a ttsi record: 'correct' must be true or false"),
    (json.dumps(record(1)), r"line 2, is not a ttsi record: 'id' must be a string, got 1"),
    ("[1, 2]", r"line 2, is not a ttsi record: it is a JSON array, not an object"),
    ("{oops", r"line 2, is not a JSON record \(.*\): the file is corrupt"),
    ('{"id": "b", "seed": NaN}', r"line 2, is not a JSON record \(NaN is not a JSON number\)"),
])
def test_a_resume_refuses_records_that_are_not_this_runs(tmp_path, line, message):
    started(tmp_path, record("a"))
    with (tmp_path / "results.jsonl").open("a") as f:
        f.write(line + "\n")
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'results.jsonl'}, {message}"):
        open_run(tmp_path, resume=True)


@pytest.mark.parametrize(("content", "message"), [
    (None, r"holds results\.jsonl but no run\.json, so nothing says which settings made its records"),
    ("", r"run\.json is not valid JSON: Expecting value at line 1 column 1"),
    ('{"model": ', r"run\.json is not valid JSON"),
    ("[]", r"run\.json holds a JSON array, not the settings object ttsi writes"),
    (json.dumps(SETTINGS | {"seeds": [0]}), r"settings differ from the original run in seeds"),
])
def test_a_resume_refuses_a_missing_corrupt_or_other_run_json(tmp_path, content, message):
    started(tmp_path, record("a"))
    run_file = tmp_path / "run.json"
    if content is None:
        run_file.unlink()
    else:
        run_file.write_text(content)
    with pytest.raises(ConfigError, match=message):
        open_run(tmp_path, resume=True)
    assert read_records(tmp_path / "results.jsonl") == [record("a")]  # left as it was
    RunLock(tmp_path).release()  # and unlocked


def test_a_fresh_run_refuses_a_directory_with_results_and_a_resume_of_an_empty_one_starts(tmp_path):
    started(tmp_path, record("a"))
    with pytest.raises(ConfigError, match="already holds results: pass --resume to continue that run, or choose"):
        open_run(tmp_path)
    with open_run(tmp_path / "new", resume=True) as run:  # nothing to resume: a fresh start
        assert run.done == set()


def test_line_separators_inside_strings_survive_a_resume(tmp_path):
    raw = "first\u2028second\x85third\u2029\x0c"
    started(tmp_path, record("a", raw=raw, reason="nan in loss", gate={"margin": float("nan")}))
    with open_run(tmp_path, resume=True) as run:
        assert run.done == {("a", 0)}
    (got,) = read_records(tmp_path / "results.jsonl")
    assert got["raw"] == raw and got["gate"] == {"margin": None}  # strict JSON: what was written reads back


# 4. --dtype and --device are settings


def test_eval_records_dtype_and_device_in_the_settings(tmp_path, monkeypatch):
    import ttsi.evaluation.runner as runner
    import ttsi.model as model

    seen = {}
    monkeypatch.setattr(model.HFModel, "from_pretrained", classmethod(lambda cls, *a, **kw: None))
    monkeypatch.setattr(runner, "run_eval", _capture(seen))
    args = ["eval", "--model", "m", "--benchmark", "toy", "--limit", "1", "--out", str(tmp_path / "r")]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert (seen["dtype"], seen["device"]) == ("auto", None)
    assert CliRunner().invoke(app, [*args, "--dtype", "float32", "--device", "cpu"]).exit_code == 0
    assert (seen["dtype"], seen["device"]) == ("float32", "cpu")


def _capture(seen: dict):
    def run_eval(model, bench, split, tasks, config, seeds, out, settings, **kw):
        seen.update(settings)
        return {"accuracy": {"mean": 1.0, "std": 0.0}, "n": len(tasks)}

    return run_eval


# 5. file-system failures: one clear FileError


def test_an_out_that_cannot_be_a_run_directory_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileError, match=r"run directory .*file is an existing file, not a directory"):
        open_run(tmp_path / "file")
    with pytest.raises(FileError, match=r"cannot create the run directory .*file/run: Not a directory"):
        open_run(tmp_path / "file" / "run")
    with pytest.raises(FileError, match="cannot create the run directory /proc/ttsi-no/run"):
        open_run(Path("/proc/ttsi-no/run"))


@pytest.fixture
def alarm():
    """Fail, rather than hang, should anything read a device without end."""
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("reading the results file hung"))
    signal.alarm(10)
    yield
    signal.alarm(0)


@pytest.mark.parametrize("kind", ["directory", "/dev/zero", "/dev/full", "broken link"])
def test_a_results_file_that_is_not_a_regular_file_is_refused(tmp_path, alarm, kind):
    results = tmp_path / "results.jsonl"
    if kind == "directory":
        results.mkdir()
    else:
        results.symlink_to(tmp_path / "gone" if kind == "broken link" else kind)
    message = {"directory": "is a directory, not a file", "broken link": "is a link to .*, which does not exist"}.get(
        kind, r"is not a regular file \(a device, pipe or socket\)")
    for resume in (False, True):
        with pytest.raises(FileError, match=rf"results file {results} {message}"):
            open_run(tmp_path, resume=resume)
    if kind != "broken link":
        with pytest.raises(FileError, match=message):
            read_records(results)


def test_records_that_are_not_utf8_are_refused_naming_the_line(tmp_path):
    started(tmp_path, record("a"))
    with (tmp_path / "results.jsonl").open("ab") as f:
        f.write(b'{"id": "b\xff"}\n')
    with pytest.raises(FileError, match=r"results\.jsonl is not UTF-8 text \(byte 0xff on line 2\)"):
        open_run(tmp_path, resume=True)


@pytest.mark.parametrize("partial", [False, True])
def test_a_full_disk_mid_run_loses_nothing_written_and_says_resume(tmp_path, monkeypatch, partial):
    run = open_run(tmp_path)
    run.append(record("a"))
    real_write = os.write

    def full(fd, data):
        if fd != run._fd:
            return real_write(fd, data)
        if partial and len(data) > 10:
            return real_write(fd, data[:10])  # a short write; the next one fails
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records_module.os, "write", full)
    with pytest.raises(FileError) as e:
        run.append(record("b"))
    monkeypatch.undo()
    run.close()
    assert str(e.value) == (f"the disk holding {tmp_path / 'results.jsonl'} is full (no space left on the device): "
                            "the 1 records before it are saved; ttsi eval --resume continues the run once space "
                            "is freed")
    assert (tmp_path / "results.jsonl").read_bytes().endswith(b"}\n"), "no partial record is left"
    with open_run(tmp_path, resume=True) as again:
        assert again.done == {("a", 0)}
        again.append(record("b"))
    assert [r["id"] for r in read_records(tmp_path / "results.jsonl")] == ["a", "b"]


def test_a_failing_fsync_is_one_clear_error_too(tmp_path, monkeypatch):
    with open_run(tmp_path) as run:
        monkeypatch.setattr(records_module.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O")))
        with pytest.raises(FileError, match=r"cannot write .*results\.jsonl: I/O; the 0 records before it are saved"):
            run.append(record("a"))
        monkeypatch.undo()
    assert read_records(tmp_path / "results.jsonl") == []


# 6. ttsi report of something that is not a summary


@pytest.mark.parametrize(("summary", "message"), [
    ("{}", "it lacks benchmark, split, method, n, seeds, accuracy, adapted, synthetic_used"),
    ("[]", "it is a JSON array, not an object"),
    ('{"benchmark": "toy", "split": "s", "method": "base", "n": 1, "seeds": [0], "accuracy": 0.5, "adapted": {},'
     ' "synthetic_used": {}}', "'accuracy' is a JSON number, not an object"),
    ('{"benchmark": "toy", "split": "s", "method": "base", "n": 1, "seeds": [0], "accuracy": {"mean": 1},'
     ' "adapted": {"fraction": 0}, "synthetic_used": {"mean": 0}}', "'accuracy' lacks the number std"),
])
def test_report_refuses_a_summary_it_cannot_read(tmp_path, summary, message):
    (tmp_path / "summary.json").write_text(summary)
    with pytest.raises(TaskError, match=rf"summary\.json is not a ttsi summary: {message}$"):
        write_report([tmp_path], tmp_path / "report")
    (tmp_path / "summary.json").write_text("")
    with pytest.raises(TaskError, match=r"summary\.json is not valid JSON"):
        write_report([tmp_path], tmp_path / "report")


# 7. ttsi score


def test_score_into_an_existing_run_directory_says_what_score_can_do(tmp_path):
    toy = get_benchmark("toy")
    tasks = toy.load(None, "seen")[:2]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("\n".join(json.dumps({"id": t.id, "output": "no\u2028idea"}) for t in tasks) + "\n")
    assert read_predictions(preds) == {t.id: "no\u2028idea" for t in tasks}
    score_predictions(toy, "seen", tasks, preds, tmp_path / "scored")
    with pytest.raises(ConfigError) as e:
        score_predictions(toy, "seen", tasks, preds, tmp_path / "scored")
    assert str(e.value) == f"{tmp_path / 'scored'} already holds results: choose another --out or remove it"
    preds.write_text('{"id": "seen-0", "output": "x"}\n{"id": 1e999, "output": "x"}\n')
    with pytest.raises(TaskError, match=r"preds\.jsonl:2 is not valid JSON: the number 1e999 is too large"):
        read_predictions(preds)
