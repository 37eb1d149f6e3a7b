"""Every real benchmark runs through the evaluation loop end to end (tiny random model, 2 items each)."""

from __future__ import annotations

import pytest

from ttsi.benchmarks import get_benchmark
from ttsi.config import AgentConfig, GateConfig, SynthesisConfig
from ttsi.evaluation.records import read_records
from ttsi.evaluation.runner import run_eval

pytestmark = pytest.mark.slow  # (and `data`, from conftest) every test adapts a model on real benchmark items

SPECS = [("sealtools", "test_out_domain"), ("bfcl", "multiple"), ("nexusraven", "all"), ("apibank", "level-2"),
         ("toolalpaca", "real")]


@pytest.mark.parametrize(("name", "split"), SPECS)
def test_eval_runs_every_benchmark(qwen, data_dir, tmp_path, name, split):
    bench = get_benchmark(name)
    tasks = bench.load(data_dir, split)[:2]
    config = AgentConfig(method="oracle", gate=GateConfig(tau=1.0), max_new_tokens=8,
                         synthesis=SynthesisConfig(max_new_tokens=8))
    summary = run_eval(qwen, bench, split, tasks, config, [0], tmp_path, {"benchmark": name}, taus=[1.0])
    records = read_records(tmp_path / "results.jsonl")
    assert [r["id"] for r in records] == [t.id for t in tasks] and (tmp_path / "summary.json").exists()
    for task, r in zip(tasks, records, strict=True):
        assert r["correct"] == bench.score(task, r["raw"]).correct and r["benchmark"] == name
        assert r["gate"]["candidates"] == [t.name for t in task.tools]
        if r["gate"]["uncertain"] and task.answer:  # the oracle trains on the gold, rendered in the native format
            assert r["adapted"] and r["train"]["steps"] == 5
    assert summary["n"] == 2 and set(summary["metrics"]) >= {"accuracy"}
