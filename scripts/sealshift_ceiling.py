"""What SealShift's exact call match allows a model that copies values: requests whose gold values it contains.

    python scripts/sealshift_ceiling.py [--splits train,ood_train,id,ood]

A gold call can be written from the prompt alone when every argument value appears in the request (compared as
text, case-insensitively, as the scorer compares values as text). Some real Seal-Tools queries name values the
request never states ("the lift coefficient using the given airspeed, density, and wing area", gold airspeed
"10.9"): no model answers those but by guessing. Prints, per split and subset, how many requests are copyable,
so a split's reachable accuracy, and what each subset's share of the split is.
"""

from __future__ import annotations

import argparse
from collections import Counter

from ttsi.benchmarks import get_benchmark
from ttsi.task import Task


def copyable(task: Task) -> bool:
    """Every argument value of every gold call appears in the request text (case-insensitive)."""
    request = task.query.lower()
    return all(_text(v).lower() in request for call in task.answer or [] for v in call.arguments.values())


def _text(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", default="train,ood_train,id,ood", help="comma-separated SealShift splits")
    args = parser.parse_args()
    bench = get_benchmark("sealshift")
    for split in args.splits.split(","):
        ok, total = Counter(), Counter()
        for task in bench.load(None, split):
            subset = task.meta.get("subset", "?")
            total[subset] += 1
            ok[subset] += copyable(task)
        n = sum(total.values())
        parts = ", ".join(f"{s} {ok[s]}/{total[s]} ({total[s] / n:.0%} of the split)" for s in sorted(total))
        print(f"{split}: {sum(ok.values())}/{n} ({sum(ok.values()) / n:.1%}) copyable; {parts}")


if __name__ == "__main__":
    main()
