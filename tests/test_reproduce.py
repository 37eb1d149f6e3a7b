"""`ttsi reproduce`: plan files and their errors, the built-in plans, the cost estimate, and a local run of a plan."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from ttsi.cli import app
from ttsi.errors import ConfigError
from ttsi.reproduce.builtin import PUBLISHED, SEALTOOL, TABLE1, demo_plan, paper_plan, quick_plan
from ttsi.reproduce.cost import Nominal, cell_cost, per_item
from ttsi.reproduce.jobs import stratified_sample
from ttsi.reproduce.plan import load_plan, parse_plan, tomllib

GOOD = """
name = "mine"
note = "a test plan"
[defaults]
seeds = [0, 1]
batch = 4
lr = 1e-3
[[cell]]
benchmark = ["sealshift:ood", "sealshift:id"]
method = ["base", "tt-si"]
sample = 10
[[cell]]
benchmark = "sealshift"
method = "tt-si"
label = "tt-si k=2 verified"
k = 2
verify = "schema,consistency"
tau = [0.5, 0.95]
limit = 5
[cell.agent]
learn = { rank = 4 }
gate = { normalize = "mean" }
[[cell]]
benchmark = "sealshift:ood"
method = "sft"
sft = { split = "ood_train", limit = 8, epochs = 2, batch_size = 4, lr = 1e-3 }
seeds = [0]
"""


def _plan(tmp_path: Path, text: str):
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return load_plan(path)


def test_a_plan_file_says_everything_a_cell_can(tmp_path):
    plan = _plan(tmp_path, GOOD)
    assert plan.name == "mine" and plan.note == "a test plan"
    names = [c.name for c in plan.cells]
    assert names == ["sealshift-ood-base", "sealshift-ood-tt-si", "sealshift-id-base", "sealshift-id-tt-si",
                     "sealshift-ood-tt-si_k=2_verified", "sealshift-ood-sft"]
    first, custom, sft = plan.cells[0], plan.cells[4], plan.cells[5]
    assert first.seeds == (0, 1) and first.batch == 4 and first.sample == 10 and first.agent.learn.lr == 1e-3
    assert first.agent.record_base  # base answers recorded, as ttsi eval does by default
    assert custom.agent.synthesis.k == 2 and custom.agent.synthesis.verify == ["schema", "consistency"]
    assert custom.taus == (0.5, 0.95) and custom.agent.gate.tau == 0.95 and custom.limit == 5
    assert custom.agent.learn.rank == 4 and custom.agent.learn.lr == 1e-3 and custom.agent.gate.normalize == "mean"
    assert sft.method == "sft" and sft.agent.method == "base" and sft.seeds == (0,)
    assert (sft.sft.benchmark, sft.sft.split, sft.sft.limit, sft.sft.epochs, sft.sft.batch_size) == \
        ("sealshift", "ood_train", 8, 2, 4)


@pytest.mark.parametrize(("change", "message"), [
    (("[[cell]]\nbenchmark", "[[cell]]\nbenchmarks"), "cell 1: unknown key 'benchmarks'"),
    (('method = ["base", "tt-si"]', 'method = ["base", "tt-sj"]'), "unknown method 'tt-sj'"),
    (('benchmark = "sealshift"', 'benchmark = "nosuch"'), "cell 2 (nosuch tt-si)"),
    (('benchmark = "sealshift"', 'benchmark = "sealshift:test"'), "has no split 'test'"),
    (("k = 2", "k = 0"), "cell 2 (sealshift tt-si): K (synthetic examples per input) must be at least 1"),
    (("k = 2", 'k = "2"'), "K must be an integer"),
    (('verify = "schema,consistency"', 'verify = "schema,magic"'), "unknown verifier 'magic'"),
    (("tau = [0.5, 0.95]", "tau = [0.5, 1.5]"), "tau must be in [0, 1]"),
    (("rank = 4", "rnk = 4"), "unknown agent setting 'learn.rnk'"),
    (("seeds = [0, 1]", "seeds = [0, 0]"), "'seeds' repeats a seed"),
    (("seeds = [0, 1]", "seeds = 3"), "'seeds' must be a list of integers"),
    (("limit = 5", "limit = 5\nsample = 3"), "give 'limit' (the first N items) or 'sample'"),
    (("sample = 10", "sample = 0"), "'sample' must be an integer of at least 1"),
    (('sft = { split = "ood_train", limit = 8', 'sft = { splat = "ood_train", limit = 8'), "method sft needs an sft"),
    (('split = "ood_train"', 'split = "nope"'), "sft split: benchmark sealshift has no split 'nope'"),
    (('name = "mine"', 'name = "mine"\ncells = 3'), "unknown key 'cells' at the top level"),
    (('label = "tt-si k=2 verified"', 'label = "tt-si"'), "two cells are named 'sealshift-ood-tt-si'"),
    (('method = "sft"', 'method = "tt-si"'), "'sft' is for method sft only"),
    (("[cell.agent]", "[cell.agnt]"), "unknown key 'agnt'"),
    (('name = "mine"', "name = [1"), "is not valid TOML"),
])
def test_each_kind_of_bad_plan_is_one_config_error_naming_the_cell_and_key(tmp_path, change, message):
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(ConfigError) as e:
        _plan(tmp_path, text)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith(str(tmp_path / "plan.toml"))


def test_cells_of_the_same_name_are_refused():
    spec = {"cell": [{"benchmark": "sealshift", "method": "tt-si"}, {"benchmark": "sealshift:ood", "method": "tt-si",
                                                                      "k": 2}]}
    with pytest.raises(ConfigError, match=r"two cells are named 'sealshift-ood-tt-si'.*distinct labels"):
        parse_plan(spec, "p.toml")


def test_a_bad_plan_on_the_command_line_is_one_error_line_and_exit_2(tmp_path):
    (tmp_path / "bad.toml").write_text(GOOD.replace("k = 2", "k = -1"))
    for args in (["--plan", str(tmp_path / "bad.toml")], ["--plan", "papr"],
                 ["--plan", str(tmp_path / "missing.toml")], ["--plan", "quick", "--ray-address", "auto"],
                 ["--plan", "paper", "--teacher-url", "http://x/v1"]):
        result = CliRunner().invoke(app, ["reproduce", *args, "--out", str(tmp_path / "out")])
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)
    assert not (tmp_path / "out").exists()


def test_the_paper_plan_is_table_1_and_the_sealtool_ablations():
    plan = paper_plan(placeholder_teacher=True)
    cells = {(c.spec, c.label): c for c in plan.cells}
    table1 = [(spec, m) for spec in TABLE1 for m in ("base", "tt-si", "tt-icl", "tt-d")]
    ablations = [(SEALTOOL, m) for m in ("no-gate", "confident-only", "oracle", "sft")]
    assert list(cells) == table1 + ablations  # 4 benchmarks x 4 methods + 4 ablations
    for key in table1:
        assert cells[key].seeds == (0, 1, 2, 3, 4) and cells[key].agent.samples == 5  # majority vote, pass@5
    assert cells[SEALTOOL, "tt-si"].taus == (0.35, 0.5, 0.65, 0.8, 0.95)  # the tau ablation, one run
    for key in table1 + ablations:  # the paper's settings, everywhere
        a = cells[key].agent
        assert (a.learn.lr, a.learn.epochs, a.learn.rank, a.synthesis.k, a.gate.tau) == (1e-4, 5, 8, 1, 0.95)
    assert cells[SEALTOOL, "sft"].sft.split == "dev"
    assert len(paper_plan().cells) == 16 and "tt-d is left out" in paper_plan().note  # no teacher: no tt-d
    assert PUBLISHED[("sealtools", "oracle")] == "78.89" and plan.published == PUBLISHED


def test_dry_run_lists_the_paper_cells_with_their_cost(tmp_path):
    result = CliRunner().invoke(app, ["reproduce", "--plan", "paper", "--dry-run", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    listed = re.findall(r"^\s+((?:toolalpaca|nexusraven|sealtools|apibank)-\S+)\s", result.output, re.M)
    assert len(listed) == 20 and listed[-1] == "sealtools-test_out_domain-sft"
    assert "/item" in result.output and "total unknown" in result.output  # no data there: per-item costs
    assert not list(tmp_path.iterdir())  # nothing written


def test_dry_run_of_the_quick_plan_totals_its_cost():
    result = CliRunner().invoke(app, ["reproduce", "--plan", "quick", "--dry-run"])
    assert result.exit_code == 0, result.output
    total = sum(cell_cost(c, 48, 64 if c.sft else 0) for c in quick_plan().cells)
    assert f"total {total / 1e6:,.2f}M" in result.output


def test_the_cost_estimate_against_a_hand_computation():
    x = Nominal(prompt=100, answer=10, synthesis=20)
    spec = {"benchmark": "sealshift", "seeds": [0, 1, 2]}
    cells = parse_plan({"cell": [{**spec, "method": "base"}, {**spec, "method": "tt-si", "k": 2},
                                 {**spec, "method": "no-gate", "samples": 4, "base_answers": False},
                                 {**spec, "method": "oracle"}, {**spec, "method": "tt-icl"},
                                 {**spec, "method": "tt-si", "label": "c", "verify": "schema,consistency"},
                                 {**spec, "method": "sft", "sft": {"split": "ood_train", "epochs": 2}}]},
                       "p").cells
    base, tt_si, no_gate, oracle, icl, consistency, sft = cells
    assert per_item(base, x) == 110  # gate 100 + answer 10
    # flagged 65%: synthesis 2 x 2 drafts x (100 + 20), training 3 x 5 epochs x 2 pairs x 110, answer and base
    # answer 110 each
    assert per_item(tt_si, x) == pytest.approx(110 + 0.65 * (4 * 120 + 3 * 5 * 2 * 110 + 110 + 110))
    assert per_item(no_gate, x) == pytest.approx(110 + 4 * 10 + 1.0 * (2 * 120 + 3 * 5 * 110 + 110))
    assert per_item(oracle, x) == pytest.approx(110 + 0.65 * (3 * 5 * 110 + 110 + 110))
    assert per_item(icl, x) == pytest.approx(110 + 0.65 * (2 * 120 + 2 * 100 + 10 + 110))
    assert per_item(consistency, x) == pytest.approx(110 + 0.65 * (2 * 120 + 3 * 5 * 110 + 110 + 2 * 4 * 110 + 110))
    assert cell_cost(tt_si, 7, x=x) == pytest.approx(7 * 3 * per_item(tt_si, x))
    assert cell_cost(sft, 7, labelled=50, x=x) == pytest.approx(7 * 3 * 110 + 3 * 2 * 50 * 110)


def test_a_stratified_sample_keeps_each_subset_in_proportion():
    from ttsi.benchmarks import get_benchmark

    bench = get_benchmark("sealshift")
    tasks = bench.load(None, "ood")
    share = sum(t.meta["subset"] == "real" for t in tasks) / len(tasks)
    sample = stratified_sample(tasks, 100, bench.subsets, "x")
    assert len(sample) == 100 and len({t.id for t in sample}) == 100
    assert sum(t.meta["subset"] == "real" for t in sample) == round(100 * share)
    assert [t.id for t in sample] == [t.id for t in tasks if t in sample]  # in the split's order
    assert [t.id for t in stratified_sample(tasks, 100, bench.subsets, "x")] == [t.id for t in sample]
    assert stratified_sample(tasks, 10_000, bench.subsets, "x") == tasks


def test_the_demo_plan_carries_its_models_teacher_and_adapter():
    from ttsi.arithshift.recipe import MODEL
    from ttsi.sealshift.recipe import MODELS

    plan = demo_plan()
    seal = [c for c in plan.cells if c.benchmark == "sealshift"]
    assert {c.model for c in seal} == {str(MODELS["base"])}
    assert {c.teacher for c in seal if c.method == "tt-d"} == {str(MODELS["teacher"])}
    assert {c.split for c in seal} == {"ood", "id"}
    assert all(c.sft.split == "ood_train" for c in seal if c.method == "sft")
    assert len([c for c in demo_plan(quick=True).cells if c.benchmark == "sealshift"]) == 8
    arith = [c for c in plan.cells if c.benchmark == "arithshift"]  # the math setting: every verifier, token gate
    assert {c.model for c in arith} == {str(MODEL)} and {c.split for c in arith} == {"ood"}
    assert all(c.agent.gate.measure == "token" and Path(c.agent.gate.reference).is_file() for c in arith)
    verifiers = {c.label: c.agent.synthesis.verify for c in arith if c.method == "tt-si"}
    assert verifiers == {"tt-si verify=none": [], "tt-si verify=answer-check": ["answer-check"],
                         "tt-si verify=consistency": ["consistency"]}
    assert {c.method for c in arith} == {"base", "tt-si", "tt-icl", "oracle"} and not plan.average


def test_the_tables_show_every_gate_measure_where_the_token_gate_ran_and_average_only_when_asked():
    from ttsi.reproduce.table import grids

    plan = demo_plan(quick=True)
    measures = {"token_share": {"auroc": 0.786, "n": 48}, "min_token_prob": {"auroc": None, "n": 48}}
    summaries = {c.name: {"n": 16, "accuracy": {"mean": 0.5, "std": 0.0}, "adapted": {"per_seed": {"mean": 1.0}},
                          "synthetic_used": {"mean": 1.0}, "extra_s_per_adapted": {"n": 0}, "gate": {"auroc": 0.7},
                          **({"gate_measures": measures} if c.benchmark == "arithshift" else {})}
                 for c in plan.cells}
    tables = grids(plan, summaries)
    gate = [g for g in tables if "per measure" in g.title]
    assert len(gate) == 1 and gate[0].title == ("arithshift:ood: gate AUROC against base errors, per measure "
                                                "(48 answers)")
    assert gate[0].headers == ("token_share", "min_token_prob") and gate[0].rows == (("0.79", "-"),)
    assert not any(g.title.startswith("average") for g in tables)  # two settings: no average of them
    import dataclasses

    assert any(g.title.startswith("average") for g in grids(dataclasses.replace(plan, average=True), summaries))


TINY = """
name = "tiny"
[defaults]
benchmark = "sealshift:ood"
seeds = [0, 1]
limit = 4
batch = 2
lr = 1e-3
[[cell]]
method = ["base", "tt-si"]
[[cell]]
method = "sft"
seeds = [0]
sft = { split = "ood_train", limit = 8, epochs = 1, batch_size = 4, lr = 1e-3 }
"""


@pytest.mark.slow
def test_a_plan_runs_locally_into_one_report_and_resumes(tmp_path):
    from ttsi.evaluation.records import read_records
    from ttsi.reproduce.run import run_plan
    from ttsi.sealshift.recipe import MODELS

    plan = parse_plan(tomllib.loads(TINY), "tiny")
    console = Console(record=True, width=200)
    summaries = run_plan(plan, tmp_path / "a", model=str(MODELS["base"]), console=console)
    assert set(summaries) == {"sealshift-ood-base", "sealshift-ood-tt-si", "sealshift-ood-sft"}
    text = console.export_text()
    for name in summaries:
        records = read_records(tmp_path / "a" / name / "results.jsonl")
        assert len(records) == (4 if name.endswith("sft") else 8)
        acc = sum(r["correct"] for r in records if r["seed"] == 0) / 4
        assert re.search(rf"^\s+{name.removeprefix('sealshift-ood-')}\s+{100 * acc:.1f} ± ", text, re.M), text
    assert "vs base (95% CI)" in text
    assert (tmp_path / "a" / "table.md").read_text().count("| tt-si |") == 1
    assert (tmp_path / "a" / "report" / "report.md").is_file()
    assert json.loads((tmp_path / "a" / "plan.json").read_text())["name"] == "tiny"
    adapters = list((tmp_path / "a" / "adapters").iterdir())
    assert len(adapters) == 1 and (adapters[0] / "adapter").is_dir()
    # an interrupted plan: a cell's last records gone, the next one torn as a kill leaves it; --resume redoes them
    # (cut at a batch boundary: the resumed batches are the uninterrupted run's, so the records are the same)
    results = tmp_path / "a" / "sealshift-ood-tt-si" / "results.jsonl"
    kept = results.read_text().splitlines(keepends=True)
    results.write_text("".join(kept[:4]) + kept[4][:20])
    with pytest.raises(ConfigError, match="already holds results"):
        run_plan(plan, tmp_path / "a", model=str(MODELS["base"]), console=Console(quiet=True))
    run_plan(plan, tmp_path / "a", model=str(MODELS["base"]), resume=True, console=Console(quiet=True))
    assert results.read_text().splitlines(keepends=True)[:4] == kept[:4]
    again = [{k: v for k, v in r.items() if k != "timings"} for r in read_records(results)]
    assert again == [{k: v for k, v in json.loads(line).items() if k != "timings"} for line in kept]


def test_an_unreachable_teacher_stops_the_plan_before_anything_is_written(tmp_path):
    import socket

    from ttsi.errors import TTSIError
    from ttsi.reproduce.run import run_plan
    from ttsi.sealshift.recipe import MODELS

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    plan = parse_plan({"defaults": {"benchmark": "sealshift:ood", "limit": 2, "agent": {
        "teacher": {"url": f"http://127.0.0.1:{port}/v1", "model": "t", "retries": 0, "timeout_s": 2}}},
        "cell": [{"method": ["base", "tt-d"]}]}, "p")
    with pytest.raises(TTSIError, match=str(port)):
        run_plan(plan, tmp_path / "out", model=str(MODELS["base"]), console=Console(quiet=True))
    assert not (tmp_path / "out").exists()


def test_the_paper_tables_put_the_published_numbers_beside_ours():
    from ttsi.reproduce.table import grids, markdown

    plan = paper_plan(placeholder_teacher=True)
    summaries = {}
    for i, c in enumerate(plan.cells):
        acc = 0.5 + i / 100
        s = {"n": 10, "accuracy": {"mean": acc, "std": 0.01}, "adapted": {"per_seed": {"mean": 3.0}},
             "synthetic_used": {"mean": 3.0}, "extra_s_per_adapted": {"n": 0}, "gate": {"auroc": 0.7},
             "majority": {"mean": acc + 0.01, "std": 0.0}, "pass@5": {"mean": acc + 0.02, "std": 0.0}}
        if c.method != "base":
            s["vs_base"] = {"difference": 0.05, "ci_low": 0.01, "ci_high": 0.09, "verdict": "helps"}
        if len(c.taus) > 1:
            s["by_tau"] = [{"tau": t, "accuracy": {"mean": 0.6, "std": 0.0}} for t in c.taus]
        summaries[c.name] = s
    tables = {g.title.split(":")[0]: g for g in grids(plan, summaries)}
    seal = tables["sealtools"]
    rows = {r[0]: dict(zip(seal.headers, r, strict=True)) for r in seal.rows}
    assert rows["base"]["paper"] == "66.37" and rows["oracle"]["paper"] == "78.89"
    assert rows["tt-si (tau 0.35)"]["paper"] == "68.10" and rows["tt-si (tau 0.35)"]["test_out_domain acc"] == \
        "60.0 ± 0.0"
    assert rows["tt-si"]["test_out_domain vs base (95% CI)"] == "+5.0 [+1.0, +9.0] helps"
    assert rows["tt-si"]["majority"] == "60.0 ± 0.0" and rows["tt-si"]["pass@5"] == "61.0 ± 0.0"
    average = next(g for g in grids(plan, summaries) if g.title.startswith("average"))
    base = dict(zip(average.headers, average.rows[0], strict=True))
    # base's direct accuracy averaged over the four benchmarks' base cells (cells 0, 4, 8, 12: 50, 54, 58, 62 %)
    assert base["method"] == "base" and base["direct"] == "56.00" and base["paper"] == "54.66"
    assert [r[0] for r in average.rows] == ["base", "tt-si", "tt-icl", "tt-d"]  # the ablations are SealTool's only
    assert "| sft | 69.0 ± 1.0 |" in markdown(plan, summaries)


def test_a_cells_own_agent_setting_beats_a_default_shortcut():
    plan = parse_plan({"defaults": {"lr": 1e-3, "k": 2}, "cell": [
        {"benchmark": "sealshift", "method": "tt-si", "agent": {"learn": {"lr": 1e-4}}},
        {"benchmark": "sealshift", "method": "no-gate"}]}, "p")
    mine, default = plan.cells
    assert (mine.agent.learn.lr, mine.agent.synthesis.k) == (1e-4, 2)
    assert (default.agent.learn.lr, default.agent.synthesis.k) == (1e-3, 2)
