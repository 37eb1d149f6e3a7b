"""The benchmark interface: load the official files into tasks, score a raw output the way the official evaluator does.

Adding a benchmark means adding one module that subclasses `Benchmark` and decorates it with `@register`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ttsi.errors import TaskError
from ttsi.task import Task

# Typed reasons a scorer gives for a miss; benchmarks may add their own, documented next to their scorer.
REASONS = (
    "parse_error",          # the output does not parse in the benchmark's answer format
    "wrong_count",          # a different number of calls than the gold answer
    "wrong_function",       # a call to a function the gold answer does not make
    "missing_argument",     # a required / gold argument is absent
    "unexpected_argument",  # an argument the function or the gold answer does not have
    "wrong_type",           # an argument of the wrong type
    "wrong_value",          # an argument with a value the gold answer does not accept
    "should_abstain",       # a call where no function applies (irrelevance)
    "no_call",              # no call where one was needed (relevance)
)


@dataclass
class ItemScore:
    """How one output fared: correct or not, why not, and counts for micro-averaged official metrics."""

    correct: bool
    reason: str | None = None  # one of REASONS (or a benchmark-specific code) when wrong
    detail: str = ""
    counts: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Benchmark:
    """One benchmark: its splits, its loader and its scorer."""

    name: ClassVar[str]
    splits: ClassVar[tuple[str, ...]]
    default_split: ClassVar[str]
    license: ClassVar[str]
    note: ClassVar[str] = ""  # how the scoring differs from the official evaluator, if it does

    def load(self, data_dir: Path, split: str) -> list[Task]:
        """The split's items as tasks, gold in `task.answer` (canonical calls) and `task.meta["gold"]` (native)."""
        raise NotImplementedError

    def score(self, task: Task, output: str) -> ItemScore:
        """Score one raw model output against the task's gold, as the official evaluator would."""
        raise NotImplementedError

    def subsets(self, task: Task) -> list[str]:
        """The reporting subsets an item belongs to (e.g. easy / difficult / nested, or a domain)."""
        return []

    def metrics(self, tasks: list[Task], scores: list[ItemScore]) -> dict[str, float]:
        """The benchmark's official aggregate figures; by default accuracy (per-item exact)."""
        return {"accuracy": sum(s.correct for s in scores) / len(scores)} if scores else {}


BENCHMARKS: dict[str, Benchmark] = {}


def register(cls: type[Benchmark]) -> type[Benchmark]:
    BENCHMARKS[cls.name] = cls()
    return cls


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """--data-dir, else $TTSI_DATA_DIR; a clear error when neither names a directory."""
    chosen = data_dir or os.environ.get("TTSI_DATA_DIR")
    if not chosen:
        raise TaskError("no data directory: give --data-dir or set TTSI_DATA_DIR (a folder laid out like "
                        "../shared/data: seal_tools/, bfcl_v3/, nexusraven/, api_bank/, toolalpaca/)")
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise TaskError(f"data directory {path} does not exist")
    return path


def read_json(path: Path, expected: str) -> Any:
    """Parse a JSON file; a missing or malformed file names itself and what was expected in it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaskError(f"missing data file {path} (expected {expected})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TaskError(f"malformed data file {path}: {e} (expected {expected})") from None


def read_jsonl(path: Path, expected: str) -> list[Any]:
    """Parse a JSON Lines file, naming the file and line of any malformed row."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise TaskError(f"missing data file {path} (expected {expected})") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise TaskError(f"malformed data file {path}, line {n}: {e.msg} (expected {expected})") from None
    return rows


def require(condition: bool, path: Path, expected: str) -> None:
    """Raise a clear error when a data file's content is not what the loader expects."""
    if not condition:
        raise TaskError(f"malformed data file {path}: expected {expected}")
