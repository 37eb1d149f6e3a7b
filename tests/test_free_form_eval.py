"""`ttsi calibrate`, `eval`, `score`, `report` and `sft` on the free-form benchmarks (gsm8k, nq_open), unchanged: a
tiny model on a few made-up items laid out like the real files, base, tt-si and the oracle behind the token gate."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ttsi.benchmarks import get_benchmark
from ttsi.cli import app
from ttsi.evaluation.records import read_records

runner = CliRunner()

GSM8K = [{"question": f"Tom has {a} bags of {b} apples. How many apples does he have?",
          "answer": f"He has {a}*{b} = <<{a}*{b}={a * b}>>{a * b} apples.\n#### {a * b}"}
         for a, b in ((3, 4), (2, 7), (5, 6), (9, 8))]
NQ = [{"question": "where is the eiffel tower", "answer": ["Paris", "Paris, France"]},
      {"question": "who wrote hamlet", "answer": ["William Shakespeare", "Shakespeare"]},
      {"question": "how many legs does a spider have", "answer": ["eight", "8"]}]
SPECS = ["gsm8k:test", "nq_open:dev"]


@pytest.fixture(scope="module")
def free_data(tmp_path_factory):
    """A data directory holding a few made-up items in each free-form benchmark's layout."""
    root = tmp_path_factory.mktemp("data")
    (root / "gsm8k").mkdir()
    (root / "nq_open").mkdir()
    for split in ("test", "train"):
        (root / "gsm8k" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K))
    for name in ("NQ-open.dev.jsonl", "NQ-open.efficientqa.dev.1.1.jsonl"):
        (root / "nq_open" / name).write_text("".join(json.dumps(r) + "\n" for r in NQ))
    return root


@pytest.fixture(scope="module")
def profile(qwen_dir, free_data, tmp_path_factory):
    """The tiny model's token-gate reference from every answer to the training split (`--all`: it is never right),
    with its top-1 percentiles then raised to 1: against a reference that was always sure, every answer of this
    untrained model has unsure positions, so the gate flags every input."""
    out = tmp_path_factory.mktemp("profile") / "ref.json"
    result = runner.invoke(app, ["calibrate", "--model", str(qwen_dir), "--benchmark", "gsm8k:train", "--data-dir",
                                 str(free_data), "--profile", str(out), "--all", "--max-new-tokens", "8", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kept"] == len(GSM8K)
    built = json.loads(out.read_text())
    built["percentiles"]["top1"] = [1.0] * len(built["percentiles"]["top1"])
    out.write_text(json.dumps(built))
    return out


def _eval(qwen_dir, free_data, spec, out, *args):
    result = runner.invoke(app, ["eval", "--model", str(qwen_dir), "--benchmark", spec, "--data-dir", str(free_data),
                                 "--limit", "2", "--max-new-tokens", "8", "--batch", "2", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return read_records(out / "results.jsonl"), json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("spec", SPECS)
def test_eval_score_report_and_sft_run_on_a_free_form_benchmark(qwen_dir, free_data, profile, tmp_path, spec):
    bench = get_benchmark(spec.split(":")[0])
    tasks = bench.load(free_data, spec.split(":")[1])[:2]
    gate = ["--measure", "token", "--reference", str(profile), "--token-count", "1"]
    base, base_summary = _eval(qwen_dir, free_data, spec, tmp_path / "base", "--method", "base")
    tt_si, _ = _eval(qwen_dir, free_data, spec, tmp_path / "tt-si", "--method", "tt-si", *gate)
    oracle, _ = _eval(qwen_dir, free_data, spec, tmp_path / "oracle", "--method", "oracle", *gate)
    for records in (base, tt_si, oracle):
        assert [r["id"] for r in records] == [t.id for t in tasks]
        for task, r in zip(tasks, records, strict=True):
            assert r["correct"] == bench.score(task, r["raw"]).correct
            assert r["prediction"] is None or isinstance(r["prediction"], str)
    assert all(r["gate"] is None and r["decision"] == "skip" for r in base)  # no candidates, no token gate
    assert base_summary["metrics"]["accuracy"]["mean"] == sum(r["correct"] for r in base) / 2
    for r in tt_si + oracle:  # against a reference that was always sure, every input is uncertain
        assert r["gate"]["measure"] == "token" and r["gate"]["uncertain"] and r["decision"] == "adapt"
    assert all(not r["adapted"] and r["reason"].startswith("no valid synthetic pair") for r in tt_si)
    for task, r in zip(tasks, oracle, strict=True):  # the oracle trains on the gold answer text
        assert r["adapted"] and r["train"]["steps"] == 5
        assert r["synthetic"] == [{"query": task.query, "answer": task.gold[0], "source": "gold"}]

    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps({"id": t.id, "output": t.gold[0]}) + "\n" for t in tasks))
    scored = runner.invoke(app, ["score", "--benchmark", spec, "--data-dir", str(free_data), "--predictions",
                                 str(predictions), "--out", str(tmp_path / "scored"), "--allow-missing"])
    assert scored.exit_code == 0, scored.output
    records = read_records(tmp_path / "scored" / "results.jsonl")
    assert [r["correct"] for r in records] == [True, True] + [False] * (len(records) - 2)
    assert records[0]["prediction"] == get_bench_format(tasks[0]).parse(tasks[0].gold[0])

    report = runner.invoke(app, ["report", str(tmp_path / "base"), str(tmp_path / "tt-si"), str(tmp_path / "oracle"),
                                 "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert spec in (tmp_path / "report" / "report.md").read_text()

    sft = runner.invoke(app, ["sft", "--model", str(qwen_dir), "--benchmark", spec, "--data-dir", str(free_data),
                              "--limit", "2", "--epochs", "1", "--out", str(tmp_path / "sft")])
    assert sft.exit_code == 0, sft.output
    record = json.loads((tmp_path / "sft" / "sft.json").read_text())
    assert (record["samples"], record["steps"]) == (2, 2) and (tmp_path / "sft" / "adapter").is_dir()


def get_bench_format(task):
    from ttsi.formats import get_format

    return get_format(task.format)
