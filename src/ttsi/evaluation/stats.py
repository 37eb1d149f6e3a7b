"""Small statistics for summaries: mean and spread over seeds, percentiles, and the gate's AUROC."""

from __future__ import annotations

import math


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value), as papers report over seeds."""
    if not values:
        return {"mean": math.nan, "std": math.nan}
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var)}


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def auroc(scores: list[float], positives: list[bool]) -> float:
    """Area under the ROC curve of `scores` ranking positives above negatives (ties count one half).

    NaN when one class is empty: the gate's quality is then undefined, not perfect.
    """
    n_pos = sum(positives)
    n_neg = len(positives) - n_pos
    if not n_pos or not n_neg:
        return math.nan
    order = sorted(range(len(scores)), key=scores.__getitem__)
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks over ties (Mann-Whitney U)
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, p in zip(ranks, positives, strict=True) if p)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def gate_quality(confidences: list[float], base_correct: list[bool], tau: float,
                 flagged: list[bool] | None = None) -> dict[str, float]:
    """How well the gate predicts a base-model error: AUROC of 1 - confidence, TPR and FPR at the operating point
    (`flagged`, the decisions taken; default `confidence < tau`)."""
    wrong = [not c for c in base_correct]
    flagged = [c < tau for c in confidences] if flagged is None else flagged
    n_wrong, n_right = sum(wrong), len(wrong) - sum(wrong)
    tp = sum(f and w for f, w in zip(flagged, wrong, strict=True))
    fp = sum(f and not w for f, w in zip(flagged, wrong, strict=True))
    return {"auroc": auroc([1 - c for c in confidences], wrong), "tau": tau,
            "tpr": tp / n_wrong if n_wrong else math.nan, "fpr": fp / n_right if n_right else math.nan,
            "base_wrong": n_wrong, "base_right": n_right}
