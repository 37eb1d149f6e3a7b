"""How lexically easy SealShift's tool choice is: pick the offered tool that shares the most words with the request.

    python scripts/tool_choice_baseline.py [--splits train,ood_train,id,ood]

Words are the lower-cased alphabetic parts of the request and of each tool's camelCase name and description. The
tool with the largest share of its name's words in the request wins, ties broken by its description's share. Prints
how often that is the gold call's function, per split and subset. No model is involved: it says what a model that
reads the request and the tool list at the word level could do on the choice alone.
"""

from __future__ import annotations

import argparse
import re

from ttsi.benchmarks import get_benchmark
from ttsi.benchmarks.sealshift import tally
from ttsi.task import Task, Tool

WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


def words(text: str) -> set[str]:
    return {w.lower() for w in WORD.findall(text)}


def lexical_choice(task: Task) -> Tool:
    request = words(task.query)

    def overlap(tool: Tool) -> tuple[float, float]:
        name, description = words(tool.name), words(tool.description)
        return len(request & name) / max(1, len(name)), len(request & description) / max(1, len(description))

    return max(task.tools, key=overlap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", default="train,ood_train,id,ood", help="comma-separated SealShift splits")
    args = parser.parse_args()
    bench = get_benchmark("sealshift")
    for split in args.splits.split(","):
        counts = tally(bench.load(None, split), lambda t: lexical_choice(t).name == (t.answer or [])[0].name)
        right, n = (sum(c[i] for c in counts.values()) for i in (0, 1))
        parts = ", ".join(f"{s} {k}/{t}" for s, (k, t) in counts.items())
        print(f"{split}: {right}/{n} ({right / n:.1%}) right tool; {parts}")


if __name__ == "__main__":
    main()
