"""Batched test-time learning: `respond_batch` gives what `respond` gives each input, one multi-slot training.

Slots trained together differ from one slot trained alone only in float rounding (see tests/test_multilora.py),
so train losses are compared at 1e-5 and everything discrete (decisions, synthetic pairs, greedy answers) exactly.
"""

from __future__ import annotations

import pytest
import torch

from ttsi.agent import STAGES, SelfImprovingAgent
from ttsi.benchmarks import get_benchmark
from ttsi.config import AgentConfig, GateConfig, LearnConfig
from ttsi.evaluation.records import read_records
from ttsi.evaluation.runner import run_eval
from ttsi.learn import NO_ADAPTER, Learner
from ttsi.model import HFModel
from ttsi.toy import SEEN, UNSEEN, make_tasks

from .conftest import weather_task

TOY = get_benchmark("toy")


def _tasks():
    """Six toy inputs (the tests set tau so that the toy model is sure of only one of them)."""
    return make_tasks(3, SEEN, seed=21, prefix="seen") + make_tasks(3, UNSEEN, seed=5, prefix="unseen")


def _agent(model, method, tau=0.995, **kw):
    return SelfImprovingAgent(model, AgentConfig(method=method, gate=GateConfig(tau=tau), max_new_tokens=32, **kw))


def _logits(model: HFModel, text: str = "ping") -> torch.Tensor:
    ids = torch.tensor([model.encode(model.chat_prompt([{"role": "user", "content": text}]))])
    with torch.no_grad():
        return model.model(input_ids=ids).logits


def _assert_same(batched, alone):
    assert [r.id for r in batched] == [r.id for r in alone]
    for b, a in zip(batched, alone, strict=True):
        assert (b.decision, b.reason, b.adapted) == (a.decision, a.reason, a.adapted), a.id
        assert b.synthetic == a.synthetic and b.rejected == a.rejected, a.id
        bu, au = b.uncertainty.to_dict(), a.uncertainty.to_dict()  # one batched gate vs one gate per input
        for key in ("logprobs", "probs"):
            assert bu.pop(key) == pytest.approx(au.pop(key), abs=1e-5), a.id
        assert bu.pop("margin") == pytest.approx(au.pop("margin"), abs=1e-5), a.id
        assert bu.pop("confidence") == pytest.approx(au.pop("confidence"), abs=1e-5), a.id
        assert bu == au, a.id  # candidates, continuations, token counts, tau and the verdict: exactly
        assert (b.raw, b.answer, b.parse_error, b.samples) == (a.raw, a.answer, a.parse_error, a.samples), a.id
        if a.train is None:
            assert b.train is None, a.id
        else:
            assert b.train.steps == a.train.steps and b.train.lrs == a.train.lrs, a.id
            assert b.train.losses == pytest.approx(a.train.losses, abs=1e-5), a.id


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tt-si", "no-gate"])
def test_respond_batch_equals_respond_on_each_input(toy, method):
    tasks = _tasks()
    before = _logits(toy)
    # tau from the model's own margins (they vary with the toy model's training threads): one input confident
    margins = sorted(_agent(toy, "base").respond(t).uncertainty.margin for t in tasks)
    tau = (margins[-2] + margins[-1]) / 2
    with _agent(toy, method, tau=tau) as agent:
        alone = [agent.respond(t) for t in tasks]
    with _agent(toy, method, tau=tau) as agent:
        batched = agent.respond_batch(tasks)
    _assert_same(batched, alone)
    adapted = [r for r in batched if r.adapted]
    assert len(adapted) >= 2, [r.reason for r in batched]  # several slots really trained together
    # a mixed batch: inputs answered without an adapter (confident, or no valid pair) in the same generation
    assert not all(r.adapted for r in batched), [r.reason for r in batched]
    if method == "tt-si":
        assert any(r.decision == "skip" for r in batched), [r.reason for r in batched]
    else:
        assert all(r.decision == "adapt" for r in batched)
    for r in batched:
        assert r.batch == len(tasks) and set(r.timings) == set(STAGES)
    # shared stages are split evenly: every adapted input carries the same share of the one training
    assert len({r.timings["train_s"] for r in adapted}) == 1 and adapted[0].timings["train_s"] > 0
    assert all(r.timings["train_s"] == 0.0 for r in batched if not r.adapted)
    assert len({r.timings["answer_s"] for r in batched}) == 1
    assert torch.equal(_logits(toy), before)


