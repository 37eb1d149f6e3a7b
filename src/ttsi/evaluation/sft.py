"""`ttsi sft`: the supervised baseline, LoRA on a labelled split with TT-SI's LoRA settings, and its sample count."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ttsi.benchmarks import Benchmark
from ttsi.config import LearnConfig
from ttsi.errors import TaskError
from ttsi.formats import get_format
from ttsi.learn import Learner
from ttsi.model import HFModel
from ttsi.prompts import answer_prompt
from ttsi.provenance import git_commit, versions
from ttsi.task import Task


def train_sft(model: HFModel, bench: Benchmark, split: str, tasks: list[Task], learn: LearnConfig, out: Path,
              seed: int = 0, settings: dict[str, Any] | None = None,
              console: Console | None = None) -> dict[str, Any]:
    """Train one adapter on every labelled item and save it (PEFT format) with a record of what it used: the gold
    calls, or a free-form item's first accepted answer (a math item's worked solution)."""
    labelled = [t for t in tasks if t.labelled]
    if not labelled:
        raise TaskError(f"{bench.name}:{split} has no labelled items to train on")
    examples = []
    for t in labelled:
        fmt = get_format(t.format)
        examples.append((answer_prompt(model, t, fmt), fmt.render(t.gold_answer or [], t.tools)))
    learner = Learner(model, learn, seed=seed)
    columns = [TextColumn(f"sft {bench.name}:{split}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.3f}"), TimeRemainingColumn()]
    with Progress(*columns, console=console or Console(stderr=True)) as bar:
        job = bar.add_task("sft", total=learn.epochs * -(-len(examples) // learn.batch_size), loss=float("nan"))
        def progress(step: int, losses: dict[int, float]) -> None:
            bar.update(job, completed=step + 1, loss=losses[0])

        out.mkdir(parents=True, exist_ok=True)
        try:
            with learner.adapted([examples], [seed], progress) as (log,):
                learner.save(out / "adapter")
        finally:
            learner.close()
    record = {"benchmark": bench.name, "split": split, "samples": len(labelled), "skipped_unlabelled":
              len(tasks) - len(labelled), "steps": log.steps, "final_loss": log.losses[-1], "losses": log.losses,
              "learn": dataclasses.asdict(learn), "seed": seed, "versions": versions(), "git_commit": git_commit(),
              **(settings or {})}
    (out / "sft.json").write_text(json.dumps(record, indent=2))
    return record
