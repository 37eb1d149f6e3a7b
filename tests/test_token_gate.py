"""The token-level gate: per-token statistics from the decoder, the reference profile, the verdict, the agent's use
of the greedy answer it generated, calibration and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from typer.testing import CliRunner

from ttsi.agent import Decision, SelfImprovingAgent
from ttsi.calibrate import calibrate_profile
from ttsi.cli import app
from ttsi.config import AgentConfig, GateConfig
from ttsi.engine.decode import StepStats, decode
from ttsi.errors import ConfigError, TaskError
from ttsi.formats import get_format
from ttsi.prompts import answer_prompt
from ttsi.token_gate import STEP, TokenProfile, answer_measures, build_profile, token_verdict
from ttsi.toy import SEEN, UNSEEN, make_tasks

runner = CliRunner()


def _stats_by_forward(model, prompt_ids: list[int], answer_ids: list[int]) -> list[tuple[float, float, float]]:
    """(top1, margin, entropy) at every answer position from one teacher-forced forward over prompt + answer."""
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logits = model.model(input_ids=ids).logits[0, len(prompt_ids) - 1: len(prompt_ids) - 1 + len(answer_ids)]
    probs = torch.softmax(logits.float(), dim=-1)
    top = probs.topk(2, dim=-1).values
    entropy = -(probs * torch.log(probs)).nan_to_num().sum(-1)
    return [(float(a), float(a - b), float(h)) for (a, b), h in zip(top.tolist(), entropy.tolist(), strict=True)]


def _close(a, b, tol=2e-4) -> bool:
    return all(abs(x - y) <= tol for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


# ---- statistics from the decoder --------------------------------------------------------------------------------

def test_step_stats_are_the_softmax_of_each_chosen_position(qwen):
    prompts = [qwen.encode(qwen.chat_prompt([{"role": "user", "content": t}])) for t in
               ("Weather in Oslo?", "Book a table for two at eight tonight, please.", "Hi")]
    stats = StepStats()
    rows = decode(qwen.model, prompts, max_new_tokens=10, stop_ids=[], pad_id=qwen.pad_id, stats=stats)
    got = stats.rows([len(r) for r in rows])
    for prompt, answer, row in zip(prompts, rows, got, strict=True):
        assert len(row) == len(answer) == 10
        expected = _stats_by_forward(qwen, prompt, answer)
        assert _close(row, expected), (row[:2], expected[:2])
        assert all(0 <= m <= t <= 1 and h >= 0 for t, m, h in row)
        # greedy: the chosen token is the most likely one, so top1 is its probability
        assert all(abs(t - e[0]) < 2e-4 for (t, _, _), e in zip(row, expected, strict=True))


def test_step_stats_follow_rows_that_leave_the_batch(qwen):
    prompts = [qwen.encode(qwen.chat_prompt([{"role": "user", "content": t}])) for t in
               ("Weather in Oslo?", "Book a table for two at eight tonight, please.", "Hi")]
    limits = [3, 12, 7]  # rows finish at different steps: the first leaves the batch early
    told: list[list[int]] = []
    stats = StepStats()
    rows = decode(qwen.model, prompts, max_new_tokens=limits, stop_ids=[], pad_id=qwen.pad_id, stats=stats,
                  on_rows=told.append)
    assert told, "no row left the batch"
    for i, (prompt, limit) in enumerate(zip(prompts, limits, strict=True)):
        alone = StepStats()
        decode(qwen.model, [prompt], max_new_tokens=limit, stop_ids=[], pad_id=qwen.pad_id, stats=alone)
        assert _close(stats.rows([len(r) for r in rows])[i], alone.rows([limit])[0])


def test_generate_records_the_kept_tokens(toy):
    task = make_tasks(1, UNSEEN, seed=3)[0]
    prompt = answer_prompt(toy, task, get_format(task.format))
    stats = StepStats()
    text = toy.generate([prompt], max_new_tokens=64, stats=stats)[0]
    assert stats.tokens is not None and toy.tokenizer.decode(stats.tokens[0], skip_special_tokens=True) == text
    assert len(stats.rows()[0]) == len(stats.tokens[0])
    assert text == toy.generate([prompt], max_new_tokens=64)[0]  # recording changes nothing


# ---- the profile and the verdict ------------------------------------------------------------------------------

def _profile(values: list[float]) -> TokenProfile:
    """A profile whose three statistics each take these values (entropy as given)."""
    return build_profile([[(v, v, v) for v in values]], "m", 100, "all")


def test_profile_percentiles_interpolate_like_numpy():
    values = [0.1 * i for i in range(11)]  # 0.0 .. 1.0
    profile = _profile(values)
    assert profile.n_inputs == 1 and profile.n_positions == 11
    assert len(profile.percentiles["top1"]) == round(100 / STEP) + 1
    assert math.isclose(profile.threshold("top1", 5.0), 0.05, abs_tol=1e-12)  # between 0.0 and 0.1
    assert math.isclose(profile.threshold("top1", 50.0), 0.5, abs_tol=1e-12)
    assert math.isclose(profile.threshold("top1", 12.25), 0.1225, abs_tol=1e-12)  # between two stored percentiles
    assert math.isclose(profile.threshold("entropy", 5.0), 0.95, abs_tol=1e-12)  # high entropy is unsure


def test_verdict_counts_positions_less_sure_than_the_reference():
    profile = _profile([0.5 + 0.05 * i for i in range(11)])  # 5th percentile of top1: 0.525
    row = [(0.9, 0.8, 0.1), (0.4, 0.1, 2.0), (0.99, 0.98, 0.01), (0.52, 0.3, 1.0)]
    v = token_verdict(row, ["a", "b", "c", "d"].__getitem__, profile, "top1", 5.0)
    assert math.isclose(v.threshold, 0.525)
    assert (v.positions, v.flagged, v.share) == (4, 2, 0.5)
    assert [(u["position"], u["token"]) for u in v.unsure] == [(1, "b"), (3, "d")]
    entropy = token_verdict(row, ["a", "b", "c", "d"].__getitem__, profile, "entropy", 5.0)  # above 0.975 is unsure
    assert [u["position"] for u in entropy.unsure] == [1, 3]
    assert v.measures["min_prob"] == 0.4
    assert math.isclose(v.measures["mean_logprob"], math.exp(sum(math.log(r[0]) for r in row) / 4))
    assert math.isclose(v.measures["mean_entropy"], 1 / (1 + (0.1 + 2.0 + 0.01 + 1.0) / 4))
    assert answer_measures([]) == {"mean_logprob": 1.0, "min_prob": 1.0, "mean_entropy": 1.0}


def test_a_profile_round_trips_and_bad_files_are_named(tmp_path):
    profile = _profile([0.2, 0.4, 0.9])
    path = profile.save(tmp_path / "p.json")
    assert TokenProfile.load(path) == profile
    with pytest.raises(ConfigError, match="ttsi calibrate --profile"):
        TokenProfile.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json"):
        TokenProfile.load(tmp_path / "bad.json")
    data = json.loads(path.read_text())
    for change, message in [({"version": 9}, "version 9"), ({"extra": 1}, "not a token-gate reference profile"),
                            ({"percentiles": {"top1": [0.1]}}, "ascending numbers"),
                            ({"n_inputs": 0}, "positive integers")]:
        (tmp_path / "x.json").write_text(json.dumps(data | change))
        with pytest.raises(ConfigError, match=message):
            TokenProfile.load(tmp_path / "x.json")
    descending = data | {"percentiles": data["percentiles"] | {"top1": data["percentiles"]["top1"][::-1]}}
    (tmp_path / "x.json").write_text(json.dumps(descending))
    with pytest.raises(ConfigError, match="ascending"):
        TokenProfile.load(tmp_path / "x.json")
    profile.check_model("/somewhere/m", 100)
    with pytest.raises(ConfigError, match="vocabulary 100"):
        profile.check_model("m", 101)
    with pytest.raises(ConfigError, match="built with model 'm'"):
        profile.check_model("other", 100)


@pytest.mark.parametrize(("gate", "message"), [
    ({}, "needs a reference profile"),
    ({"reference": "p.json", "token_stat": "perplexity"}, "unknown token statistic"),
    ({"reference": "p.json", "token_percentile": 101}, r"token percentile must be a number in \[0, 100\]"),
    ({"reference": "p.json", "token_share": 0.2}, "exactly one of"),
    ({"reference": "p.json", "token_count": None}, "exactly one of"),
    ({"reference": "p.json", "token_count": 0}, "at least 1"),
    ({"reference": "p.json", "token_count": None, "token_share": 1.5}, r"in \(0, 1\]"),
])
def test_token_gate_settings_are_checked(gate, message):
    with pytest.raises(ConfigError, match=message):
        AgentConfig(gate=GateConfig(measure="token", **gate)).validate()


# ---- the agent ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(toy_dir, tmp_path_factory):
    """The toy model's profile from seen-tool tasks it answers correctly."""
    from ttsi.cli import _matches_gold
    from ttsi.model import HFModel

    model = HFModel.from_pretrained(str(toy_dir), dtype="float32", device="cpu")
    result = calibrate_profile(model, make_tasks(24, SEEN, seed=11), _matches_gold, max_new_tokens=64)
    assert 0 < result["kept"] <= result["n"] == 24
    return result["profile"].save(tmp_path_factory.mktemp("profile") / "toy.json")


