"""`ttsi respond --json` for every method on a locally built model, and every bad input as one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ttsi.cli import app
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
    if method == "base":
        assert not out["adapted"] and out["train"]["steps"] == 0
    if method == "oracle":
        assert out["adapted"] and out["train"]["steps"] == 5 and len(out["train"]["losses"]) == 5
    if method == "confident-only":
        assert not out["adapted"]  # tau 1.0: nothing is confident


@pytest.mark.slow
def test_respond_json_tt_d_through_a_loopback_teacher(toy_dir, toy, task_file):
    with ChatServer(toy, name="toy-teacher") as server:
        result = _run("respond", "--model", str(toy_dir), "--task", str(task_file), "--method", "tt-d",
                      "--tau", "1.0", "--teacher-url", server.url, "--teacher-model", "toy-teacher", "--json",
                      "--max-new-tokens", "48")
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert server.requests and all(p["source"] == "teacher" for p in out["synthetic"])
        assert out["adapted"] == bool(out["synthetic"])


@pytest.mark.slow
def test_respond_human_readable(toy_dir, task_file):
    result = _run("respond", "--model", str(toy_dir), "--task", str(task_file), "--method", "oracle",
                  "--tau", "1.0", "--max-new-tokens", "24")
    assert result.exit_code == 0, result.output
    assert "decision adapt" in result.stdout and "trained 5 steps" in result.stdout and "answer" in result.stdout


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
def test_calibrate_by_budget_and_reference(toy_dir, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n".join(json.dumps(t.to_dict()) for t in make_tasks(10, UNSEEN, seed=9)))
    out = json.loads(_run("calibrate", "--model", str(toy_dir), "--tasks", str(tasks), "--budget", "0.3",
                          "--json").stdout)
    assert out["n"] == 10 and out["flagged"] <= 3 and 0 <= out["tau"] <= 1
    assert out["flagged"] == sum(c < out["tau"] for c in out["confidences"])
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
    assert set(json.loads(proc.stdout)) >= TRACE_KEYS
