"""Every real benchmark runs through the evaluation loop end to end (tiny random model, 2 items each)."""

from __future__ import annotations

import json

import pytest

from ttsi.benchmarks import get_benchmark
from ttsi.config import AgentConfig, GateConfig, SynthesisConfig
from ttsi.evaluation.records import read_records
from ttsi.evaluation.runner import run_eval
from ttsi.model import HFModel
from ttsi.tiny_models import build_tiny_model

pytestmark = pytest.mark.slow  # (and `data`, from conftest) every test adapts a model on real benchmark items

SPECS = [("sealtools", "test_out_domain"), ("bfcl", "multiple"), ("nexusraven", "all"), ("apibank", "level-2"),
         ("toolalpaca", "real")]


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory, tokenizer):
    """The tiny Qwen2 with a window of 32k positions: its small vocabulary spells real benchmark prompts in more
    than the 2,048 tokens of the usual test model, which would refuse them (context_length)."""
    return build_tiny_model(tmp_path_factory.mktemp("wide"), tokenizer, arch="qwen2", seed=0, hidden=32,
                            max_positions=32768)


@pytest.mark.parametrize(("name", "split"), SPECS)
def test_eval_runs_every_benchmark(wide_dir, data_dir, tmp_path, name, split):
    qwen = HFModel.from_pretrained(str(wide_dir), dtype="float32", device="cpu")
    bench = get_benchmark(name)
    tasks = bench.load(data_dir, split)[:2]
    config = AgentConfig(method="oracle", gate=GateConfig(tau=1.0), max_new_tokens=8,
                         synthesis=SynthesisConfig(max_new_tokens=8))
    summary = run_eval(qwen, bench, split, tasks, config, [0], tmp_path, {"benchmark": name}, taus=[1.0])
    records = read_records(tmp_path / "results.jsonl")
    assert [r["id"] for r in records] == [t.id for t in tasks]
    saved = json.loads((tmp_path / "summary.json").read_text())  # the summary returned is the one written
    assert saved["n"] == 2 and saved["accuracy"] == summary["accuracy"] and saved["metrics"] == summary["metrics"]
    assert saved["settings"] == {"benchmark": name}
    for task, r in zip(tasks, records, strict=True):
        assert r["correct"] == bench.score(task, r["raw"]).correct and r["benchmark"] == name
        assert r["error"] != "context_length"
        assert r["gate"]["candidates"] == [t.name for t in task.tools]
        if r["gate"]["uncertain"] and task.answer:  # the oracle trains on the gold, rendered in the native format
            assert r["adapted"] and r["train"]["steps"] == 5
    accuracy = sum(r["correct"] for r in records) / 2  # one seed: the accuracy of its two records
    assert summary["n"] == 2 and summary["accuracy"]["mean"] == accuracy and summary["accuracy"]["std"] == 0.0
    assert summary["metrics"]["accuracy"]["mean"] == pytest.approx(accuracy)  # the benchmark's own aggregate