def test_calibration_keeps_only_correct_answers_by_default(toy, reference):
    profile = TokenProfile.load(reference)
    assert profile.source == "correct" and profile.model == toy.name and profile.vocab_size == len(toy.tokenizer)
    everything = calibrate_profile(toy, make_tasks(24, SEEN, seed=11), None, max_new_tokens=64)
    assert everything["kept"] == 24 and everything["profile"].source == "all"
    assert everything["profile"].n_positions >= profile.n_positions
    with pytest.raises(TaskError, match="answered none of the 2 reference inputs"):
        calibrate_profile(toy, make_tasks(2, SEEN, seed=11), lambda task, raw: False, max_new_tokens=8)


def test_the_gate_answers_unadapted_inputs_with_the_answer_it_generated(toy, reference, monkeypatch):
    tasks = make_tasks(6, UNSEEN, seed=2) + make_tasks(6, SEEN, seed=4)
    config = AgentConfig(method="base", gate=GateConfig(measure="token", reference=str(reference)), max_new_tokens=64)
    calls: list[int] = []
    real = toy.generate

    def counting(prompts, **kwargs):
        calls.append(len(prompts))
        return real(prompts, **kwargs)

    monkeypatch.setattr(toy, "generate", counting)
    agent = SelfImprovingAgent(toy, config)
    responses = agent.respond_batch(tasks)
    assert calls == [12]  # the gate's generation is the only one: nothing answered twice
    monkeypatch.setattr(toy, "generate", real)
    profile = TokenProfile.load(reference)
    for task, r in zip(tasks, responses, strict=True):
        prompt = answer_prompt(toy, task, get_format(task.format))
        assert r.raw == toy.generate([prompt], max_new_tokens=64)[0]
        t = r.uncertainty.tokens
        assert r.uncertainty.measure == "token" and t["threshold"] == profile.threshold("top1", 5.0)
        assert r.uncertainty.uncertain == (t["flagged"] >= 2)
        assert math.isclose(r.uncertainty.confidence, 1 - t["flagged"] / t["positions"])
        assert r.decision is Decision.SKIP and r.reason == "method base: answered by the base model"
    flagged = [r.uncertainty.uncertain for r in responses]
    assert any(flagged), "no input was uncertain: the test does not exercise the gate"


