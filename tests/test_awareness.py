"""Self-awareness: RSS math by hand, the gate's log-probs against a direct forward pass, tau calibration."""

from __future__ import annotations

import math

import pytest
import torch

from ttsi.awareness import (
    assess,
    entropy_confidence,
    margin,
    perplexity_confidence,
    relative_softmax,
    tau_for_budget,
    tau_from_reference,
)
from ttsi.config import GateConfig
from ttsi.formats import get_format
from ttsi.model import HFModel, Scored
from ttsi.prompts import answer_messages

from .conftest import weather_task


def test_relative_softmax_and_margin_match_hand_computation():
    logprobs = [-1.0, -2.0, -4.0]
    z = math.exp(-1) + math.exp(-2) + math.exp(-4)
    expected = [math.exp(-1) / z, math.exp(-2) / z, math.exp(-4) / z]
    probs = relative_softmax(logprobs)
    assert probs == pytest.approx(expected, abs=1e-12)
    assert margin(probs) == pytest.approx(expected[0] - expected[1], abs=1e-12)  # 0.70538 - 0.25950
    assert margin(probs) == pytest.approx(0.44589, abs=1e-5)


def test_relative_softmax_is_shift_invariant_and_does_not_underflow():
    far = relative_softmax([-1000.0, -1001.0])
    assert far == pytest.approx(relative_softmax([0.0, -1.0]))
    assert sum(far) == pytest.approx(1.0)


def test_margin_orders_by_probability_not_position():
    assert margin([0.1, 0.7, 0.2]) == pytest.approx(0.5)
    assert margin([1.0]) == 1.0  # no rival: fully confident


def test_entropy_and_perplexity_confidences():
    assert entropy_confidence([1 / 3] * 3) == pytest.approx(0.0, abs=1e-12)
    assert entropy_confidence([1.0, 0.0, 0.0]) == pytest.approx(1.0)
    p = [0.5, 0.25, 0.25]
    h = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert entropy_confidence(p) == pytest.approx(1 - h / math.log(3))
    assert perplexity_confidence(Scored(logprob=-3.0, n_tokens=6, token_logprobs=[])) == pytest.approx(
        math.exp(-0.5))


def test_tau_from_reference_matches_linear_percentile():
    values = [0.9, 0.1, 0.5, 0.7, 0.3]
    assert tau_from_reference(values, 0) == 0.1
    assert tau_from_reference(values, 100) == 0.9
    assert tau_from_reference(values, 50) == 0.5
    assert tau_from_reference(values, 10) == pytest.approx(0.1 + 0.4 * 0.2)  # numpy 'linear' percentile
    with pytest.raises(ValueError, match="need at least one reference confidence"):
        tau_from_reference([], 5)
    with pytest.raises(ValueError, match=r"percentile must be in \[0, 100\], got 101"):
        tau_from_reference(values, 101)


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_tau_for_budget_flags_the_requested_fraction(fraction):
    values = [i / 10 for i in range(10)]  # distinct: the budget is met exactly
    tau = tau_for_budget(values, fraction)
    assert 0 <= tau <= 1
    assert sum(v < tau for v in values) == round(fraction * len(values))


def test_tau_for_budget_never_exceeds_budget_with_ties():
    values = [0.5] * 6 + [0.9] * 4
    tau = tau_for_budget(values, 0.3)
    assert tau == 0.5 and sum(v < tau for v in values) == 0  # 3 of the six tied 0.5s cannot be flagged alone
    values = [0.1] + [0.5] * 6 + [0.9] * 3
    tau = tau_for_budget(values, 0.3)
    assert tau == 0.5 and sum(v < tau for v in values) == 1  # the one below the tie, and none of the tie
    assert tau_for_budget([0.2, 0.9], 1.0) == math.nextafter(0.9, math.inf)  # everything: just above the largest
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\], got 1.5"):
        tau_for_budget(values, 1.5)


