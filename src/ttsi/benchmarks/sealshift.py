"""SealShift: the distribution-shift benchmark shipped with ttsi (derived from Seal-Tools; see ttsi.shift.derive)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ttsi.benchmarks.base import Benchmark, ItemScore, compare_calls, register
from ttsi.formats import AnswerParseError, get_format
from ttsi.shift.derive import load_split
from ttsi.task import Call, Task

_FILES = {"ood": "test_ood", "id": "test_id", "ood_train": "ood_train", "train": "train"}


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
        try:
            predicted = get_format(task.format).parse(output)
        except AnswerParseError as e:
            return ItemScore(False, "parse_error", str(e))
        return compare_calls(_as_text(predicted), _as_text(task.answer or []))

    def subsets(self, task: Task) -> list[str]:
        return [task.meta.get("subset", "templated")]