def test_uncertain_inputs_adapt_and_the_others_keep_the_gates_answer(toy, reference):
    tasks = make_tasks(8, UNSEEN, seed=2)
    gate = GateConfig(measure="token", reference=str(reference), token_count=None, token_share=0.05)
    base = SelfImprovingAgent(toy, AgentConfig(method="base", gate=gate, max_new_tokens=64)).respond_batch(tasks)
    with SelfImprovingAgent(toy, AgentConfig(method="tt-si", gate=gate, max_new_tokens=64)) as agent:
        adapted = agent.respond_batch(tasks)
    assert [r.uncertainty.uncertain for r in adapted] == [r.uncertainty.uncertain for r in base]
    assert {r.decision for r in adapted} == {Decision.ADAPT, Decision.SKIP}, "both branches must be exercised"
    for b, a in zip(base, adapted, strict=True):
        assert a.uncertainty.uncertain == (a.uncertainty.tokens["share"] >= 0.05)
        if a.decision is Decision.SKIP:
            assert a.reason.startswith("confident: token gate:") and a.raw == b.raw and not a.adapted
        else:
            assert a.adapted == bool(a.synthetic)
            if not a.adapted:  # no valid pair: answered with the gate's own greedy answer
                assert a.raw == b.raw and a.reason.startswith("no valid synthetic pair")


