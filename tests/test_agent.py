"""The agent loop: decisions per method, the trace, fallbacks, and the base model restored after every input."""

from __future__ import annotations

import json

import pytest
import torch

from ttsi.agent import STAGES, Decision, SelfImprovingAgent, input_seed
from ttsi.augment import OneByOne, Synthesis, SyntheticPair
from ttsi.config import AgentConfig, GateConfig
from ttsi.errors import ConfigError, TaskError
from ttsi.formats import get_format
from ttsi.prompts import answer_messages
from ttsi.schema import check_calls
from ttsi.task import Call
from ttsi.toy import SEEN, UNSEEN, make_tasks

from .conftest import weather_task

FMT = get_format("json")


class FixedSynthesizer(OneByOne):
    """Returns the pairs it was given and records what it was asked (the model never sees these in tests)."""

    source = "teacher"

    def __init__(self, pairs=None, error=None):
        self.pairs, self.error, self.calls = pairs or [], error, []

    def synthesize(self, task, fmt, seed):
        self.calls.append((task.id, seed))
        return Synthesis(list(self.pairs), {"no_pair": 1} if not self.pairs else {}, drafts=1, error=self.error)


PAIR = SyntheticPair("Weather in Oslo?", [Call("get_weather", {"city": "Oslo"})], "teacher")


def _agent(model, method, tau=0.95, synth=None, **kw):
    config = AgentConfig(method=method, gate=GateConfig(tau=tau), max_new_tokens=24, **kw)
    if method in ("tt-d",):
        config.teacher.url, config.teacher.model = "http://unused/v1", "fixed"
    return SelfImprovingAgent(model, config, teacher=synth if method == "tt-d" else None), config


def _logits(model):
    ids = torch.tensor([model.encode(model.chat_prompt([{"role": "user", "content": "ping"}]))])
    with torch.no_grad():
        return model.model(input_ids=ids).logits


def test_base_never_adapts_but_reports_the_gate(qwen):
    agent, _ = _agent(qwen, "base", tau=1.0)
    r = agent.respond(weather_task())
    assert r.decision == "skip" and not r.adapted and r.train is None
    assert r.uncertainty is not None and r.uncertainty.candidates == ["get_weather", "send_email", "set_alarm"]
    assert r.scoring_prompt == qwen.chat_prompt(answer_messages(weather_task(), FMT))
    assert r.reason == "method base: answered by the base model"
    assert set(r.timings) == set(STAGES) and r.timings["train_s"] == 0.0


@pytest.mark.parametrize(("method", "tau", "adapts"), [
    ("tt-d", 1.0, True), ("tt-d", 0.0, False),  # the gate decides
    ("no-gate", 0.0, True),                         # adapts even when confident
    ("confident-only", 0.0, True), ("confident-only", 1.0, False),
])
@pytest.mark.slow
def test_who_adapts_follows_method_and_gate(qwen, method, tau, adapts):
    synth = FixedSynthesizer([PAIR])
    agent, _ = _agent(qwen, method, tau=tau, synth=synth)
    if method != "tt-d":
        agent.synthesizer = synth
    before = _logits(qwen)
    r = agent.respond(weather_task())
    assert r.adapted is adapts and r.decision == ("adapt" if adapts else "skip")
    assert bool(synth.calls) is adapts
    if adapts:
        assert r.train.steps == 5 and len(r.train.losses) == 5 and r.synthetic == [PAIR]
        assert r.timings["train_s"] > 0 and r.timings["reset_s"] > 0
    assert torch.equal(_logits(qwen), before)  # reset: the base model is back, bit for bit


def test_tt_si_trace_is_complete_and_json_ready(toy):
    agent, config = _agent(toy, "tt-si", tau=1.0)
    agent.synthesizer = FixedSynthesizer([PAIR])
    d = agent.respond(weather_task()).to_dict()
    assert set(d) >= {"id", "answer", "raw", "uncertainty", "adapted", "synthetic", "rejected", "train", "timings",
                      "scoring_prompt", "decision", "reason"}
    u = d["uncertainty"]
    assert set(u) >= {"candidates", "logprobs", "probs", "margin", "tau", "uncertain"}
    assert u["tau"] == 1.0 and u["uncertain"] and d["adapted"]
    assert d["synthetic"] == [{"query": "Weather in Oslo?", "answer": [{"name": "get_weather",
                                                                        "arguments": {"city": "Oslo"}}],
                               "source": "teacher"}]
    assert d["train"]["steps"] == 5 and set(d["timings"]) == set(STAGES)
    assert agent.synthesizer.calls == [("w-1", input_seed(config.seed, "w-1"))]


