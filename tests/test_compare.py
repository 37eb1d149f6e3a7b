"""Paired statistics against the base model: the sign test, the bootstrap CI, pairing and the report's section,
each checked against a computation by hand."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from ttsi.evaluation.compare import across_runs, base_outcome, describe, paired_difference, sign_test, within_run
from ttsi.evaluation.records import FIELDS
from ttsi.evaluation.report import write_report


def test_sign_test_is_the_exact_binomial_tail():
    # 8 fixed, 2 broken: P(X <= 2) for X ~ Bin(10, 1/2) = (1 + 10 + 45) / 1024, doubled
    assert math.isclose(sign_test(8, 2), 2 * 56 / 1024)
    assert math.isclose(sign_test(2, 8), 2 * 56 / 1024)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    assert math.isclose(sign_test(6, 0), 2 / 64)  # all six changes one way: 2 * 0.5^6
    assert math.isclose(sign_test(20, 0), 2 / 2**20)


def _pairs(outcomes: dict[str, list[tuple[bool, bool]]]) -> list[tuple[int, str, bool, bool]]:
    """item -> [(method, base) per seed] as (seed, item, method, base) pairs."""
    return [(s, item, m, b) for item, per_seed in outcomes.items() for s, (m, b) in enumerate(per_seed)]


def test_difference_counts_and_per_seed_by_hand():
    outcomes = {"a": [(True, False), (True, False)], "b": [(True, True), (False, True)],
                "c": [(False, False), (True, False)], "d": [(True, True), (True, True)]}
    c = paired_difference(_pairs(outcomes), resamples=200)
    # method right 6 of 8, base right 4 of 8: +0.25; fixed a0 a1 c1 = 3, broken b1 = 1
    assert c["difference"] == 0.25 and (c["fixed"], c["broken"]) == (3, 1)
    assert c["per_seed"] == {0: 1 / 4, 1: 1 / 4}  # seed 0: +1 (a) of 4; seed 1: +1 +1 -1 (a, c, b) of 4
    assert c["seeds"]["mean"] == 0.25 and c["seeds"]["std"] == 0.0
    assert (c["pairs"], c["items"]) == (8, 4)
    assert math.isclose(c["sign_test_p"], sign_test(3, 1))


def test_bootstrap_resamples_whole_items_from_a_fixed_seed():
    outcomes = {"a": [(True, False), (True, False)], "b": [(True, True), (False, True)],
                "c": [(False, False), (True, False)], "d": [(True, True), (True, True)]}
    pairs = _pairs(outcomes)
    c = paired_difference(pairs, resamples=500, seed=3)
    # the same draws by hand: items resampled with replacement, each carrying both of its seeds
    sums = {"a": 2, "b": -1, "c": 1, "d": 0}
    rng = random.Random(3)
    names = list(sums)
    draws = sorted(sum(sums[names[i]] for i in picked) / (2 * len(picked))
                   for picked in (rng.choices(range(4), k=4) for _ in range(500)))
    low_pos, high_pos = (len(draws) - 1) * 0.025, (len(draws) - 1) * 0.975
    low = draws[math.floor(low_pos)] + (draws[math.ceil(low_pos)] - draws[math.floor(low_pos)]) * (low_pos % 1)
    high = draws[math.floor(high_pos)] + (draws[math.ceil(high_pos)] - draws[math.floor(high_pos)]) * (high_pos % 1)
    assert math.isclose(c["ci_low"], low) and math.isclose(c["ci_high"], high)
    assert paired_difference(pairs, resamples=500, seed=3) == c  # deterministic
    assert c["ci_low"] <= c["difference"] <= c["ci_high"]


@pytest.mark.parametrize(("method_rate", "verdict"), [(0.9, "helps"), (0.1, "hurts"), (0.5, "no difference shown")])
def test_the_verdict_follows_the_interval(method_rate, verdict):
    rng = random.Random(0)
    pairs = [(0, str(i), rng.random() < method_rate, rng.random() < 0.5) for i in range(200)]
    c = paired_difference(pairs, resamples=1000)
    assert c["verdict"] == verdict
    assert (c["ci_low"] > 0) == (verdict == "helps") and (c["ci_high"] < 0) == (verdict == "hurts")
    assert describe(c).endswith(verdict)


def test_identical_outcomes_give_a_zero_interval():
    c = paired_difference([(0, str(i), i % 2 == 0, i % 2 == 0) for i in range(50)], resamples=300)
    assert (c["difference"], c["ci_low"], c["ci_high"], c["fixed"], c["broken"]) == (0, 0, 0, 0, 0)
    assert c["verdict"] == "no difference shown" and c["sign_test_p"] == 1.0
    with pytest.raises(ValueError, match="no paired outcomes"):
        paired_difference([])


def _record(item: str, seed: int, correct: bool, adapted: bool = False, base: bool | None = None,
            method: str = "tt-si") -> dict:
    return {"id": item, "seed": seed, "correct": correct, "adapted": adapted, "base_correct": base, "method": method}


def test_base_outcomes_come_from_the_record_or_the_answer_itself():
    assert base_outcome(_record("a", 0, True, adapted=True, base=False)) is False
    assert base_outcome(_record("a", 0, True)) is True  # not adapted: the base model wrote the answer
    assert base_outcome(_record("a", 0, True, adapted=True)) is None
    records = [_record("a", 0, True, adapted=True, base=False), _record("b", 0, False),
               _record("c", 0, False, adapted=True, base=True)]
    c = within_run(records)
    assert c is not None and (c["fixed"], c["broken"], c["difference"]) == (1, 1, 0.0)
    assert within_run([*records, _record("d", 0, True, adapted=True)]) is None  # an unknown base outcome
    assert within_run([_record("a", 0, True, method="base")]) is None


def test_across_runs_pairs_by_seed_or_by_item_for_a_single_seed_base():
    base = [_record(i, 0, ok, method="base") for i, ok in (("a", False), ("b", True), ("c", False))]
    method = [_record(i, s, ok) for s in (0, 1) for i, ok in (("a", True), ("b", True), ("c", s == 1))]
    c = across_runs(method, base)  # one base seed: every method seed pairs with it
    assert c is not None and c["pairs"] == 6 and (c["fixed"], c["broken"]) == (3, 0)
    base2 = base + [_record(i, 1, ok, method="base") for i, ok in (("a", True), ("b", True), ("c", True))]
    c2 = across_runs(method, base2)  # two base seeds: paired seed by seed
    assert c2 is not None and (c2["fixed"], c2["broken"]) == (1, 0)  # seed 0 fixes a; seed 1 changes nothing
    assert across_runs(method, [_record("z", 0, True, method="base")]) is None


def test_report_compares_each_method_with_the_base_run(tmp_path):
    def run(name: str, method: str, outcomes: list[bool]) -> str:
        d = tmp_path / name
        d.mkdir()
        records = [{name: None for name in FIELDS} | _record(str(i), 0, ok, method=method)
                   | {"subsets": [], "timings": {}} for i, ok in enumerate(outcomes)]
        (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        summary = {"benchmark": "toy", "split": "unseen", "method": method, "n": len(outcomes), "seeds": [0],
                   "accuracy": {"mean": sum(outcomes) / len(outcomes), "std": 0.0}, "adapted": {"fraction": 0.0},
                   "synthetic_used": {"mean": 0.0}}
        (d / "summary.json").write_text(json.dumps(summary))
        return str(d)

    base = [i % 3 == 0 for i in range(60)]
    better = [True] * 60
    report = write_report([tmp_path / run("b", "base", base), tmp_path / run("t", "tt-si", better)], tmp_path / "r")
    text = report.read_text()
    expected = paired_difference([(0, str(i), True, b) for i, b in enumerate(base)])
    row = next(line for line in text.splitlines() if line.startswith("| toy:unseen | tt-si |"))
    assert f"{100 * expected['difference']:+.2f}" in row and f"{expected['fixed']} / 0" in row
    assert "**helps**" in row and "base run (60 pairs)" in row
    assert (tmp_path / "r" / "difference_from_base.png").stat().st_size > 1000


def test_the_margin_plot_leaves_out_token_gate_records():
    from ttsi.evaluation.report import gate_groups

    summary = {"benchmark": "toy", "split": "seen", "method": "base"}
    record = {"id": "a", "seed": 0, "base_correct": True}
    token = {"summary": summary, "records": [record | {"gate": {"measure": "token", "margin": 0.4}}]}
    rss = {"summary": summary, "records": [record | {"gate": {"measure": "margin", "margin": 0.4}}]}
    assert gate_groups([token]) == []  # 1 - unsure share is no candidate margin
    assert gate_groups([rss]) == [("toy:seen: base", [(0.4, True)])]


def test_report_tables_and_plots_each_gate_measure_once_per_distinct_gate(tmp_path):
    def run(name: str, method: str, measures: dict) -> Path:
        d = tmp_path / name
        d.mkdir()
        records = [{name: None for name in FIELDS} | _record(str(i), 0, True, method=method)
                   | {"subsets": [], "timings": {}} for i in range(4)]
        (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        summary = {"benchmark": "toy", "split": "unseen", "method": method, "n": 4, "seeds": [0],
                   "accuracy": {"mean": 1.0, "std": 0.0}, "adapted": {"fraction": 0.0},
                   "synthetic_used": {"mean": 0.0}, "gate_measures": measures}
        (d / "summary.json").write_text(json.dumps(summary))
        return d

    same = {"token_share": {"auroc": 0.8125, "n": 4}, "token_min_prob": {"auroc": 0.6, "n": 4}}
    other = {"rss_margin": {"auroc": 0.25, "n": 4}, "token_share": {"auroc": None, "n": 4}}  # None: undefined
    report = write_report([run("a", "tt-si", same), run("b", "tt-icl", same), run("c", "oracle", other)],
                          tmp_path / "r")
    text = report.read_text()
    rows = [line for line in text.split("## Gate quality per measure")[1].splitlines() if line.startswith("| toy")]
    assert rows == ["| toy:unseen (tt-si, tt-icl) | 0.812 | 0.600 | - | 4 |",
                    "| toy:unseen (oracle) | - | - | 0.250 | 4 |"]
    assert "| runs | token_share | token_min_prob | rss_margin | n |" in text
    assert (tmp_path / "r" / "gate_measures.png").stat().st_size > 1000
