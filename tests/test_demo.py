"""`ttsi demo` on the shipped SealShift model: runs every requested method, and its table comes from the records."""

from __future__ import annotations

import json
import re

import pytest
from rich.console import Console

from ttsi.demo import Plan, run_demo
from ttsi.evaluation.compare import within_run
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


@pytest.mark.slow
def test_small_demo_writes_runs_a_report_and_a_table_from_the_records(tmp_path):
    console = Console(record=True, width=160)
    plan = Plan(n={"ood": 3, "id": 2}, seeds=(0,), methods=("base", "tt-si", "sft"), workers=1, sft_items=6)
    rows = run_demo(plan, out_dir=tmp_path, console=console)
    assert len(rows) == 6
    for method in plan.methods:
        for split, n in plan.n.items():
            records = list(read_records(tmp_path / f"{split}-{method}" / "results.jsonl"))
            assert len(records) == n
    base_ood = list(read_records(tmp_path / "ood-base" / "results.jsonl"))
    text = console.export_text()
    for method in plan.methods:  # each method's row: its out-of-domain and in-domain accuracy, from the records
        acc = {split: sum(r["correct"] for r in read_records(tmp_path / f"{split}-{method}" / "results.jsonl"))
               / n for split, n in plan.n.items()}
        c = within_run(list(read_records(tmp_path / f"ood-{method}" / "results.jsonl")))
        vs = "-" if c is None else re.escape(
            f"{100 * c['difference']:+.1f} [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}] "
            + {"helps": "helps", "hurts": "hurts"}.get(c["verdict"], "n.s."))
        row = rf"^\s+{method}\s+{100 * acc['ood']:.1f} ± 0\.0\s+{vs}\s+{100 * acc['id']:.1f} ± 0\.0\s"
        assert re.search(row, text, re.M), (method, text)
        assert (c is None) == (method in ("base", "sft"))  # the comparison where base answers were recorded
    assert json.loads((tmp_path / "sft" / "sft.json").read_text())["samples"] == 6
    report = (tmp_path / "report" / "report.md").read_text()
    assert len(re.findall(r"^\| sft \|", report, re.M)) == 1  # one row in the accuracy table
    for split in plan.n:  # and the comparison with the base run, for every method but base, on each split
        for method in ("tt-si", "sft"):
            assert re.search(rf"^\| sealshift:{split} \| {method} \| .* \| base run \(\d+ pairs\) \|$", report, re.M)
    assert not any(r["adapted"] for r in base_ood)
    assert "SFT baseline: LoRA on 6 labelled" in text
    tt_si = list(read_records(tmp_path / "ood-tt-si" / "results.jsonl"))  # adapted inputs answered by the base too
    base = {r["id"]: r for r in base_ood}
    for r in tt_si:  # the base model's answer to each input is the base run's own answer to it
        if r["decision"] == "adapt":
            assert r["base_raw"] == base[r["id"]]["raw"], r["id"]
        else:
            assert r["base_raw"] is None and r["raw"] == base[r["id"]]["raw"], r["id"]
        assert r["base_correct"] is base[r["id"]]["correct"], r["id"]


def test_demo_refuses_to_clear_a_foreign_directory(tmp_path):
    from ttsi.errors import ConfigError

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no earlier demo"):
        run_demo(Plan(n={"ood": 1, "id": 1}, seeds=(0,), methods=("base",), workers=1), out_dir=tmp_path,
                 console=Console(quiet=True))
    assert (tmp_path / "notes.txt").read_text() == "mine"
