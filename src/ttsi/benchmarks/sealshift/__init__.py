"""SealShift: the distribution-shift benchmark shipped with ttsi: its shipped splits, their loader and its scorer.

The splits are derived from Seal-Tools by `ttsi.sealshift.derive` (`scripts/derive_sealshift.py`) and shipped in
`ttsi/data/sealshift/` (`SPLITS_DIR`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ttsi.benchmarks.base import Benchmark, ItemScore, exact_match, register
from ttsi.errors import TaskError
from ttsi.task import Call, Task, Tool

SPLITS_DIR = Path(__file__).resolve().parents[2] / "data" / "sealshift"
_FILES = {"ood": "test_ood", "id": "test_id", "ood_train": "ood_train", "train": "train"}


def load_split(split: str, data: Path = SPLITS_DIR) -> list[Task]:
    """The tasks of one shipped split (a file stem: `train`, `test_id`, ...), tools resolved from `tools.jsonl`."""
    path = data / f"{split}.jsonl"
    if not path.is_file():
        raise TaskError(f"SealShift split {split!r} not found at {path}; re-derive with scripts/derive_sealshift.py")
    schemas = {}
    for line in (data / "tools.jsonl").read_text().splitlines():
        f = json.loads(line)
        schemas[f["name"]] = Tool(f["name"], f["description"], f["parameters"])
    tasks = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        tasks.append(Task(id=r["id"], messages=[{"role": "user", "content": r["query"]}],
                          tools=[schemas[n] for n in r["tools"]], format="json", meta=r["meta"],
                          answer=[Call(c["name"], c["arguments"]) for c in r["answer"]]))
    return tasks


def tool_names(tasks: Iterable[Task]) -> set[str]:
    """Every tool a split shows the model: gold tools and distractors."""
    return {tool.name for t in tasks for tool in t.tools}


def _as_text(calls: list[Call]) -> list[Call]:
    """Values compared as str(), as Seal-Tools' own scorer does ("16" and 16 agree; real golds are strings)."""
    return [Call(c.name, {k: value_text(v) for k, v in c.arguments.items()}) for c in calls]


def value_text(value: Any) -> str:
    """An argument value as the scorer compares it."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def tally(tasks: Iterable[Task], hit: Callable[[Task], bool]) -> dict[str, tuple[int, int]]:
    """Per subset (`templated`, `real`), sorted by name: how many tasks `hit` holds for, and how many there are."""
    counts: dict[str, list[int]] = {}
    for task in tasks:
        c = counts.setdefault(task.meta.get("subset", "templated"), [0, 0])
        c[0] += bool(hit(task))
        c[1] += 1
    return {subset: (c[0], c[1]) for subset, c in sorted(counts.items())}


@register
class SealShift(Benchmark):
    """Out-of-domain tools (`ood`), in-domain control (`id`), and the labelled splits `ood_train` and `train`."""

    name = "sealshift"
    splits = tuple(_FILES)
    default_split = "ood"
    license = "Apache-2.0 (derived from Seal-Tools, shipped with ttsi)"
    note = "exact call match, values compared as text like Seal-Tools; derived benchmark, see ttsi/data/sealshift"
    needs_data = False

    def load(self, data_dir: Path | None, split: str) -> list[Task]:
        return load_split(_FILES[split])

    def score(self, task: Task, output: str) -> ItemScore:
        return exact_match(task, output, _as_text)

    def subsets(self, task: Task) -> list[str]:
        return [task.meta.get("subset", "templated")]
