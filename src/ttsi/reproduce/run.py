"""Run a plan: every cell's job, locally or on Ray, then one report (the paper-style tables, `ttsi report`'s
report.md and plots). `dry_run` lists the cells and their cost instead."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from ttsi.errors import TTSIError
from ttsi.reproduce.cost import NOMINAL, Nominal, cell_cost, per_item
from ttsi.reproduce.jobs import Job, cell_tasks, make_jobs, split_tasks
from ttsi.reproduce.plan import Plan
from ttsi.reproduce.table import markdown, print_grids


def run_plan(plan: Plan, out: Path, model: str | None = None, resume: bool = False, workers: int = 1,
             ray: str | None = None, console: Console | None = None, data_dir: str | None = None,
             dtype: str = "auto", device: str | None = None) -> dict[str, dict[str, Any]]:
    """Run every cell into out/<cell>/ (out/adapters/ for SFT), print the tables, write out/table.md and the
    report in out/report/. `ray`: None runs locally; else a Ray address ("local": start a local cluster)."""
    console = console or Console()
    start = time.perf_counter()
    sft_jobs, jobs = make_jobs(plan, out, model, data_dir, dtype, device)
    from ttsi.reproduce.execute import check_teacher

    endpoints = [j for j in jobs if j.cell.agent.uses_teacher and j.cell.teacher is None]
    for job in {json.dumps(dataclasses.asdict(j.cell.agent.teacher), sort_keys=True): j for j in endpoints}.values():
        check_teacher(job)  # an unreachable endpoint teacher fails now, not after hours of other cells
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(plan_record(plan), indent=2))
    if ray is not None:
        from ttsi.reproduce.ray_backend import run_ray

        summaries = run_ray(sft_jobs, jobs, resume, ray, console)
    else:
        from ttsi.reproduce.local import run_local

        summaries = run_local(sft_jobs, jobs, resume, workers, console)
    summaries = with_base_runs(jobs, summaries)
    print_grids(plan, summaries, console)
    (out / "table.md").write_text(markdown(plan, summaries))
    from ttsi.evaluation.report import write_report

    report = write_report([job.out for job in jobs], out / "report")
    console.print(f"tables: {out / 'table.md'} · report: {report} · per-item records: {out}/<cell>/results.jsonl · "
                  f"{time.perf_counter() - start:.0f} s")
    return summaries


def with_base_runs(jobs: list[Job], summaries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The summaries, where a cell recorded no base answers of its own (an SFT adapter's run is the base method)
    given `vs_base` against the base cell of its benchmark:split, paired on their records (as `ttsi report` does)."""
    from ttsi.evaluation.compare import across_runs
    from ttsi.evaluation.records import RESULTS, read_records

    base = {j.cell.spec: j for j in jobs if j.cell.method == "base" and j.cell.label == "base"}
    out = dict(summaries)
    for job in jobs:
        s = summaries.get(job.cell.name)
        other = base.get(job.cell.spec)
        if s is None or s.get("vs_base") or other is None or other is job or other.cell.name not in summaries:
            continue
        c = across_runs(read_records(job.out / RESULTS), read_records(other.out / RESULTS))
        if c is not None:
            out[job.cell.name] = s | {"vs_base": c}
    return out


def plan_record(plan: Plan) -> dict[str, Any]:
    """plan.json: the plan as run (every cell's full settings)."""
    cells = []
    for c in plan.cells:
        d = dataclasses.asdict(c)
        d["agent"] = c.agent.to_dict()
        cells.append(d)
    return {"name": plan.name, "note": plan.note, "cells": cells}


def dry_run(plan: Plan, console: Console, data_dir: str | None = None, x: Nominal = NOMINAL) -> float | None:
    """Print the cells and the cost estimate (forward tokens, see cost.py); the total, None when some cell's item
    count is unknown (its data is not here)."""
    table = Table(title=f"plan {plan.name}: {len(plan.cells)} cells (benchmark-split-label)", box=box.SIMPLE_HEAD)
    for header in ("cell", "method", "seeds", "tau", "K", "samples", "items", "forward tokens"):
        table.add_column(header, justify="left" if header in ("cell", "method") else "right", no_wrap=True)
    total: float | None = 0.0
    for cell in plan.cells:
        try:
            items: int | None = len(cell_tasks(cell, data_dir)[0])
        except TTSIError:
            items = cell.sample or cell.limit  # no data here: what the cell asks for, else unknown
        labelled = 0
        if cell.sft is not None:
            try:
                labelled = len(split_tasks(cell.sft.benchmark, cell.sft.split, data_dir, cell.name)[0]
                               [: cell.sft.limit])
            except TTSIError:
                items = None
        if items is None:
            cost = f"{tokens_text(per_item(cell, x) * len(cell.seeds))}/item"
            total = None
        else:
            tokens = cell_cost(cell, items, labelled, x)
            cost = tokens_text(tokens)
            total = None if total is None else total + tokens
        method = cell.method if cell.label == cell.method else f"{cell.method} ({cell.label})"
        table.add_row(cell.name, method, str(len(cell.seeds)), ",".join(f"{t:g}" for t in cell.taus),
                      str(cell.agent.synthesis.k), str(cell.agent.samples), "?" if items is None else str(items),
                      cost)
    console.print(table)
    if plan.note:
        console.print(plan.note)
    console.print(f"cost: forward tokens (a training token counts 3), for a nominal input of {x.prompt} prompt, "
                  f"{x.answer} answer and {x.synthesis} synthesis tokens; total "
                  + (tokens_text(total) if total is not None else "unknown: some cells' data is not here "
                     "(give --data-dir)"))
    return total


def tokens_text(tokens: float) -> str:
    """A token count with its unit: 4.5K, 0.37M, 1.20G."""
    for unit, size in (("G", 1e9), ("M", 1e6)):
        if tokens >= size:
            return f"{tokens / size:,.2f}{unit}"
    return f"{tokens / 1e3:,.1f}K"
