"""Statistics and the results file: AUROC by hand, spreads over seeds, atomic records and safe resumption."""

from __future__ import annotations

import json
import math

import pytest

from ttsi.errors import ConfigError
from ttsi.evaluation.records import FIELDS, RunDir, read_records
from ttsi.evaluation.stats import auroc, gate_quality, mean_std, percentile


def test_auroc_matches_pairwise_counting():
    scores = [0.9, 0.8, 0.8, 0.3, 0.1]
    positive = [True, False, True, False, True]
    pairs = [(p, n) for p, pp in zip(scores, positive, strict=True) if pp
             for n, nn in zip(scores, positive, strict=True) if not nn]
    by_hand = sum((p > n) + 0.5 * (p == n) for p, n in pairs) / len(pairs)
    assert auroc(scores, positive) == pytest.approx(by_hand) == pytest.approx(3.5 / 6)
    assert auroc([1, 2, 3], [False, False, True]) == 1.0
    assert math.isnan(auroc([1, 2], [True, True]))  # undefined, not perfect


def test_gate_quality_at_tau():
    q = gate_quality(confidences=[0.2, 0.5, 0.99, 0.97], base_correct=[False, True, True, False], tau=0.95)
    assert q["tpr"] == 0.5 and q["fpr"] == 0.5  # flagged: 0.2 (wrong) and 0.5 (right)
    assert q["auroc"] == pytest.approx(0.75) and q["base_wrong"] == 2  # 1 - c: wrong 0.8, 0.03; right 0.5, 0.01


def test_mean_std_and_percentile():
    assert mean_std([0.5, 0.7]) == {"mean": pytest.approx(0.6), "std": pytest.approx(math.sqrt(0.02))}
    assert mean_std([0.4]) == {"mean": 0.4, "std": 0.0}
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 95) == 5


def _record(item: str) -> dict:
    return dict.fromkeys(FIELDS) | {"id": item, "seed": 0, "method": "x", "correct": True, "adapted": False}


def test_run_dir_appends_resumes_and_refuses_to_mix(tmp_path):
    settings, plan = {"model": "m", "seeds": [0]}, [("a", 0), ("b", 0), ("c", 0)]
    with RunDir(tmp_path, settings, resume=False, plan=plan, method="x") as run:
        run.append(_record("a"))
        run.append(_record("b"))
    with pytest.raises(ConfigError, match="already holds results: pass --resume"):
        RunDir(tmp_path, settings, resume=False, plan=plan, method="x")
    with pytest.raises(ConfigError, match="settings differ from the original run in seeds"):
        RunDir(tmp_path, {"model": "m", "seeds": [0, 1]}, resume=True, plan=plan, method="x")
    with (tmp_path / "results.jsonl").open("a") as f:
        f.write('{"id": "c", "se')  # a kill in the middle of a write
    assert [r["id"] for r in read_records(tmp_path / "results.jsonl")] == ["a", "b"]
    with RunDir(tmp_path, settings, resume=True, plan=plan, method="x") as run:
        assert run.done == {("a", 0), ("b", 0)}
        run.append(_record("c"))
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b", "c"]  # the torn line is gone, nothing duplicated


def test_a_corrupt_record_in_the_middle_is_an_error(tmp_path):
    (tmp_path / "results.jsonl").write_text(f'{json.dumps(_record("a"))}\nnot json\n{json.dumps(_record("b"))}\n')
    with pytest.raises(ConfigError, match="line 2, is not a JSON record"):
        read_records(tmp_path / "results.jsonl")
