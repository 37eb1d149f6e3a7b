"""The local executor: a plan's jobs in this process (workers = 1), or spread over worker processes, one CPU
thread each (a tiny model cannot keep two cores busy in one process). SFT adapters train first, and the jobs
that read one start when it is ready, while the others go on."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ttsi.reproduce.execute import describe_sft, run_job, sft_done, train_adapter
from ttsi.reproduce.jobs import Job, SFTJob


def run_local(sft_jobs: list[SFTJob], jobs: list[Job], resume: bool, workers: int = 1,
              console: Console | None = None) -> dict[str, dict[str, Any]]:
    """Run every job; each cell's summary by cell name."""
    console = console or Console(stderr=True)
    if workers <= 1:
        for sft in sft_jobs:
            if not sft_done(sft):
                console.print(describe_sft(train_adapter(sft)))
        return {job.cell.name: run_job(job, resume, console) for job in jobs}
    return _run_pool(sft_jobs, jobs, resume, workers, console)


def _run_pool(sft_jobs: list[SFTJob], jobs: list[Job], resume: bool, workers: int,
              console: Console) -> dict[str, dict[str, Any]]:
    columns = [TextColumn("cells"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
               TimeElapsedColumn()]
    summaries: dict[str, dict[str, Any]] = {}
    waiting = {sft.out: [j for j in jobs if j.adapter is not None and j.adapter.parent == sft.out] for sft in sft_jobs}
    with Progress(*columns, console=console) as bar, ProcessPoolExecutor(
            max_workers=workers, mp_context=get_context("spawn"), initializer=init_worker) as pool:
        task = bar.add_task("cells", total=len(jobs), last="")
        pending: dict[Future, Any] = {}
        for sft in sft_jobs:  # first: each trains while the other cells run, then the cells that read it start
            if sft_done(sft):
                pending.update({pool.submit(run_job, j, resume): j for j in waiting.pop(sft.out)})
            else:
                pending[pool.submit(_train, sft)] = sft
        pending.update({pool.submit(run_job, j, resume): j for j in jobs if j.adapter is None})
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                what = pending.pop(future)
                if isinstance(what, SFTJob):
                    console.print(future.result())
                    pending.update({pool.submit(run_job, j, resume): j for j in waiting.pop(what.out)})
                    continue
                summary = summaries[what.cell.name] = future.result()
                bar.update(task, advance=1, last=f"{what.cell.name}: {summary['accuracy']['mean']:.1%}")
    return {job.cell.name: summaries[job.cell.name] for job in jobs}


def _train(sft: SFTJob) -> str:
    return describe_sft(train_adapter(sft))


def init_worker() -> None:
    """A worker process: one CPU thread, no library chatter on stderr."""
    import os
    import warnings

    import torch
    from transformers.utils import logging

    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.set_verbosity_error()
    logging.disable_progress_bar()
