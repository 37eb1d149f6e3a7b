"""The gate's confidences over candidate actions, as plain functions of their probabilities (no torch: the
summaries recompute them from records)."""

from __future__ import annotations

import math


def relative_softmax(logprobs: list[float]) -> list[float]:
    """softmax over candidates, shifted by the max so very negative log-probs do not underflow."""
    top = max(logprobs)
    exps = [math.exp(lp - top) for lp in logprobs]
    total = sum(exps)
    return [e / total for e in exps]


def margin(probs: list[float]) -> float:
    """p(1) - p(2); with a single candidate there is no rival, so the margin is 1."""
    if len(probs) < 2:
        return 1.0
    first, second = sorted(probs, reverse=True)[:2]
    return first - second


def entropy_confidence(probs: list[float]) -> float:
    """1 - H(p) / log N: 1 for a one-hot distribution, 0 for a uniform one."""
    if len(probs) < 2:
        return 1.0
    entropy = -sum(p * math.log(p) for p in probs if p > 0)
    return max(0.0, 1.0 - entropy / math.log(len(probs)))
