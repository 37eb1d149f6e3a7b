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

from ttsi.benchmarks import get_benchmark
from ttsi.benchmarks.sealshift import tally, value_text
from ttsi.task import Task


def copyable(task: Task) -> bool:
    """Every argument value of every gold call appears in the request text (case-insensitive)."""
    request = task.query.lower()
    return all(value_text(v).lower() in request for call in task.answer or [] for v in call.arguments.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", default="train,ood_train,id,ood", help="comma-separated SealShift splits")
    args = parser.parse_args()
    bench = get_benchmark("sealshift")
    for split in args.splits.split(","):
        counts = tally(bench.load(None, split), copyable)
        ok, n = (sum(c[i] for c in counts.values()) for i in (0, 1))
        parts = ", ".join(f"{s} {k}/{t} ({t / n:.0%} of the split)" for s, (k, t) in counts.items())
        print(f"{split}: {ok}/{n} ({ok / n:.1%}) copyable; {parts}")


if __name__ == "__main__":
    main()