@pytest.mark.slow
def test_confident_inputs_are_final_before_the_others_train(toy):
    tasks = _tasks()
    margins = sorted(_agent(toy, "base").respond(t).uncertainty.margin for t in tasks)
    tau = (margins[-2] + margins[-1]) / 2  # one input confident, the others adapt
    with _agent(toy, "tt-si", tau=tau) as agent:
        plain = agent.respond_batch(tasks)
    events: list[tuple[int, str, bool]] = []
    with _agent(toy, "tt-si", tau=tau) as agent:
        early = agent.respond_batch(tasks, on_answer=lambda i, r: events.append((i, str(r.decision), r.adapted)))
    _assert_same(early, plain)  # answering the confident ones first changes no answer
    assert sorted(i for i, _, _ in events) == list(range(len(tasks)))  # each input reported once
    skipped = [i for i, r in enumerate(plain) if r.decision == "skip"]
    assert skipped and [i for i, _, _ in events[: len(skipped)]] == skipped  # reported before any adapted one
    assert any(adapted for _, _, adapted in events[len(skipped):])


@pytest.mark.slow
def test_sampled_answers_in_a_batch_equal_each_input_alone(toy):
    """Each input samples from its own seed, so its samples do not depend on what else is in the batch."""
    tasks = _tasks()
    agent = _agent(toy, "no-gate", samples=2, sample_temperature=1.0)
    batched = agent.respond_batch(tasks)
    alone = [agent.respond(t) for t in tasks]
    assert [r.samples for r in batched] == [r.samples for r in alone] and all(len(r.samples) == 2 for r in batched)
    assert all(r.batch == len(tasks) for r in batched) and sum(r.adapted for r in batched) >= 2
    assert len({tuple(r.samples) for r in batched}) == len(tasks)


@pytest.mark.slow
def test_a_sampled_answer_is_seeded_per_input_and_independent_of_the_batch(toy):
    tasks = _tasks()
    greedy = _agent(toy, "base").respond_batch(tasks)
    hot = _agent(toy, "base", temperature=1.5, top_p=1.0)
    batched = hot.respond_batch(tasks)
    assert [r.raw for r in batched] == [hot.respond(t).raw for t in tasks]  # alone or in company, the same draw
    assert [r.raw for r in batched] != [r.raw for r in greedy]  # and a draw it is
    other = _agent(toy, "base", temperature=1.5, seed=1).respond_batch(tasks)
    assert [r.raw for r in other] != [r.raw for r in batched]


@pytest.mark.slow
def test_every_slot_is_the_base_model_again_after_a_batch(toy_dir):
    reference = HFModel.from_pretrained(str(toy_dir), dtype="float32", device="cpu")  # never adapted
    model = HFModel.from_pretrained(str(toy_dir), dtype="float32", device="cpu")
    base = _logits(reference)
    agent = _agent(model, "no-gate", learn=LearnConfig(lr=1e-2))
    responses = agent.respond_batch(_tasks())
    engine = agent.learner.lora
    assert engine is not None and engine.slots == sum(r.adapted for r in responses) >= 2
    for slot in (None, NO_ADAPTER, *range(engine.slots)):
        with engine.use(None if slot is None else [slot]):
            assert torch.equal(_logits(model), base), slot
    assert torch.equal(_logits(model), base)  # the learner's default slot too
    # not vacuous: slots trained together do move the model, each its own way, until the reset
    pairs = [[(model.chat_prompt([{"role": "user", "content": f"Weather in {c}?"}]), f"call {c}")] for c in
             ("Oslo", "Lima", "Rome")]
    with agent.learner.adapted(pairs, [1, 2, 3]):
        moved = []
        for slot in range(3):
            with engine.use([slot]):
                moved.append(_logits(model))
    assert all(not torch.equal(m, base) for m in moved) and not torch.equal(moved[0], moved[1])
    for slot in range(engine.slots):
        with engine.use([slot]):
            assert torch.equal(_logits(model), base), slot


