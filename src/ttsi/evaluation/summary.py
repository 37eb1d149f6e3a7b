"""summary.json: every figure of a run, computed from its per-item records and nothing else."""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from typing import Any

from ttsi import jsonio
from ttsi.benchmarks import Benchmark, ItemScore
from ttsi.evaluation.compare import within_run
from ttsi.evaluation.stats import auroc, gate_quality, mean_std, percentile
from ttsi.measures import entropy_confidence, margin
from ttsi.provenance import git_commit, versions
from ttsi.task import Task
from ttsi.trace import STAGES


def summarize(records: list[dict[str, Any]], bench: Benchmark, split: str, taus: list[float],
              tasks: list[Task] | None = None) -> dict[str, Any]:
    by_seed: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_seed[r["seed"]].append(r)
    seeds = sorted(by_seed)
    per_seed = {s: _rate(rs, "correct") for s, rs in by_seed.items()}
    adapted = [r for r in records if r["adapted"]]
    out: dict[str, Any] = {
        "benchmark": bench.name, "split": split, "method": records[0]["method"] if records else None,
        "n": len(by_seed[seeds[0]]) if seeds else 0, "seeds": seeds, "records": len(records),
        "accuracy": mean_std([per_seed[s] for s in seeds]) | {"per_seed": [per_seed[s] for s in seeds]},
        "metrics": _metrics(bench, by_seed, {t.id: t for t in tasks or []}),
        "subsets": _subsets(records, seeds),
        "adapted": {"per_seed": mean_std([sum(r["adapted"] for r in by_seed[s]) for s in seeds]),
                    "fraction": len(adapted) / len(records) if records else 0.0},
        "flagged_fraction": _rate([r for r in records if r["gate"]], "gate", lambda g: g["uncertain"]),
        "synthetic_used": mean_std([sum(len(r["synthetic"]) for r in by_seed[s] if r["adapted"]) for s in seeds]),
        "errors": dict(Counter(r["error"] for r in records if not r["correct"]).most_common()),
        "latency_s": {stage: _p50_p95([r["timings"][stage] for r in records]) for stage in STAGES},
        "extra_s_per_adapted": _p50_p95([r["timings"]["synthesize_s"] + r["timings"]["train_s"]
                                         + r["timings"]["reset_s"] for r in adapted]),
        "note": bench.note,
        "versions": versions(), "git_commit": git_commit(), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if any(r["samples_correct"] for r in records):
        k = len(records[0]["samples_correct"])
        out["majority"] = mean_std([_rate(by_seed[s], "majority_correct") for s in seeds])
        out[f"pass@{k}"] = mean_std([_rate(by_seed[s], "pass_correct") for s in seeds])
    known = [r for r in records if r["gate"] and r["base_correct"] is not None]
    if known:
        out["gate"] = gate_quality([r["gate"]["confidence"] for r in known], [r["base_correct"] for r in known],
                                   taus[-1], [r["gate"]["uncertain"] for r in known]) | {
            "measure": known[0]["gate"]["measure"], "n": len(known)}
        out["gate_measures"] = _gate_measures(known)
        base_known = [r for r in adapted if r["base_correct"] is not None]
        out["adapted_effect"] = {"fixed": sum(r["correct"] and not r["base_correct"] for r in base_known),
                                 "broken": sum(r["base_correct"] and not r["correct"] for r in base_known),
                                 "n": len(base_known)}
    vs_base = within_run(records)
    if vs_base is not None:  # the run against the base answers it recorded: CI, fixed / broken, sign test
        out["vs_base"] = vs_base
    if len(taus) > 1:
        out["by_tau"] = [_at_tau(by_seed, seeds, tau) for tau in taus]
    return out


def _gate_measures(known: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """AUROC against base errors of every confidence the records carry, side by side: the candidate measures
    (RSS margin, entropy over the candidates, the top candidate's 1 / perplexity) where candidates were scored, the
    token measures (1 - unsure share, mean token log-prob, minimum token probability, mean entropy) where the
    token gate ran."""
    wrong = [not r["base_correct"] for r in known]
    columns: dict[str, list[float]] = {}
    for name, pick in _MEASURES.items():
        values = [pick(r["gate"]) for r in known]
        if all(v is not None for v in values):
            columns[name] = values
    return {name: {"auroc": auroc([1 - v for v in values], wrong), "n": len(values)}
            for name, values in columns.items()}


def _candidate(g: dict[str, Any], measure: str) -> float | None:
    if not g.get("probs"):
        return None
    probs, top = g["probs"], max(range(len(g["probs"])), key=g["probs"].__getitem__)
    if measure == "margin":
        return margin(probs)
    if measure == "entropy":
        return entropy_confidence(probs)
    return math.exp(g["logprobs"][top] / g["n_tokens"][top]) if g["n_tokens"][top] else None


_MEASURES: dict[str, Any] = {
    "rss_margin": lambda g: _candidate(g, "margin"),
    "rss_entropy": lambda g: _candidate(g, "entropy"),
    "rss_perplexity": lambda g: _candidate(g, "perplexity"),
    "token_share": lambda g: 1 - g["tokens"]["share"] if g.get("tokens") else None,
    "mean_token_logprob": lambda g: g["tokens"]["measures"]["mean_logprob"] if g.get("tokens") else None,
    "min_token_prob": lambda g: g["tokens"]["measures"]["min_prob"] if g.get("tokens") else None,
    "mean_token_entropy": lambda g: g["tokens"]["measures"]["mean_entropy"] if g.get("tokens") else None,
}


def _rate(records: list[dict[str, Any]], key: str, pick: Any = bool) -> float:
    return sum(bool(pick(r[key])) for r in records) / len(records) if records else float("nan")


def _p50_p95(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "n": len(values)}


def _metrics(bench: Benchmark, by_seed: dict[int, list[dict[str, Any]]],
             tasks: dict[str, Task]) -> dict[str, dict[str, float]]:
    """The benchmark's official aggregates, computed per seed from the stored per-item scores, then averaged."""
    per_seed = [bench.metrics([tasks[r["id"]] for r in rs if r["id"] in tasks],
                              [ItemScore(r["correct"], r["error"], r["error_detail"], r["counts"]) for r in rs])
                for rs in by_seed.values()]
    keys = per_seed[0].keys() if per_seed else []
    return {k: mean_std([m[k] for m in per_seed]) for k in keys}


def _subsets(records: list[dict[str, Any]], seeds: list[int]) -> dict[str, dict[str, Any]]:
    names = sorted({name for r in records for name in r["subsets"]})
    out = {}
    for name in names:
        group = [r for r in records if name in r["subsets"]]
        out[name] = {"n": len(group) // max(1, len(seeds)),
                     "accuracy": mean_std([_rate([r for r in group if r["seed"] == s], "correct") for s in seeds])}
    return out


def _at_tau(by_seed: dict[int, list[dict[str, Any]]], seeds: list[int], tau: float) -> dict[str, Any]:
    """Accuracy had the run adapted only below `tau`: adapted answers there, base answers elsewhere."""
    accs, fractions = [], []
    for s in seeds:
        rows = [r for r in by_seed[s] if r["base_correct"] is not None or r["decision"] == "skip"]
        below = [r["gate"] is not None and r["gate"]["confidence"] < tau for r in rows]
        hits = [r["correct"] if b else (r["base_correct"] if r["base_correct"] is not None else r["correct"])
                for r, b in zip(rows, below, strict=True)]
        accs.append(sum(hits) / len(rows) if rows else float("nan"))
        fractions.append(sum(b and r["adapted"] for r, b in zip(rows, below, strict=True)) / max(1, len(rows)))
    return {"tau": tau, "accuracy": mean_std(accs), "adapted_fraction": mean_std(fractions)}


def to_json(summary: dict[str, Any]) -> str:
    """Strict JSON: undefined figures (NaN, e.g. an AUROC with one class empty) are written as null."""
    return jsonio.dumps(summary, indent=2)
