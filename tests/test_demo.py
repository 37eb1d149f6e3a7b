"""`ttsi demo` on the shipped SealShift model: runs every requested method, and its table comes from the records."""

from __future__ import annotations

import json
import re

import pytest
from rich.console import Console

from ttsi.demo import run_demo
from ttsi.evaluation.compare import across_runs, within_run
from ttsi.evaluation.records import read_records
from ttsi.model import HFModel
from ttsi.sealshift.recipe import MODELS


@pytest.mark.slow
@pytest.mark.parametrize("which", ["base", "teacher"])
def test_shipped_checkpoints_load_through_the_public_path(which):
    path = MODELS[which]
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 25e6
    info = json.loads((path / "train_info.json").read_text())
    model = HFModel.from_pretrained(str(path), dtype="float32")
    assert type(model.model).__name__ == "Qwen2ForCausalLM"
    assert sum(p.numel() for p in model.model.parameters()) == info["parameters"]
    prompt = model.chat_prompt([{"role": "user", "content": "Get the weather in Paris."}])
    (text,) = model.generate([prompt], max_new_tokens=8)
    assert [text] == model.hf_generate([prompt], max_new_tokens=8)  # Hugging Face's greedy decoding agrees
    assert text.startswith('[{"name": "')  # trained to answer with a JSON list of calls


@pytest.mark.slow
def test_the_shipped_base_model_calls_tools_it_was_trained_on():
    """A guard against a broken checkpoint: the README's 64.0% on templated in-domain requests, on ten of them."""
    from ttsi.agent import SelfImprovingAgent
    from ttsi.benchmarks import get_benchmark
    from ttsi.config import AgentConfig

    bench = get_benchmark("sealshift")
    model = HFModel.from_pretrained(str(MODELS["base"]), dtype="float32")
    agent = SelfImprovingAgent(model, AgentConfig(method="base"))
    tasks = [t for t in bench.load(None, "id") if t.meta["subset"] == "templated"][:10]
    assert sum(bench.score(t, agent.respond(t).raw).correct for t in tasks) >= 6  # measured: 9 of 10


def _small_plan(methods=("base", "tt-si", "sft"), n=None):
    """The demo's plan, smaller: the same cells (model, teacher, adapter, settings) on fewer items and methods."""
    import dataclasses

    from ttsi.reproduce.builtin import demo_plan

    n = n or {"ood": 3, "id": 2}
    plan = demo_plan()
    cells = []
    for c in plan.cells:
        if c.method in methods and c.benchmark == "sealshift":
            sft = dataclasses.replace(c.sft, limit=6) if c.sft else None
            cells.append(dataclasses.replace(c, sample=n[c.split], sft=sft))
    return dataclasses.replace(plan, cells=tuple(cells))


def test_the_demo_runs_the_math_setting_with_the_token_gate_and_tables_every_gate_measure(tmp_path):
    import dataclasses

    from ttsi.reproduce.builtin import demo_plan

    plan = demo_plan()
    cells = tuple(dataclasses.replace(c, sample=3) for c in plan.cells if c.benchmark == "arithshift"
                  and c.label in ("base", "tt-si verify=answer-check"))
    console = Console(record=True, width=200)
    summaries = run_demo(dataclasses.replace(plan, cells=cells), out_dir=tmp_path, console=console, workers=1)
    assert len(summaries) == 2
    tt = list(read_records(tmp_path / "arithshift-ood-tt-si_verify=answer-check" / "results.jsonl"))
    assert len(tt) == 3 and all(r["gate"]["measure"] == "token" for r in tt)
    text = console.export_text()
    assert "arithshift: ood n=3" in text and "tt-si verify=answer-check" in text
    assert "arithshift:ood: gate AUROC against base errors, per measure" in text
    assert "token_share" in text and "mean_token_logprob" in text


@pytest.mark.slow
def test_small_demo_writes_runs_a_report_and_a_table_from_the_records(tmp_path):
    console = Console(record=True, width=200)
    plan = _small_plan()
    summaries = run_demo(plan, out_dir=tmp_path, console=console, workers=1)
    assert len(summaries) == 6
    n = {"ood": 3, "id": 2}

    def records(split, method):
        return list(read_records(tmp_path / f"sealshift-{split}-{method}" / "results.jsonl"))

    for method in ("base", "tt-si", "sft"):
        for split in n:
            assert len(records(split, method)) == n[split]
    text = console.export_text()
    for method in ("base", "tt-si", "sft"):  # each method's row: accuracy and vs-base CI per split, from the records
        row = rf"^\s+{method}"
        for split in n:
            acc = sum(r["correct"] for r in records(split, method)) / n[split]
            mine = records(split, method)
            c = within_run(mine) if method != "sft" else across_runs(mine, records(split, "base"))
            vs = "-" if c is None else re.escape(
                f"{100 * c['difference']:+.1f} [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}] "
                + {"helps": "helps", "hurts": "hurts"}.get(c["verdict"], "n.s."))
            assert (c is None) == (method == "base")
            row += rf"\s+{100 * acc:.1f} ± 0\.0\s+{vs}"
        assert re.search(row, text, re.M), (method, row, text)
    adapters = list((tmp_path / "adapters").iterdir())
    assert len(adapters) == 1 and json.loads((adapters[0] / "sft.json").read_text())["samples"] == 6
    report = (tmp_path / "report" / "report.md").read_text()
    assert len(re.findall(r"^\| sft \|", report, re.M)) == 1  # one row in the accuracy table
    for split in n:  # and the comparison with the base run, for every method but base, on each split
        for method in ("tt-si", "sft"):
            assert re.search(rf"^\| sealshift:{split} \| {method} \| .* \| base run \(\d+ pairs\) \|$", report, re.M)
    base_ood = records("ood", "base")
    assert not any(r["adapted"] for r in base_ood)
    assert "SFT adapter: LoRA on 6 labelled" in text
    base = {r["id"]: r for r in base_ood}
    for r in records("ood", "tt-si"):  # the base model's answer to each input is the base run's own answer to it
        if r["decision"] == "adapt":
            assert r["base_raw"] == base[r["id"]]["raw"], r["id"]
        else:
            assert r["base_raw"] is None and r["raw"] == base[r["id"]]["raw"], r["id"]
        assert r["base_correct"] is base[r["id"]]["correct"], r["id"]


def test_demo_refuses_to_clear_a_foreign_directory(tmp_path):
    from ttsi.errors import ConfigError

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no earlier demo"):
        run_demo(_small_plan(("base",), {"ood": 1, "id": 1}), out_dir=tmp_path, console=Console(quiet=True),
                 workers=1)
    assert (tmp_path / "notes.txt").read_text() == "mine"