def test_no_valid_pair_answers_unadapted_and_says_why(qwen):
    agent, _ = _agent(qwen, "tt-si", tau=1.0)
    agent.synthesizer = FixedSynthesizer([])
    r = agent.respond(weather_task())
    assert r.decision == "adapt" and not r.adapted and r.train is None
    assert "no valid synthetic pair (no_pair: 1)" in r.reason and r.rejected == {"no_pair": 1}


def test_teacher_failure_answers_unadapted_and_says_why(qwen):
    synth = FixedSynthesizer([], error="teacher failed: APIConnectionError: Connection error.")
    agent, config = _agent(qwen, "tt-d", tau=1.0, synth=synth)
    r = agent.respond(weather_task())
    assert r.decision == "adapt" and not r.adapted and r.train is None and r.synthetic == []
    assert r.reason == "teacher failed: APIConnectionError: Connection error."  # the teacher's error, whole
    assert synth.calls == [("w-1", input_seed(config.seed, "w-1"))]


def test_tt_icl_puts_pairs_in_the_prompt_and_does_not_train(qwen):
    agent, _ = _agent(qwen, "tt-icl", tau=1.0)
    agent.synthesizer = FixedSynthesizer([PAIR])
    seen_prompts = []
    generate = qwen.generate
    qwen.generate = lambda prompts, **kw: seen_prompts.extend(prompts) or generate(prompts, **kw)
    r = agent.respond(weather_task())
    assert not r.adapted and r.train is None and not agent.learner.installed
    assert "Weather in Oslo?" in seen_prompts[-1] and FMT.render(PAIR.answer) in seen_prompts[-1]
    assert "in-context" in r.reason


def test_oracle_trains_on_the_gold_answer_and_needs_one(qwen):
    agent, _ = _agent(qwen, "oracle", tau=1.0)
    r = agent.respond(weather_task())
    assert r.adapted and r.synthetic[0].source == "gold" and r.synthetic[0].answer == weather_task().answer
    with pytest.raises(TaskError, match="has no gold answer"):
        agent.respond(weather_task(answer=None))


def test_a_task_without_tools(qwen):
    task = weather_task(tools=[])
    r = _agent(qwen, "base")[0].respond(task)
    assert r.uncertainty is None and r.decision == "skip" and not r.adapted
    # answered, greedily, from the answer prompt: the base model's own completion of it
    assert r.raw == qwen.generate([qwen.chat_prompt(answer_messages(task, FMT))], max_new_tokens=24)[0]
    assert r.scoring_prompt == qwen.chat_prompt(answer_messages(task, FMT))
    with pytest.raises(TaskError, match="has no tools: the gate has no candidate actions"):
        _agent(qwen, "tt-si")[0].respond(weather_task(tools=[]))


def test_reset_happens_even_when_answering_fails(qwen):
    agent, _ = _agent(qwen, "tt-si", tau=1.0)
    agent.synthesizer = FixedSynthesizer([PAIR])
    before = _logits(qwen)

    adapted_at_failure = []

    def boom(*a, **k):  # called inside the adapter's scope: the trained slot is live
        adapted_at_failure.append(not torch.equal(_logits(qwen), before))
        raise RuntimeError("generation failed")

    qwen.generate = boom
    with pytest.raises(RuntimeError, match=r"^generation failed$"):
        agent.respond(weather_task())
    assert adapted_at_failure == [True]  # it failed with a trained adapter in place, so the reset is not vacuous
    assert torch.equal(_logits(qwen), before)


@pytest.mark.slow
def test_tt_si_end_to_end_on_the_toy_model(toy_dir, toy):
    """Real self-synthesis, validation, LoRA steps and reset, with no test double anywhere."""
    agent, _ = _agent(toy, "tt-si", tau=1.0)
    before = _logits(toy)
    tasks = make_tasks(3, SEEN, seed=11) + make_tasks(3, UNSEEN, seed=12)
    responses = [agent.respond(t) for t in tasks]
    adapted = [r for r in responses if r.adapted]
    assert adapted, [r.reason for r in responses]
    for task, r in zip(tasks, responses, strict=True):
        for pair in r.synthetic:  # whatever was kept passed the schema check against this input's tools
            check_calls(pair.answer, task.tools)
    for r in adapted:
        assert r.synthetic and r.synthetic[0].source == "self" and r.train.steps == 5
        assert all(x > 0 for x in r.train.losses)
    assert torch.equal(_logits(toy), before)


