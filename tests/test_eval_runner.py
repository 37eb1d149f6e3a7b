"""The evaluation runner: records, summaries derived from them, resumption after a kill, scoring, reports, SFT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from ttsi.benchmarks import get_benchmark, parse_spec
from ttsi.cli import app
from ttsi.config import AgentConfig, GateConfig, LearnConfig
from ttsi.errors import ConfigError, TaskError
from ttsi.evaluation.records import read_records
from ttsi.evaluation.report import gate_groups, load_run, write_report
from ttsi.evaluation.runner import run_eval
from ttsi.evaluation.score import score_predictions
from ttsi.evaluation.sft import train_sft
from ttsi.formats import get_format
from ttsi.model import HFModel
from ttsi.prompts import answer_prompt

TOY = get_benchmark("toy")


def _run(model, tmp_path, method="tt-si", seeds=(0,), taus=(1.0,), limit=6, name="run", **config):
    tasks = TOY.load(None, "unseen")[:limit]
    agent = AgentConfig(method=method, gate=GateConfig(tau=max(taus)), max_new_tokens=48, **config)
    out = tmp_path / name
    summary = run_eval(model, TOY, "unseen", tasks, agent, list(seeds), out, {"test": name}, taus=list(taus))
    return summary, read_records(out / "results.jsonl"), tasks


@pytest.mark.slow
def test_records_and_summary_agree(toy, tmp_path):
    summary, records, tasks = _run(toy, tmp_path, seeds=(0, 1), taus=(0.5, 1.0), record_base=True)
    assert len(records) == 2 * len(tasks) and len({(r["id"], r["seed"]) for r in records}) == len(records)
    for seed, acc in zip((0, 1), summary["accuracy"]["per_seed"], strict=True):
        rows = [r for r in records if r["seed"] == seed]
        assert acc == sum(r["correct"] for r in rows) / len(rows)
    fmt = get_format("json")
    base = dict(zip([t.id for t in tasks], toy.generate([answer_prompt(toy, t, fmt) for t in tasks],
                                                        max_new_tokens=48), strict=True))  # the base model's
    for r in records:
        task = next(t for t in tasks if t.id == r["id"])
        assert r["correct"] == TOY.score(task, r["raw"]).correct
        assert r["gate"]["tau"] == 1.0 and set(r["timings"]) >= {"gate_s", "train_s", "reset_s"}
        if r["decision"] == "adapt":  # record_base: the base model's own answer, written outside the loop
            assert r["base_raw"] == base[r["id"]] and r["base_correct"] == TOY.score(task, base[r["id"]]).correct
        else:  # answered by the base model itself
            assert r["base_raw"] is None and r["raw"] == base[r["id"]] and r["base_correct"] == r["correct"]
        if r["adapted"]:
            assert r["train"]["steps"] == 5
    # the sweep's largest tau is the run itself; every point comes from the same records
    assert summary["by_tau"][-1]["accuracy"]["mean"] == summary["accuracy"]["mean"]
    assert summary["adapted"]["fraction"] == sum(r["adapted"] for r in records) / len(records)
    assert summary["records"] == len(records) and summary["seeds"] == [0, 1]


@pytest.mark.slow
def test_majority_and_pass_at_k_from_samples(toy, tmp_path):
    summary, records, _ = _run(toy, tmp_path, method="base", samples=3, sample_temperature=1.0, limit=4)
    for r in records:
        assert len(r["samples"]) == len(r["samples_correct"]) == 3
        assert r["pass_correct"] == any(r["samples_correct"])
    assert summary["pass@3"]["mean"] == sum(r["pass_correct"] for r in records) / len(records)
    assert summary["majority"]["mean"] == sum(r["majority_correct"] for r in records) / len(records)


def test_a_sweep_needs_a_gated_method(toy, tmp_path):
    with pytest.raises(ConfigError, match="a tau sweep needs a gated method"):
        _run(toy, tmp_path, method="no-gate", taus=(0.5, 0.9))


KILL_LIMIT = 6  # 12 items of 0.1-0.3 s: room for the kill to land mid-run even on a loaded machine


def _eval_cmd(toy_dir, out, *extra):
    exe = os.path.join(os.path.dirname(sys.executable), "ttsi")
    return [exe, "eval", "--model", str(toy_dir), "--benchmark", "toy:unseen", "--method", "tt-si", "--tau", "1.0",
            "--seeds", "0,1", "--limit", str(KILL_LIMIT), "--max-new-tokens", "48", "--out", str(out), *extra]


def _strip(records):
    return sorted(({k: v for k, v in r.items() if k != "timings"} for r in records),
                  key=lambda r: (r["seed"], r["id"]))


@pytest.fixture(scope="module")
def uninterrupted(toy_dir, tmp_path_factory):
    """The same run as _eval_cmd, made in one go in this process."""
    model = HFModel.from_pretrained(str(toy_dir), dtype="float32")
    _, records, _ = _run(model, tmp_path_factory.mktemp("whole"), seeds=(0, 1), limit=KILL_LIMIT,
                        record_base=True)
    return records


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_run_resumes_without_losing_or_repeating_items(toy_dir, tmp_path, uninterrupted, sig):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "killed"
    proc = subprocess.Popen(_eval_cmd(toy_dir, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    results = out / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not results.exists() or results.read_text().count("\n") < 1):
        time.sleep(0.02)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    done = read_records(results)
    assert 1 <= len(done) < 2 * KILL_LIMIT, ("the kill must land mid-run", proc.returncode, stderr.decode()[-2000:])
    if sig == signal.SIGINT:
        assert proc.returncode == 130
    again = subprocess.run(_eval_cmd(toy_dir, out, "--resume"), capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    final = read_records(results)
    assert len(final) == 2 * KILL_LIMIT and len({(r["id"], r["seed"]) for r in final}) == 2 * KILL_LIMIT
    # deterministic per input and seed, so the resumed run equals the uninterrupted one record for record
    for got, want in zip(_strip(final), _strip(uninterrupted), strict=True):
        differ = {k: (got.get(k), want.get(k)) for k in got.keys() | want.keys() if got.get(k) != want.get(k)}
        assert not differ, f"{got['id']} seed {got['seed']} after the resume differs from one go: {differ}"


@pytest.mark.slow
def test_resume_refuses_other_settings_and_eval_refuses_bad_options(toy_dir, tmp_path):
    runner = CliRunner()
    base = ["eval", "--model", str(toy_dir), "--benchmark", "toy:unseen", "--limit", "2", "--out", str(tmp_path / "r"),
            "--method", "base", "--max-new-tokens", "8"]
    assert runner.invoke(app, base).exit_code == 0
    assert json.loads((tmp_path / "r" / "run.json").read_text())["batch"] == 1
    cases = {
        "already holds results": base,
        "settings differ from the original run in limit": [*base[:6], "3", *base[7:], "--resume"],
        "settings differ from the original run in batch": [*base, "--batch", "2", "--resume"],
        "--batch must be at least 1": ["eval", "--model", "m", "--benchmark", "toy", "--batch", "0"],
        "unknown benchmark 'nope'": ["eval", "--model", "m", "--benchmark", "nope"],
        "has no split 'dev'": ["eval", "--model", "m", "--benchmark", "toy:dev"],
        "--seeds must be comma-separated integers": ["eval", "--model", "m", "--benchmark", "toy", "--seeds", "a"],
        "tau must be in [0, 1], got 2.0": ["eval", "--model", "m", "--benchmark", "toy", "--tau", "0.5,2"],
        "a tau sweep needs a gated method": ["eval", "--model", "m", "--benchmark", "toy", "--method", "base",
                                             "--tau", "0.5,0.9"],
    }
    for message, args in cases.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.stderr, (message, result.output)


def test_score_outputs_made_elsewhere(tmp_path):
    tasks = TOY.load(None, "seen")
    fmt = get_format("json")
    lines = [{"id": t.id, "output": fmt.render(t.answer) if i % 2 == 0 else "no idea"} for i, t in enumerate(tasks)]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("\n".join(json.dumps(x) for x in lines))
    summary = score_predictions(TOY, "seen", tasks, preds, tmp_path / "scored")
    records = read_records(tmp_path / "scored" / "results.jsonl")
    assert summary["accuracy"]["mean"] == 0.5 and len(records) == len(tasks)
    assert {r["error"] for r in records if not r["correct"]} == {"parse_error"}
    preds.write_text("\n".join(json.dumps(x) for x in lines[:3]))
    with pytest.raises(TaskError, match=f"{len(tasks) - 3} of {len(tasks)} items have no prediction"):
        score_predictions(TOY, "seen", tasks, preds, tmp_path / "s2")
    summary = score_predictions(TOY, "seen", tasks, preds, tmp_path / "s3", allow_missing=True)
    assert summary["errors"]["missing_prediction"] == len(tasks) - 3
    for bad, message in [('{"id": "nope", "output": "x"}', "not in toy:seen"), ("{oops", "is not valid JSON"),
                         ('{"id": "seen-0"}', 'needs an "id" and an "output" string'),
                         ('{"id": "seen-0", "output": ""}\n{"id": "seen-0", "output": ""}', "repeats id")]:
        preds.write_text(bad)
        with pytest.raises(TaskError, match=message):
            score_predictions(TOY, "seen", tasks, preds, tmp_path / "bad", allow_missing=True)


@pytest.mark.slow
def test_report_writes_the_table_and_plots(toy, tmp_path):
    _run(toy, tmp_path, taus=(0.5, 1.0), name="sweep", limit=3)
    _run(toy, tmp_path, method="base", name="base", limit=3)
    report = write_report([tmp_path / "sweep", tmp_path / "base"], tmp_path / "report")
    text = report.read_text()
    lines = text.splitlines()
    for name, method in (("sweep", "tt-si"), ("base", "base")):  # one seed: the accuracy of its records, std 0
        records = read_records(tmp_path / name / "results.jsonl")
        accuracy = sum(r["correct"] for r in records) / len(records)
        assert f"| {method} | {100 * accuracy:.2f} ± 0.00 |" in lines, text
    assert "## Accuracy against tau" in text
    assert [line.split(" | ")[1] for line in lines if line.startswith("| toy:unseen tt-si | ")][-2:] == ["0.5", "1.0"]
    for png in ("accuracy_per_method.png", "accuracy_vs_tau.png", "margin_distribution.png"):
        assert (tmp_path / "report" / png).read_bytes().startswith(b"\x89PNG")
    with pytest.raises(TaskError, match=r"has no summary\.json"):
        write_report([tmp_path], tmp_path / "r2")


@pytest.mark.slow
def test_report_names_labelled_runs_and_plots_each_distinct_gate_once(toy, tmp_path):
    _run(toy, tmp_path, method="base", name="base", limit=3, record_base=True)
    _run(toy, tmp_path, name="tt-si", limit=3, record_base=True)  # gates with the same base margins as `base`
    _run(toy, tmp_path, method="base", name="fewer", limit=2)
    tasks = TOY.load(None, "unseen")[:3]
    run_eval(toy, TOY, "unseen", tasks, AgentConfig(method="base", max_new_tokens=48), [0], tmp_path / "sft",
             {"label": "sft", "adapter": "runs/sft/adapter"})
    runs = [load_run(tmp_path / name) for name in ("base", "tt-si", "fewer", "sft")]
    groups = gate_groups(runs)
    # the same model on the same items gates alike whatever the method or label; other items make another panel
    assert [title for title, _ in groups] == ["toy:unseen: base, tt-si, sft", "toy:unseen: base"]
    assert [len(pairs) for _, pairs in groups] == [3, 2]
    text = write_report([r["path"] for r in runs], tmp_path / "report").read_text()
    assert "toy:unseen, sft (method base), model `-`, adapter `runs/sft/adapter`, n=3" in text
    assert "| toy:unseen sft | " in text and "| sft | " in text


@pytest.mark.slow
def test_sft_baseline_trains_saves_and_loads_back(toy_dir, tmp_path):
    model = HFModel.from_pretrained(str(toy_dir), dtype="float32")
    bench, split = parse_spec("toy:unseen")
    tasks = bench.load(None, split)[:4]
    record = train_sft(model, bench, split, tasks, LearnConfig(epochs=1, lr=1e-3), tmp_path / "sft")
    assert record["samples"] == 4 and record["steps"] == 4
    assert json.loads((tmp_path / "sft" / "sft.json").read_text())["samples"] == 4
    merged = HFModel.from_pretrained(str(toy_dir), dtype="float32", adapter=str(tmp_path / "sft" / "adapter"))
    plain = HFModel.from_pretrained(str(toy_dir), dtype="float32")
    ids = torch.tensor([plain.encode("hello")])
    with torch.no_grad():
        assert not torch.equal(merged.model(input_ids=ids).logits, plain.model(input_ids=ids).logits)
    assert not any("lora" in n for n, _ in merged.model.named_parameters())  # merged: a plain model again
    from ttsi.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"has no adapter_config\.json"):
        HFModel.from_pretrained(str(toy_dir), adapter=str(tmp_path))


@pytest.mark.slow
def test_an_oracle_run_answers_items_without_gold_with_the_base_model(toy, tmp_path):
    tasks = [TOY.load(None, "unseen")[i] for i in (0, 1, 3)]  # (item 2: the toy model's margin is exactly 1.0)
    tasks[1].answer = None  # as ToolAlpaca's gold defects are
    agent = AgentConfig(method="oracle", gate=GateConfig(tau=1.0), max_new_tokens=16)
    run_eval(toy, TOY, "unseen", tasks, agent, [0], tmp_path, {"test": "oracle"})
    records = read_records(tmp_path / "results.jsonl")
    assert [r["adapted"] for r in records] == [True, False, True]
    assert records[1]["method"] == "oracle"
    assert records[1]["reason"] == "oracle: the item has no gold answer to train on; base answer"
    prompt = answer_prompt(toy, tasks[1], get_format("json"))
    assert records[1]["raw"] == toy.generate([prompt], max_new_tokens=16)[0]  # the base model's greedy answer


def test_settings_that_cannot_run_are_refused_before_the_run_directory_is_written(toy, tmp_path):
    tasks = TOY.load(None, "unseen")[:1]
    for config, seeds, message in [(AgentConfig(), [2**64], "seed must be an integer"),
                                   (AgentConfig(learn=LearnConfig(lr=float("inf"))), [0], "finite number")]:
        with pytest.raises(ConfigError, match=message):
            run_eval(toy, TOY, "unseen", tasks, config, seeds, tmp_path / "run", {"test": 1})
        assert not (tmp_path / "run").exists()
