"""A plan's cells made concrete: each cell's items, run directory, model, adapter and run.json settings.

Whoever runs a job (this process, a worker process, a Ray actor) gets the same items, settings and batches, so a
cell's records do not depend on where it ran. Everything is loaded and checked here, before anything runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsi.errors import ConfigError, TTSIError
from ttsi.reproduce.plan import Cell, Plan, SFTSpec
from ttsi.task import Task


@dataclass(frozen=True)
class Job:
    """One cell, ready to run: run_eval's arguments."""

    cell: Cell
    model: str
    tasks: tuple[Task, ...]
    out: Path  # the cell's run directory
    settings: dict[str, Any]  # run.json
    adapter: Path | None  # the SFT adapter it evaluates (trained first, see `SFTJob`)
    dtype: str = "auto"
    device: str | None = None


@dataclass(frozen=True)
class SFTJob:
    """An SFT adapter to train before the jobs that read it (cells with the same model and spec share it)."""

    spec: SFTSpec
    model: str
    out: Path  # holds adapter/ and sft.json
    tasks: tuple[Task, ...]  # the labelled split (its first `spec.limit` items)
    dtype: str = "auto"
    device: str | None = None


def make_jobs(plan: Plan, out: Path, model: str | None, data_dir: str | None = None, dtype: str = "auto",
              device: str | None = None) -> tuple[list[SFTJob], list[Job]]:
    """Every cell's job (items loaded), and the SFT adapters to train first; a missing model or data is refused
    here, naming the cell."""
    jobs, sfts = [], {}
    for cell in plan.cells:
        cell_model = cell.model or model
        if cell_model is None:
            raise ConfigError(f"cell {cell.name} names no model: give --model")
        tasks, data_path = cell_tasks(cell, data_dir)
        adapter = None
        if cell.sft is not None:
            key = sft_dir_name(cell.sft, cell_model)
            if key not in sfts:
                labelled = split_tasks(cell.sft.benchmark, cell.sft.split, data_dir, cell.name)[0][: cell.sft.limit]
                sfts[key] = SFTJob(cell.sft, cell_model, out / "adapters" / key, tuple(labelled), dtype, device)
            adapter = out / "adapters" / key / "adapter"
        settings = run_settings(cell, cell_model, len(tasks), data_path, dtype, device, adapter, plan.name)
        jobs.append(Job(cell, cell_model, tuple(tasks), out / cell.name, settings, adapter, dtype, device))
    return list(sfts.values()), jobs


def cell_tasks(cell: Cell, data_dir: str | None) -> tuple[list[Task], str | None]:
    """The cell's items: the split, its first `limit`, or a stratified seeded `sample`; and its data directory."""
    from ttsi.benchmarks import get_benchmark

    tasks, path = split_tasks(cell.benchmark, cell.split, data_dir, cell.name)
    if cell.sample is not None:
        tasks = stratified_sample(tasks, cell.sample, get_benchmark(cell.benchmark).subsets, cell.spec)
    return tasks[: cell.limit], path


def split_tasks(benchmark: str, split: str, data_dir: str | None, cell: str) -> tuple[list[Task], str | None]:
    """A split's tasks and the data directory they came from (None for a benchmark shipped with ttsi)."""
    from ttsi.benchmarks import get_benchmark, resolve_data_dir

    bench = get_benchmark(benchmark)
    try:
        path = resolve_data_dir(data_dir) if bench.needs_data else None
        return bench.load(path, split), str(path) if path else None
    except TTSIError as e:
        raise type(e)(f"cell {cell}: {e}") from None


def stratified_sample(tasks: list[Task], n: int, strata: Any, seed: str) -> list[Task]:
    """`n` items drawn without replacement from each stratum (the item's subsets) in proportion to its size
    (largest remainders), seeded by `seed`; in the split's order. The whole split when n >= its size."""
    if n >= len(tasks):
        return list(tasks)
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, task in enumerate(tasks):
        groups[tuple(strata(task))].append(i)
    keys = sorted(groups)
    quotas = {k: n * len(groups[k]) / len(tasks) for k in keys}
    take = {k: int(q) for k, q in quotas.items()}
    for k in sorted(keys, key=lambda k: (-(quotas[k] - take[k]), k))[: n - sum(take.values())]:
        take[k] += 1
    rng = random.Random(f"sample:{seed}:{n}")
    chosen = sorted(i for k in keys for i in rng.sample(groups[k], take[k]))
    return [tasks[i] for i in chosen]


def sft_dir_name(spec: SFTSpec, model: str) -> str:
    digest = hashlib.sha256(json.dumps([dataclasses.asdict(spec), model], sort_keys=True).encode()).hexdigest()
    return f"sft-{spec.benchmark}-{spec.split}-{digest[:8]}"


def run_settings(cell: Cell, model: str, n: int, data_dir: str | None, dtype: str, device: str | None,
                 adapter: Path | None, plan: str) -> dict[str, Any]:
    """run.json: `ttsi eval`'s settings (EvalSettings) and the cell's own (label, sample, teacher, sft, plan)."""
    from ttsi.benchmarks import get_benchmark
    from ttsi.evaluation.settings import EvalSettings

    settings = EvalSettings(model=model, adapter=str(adapter) if adapter else None, benchmark=cell.benchmark,
                            split=cell.split, limit=cell.limit, n=n, seeds=cell.seeds, taus=cell.taus,
                            agent=cell.agent, batch=cell.batch, data_dir=data_dir, dtype=dtype, device=device,
                            scoring=get_benchmark(cell.benchmark).with_scoring(cell.scoring).scoring)
    return settings.to_dict() | {"label": cell.label, "sample": cell.sample, "teacher": cell.teacher,
                                 "sft": dataclasses.asdict(cell.sft) if cell.sft else None, "plan": plan}
