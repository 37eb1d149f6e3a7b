"""Is a method's difference from the base model real? Paired statistics on the same items and seeds.

Every comparison pairs each (seed, item) outcome of a method with the base model's outcome on the same item:

- the difference in accuracy, with a paired bootstrap 95% confidence interval. Items are resampled with all of
  their seeds together (the item is the unit that was sampled from the benchmark; seeds repeat it), `BOOTSTRAP`
  times from a fixed seed, and the interval is the 2.5th to 97.5th percentile of the resampled differences;
- the fixed (method right, base wrong) and broken (base right, method wrong) counts, with the exact two-sided sign
  test on them (under no effect each changed outcome is fixed or broken with probability 1/2);
- the difference on each seed, and its mean and spread over seeds.

A method "helps" only when the whole interval lies above 0 and "hurts" when it lies below; otherwise the data do not
show a difference (`verdict`). Pure Python, seeded: the same records always give the same interval.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any

from ttsi.evaluation.stats import mean_std, percentile

BOOTSTRAP = 10_000
LEVEL = 95.0


def sign_test(fixed: int, broken: int) -> float:
    """Exact two-sided sign test: P(a split at least this uneven) when fixed and broken are equally likely."""
    n = fixed + broken
    if n == 0:
        return 1.0
    k = min(fixed, broken)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_difference(pairs: list[tuple[int, str, bool, bool]], resamples: int = BOOTSTRAP,
                      seed: int = 0) -> dict[str, Any]:
    """Method minus base from (seed, item id, method correct, base correct) pairs.

    Returns the difference in accuracy, its bootstrap CI (`ci_low`, `ci_high`), fixed / broken counts, the sign
    test's p, per-seed differences, and the verdict ("helps", "hurts" or "no difference shown").
    """
    if not pairs:
        raise ValueError("no paired outcomes to compare")
    by_item: dict[str, list[int]] = defaultdict(list)  # item -> per-pair differences (+1 fixed, -1 broken, 0)
    by_seed: dict[int, list[int]] = defaultdict(list)
    for seed_, item, method, base in pairs:
        d = int(method) - int(base)
        by_item[item].append(d)
        by_seed[seed_].append(d)
    items = list(by_item.values())
    sums, counts = [sum(v) for v in items], [len(v) for v in items]
    n = len(pairs)
    diff = sum(sums) / n
    rng = random.Random(seed)
    index = range(len(items))
    draws = []
    for _ in range(resamples):
        picked = rng.choices(index, k=len(items))
        draws.append(sum(sums[i] for i in picked) / sum(counts[i] for i in picked))
    low, high = percentile(draws, (100 - LEVEL) / 2), percentile(draws, 100 - (100 - LEVEL) / 2)
    fixed = sum(d == 1 for v in items for d in v)
    broken = sum(d == -1 for v in items for d in v)
    per_seed = {s: sum(v) / len(v) for s, v in sorted(by_seed.items())}
    verdict = "helps" if low > 0 else "hurts" if high < 0 else "no difference shown"
    return {"difference": diff, "ci_low": low, "ci_high": high, "level": LEVEL, "resamples": resamples,
            "pairs": n, "items": len(items), "fixed": fixed, "broken": broken, "sign_test_p": sign_test(fixed, broken),
            "per_seed": per_seed, "seeds": mean_std(list(per_seed.values())), "verdict": verdict}


def base_outcome(record: dict[str, Any]) -> bool | None:
    """The base model's verdict on a record's item: recorded for adapted inputs, the answer itself for inputs the
    base model answered; None when unknown (an adapted input of a run without base answers)."""
    if record.get("base_correct") is not None:
        return bool(record["base_correct"])
    if not record.get("adapted"):
        return bool(record["correct"])
    return None


def within_run(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A run against the base answers it recorded itself (`ttsi eval` records them by default); None when the run
    is the base model's, or some adapted input has no base answer."""
    if not records or records[0].get("method") == "base":
        return None
    outcomes = [base_outcome(r) for r in records]
    if any(o is None for o in outcomes):
        return None
    return paired_difference([(r["seed"], r["id"], bool(r["correct"]), bool(o))
                              for r, o in zip(records, outcomes, strict=True)])


def across_runs(method: list[dict[str, Any]], base: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A method's run against a base run on the same items: paired on (seed, item), or on the item alone when the
    base run has a single seed (a greedy base answers every seed alike). None when no item is shared."""
    base_seeds = {r["seed"] for r in base}
    one_seed = len(base_seeds) == 1
    by_key = {(None if one_seed else r["seed"], r["id"]): bool(r["correct"]) for r in base}
    pairs = [(r["seed"], r["id"], bool(r["correct"]), by_key[k]) for r in method
             if (k := (None if one_seed else r["seed"], r["id"])) in by_key]
    return paired_difference(pairs) if pairs else None


def describe(c: dict[str, Any]) -> str:
    """One line a reader can act on: the difference, its CI and what it means."""
    return (f"{100 * c['difference']:+.1f} points (95% CI {100 * c['ci_low']:+.1f} to {100 * c['ci_high']:+.1f}; "
            f"fixed {c['fixed']}, broken {c['broken']}, sign test p = {c['sign_test_p']:.3g}): {c['verdict']}")