def _eval(model, tmp_path, batch_size, name, method="no-gate", **config):
    tasks = TOY.load(None, "unseen")[:5]  # per seed: a batch of 3, then one of 2
    agent = AgentConfig(method=method, gate=GateConfig(tau=0.95), max_new_tokens=48, **config)
    run_eval(model, TOY, "unseen", tasks, agent, [0, 1], tmp_path / name, {"test": name}, batch_size=batch_size)
    return read_records(tmp_path / name / "results.jsonl")


@pytest.mark.slow
def test_run_eval_in_batches_writes_the_same_records(toy, tmp_path):
    one = _eval(toy, tmp_path, 1, "one", record_base=True)
    three = _eval(toy, tmp_path, 3, "three", record_base=True)
    assert [(r["id"], r["seed"]) for r in three] == [(r["id"], r["seed"]) for r in one]  # same order
    fields = ("correct", "raw", "prediction", "error", "decision", "adapted", "base_raw", "base_correct", "synthetic")
    for a, b in zip(one, three, strict=True):
        assert {k: a[k] for k in fields} == {k: b[k] for k in fields}, a["id"]
        assert b["train"]["losses"] == pytest.approx(a["train"]["losses"], abs=1e-5)
    assert [r["batch"] for r in one] == [1] * 10 and [r["batch"] for r in three] == [3, 3, 3, 2, 2] * 2
    assert any(r["adapted"] for r in three) and not all(r["adapted"] for r in three)


@pytest.mark.slow
def test_an_oracle_run_in_batches_answers_items_without_gold_with_the_base_model(toy, tmp_path):
    tasks = TOY.load(None, "unseen")[:4]
    tasks[1].answer = None
    agent = AgentConfig(method="oracle", gate=GateConfig(tau=1.0), max_new_tokens=16)
    run_eval(toy, TOY, "unseen", tasks, agent, [0], tmp_path, {"test": "oracle"}, batch_size=4)
    records = read_records(tmp_path / "results.jsonl")
    assert [r["id"] for r in records] == [t.id for t in tasks]
    assert [r["batch"] for r in records] == [3, 1, 3, 3]  # the three with gold went through one batch
    assert not records[1]["adapted"] and records[1]["decision"] == "skip"
    assert records[1]["reason"] == "oracle: the item has no gold answer to train on; base answer"
    assert all(r["adapted"] == (r["decision"] == "adapt") for r in records) and records[0]["adapted"]


@pytest.mark.slow
def test_the_saved_adapter_merges_into_the_same_model(qwen_dir, tmp_path):
    model = HFModel.from_pretrained(str(qwen_dir), dtype="float32", device="cpu")
    fmt_pair = (model.chat_prompt([{"role": "user", "content": "What is the weather in Oslo?"}]),
                '[{"name": "get_weather", "arguments": {"city": "Oslo"}}]')
    learner = Learner(model, LearnConfig(lr=1e-2), seed=4)
    with learner.adapted([[fmt_pair]], [1]), learner.lora.use([0]):
        learner.save(tmp_path / "adapter")
        adapted = _logits(model, "What is the weather in Paris?")
    merged = HFModel.from_pretrained(str(qwen_dir), dtype="float32", device="cpu", adapter=str(tmp_path / "adapter"))
    plain = HFModel.from_pretrained(str(qwen_dir), dtype="float32", device="cpu")
    assert (_logits(merged, "What is the weather in Paris?") - adapted).abs().max().item() < 1e-5
    assert (_logits(plain, "What is the weather in Paris?") - adapted).abs().max().item() > 1e-3  # it did train
    assert not any("lora" in n for n, _ in merged.model.named_parameters())


def test_a_task_without_tools_fails_the_whole_batch_before_any_work(qwen):
    from ttsi.errors import TaskError

    agent = _agent(qwen, "tt-si")
    with pytest.raises(TaskError, match="has no tools"):
        agent.respond_batch([weather_task(), weather_task(id="w-2", tools=[])])
    assert not agent.learner.installed
