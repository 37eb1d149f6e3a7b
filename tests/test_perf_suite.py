"""The speed-benchmark suite (perf/) on a deliberately tiny model: record structure, not speed.

Timings on a 1-layer, 32-wide model say nothing; these tests check that every benchmark runs, that the JSON record
has its keys, that timings are positive and that each ratio is the division of the two timings it reports.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from perf import common, run

from ttsi.tiny_models import build_tiny_model, train_tokenizer

# the tiny tokenizer (400 ids) spends ~80 tokens on an empty chat prompt, so its examples are longer than 100
TINY = common.Settings(repeats=1, warmup=0, prompt_tokens=128, example_tokens=200, answer_tokens=4, cycle_ks=(1, 2),
                       batch_sizes=(1, 2), efficiency_tokens=(200,), matmul_size=128, reset_repeats=2,
                       eval_items=2)


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory) -> common.ModelSpec:
    tokenizer = train_tokenizer(common.corpus(300), vocab_size=400)
    path = build_tiny_model(tmp_path_factory.mktemp("bench"), tokenizer, hidden=32, layers=1, heads=4, kv_heads=2)
    return common.local_spec("tiny", path)


@pytest.fixture(scope="module")
def record(tiny_spec, tmp_path_factory) -> dict:
    sections = run.run_suite([tiny_spec], TINY, list(run.BENCHMARKS), log=lambda _: None)
    out = tmp_path_factory.mktemp("results") / "record.json"
    run.write_record(run.make_record(sections, [tiny_spec], TINY), out)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_record_has_metadata(record, tiny_spec):
    assert {"suite", "date", "quick", "git_commit", "git_dirty", "machine", "versions", "settings", "models",
            "benchmarks", "targets"} <= set(record)
    assert set(record["benchmarks"]) == {"gate", "cycle", "batch", "efficiency", "decode", "eval"}
    assert {"torch", "transformers", "peft"} <= set(record["versions"])
    assert record["machine"]["cores"] == os.cpu_count() and record["machine"]["torch_threads"] >= 1
    assert record["models"]["tiny"]["params"] == common.count_params(tiny_spec.load().model)
    assert record["settings"]["repeats"] == 1


@pytest.mark.slow
def test_gate_rows(record):
    rows = record["benchmarks"]["gate"]["rows"]
    assert [r["n"] for r in rows] == [5, 20]
    for row in rows:
        assert row["naive_s"] > 0 and row["shared_s"] > 0
        assert row["ratio"] == pytest.approx(row["naive_s"] / row["shared_s"])
        assert row["max_abs_diff"] < 1e-3  # the two scorers agree
    assert [c["value"] for r in rows for c in r["checks"]] == [4.0, 10.0]


@pytest.mark.slow
def test_cycle_rows(record):
    rows = record["benchmarks"]["cycle"]["rows"]
    assert [r["k"] for r in rows] == [1, 2]
    for row in rows:
        assert row["naive_s"] > 0 and row["ours_s"] > 0 and row["ours_reset_s"] > 0
        assert row["ratio"] == pytest.approx(row["naive_s"] / row["ours_s"])
        assert row["reset_pct_of_step"] == pytest.approx(100 * row["ours_reset_s"] / row["ours_step_s"])
        assert set(row["ours_phases_s"]) == set(row["naive_phases_s"]) == {"gate", "train", "answer", "reset"}
        assert row["ours_s"] == pytest.approx(sum(row["ours_phases_s"].values()), rel=0.5)
        assert row["checks"][0]["metric"] == "reset_pct_of_step"


@pytest.mark.slow
def test_batch_rows(record):
    rows = record["benchmarks"]["batch"]["rows"]
    assert [r["b"] for r in rows] == [1, 2]
    for row in rows:
        assert row["round_s"] > 0
        assert row["inputs_per_s"] == pytest.approx(row["b"] / row["round_s"])
        assert row["ratio_vs_b1"] == pytest.approx(row["inputs_per_s"] / rows[0]["inputs_per_s"])
    assert rows[-1]["checks"][0]["metric"] == "ratio_vs_b1"


@pytest.mark.slow
def test_decode_rows(record):
    rows = record["benchmarks"]["decode"]["rows"]
    assert [(r["b"], r["tokens"]) for r in rows] == [(1, 20), (1, 64), (2, 20), (2, 64)]
    for row in rows:
        assert row["same_tokens"] and row["hf_decode_s"] > 0 and row["ours_decode_s"] > 0
        assert row["ratio"] == pytest.approx(row["ours_tokens_per_s"] / row["hf_tokens_per_s"])


@pytest.mark.slow
def test_eval_rows(record):
    (row,) = record["benchmarks"]["eval"]["rows"]
    assert row["items"] == 2 and row["naive_s"] > 0 and row["ours_s"] > 0
    assert row["ratio"] == pytest.approx(row["naive_s"] / row["ours_s"])
    assert row["ours_items_per_s"] == pytest.approx(2 / row["ours_s"])
    assert 0 <= row["ours_correct"] <= 2 and 0 <= row["naive_correct"] <= 2
    # the same gate and the same seeded synthesis on the same items: the same inputs adapt in both loops
    assert row["ours_adapted"] == row["naive_adapted"]
    assert row["checks"][0]["metric"] == "ratio"


@pytest.mark.slow
def test_cycle_phases_are_compared_with_their_flop_bound(record):
    for row in record["benchmarks"]["cycle"]["rows"]:
        assert set(row["ours_x_bound"]) == {"gate", "train", "answer"}
        for phase, ratio in row["ours_x_bound"].items():
            assert row["ours_bound_s"][phase] > 0
            assert ratio == pytest.approx(row["ours_phases_s"][phase] / row["ours_bound_s"][phase])


@pytest.mark.slow
def test_efficiency_rows(record):
    (row,) = record["benchmarks"]["efficiency"]["rows"]
    assert row["step_s"] > 0 and row["peak_gflops"] > 0 and row["tokens"] > 0
    assert row["achieved_gflops"] == pytest.approx(row["gflop"] / row["step_s"])
    assert row["pct_of_peak"] == pytest.approx(100 * row["achieved_gflops"] / row["peak_gflops"])


@pytest.mark.slow
def test_targets_summary_lists_every_check(record):
    checks = [c for section in record["benchmarks"].values() for row in section["rows"] for c in row["checks"]]
    assert len(record["targets"]) == len(checks)
    assert all(t["passed"] == (t["actual"] >= t["value"] if t["op"] == ">=" else t["actual"] < t["value"])
               for t in record["targets"])


def test_flop_estimate():
    # forward + activation backward through frozen weights, adapters in full, attention over all T² pairs
    assert common.Check.of({"x": 1.0}, "x", "<", 2.0).passed
    from perf.efficiency import step_flops

    assert step_flops(p_matmul=10, p_lora=2, layers=1, attn_dim=4, tokens=3) == 4 * 10 * 3 + 6 * 2 * 3 + 12 * 9 * 4


def test_prompt_is_exact_length(tiny_spec):
    model = tiny_spec.load()
    for n in (128, 512):
        assert len(model.encode(common.chat_prompt_of_length(model, n))) == n
    with pytest.raises(ValueError, match="at least"):
        common.chat_prompt_of_length(model, 10)


def test_config_model_spec_builds_the_shape(tiny_spec):
    tokenizer = tiny_spec.load().tokenizer
    shape = {"vocab_size": 1000, "hidden": 32, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 64}
    spec = common.config_model_spec("shape", tokenizer, shape, device="cpu", dtype=torch.float32)
    model = spec.load()
    assert common.count_params(model.model) == spec.info["params"]
    assert model.model.get_input_embeddings().weight.shape == (1000, 32)
    assert len(model.score("hello there", ["a", "b c"])) == 2


def test_only_values():
    assert run.parse_only(None) == ["gate", "cycle", "batch", "efficiency", "decode", "eval"]
    assert run.parse_only("efficiency, gate") == ["gate", "efficiency"]
    for bad in ("gate,warp", ",", ""):
        with pytest.raises(ValueError, match="--only"):
            run.parse_only(bad)


def test_main_rejects_bad_only_in_one_line(capsys):
    assert run.main(["--only", "gate,warp"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown benchmark 'warp'" in err and "\n" not in err


@pytest.mark.slow
def test_main_prints_tables_and_writes_json(tiny_spec, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run, "models_for", lambda quick: [tiny_spec])
    monkeypatch.setattr(run, "settings_for", lambda quick: TINY)
    out = tmp_path / "latest.json"
    assert run.main(["--quick", "--only", "gate", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    data = json.loads(out.read_text())
    assert list(data["benchmarks"]) == ["gate"] and data["wall_s"] > 0
    assert "naive/ours" in printed.out
    passed = sum(t["passed"] for t in data["targets"])  # the printed count is the record's
    assert f"targets: {passed} PASS, {len(data['targets']) - passed} MISS" in printed.out
    assert "gate tiny N=20" in printed.err  # a progress line per measurement