@pytest.mark.slow
def test_sampled_answers_come_from_the_adapted_model_and_are_seeded(toy):
    agent, _ = _agent(toy, "tt-si", tau=1.0, samples=3, sample_temperature=1.0)
    agent.synthesizer = FixedSynthesizer([PAIR])
    before = _logits(toy)
    calls = []
    generate = toy.generate

    def weight() -> float:  # slot 0's A of the first adapted layer
        return next(iter(agent.learner.lora.layers.values())).lora_A[0].abs().sum().item()

    toy.generate = lambda prompts, **kw: calls.append((weight(), kw)) or generate(prompts, **kw)
    first = agent.respond(weather_task())
    assert len(first.samples) == 3 and first.adapted
    initial = next(iter(agent.learner.lora.layers.values())).initial_A.abs().sum().item()
    assert [w != initial for w, _ in calls] == [True, True]  # greedy and sampled answers: adapted weights
    assert calls[1][1]["num_return_sequences"] == 3 and calls[1][1]["temperature"] == 1.0
    assert agent.respond(weather_task()).samples == first.samples  # same input, same seed
    assert torch.equal(_logits(toy), before)


def test_the_runner_records_the_base_answer_of_adapted_inputs_outside_the_loop(qwen):
    from ttsi.evaluation.runner import base_answers

    agent, config = _agent(qwen, "oracle", tau=1.0)
    adapted = agent.respond(weather_task())
    base = _agent(qwen, "base")[0].respond(weather_task())
    confident = _agent(qwen, "oracle", tau=0.0)[0].respond(weather_task())
    assert adapted.adapted and not confident.adapted
    # None for the confident input: its `raw` already is the base answer
    assert base_answers(qwen, [adapted, confident], config) == [base.raw, None]


def test_the_decision_is_a_typed_value_and_serialises_as_before(qwen):
    r = _agent(qwen, "tt-si", tau=0.0)[0].respond(weather_task())
    assert r.decision is Decision.SKIP and r.to_dict()["decision"] == "skip"
    assert json.loads(json.dumps(r.to_dict()))["decision"] == "skip"


@pytest.mark.slow
def test_two_agents_on_one_model_are_refused_until_the_first_closes(qwen):
    first, _ = _agent(qwen, "oracle", tau=1.0)
    second, _ = _agent(qwen, "oracle", tau=1.0, seed=1)
    assert first.respond(weather_task()).adapted
    with pytest.raises(ConfigError, match="already carries adapter layers"):
        second.respond(weather_task())
    first.close()
    assert second.respond(weather_task()).adapted
    before = _logits(qwen)
    second.close()
    assert torch.equal(_logits(qwen), before) and not any("lora_" in n for n, _ in qwen.model.named_parameters())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tt-si", "oracle"])
def test_the_whole_loop_runs_in_bf16_with_fp32_adapters_and_an_exact_reset(toy_dir, method):
    """Gate, synthesis, multi-slot training, answer and reset in bf16 on the CPU, as they run on GPUs."""
    from ttsi.model import HFModel

    model = HFModel.from_pretrained(str(toy_dir), dtype="bfloat16", device="cpu")
    assert next(model.model.parameters()).dtype == torch.bfloat16
    before = _logits(model)
    tasks = make_tasks(2, SEEN, seed=11) + make_tasks(2, UNSEEN, seed=12)
    agent, _ = _agent(model, method, tau=1.0)
    responses = agent.respond_batch(tasks)
    adapted = [r for r in responses if r.adapted]
    assert adapted, [r.reason for r in responses]
    assert all(p.dtype == torch.float32 for p in agent.learner.parameters())  # LoRA and optimizer in fp32
    for r in adapted:
        assert all(loss == loss and loss > 0 for loss in r.train.losses)  # finite, not NaN
    assert all(r.uncertainty is not None and 0 <= r.uncertainty.margin <= 1 for r in responses)
    assert torch.equal(_logits(model), before)  # reset is bit-exact in bf16 too
    assert _logits(model).dtype == torch.bfloat16
