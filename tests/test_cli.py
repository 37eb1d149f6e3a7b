"""`ttsi respond --json` for every method on a locally built model, and every bad input as one clear line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ttsi.awareness import assess
from ttsi.cli import app
from ttsi.config import GateConfig
from ttsi.formats import get_format
from ttsi.prompts import answer_prompt
from ttsi.schema import check_calls
from ttsi.task import Call, Task
from ttsi.toy import UNSEEN, make_tasks

from .openai_server import ChatServer, free_port

runner = CliRunner()
TRACE_KEYS = {"id", "answer", "raw", "uncertainty", "adapted", "synthetic", "rejected", "train", "timings",
              "scoring_prompt"}


@pytest.fixture
def task_file(tmp_path):
    path = tmp_path / "task.json"
    path.write_text(json.dumps(make_tasks(1, UNSEEN, seed=5)[0].to_dict()))
    return path


def _run(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["base", "tt-si", "tt-icl", "no-gate", "confident-only", "oracle"])
def test_respond_json_for_every_local_method(toy_dir, task_file, method):
    result = _run("respond", "--model", str(toy_dir), "--task", str(task_file), "--method", method,
                  "--tau", "1.0", "--json", "--max-new-tokens", "48")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) >= TRACE_KEYS
    u = out["uncertainty"]
    assert u["tau"] == 1.0 and len(u["candidates"]) == len(u["logprobs"]) == len(u["probs"]) == 3
    assert u["margin"] == pytest.approx(sorted(u["probs"])[-1] - sorted(u["probs"])[-2])
    assert set(out["timings"]) == {"gate_s", "synthesize_s", "train_s", "answer_s", "reset_s"}
    assert out["scoring_prompt"].endswith("<|im_start|>assistant\n")
    task = Task.from_dict(json.loads(task_file.read_text()))
    gold = [c.to_dict() for c in task.answer]
    assert out["id"] == task.id and out["method"] == method
    assert u["uncertain"] is (u["margin"] < 1.0) is True  # tau 1.0: every input is uncertain
    # who adapts: base never; confident-only skips the uncertain; the others adapt when they have pairs
    assert out["decision"] == ("skip" if method in ("base", "confident-only") else "adapt")
    if method in ("base", "confident-only", "tt-icl"):  # tt-icl: the pairs become demonstrations, no training
        assert not out["adapted"] and out["train"] == {"steps": 0, "losses": [], "lrs": []}
    if method == "oracle":
        assert out["adapted"] and out["train"]["steps"] == 5 and len(out["train"]["losses"]) == 5
        assert out["synthetic"] == [{"query": task.query, "answer": gold, "source": "gold"}]
    if method in ("tt-si", "no-gate"):
        assert out["adapted"] == bool(out["synthetic"]) and all(p["source"] == "self" for p in out["synthetic"])
        assert out["train"]["steps"] == (5 * len(out["synthetic"]) if out["adapted"] else 0)


@pytest.mark.slow
def test_respond_json_tt_d_through_a_loopback_teacher(toy_dir, toy, task_file):
    with ChatServer(toy, name="toy-teacher") as server:
        result = _run("respond", "--model", str(toy_dir), "--task", str(task_file), "--method", "tt-d",
                      "--tau", "1.0", "--teacher-url", server.url, "--teacher-model", "toy-teacher", "--json",
                      "--max-new-tokens", "48")
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert len(server.requests) == 1 and server.requests[0]["model"] == "toy-teacher"  # one synthesis request
        task = Task.from_dict(json.loads(task_file.read_text()))
        assert task.query in server.requests[0]["messages"][-1]["content"]
        assert all(p["source"] == "teacher" for p in out["synthetic"])
        for pair in out["synthetic"]:  # every kept pair is valid against the task's tools
            check_calls([Call(c["name"], c["arguments"]) for c in pair["answer"]], task.tools)
        assert out["adapted"] == bool(out["synthetic"]) and out["decision"] == "adapt"


@pytest.mark.slow
def test_respond_human_readable(toy_dir, task_file):
    result = _run("respond", "--model", str(toy_dir), "--task", str(task_file), "--method", "oracle",
                  "--tau", "1.0", "--max-new-tokens", "24")
    assert result.exit_code == 0, result.output
    task = Task.from_dict(json.loads(task_file.read_text()))
    lines = result.stdout.splitlines()
    assert lines[0] == f"{task.id}  method oracle  decision adapt  adapted True"
    text = " ".join(result.stdout.split())  # rich wraps long lines at a space
    gold = json.dumps([c.to_dict() for c in task.answer], ensure_ascii=False)
    assert f"synthetic (gold): {task.query!r} -> {gold}" in text
    assert re.search(r"^  trained 5 steps, loss \d+\.\d{3}( -> \d+\.\d{3}){4}$", result.stdout, re.M), result.stdout
    answer = re.search(r" answer (\[.*?\]|unparsable: .*?) gate_s \d", text)
    assert answer, result.stdout
    if not answer.group(1).startswith("unparsable: "):  # the answer line is the parsed calls, as JSON
        assert all(set(c) == {"name", "arguments"} for c in json.loads(answer.group(1)))


def _task(tmp_path, content) -> str:
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


BAD_INPUTS = {
    "missing model": (lambda d, t, tmp: ["--model", "./no/such/model", "--task", t],
                      "model path ./no/such/model does not exist"),
    "task not JSON": (lambda d, t, tmp: ["--model", d, "--task", _task(tmp, "{oops")], "is not valid JSON"),
    "task file missing": (lambda d, t, tmp: ["--model", d, "--task", str(tmp / "none.json")], "does not exist"),
    "no tools": (lambda d, t, tmp: ["--model", d, "--task", _task(tmp, {"id": "x", "query": "hi", "tools": []})],
                 "has no tools: the gate has no candidate actions"),
    "tool without name": (lambda d, t, tmp: ["--model", d, "--task", _task(
        tmp, {"id": "x", "query": "hi", "tools": [{"parameters": {}}]})], r"tools[0] is missing 'name'"),
    "tool without parameters": (lambda d, t, tmp: ["--model", d, "--task", _task(
        tmp, {"id": "x", "query": "hi", "tools": [{"name": "f"}]})], "tool 'f' is missing 'parameters'"),
    "K below 1": (lambda d, t, tmp: ["--model", d, "--task", t, "--k", "0"], "must be at least 1, got 0"),
    "tau above 1": (lambda d, t, tmp: ["--model", d, "--task", t, "--tau", "1.5"], "tau must be in [0, 1], got 1.5"),
    "unknown method": (lambda d, t, tmp: ["--model", d, "--task", t, "--method", "magic"], "unknown method 'magic'"),
    "tt-d without teacher": (lambda d, t, tmp: ["--model", d, "--task", t, "--method", "tt-d"], "needs a teacher"),
    "unreachable teacher": (lambda d, t, tmp: ["--model", d, "--task", t, "--method", "tt-d", "--teacher-url",
                                               f"http://127.0.0.1:{free_port()}/v1", "--teacher-model", "m"],
                            "cannot reach the teacher at http://127.0.0.1:"),
    "oracle without gold": (lambda d, t, tmp: ["--model", d, "--task", _task(
        tmp, {"id": "x", "query": "hi", "tools": [{"name": "f", "parameters": {}}]}), "--method", "oracle"],
                            "has no gold answer"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line_and_exit_code_2(qwen_dir, task_file, tmp_path, case):
    build, message = BAD_INPUTS[case]
    result = _run("respond", *build(str(qwen_dir), str(task_file), tmp_path))
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_calibrate_by_budget_and_reference(toy_dir, toy, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n".join(json.dumps(t.to_dict()) for t in make_tasks(10, UNSEEN, seed=9)))
    out = json.loads(_run("calibrate", "--model", str(toy_dir), "--tasks", str(tasks), "--budget", "0.3",
                          "--json").stdout)
    assert out["n"] == 10 and out["flagged"] <= 3 and 0 <= out["tau"] <= 1
    assert out["flagged"] == sum(c < out["tau"] for c in out["confidences"])
    assert out["tau"] == sorted(out["confidences"])[3]  # the 4th smallest: the 3 below it adapt
    fmt = get_format("json")  # the confidences are the gate's margins on each task
    gate = [assess(toy, answer_prompt(toy, t, fmt), t.tools, fmt, GateConfig()).confidence
            for t in make_tasks(10, UNSEEN, seed=9)]
    assert out["confidences"] == pytest.approx(gate, abs=1e-5)
    ref = json.loads(_run("calibrate", "--model", str(toy_dir), "--tasks", str(tasks), "--percentile", "0",
                          "--json").stdout)
    assert ref["tau"] == min(ref["confidences"]) and ref["flagged"] == 0
    both = _run("calibrate", "--model", str(toy_dir), "--tasks", str(tasks))
    assert both.exit_code == 2 and "exactly one of --percentile" in both.stderr


@pytest.mark.slow
@pytest.mark.subprocess
def test_installed_entry_point_runs_in_a_fresh_process(toy_dir, task_file):
    """The real console script, as users call it: JSON on stdout, nothing else."""
    exe = os.path.join(os.path.dirname(sys.executable), "ttsi")
    proc = subprocess.run([exe, "respond", "--model", str(toy_dir), "--task", str(task_file), "--method", "base",
                           "--json", "--max-new-tokens", "16"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) >= TRACE_KEYS
    assert (out["id"], out["method"], out["decision"], out["adapted"]) == ("toy-0", "base", "skip", False)
