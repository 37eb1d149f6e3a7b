"""Data-parallel training on one machine's CPU cores: this process and `workers - 1` spawned ones, one gloo group.

A model as small as the embedded default (1M parameters) barely gets faster with a second thread inside each
matrix product, but two processes that each take half of every batch and add their gradients do about twice the
work in the same time. `run` starts the helper processes, joins them into a `torch.distributed` gloo group with
this process as rank 0, runs rank 0's part here, and turns a helper that dies into one clear error.
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")
TIMEOUT = timedelta(minutes=5)  # longest a rank waits for the others (rank 0 may be saving a checkpoint)


def run(workers: int, main: Callable[[], T], helper: Callable[..., None], args: tuple[Any, ...]) -> T:
    """`main()` here as rank 0 and `helper(*args)` in `workers - 1` spawned processes, all in one group.

    Each process gets an equal share of this process's torch threads (at least one). `helper` and `args` must
    be picklable (a module-level function, plain data). Returns what `main` returns.
    """
    import torch.distributed as dist

    if workers < 2:
        raise ValueError(f"data-parallel training needs at least 2 workers, not {workers}")
    if dist.is_initialized():
        raise RuntimeError("a torch.distributed group is already running in this process")
    threads = torch.get_num_threads()
    share = max(1, threads // workers)
    scratch = Path(tempfile.mkdtemp(prefix="ttsi-dp-"))
    init = (scratch / "store").as_uri()
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_helper_main, args=(helper, args, rank, workers, init, share), daemon=True)
             for rank in range(1, workers)]
    for proc in procs:
        proc.start()
    torch.set_num_threads(share)
    finished = False
    try:
        try:
            dist.init_process_group("gloo", init_method=init, rank=0, world_size=workers, timeout=TIMEOUT)
            result = main()
            finished = True
            return result
        except RuntimeError as error:  # gloo's errors when a peer is gone are RuntimeErrors: name the peer
            for proc in procs:
                proc.join(timeout=5)
            failed = [(rank, p.exitcode) for rank, p in enumerate(procs, 1) if p.exitcode not in (None, 0)]
            if failed:
                rank, code = failed[0]
                raise RuntimeError(f"data-parallel worker {rank} of {workers} stopped (exit code {code}); "
                                   "its error is printed above") from error
            raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for proc in procs:
            proc.join(timeout=30 if finished else 0)  # interrupted or failed: the helpers cannot finish alone
            if proc.is_alive():
                proc.kill()
                proc.join()
        torch.set_num_threads(threads)
        shutil.rmtree(scratch, ignore_errors=True)


def _helper_main(helper: Callable[..., None], args: tuple[Any, ...], rank: int, workers: int, init: str,
                 threads: int) -> None:
    import signal

    import torch.distributed as dist

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: rank 0 decides when to stop
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=workers, timeout=TIMEOUT)
    try:
        helper(*args)
    finally:
        dist.destroy_process_group()


def rank_and_size() -> tuple[int, int]:
    """(this process's rank, the number of processes): (0, 1) outside a group."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def sum_gradients(model: Any, extra: torch.Tensor | None = None) -> torch.Tensor | None:
    """Add up every process's gradients of `model` in place (one all-reduce); `extra` (a small tensor) rides along.

    Returns the summed `extra`. Parameters without a gradient count as zero, so every process ends up with the
    same gradients whichever of them touched which parameter.
    """
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    parts = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype) for p in params]
    if extra is not None:
        parts.append(extra.reshape(-1).to(parts[0].dtype))
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        chunk = flat[offset:offset + p.numel()].view_as(p)
        if p.grad is None:
            p.grad = chunk.clone()
        else:
            p.grad.copy_(chunk)
        offset += p.numel()
    return flat[offset:].view_as(extra) if extra is not None else None