def _direct_logprob(model, prompt: str, continuation: str) -> float:
    """log P(continuation | prompt) from one unpadded forward pass over the concatenated ids."""
    p, c = model.encode(prompt), model.encode(continuation)
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logits = model.model(input_ids=ids).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(float(logprobs[len(p) + i - 1, tok]) for i, tok in enumerate(c))


@pytest.mark.parametrize("arch_dir", ["qwen_dir", "llama_dir"])
@pytest.mark.parametrize("normalize", ["sum", "mean"])
def test_gate_logprobs_equal_a_direct_forward_pass(request, arch_dir, normalize):
    model = HFModel.from_pretrained(str(request.getfixturevalue(arch_dir)), dtype="float32")
    task, fmt = weather_task(), get_format("json")
    prompt = model.chat_prompt(answer_messages(task, fmt))
    u = assess(model, prompt, task.tools, fmt, GateConfig(normalize=normalize))
    assert u.continuations == [fmt.name_prefix(t.name, task.tools) for t in task.tools]
    for name, cont, lp, n in zip(u.candidates, u.continuations, u.logprobs, u.n_tokens, strict=True):
        direct = _direct_logprob(model, prompt, cont)
        expected = direct / n if normalize == "mean" else direct
        assert lp == pytest.approx(expected, abs=1e-4), name
    assert u.probs == pytest.approx(relative_softmax(u.logprobs))
    assert u.margin == pytest.approx(margin(u.probs))
    assert u.uncertain == (u.confidence < u.tau)


def test_gate_decision_follows_tau(qwen):
    task, fmt = weather_task(), get_format("json")
    prompt = qwen.chat_prompt(answer_messages(task, fmt))
    u = assess(qwen, prompt, task.tools, fmt, GateConfig(tau=1.0))
    assert u.tau == 1.0 and u.confidence == u.margin < 1.0 and u.uncertain
    assert not assess(qwen, prompt, task.tools, fmt, GateConfig(tau=0.0)).uncertain
    # the boundary: uncertain iff margin < tau, so a tau equal to the margin is confident, one just above is not
    assert not assess(qwen, prompt, task.tools, fmt, GateConfig(tau=u.margin)).uncertain
    assert assess(qwen, prompt, task.tools, fmt, GateConfig(tau=math.nextafter(u.margin, 1.0))).uncertain


def test_call_candidates_are_complete_first_calls_scored_after_the_prompt(toy):
    task, fmt = weather_task(), get_format("json")
    prompt = toy.chat_prompt(answer_messages(task, fmt))
    u = assess(toy, prompt, task.tools, fmt, GateConfig(candidates="call"))
    for name, cont in zip(u.candidates, u.continuations, strict=True):
        assert cont.startswith(fmt.name_prefix(name, task.tools))
    # the trained toy model closes its calls, so each candidate parses as a call to its own function
    closed = [c for c in u.continuations if fmt.first_call(c) == c]
    assert closed, u.continuations
    for cont in closed:
        assert fmt.parse(cont + "]")[0].name in u.candidates
    for cont, lp in zip(u.continuations, u.logprobs, strict=True):
        assert lp == pytest.approx(_direct_logprob(toy, prompt, cont), abs=1e-3)


def test_candidates_end_on_a_token_boundary_of_the_answer(tokenizer):
    """A candidate's tokens are exactly the first tokens of any answer that starts with it (Qwen2 pre-tokenizer)."""
    from ttsi.task import Call
    from ttsi.toy import TOOLS

    fmt = get_format("json")

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    follow = Call("get_weather", {"city": "Oslo"})
    for name, tool in TOOLS.items():
        args = {k: "Lima" if v["type"] == "string" else 7 for k, v in tool.properties.items()}
        for answer in ([Call(name, args)], [Call(name, args), follow]):
            text = fmt.render(answer)
            for candidate in (fmt.name_prefix(name, list(TOOLS.values())), fmt.first_call(text)):
                assert text.startswith(candidate)
                assert ids(text)[: len(ids(candidate))] == ids(candidate), (candidate, text)
