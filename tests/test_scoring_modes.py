"""Scoring modes (issue 21): NexusRaven and API-Bank score officially by default, `--scoring lenient` keeps ttsi's
earlier reading, and the mode is recorded in a run's settings so that no run mixes the two."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttsi.benchmarks import get_benchmark
from ttsi.cli import app
from ttsi.config import AgentConfig
from ttsi.errors import ConfigError
from ttsi.evaluation.records import RunDir
from ttsi.evaluation.settings import EvalSettings

FIXTURE = Path(__file__).parent / "fixtures" / "apibank"


def test_the_benchmarks_with_modes_default_to_the_official_verdict():
    for name in ("nexusraven", "apibank"):
        bench = get_benchmark(name)
        assert (bench.scorings, bench.scoring) == (("official", "lenient"), "official")
        lenient = bench.with_scoring("lenient")
        assert lenient is not bench and lenient.scoring == "lenient" and bench.scoring == "official"
        assert bench.with_scoring("official").scoring == "official" and bench.with_scoring(None) is bench
        with pytest.raises(ConfigError, match=f"benchmark {name} has no scoring mode 'strict'; its modes: "
                                              "official, lenient"):
            bench.with_scoring("strict")
    toy = get_benchmark("toy")
    assert (toy.scorings, toy.scoring, toy.with_scoring(None)) == ((), None, toy)
    with pytest.raises(ConfigError, match="benchmark toy has no scoring mode 'lenient'; it has a single scoring"):
        toy.with_scoring("lenient")


def test_ttsi_benchmarks_lists_the_modes():
    result = CliRunner().invoke(app, ["benchmarks"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in ("nexusraven", "apibank"):
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{name}: "))
        assert lines[at + 1] == "    scoring (--scoring): official, lenient; default official"
    assert sum("scoring (--scoring)" in line for line in lines) == 2  # no other benchmark has modes


def _score(tmp_path: Path, outputs: dict[str, str], *options: str) -> dict:
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": k, "output": v}) + "\n" for k, v in outputs.items()))
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    result = CliRunner().invoke(app, ["score", "--benchmark", "apibank:level-1", "--data-dir", str(FIXTURE),
                                      "--predictions", str(preds), "--out", str(out), "--allow-missing", *options])
    assert result.exit_code == 0, result.output
    return json.loads((out / "summary.json").read_text())


def test_ttsi_score_scores_in_the_mode_given_and_records_it(tmp_path):
    # Officially the language names are lower-cased (FR reads as fr); leniently strings compare exactly.
    outputs = {"Translate-level-1-4-0": "API-Request: [Translate(src='hello', tgt_lang='FR')]",
               "TimedSwitch-level-1-3-0": "API-Request: [TimedSwitch(device_id='123456', time='2022-03-01 "
                                          "22:00:00', on='False')]"}
    official = _score(tmp_path, outputs)
    lenient = _score(tmp_path, outputs, "--scoring", "lenient")
    assert official["settings"]["scoring"] == "official" and lenient["settings"]["scoring"] == "lenient"
    # 5 items: the Translate answer is right officially only; the TimedSwitch gold fails officially
    assert official["accuracy"]["mean"] == pytest.approx(1 / 5) and lenient["accuracy"]["mean"] == pytest.approx(1 / 5)
    assert official["errors"] == {"missing_prediction": 3, "gold_fails_officially": 1}
    assert lenient["errors"] == {"missing_prediction": 3, "wrong_value": 1}
    assert official["subsets"]["official_gold_fails"]["n"] == 1
    assert official["metrics"]["gold_fails"]["mean"] == 1


def test_a_mode_on_a_benchmark_without_modes_is_one_error_line(tmp_path, toy_dir):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("")
    result = CliRunner().invoke(app, ["score", "--benchmark", "toy:seen", "--predictions", str(preds),
                                      "--scoring", "lenient", "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "benchmark toy has no scoring mode 'lenient'" in result.output
    # ttsi eval refuses it before loading any model
    result = CliRunner().invoke(app, ["eval", "--model", str(tmp_path / "no-model"), "--benchmark", "toy:seen",
                                      "--scoring", "official", "--out", str(tmp_path / "e")])
    assert result.exit_code != 0 and "benchmark toy has no scoring mode 'official'" in result.output


SETTINGS = EvalSettings(model="m", adapter=None, benchmark="apibank", split="level-1", limit=None, n=5, seeds=(0,),
                        taus=(0.95,), agent=AgentConfig(), batch=1, data_dir=None, dtype="auto", device=None,
                        scoring="official")


def test_the_mode_is_in_run_json_and_a_resume_cannot_change_it(tmp_path):
    import dataclasses

    assert SETTINGS.to_dict()["scoring"] == "official"
    assert "scoring" not in dataclasses.replace(SETTINGS, scoring=None).to_dict()  # single-mode benchmarks
    plan = [("a", 0)]
    with RunDir(tmp_path, SETTINGS.to_dict(), resume=False, plan=plan, method="base") as run:
        run.append({"id": "a", "seed": 0})
    with pytest.raises(ConfigError, match="settings differ from the original run in scoring"):
        RunDir(tmp_path, dataclasses.replace(SETTINGS, scoring="lenient").to_dict(), resume=True, plan=plan,
               method="base")
    # a run directory started before the modes existed (no `scoring`) was scored leniently: it does not resume
    old = {k: v for k, v in json.loads((tmp_path / "run.json").read_text()).items() if k != "scoring"}
    (tmp_path / "run.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="settings differ from the original run in scoring"):
        RunDir(tmp_path, SETTINGS.to_dict(), resume=True, plan=plan, method="base")
