"""Self-awareness: score the candidate actions, measure confidence, and flag the input when it is below tau.

Relative Softmax Scoring (the paper): l_n = log P(a_n | x) over the N candidate actions, p = softmax(l),
margin u = p(1) - p(2), uncertain iff u < tau. Two other confidences sit behind the same interface so the gate
can be compared: 1 - normalised predictive entropy over the candidates, and the top candidate's geometric-mean
token probability (1 / perplexity). All three lie in [0, 1]; larger means more confident.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ttsi.config import GateConfig
from ttsi.engine.cache import PrefixCache
from ttsi.formats import AnswerFormat
from ttsi.measures import entropy_confidence, margin, relative_softmax
from ttsi.model import HFModel, Scored
from ttsi.task import Tool
from ttsi.token_gate import TokenProfile, token_verdict


@dataclass
class Uncertainty:
    """Everything the gate computed for one input: enough to recompute its decision by hand."""

    candidates: list[str]  # function names, in the task's tool order
    continuations: list[str]  # the exact text scored after the prompt for each candidate
    logprobs: list[float]  # l_n, summed or length-normalised per the config
    n_tokens: list[int]
    probs: list[float]  # softmax(l)
    margin: float  # p(1) - p(2)
    measure: str
    confidence: float  # the number compared with tau
    tau: float
    uncertain: bool
    tokens: dict[str, Any] | None = None  # measure "token": the TokenVerdict (positions, unsure tokens, measures)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def perplexity_confidence(scored: Scored) -> float:
    """exp(mean token log-prob) of a continuation = 1 / perplexity."""
    return math.exp(scored.logprob / scored.n_tokens)


def confidence_of(measure: str, probs: list[float], top: Scored) -> float:
    if measure == "margin":
        return margin(probs)
    if measure == "entropy":
        return entropy_confidence(probs)
    return perplexity_confidence(top)


def name_prefixes(tools: list[Tool], fmt: AnswerFormat) -> list[str]:
    """The answer prefix naming each function: the candidates (or, with `candidates == "call"`, their start)."""
    return [fmt.name_prefix(t.name, tools) for t in tools]


def candidate_actions(model: HFModel, prompts: list[str], tool_lists: list[list[Tool]], fmts: list[AnswerFormat],
                      config: GateConfig) -> list[list[str]]:
    """The continuations scored for each prompt's functions: the prefix naming each, or its greedy first call.

    With `candidates == "call"`, every prompt's every prefix is completed in one batched greedy generation.
    """
    prefixes = [name_prefixes(tools, fmt) for tools, fmt in zip(tool_lists, fmts, strict=True)]
    if config.candidates == "name":
        return prefixes
    flat = [prompt + p for prompt, ps in zip(prompts, prefixes, strict=True) for p in ps]
    completions = iter(model.generate(flat, max_new_tokens=config.call_max_new_tokens))
    return [[fmt.first_call(p + c) or p + c for p, c in zip(ps, completions, strict=False)]
            for ps, fmt in zip(prefixes, fmts, strict=True)]


def uncertainty_of(tools: list[Tool], continuations: list[str], scored: list[Scored],
                   config: GateConfig) -> Uncertainty:
    """The gate's verdict on one input from its candidates' scores: RSS probabilities, margin, confidence."""
    logprobs = [s.logprob / s.n_tokens if config.normalize == "mean" else s.logprob for s in scored]
    probs = relative_softmax(logprobs)
    top = max(range(len(probs)), key=probs.__getitem__)
    confidence = confidence_of(config.measure, probs, scored[top])
    return Uncertainty(candidates=[t.name for t in tools], continuations=continuations, logprobs=logprobs,
                       n_tokens=[s.n_tokens for s in scored], probs=probs, margin=margin(probs),
                       measure=config.measure, confidence=confidence, tau=config.tau,
                       uncertain=confidence < config.tau)


def assess_many(model: HFModel, prompts: list[str], tool_lists: list[list[Tool]], fmts: list[AnswerFormat],
                config: GateConfig, keep_cache: bool = False) -> tuple[list[Uncertainty], list[PrefixCache] | None]:
    """Run the gate on several prompts at once (all candidates of all prompts scored together).

    With `keep_cache`, each prompt's KV cache comes back too, so an input answered by the base model is not
    run through the model again.
    """
    continuations = candidate_actions(model, prompts, tool_lists, fmts, config)
    scored, caches = model.score_many(prompts, continuations, keep_cache=keep_cache)
    verdicts = [uncertainty_of(tools, conts, s, config)
                for tools, conts, s in zip(tool_lists, continuations, scored, strict=True)]
    return verdicts, caches


def assess_tokens(model: HFModel, prompts: list[str], profile: TokenProfile, config: GateConfig,
                  max_new_tokens: int) -> tuple[list[Uncertainty], list[str]]:
    """The token gate on several prompts: their greedy answers (one batched generation, the base model) and each
    answer's verdict against the reference profile. The answers are what the agent gives when it does not adapt.

    confidence = 1 - the share of positions less sure than the reference; uncertain when at least
    `token_count` positions (or the share `token_share`) are.
    """
    from ttsi.engine.decode import StepStats

    stats = StepStats()
    answers = model.generate(prompts, max_new_tokens=max_new_tokens, stats=stats)
    assert stats.tokens is not None
    verdicts = []
    for row, ids in zip(stats.rows(), stats.tokens, strict=True):
        v = token_verdict(row, lambda i, ids=ids: model.tokenizer.decode([ids[i]]), profile, config.token_stat,
                          config.token_percentile)
        uncertain = (v.flagged >= config.token_count if config.token_count is not None
                     else v.positions > 0 and v.share >= (config.token_share or 0))
        verdicts.append(Uncertainty(candidates=[], continuations=[], logprobs=[], n_tokens=[], probs=[],
                                    margin=1.0 - v.share, measure="token", confidence=1.0 - v.share, tau=config.tau,
                                    uncertain=uncertain, tokens=v.to_dict()))
    return verdicts, answers


def assess(model: HFModel, prompt: str, tools: list[Tool], fmt: AnswerFormat, config: GateConfig) -> Uncertainty:
    """Run the gate on one prompt whose candidate actions are calls to `tools`."""
    return assess_many(model, [prompt], [tools], [fmt], config)[0][0]


# ---- choosing tau ---------------------------------------------------------------------------------------------

def tau_from_reference(confidences: list[float], percentile: float = 5.0) -> float:
    """tau at the given percentile of confidence on known-good inputs: flags what looks less sure than them."""
    if not confidences:
        raise ValueError("need at least one reference confidence")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    values = sorted(confidences)
    pos = (len(values) - 1) * percentile / 100  # linear interpolation, as numpy's default
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def tau_for_budget(confidences: list[float], fraction: float) -> float:
    """The tau that flags (at most) `fraction` of these inputs: uncertain iff confidence < tau.

    Ties at the threshold are all left confident, so the flagged share can fall below the target, never above.
    """
    if not confidences:
        raise ValueError("need at least one confidence")
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    values = sorted(confidences)
    k = round(fraction * len(values))
    if k >= len(values):  # everything: just above the largest (tau stays within [0, 1])
        return min(1.0, math.nextafter(values[-1], math.inf))
    return values[k]