def test_a_task_without_tools_is_gated_by_tokens(toy, reference):
    task = dataclasses.replace(make_tasks(1, UNSEEN, seed=2)[0], tools=[], answer=None)
    gate = GateConfig(measure="token", reference=str(reference))
    response = SelfImprovingAgent(toy, AgentConfig(method="base", gate=gate, max_new_tokens=32)).respond(task)
    stats = StepStats()
    again = toy.generate([answer_prompt(toy, task, get_format(task.format))], max_new_tokens=32, stats=stats)
    assert response.raw == again[0] and response.uncertainty.tokens["positions"] == len(stats.tokens[0]) > 0
    with pytest.raises(TaskError, match="--measure token"):
        SelfImprovingAgent(toy, AgentConfig(method="tt-si", max_new_tokens=32)).respond(task)


def test_a_profile_of_another_model_is_refused(qwen, reference):
    with pytest.raises(ConfigError, match="rebuild it with ttsi calibrate --profile"):
        SelfImprovingAgent(qwen, AgentConfig(gate=GateConfig(measure="token", reference=str(reference))))


# ---- the command line -------------------------------------------------------------------------------------------

def test_calibrate_profile_and_respond_with_the_token_gate(toy_dir, tmp_path):
    tasks = tmp_path / "ref.jsonl"
    tasks.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in make_tasks(12, SEEN, seed=11)))
    out = tmp_path / "profile.json"
    result = runner.invoke(app, ["calibrate", "--model", str(toy_dir), "--tasks", str(tasks), "--profile", str(out),
                                 "--max-new-tokens", "64", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    profile = TokenProfile.load(out)
    assert summary["kept"] == profile.n_inputs and summary["n"] == 12
    assert summary["at_5th_percentile"]["top1"] == profile.threshold("top1", 5.0)
    task = tmp_path / "task.json"
    task.write_text(json.dumps(make_tasks(1, UNSEEN, seed=5)[0].to_dict()))
    result = runner.invoke(app, ["respond", "--model", str(toy_dir), "--task", str(task), "--method", "base",
                                 "--measure", "token", "--reference", str(out), "--token-share", "0.1", "--json"])
    assert result.exit_code == 0, result.output
    trace = json.loads(result.stdout)
    assert trace["uncertainty"]["measure"] == "token"
    assert trace["uncertainty"]["uncertain"] == (trace["uncertainty"]["tokens"]["share"] >= 0.1)


@pytest.mark.parametrize(("args", "message"), [
    (["--measure", "token"], "needs a reference profile"),
    (["--measure", "token", "--reference", "nowhere.json"], "nowhere.json"),
])
def test_bad_token_gate_input_is_one_line(toy_dir, tmp_path, args, message):
    task = tmp_path / "task.json"
    task.write_text(json.dumps(make_tasks(1, UNSEEN, seed=5)[0].to_dict()))
    result = runner.invoke(app, ["respond", "--model", str(toy_dir), "--task", str(task), *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def test_calibrate_profile_needs_gold_answers_or_all(toy_dir, tmp_path):
    tasks = tmp_path / "ref.jsonl"
    rows = [dict(t.to_dict(), answer=None) for t in make_tasks(2, SEEN, seed=11)]
    tasks.write_text("".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in rows))
    result = runner.invoke(app, ["calibrate", "--model", str(toy_dir), "--tasks", str(tasks), "--profile",
                                 str(tmp_path / "p.json")])
    assert result.exit_code == 2 and "give --all" in result.output


# ---- evaluation -------------------------------------------------------------------------------------------------

def _auroc_by_hand(confidences: list[float], wrong: list[bool]) -> float:
    """P(a wrong item is less confident than a right one), ties one half: the definition, pair by pair."""
    pairs = [(w, r) for w, cw in zip(confidences, wrong, strict=True) if cw
             for r, cr in zip(confidences, wrong, strict=True) if not cr]
    return sum(1.0 if w < r else 0.5 if w == r else 0.0 for w, r in pairs) / len(pairs)


@pytest.mark.parametrize("gate", [["--measure", "token", "--token-share", "0.05"], ["--tau", "0.95"]])
def test_eval_reports_every_measures_auroc_side_by_side(toy_dir, reference, tmp_path, gate):
    out = tmp_path / "run"
    args = ["eval", "--model", str(toy_dir), "--benchmark", "toy:seen", "--method", "base",
            "--out", str(out), "--max-new-tokens", "64", *gate]
    if "token" in gate:
        args += ["--reference", str(reference)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    wrong = [not r["base_correct"] for r in records]
    assert 0 < sum(wrong) < len(wrong), "both right and wrong base answers are needed for an AUROC"
    measures = summary["gate_measures"]
    if "token" in gate:
        assert set(measures) == {"token_share", "mean_token_logprob", "min_token_prob", "mean_token_entropy"}
        picks = {"token_share": lambda g: 1 - g["tokens"]["share"],
                 "min_token_prob": lambda g: g["tokens"]["measures"]["min_prob"]}
        flagged = [r["gate"]["tokens"]["share"] >= 0.05 for r in records]
    else:
        assert set(measures) == {"rss_margin", "rss_entropy", "rss_perplexity"}
        picks = {"rss_margin": lambda g: g["margin"]}
        flagged = [r["gate"]["margin"] < 0.95 for r in records]
    for name, pick in picks.items():
        assert math.isclose(measures[name]["auroc"], _auroc_by_hand([pick(r["gate"]) for r in records], wrong))
    tp = sum(f and w for f, w in zip(flagged, wrong, strict=True))
    assert math.isclose(summary["gate"]["tpr"], tp / sum(wrong))  # the operating point is the decisions taken


def test_a_tau_sweep_is_refused_for_the_token_gate(toy_dir, reference, tmp_path):
    result = runner.invoke(app, ["eval", "--model", str(toy_dir), "--benchmark", "toy:unseen", "--measure", "token",
                                 "--reference", str(reference), "--tau", "0.5,0.9", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "token gate decides by its position count" in result.output


def test_calibrate_a_profile_from_a_benchmark_split_with_its_scorer(toy_dir, tmp_path):
    from ttsi.benchmarks import get_benchmark
    from ttsi.model import HFModel

    out = tmp_path / "p.json"
    result = runner.invoke(app, ["calibrate", "--model", str(toy_dir), "--benchmark", "toy:seen", "--profile",
                                 str(out), "--max-new-tokens", "64", "--json"])
    assert result.exit_code == 0, result.output
    bench = get_benchmark("toy")
    tasks = bench.load(None, "seen")
    model = HFModel.from_pretrained(str(toy_dir), dtype="float32", device="cpu")
    answers = model.generate([answer_prompt(model, t, get_format(t.format)) for t in tasks], max_new_tokens=64)
    assert json.loads(result.stdout)["kept"] == sum(bench.score(t, a).correct for t, a in zip(tasks, answers,
                                                                                               strict=True))
    both = runner.invoke(app, ["calibrate", "--model", str(toy_dir), "--benchmark", "toy:seen", "--tasks",
                               str(tmp_path / "x.jsonl"), "--profile", str(out)])
    assert both.exit_code == 2 and "exactly one of --tasks FILE or --benchmark" in both.output
