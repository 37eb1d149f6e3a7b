"""Running a plan on Ray: actors answer work units, the driver alone writes the run directories.

Each actor holds one model (and a local teacher, if a cell has one) and answers work units: one batch of one cell
(its seed and items, the very batches a local run answers, so the records are the same). The records stream back
to the driver, which appends them to the cell's results.jsonl in the run's order (RunDir: atomic, locked,
resumable), so `--resume` works as for a local run. An actor that dies loses only the unit it was answering: the
driver puts that unit back at the head of the queue and starts a replacement actor; nothing is lost and nothing is
written twice (a record is written only when its unit's records arrive). SFT adapters train on actors first and
come back as files, which the driver writes and sends to the actors that evaluate them, so the nodes share no
file system; the model (a Hugging Face id, or a directory present on every node) is loaded by each actor.

Ray is an optional extra (`pip install 'ttsi[ray]'`), imported only here and only when asked for.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ttsi.errors import ConfigError
from ttsi.reproduce.jobs import Job, SFTJob

MAX_TRIES = 3  # a unit whose actor died this many times stops the run (it is what kills them)


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs the ray extra: pip install 'ttsi[ray]'") from None
    return ray


class CellActor:
    """A Ray actor's state: the models it loaded and the cell it is answering (one agent at a time)."""

    def __init__(self, threads: int = 1):
        from ttsi.reproduce.local import init_worker

        init_worker()
        import torch

        torch.set_num_threads(threads)
        self.cell: str | None = None
        self.answerer: Any = None
        self.adapters: dict[str, str] = {}

    def pid(self) -> int:
        return os.getpid()

    def answer(self, job: Job, seed: int, tasks: list[Any], adapter: dict[str, bytes] | None) -> list[dict[str, Any]]:
        """The records of one work unit: `tasks` answered with `seed` as the cell's run answers them."""
        if self.cell != job.cell.name:
            from ttsi.evaluation.runner import BatchAnswerer, run_config
            from ttsi.reproduce.execute import bench_for, load_model, teacher_for

            if self.answerer is not None:
                self.answerer.close()
            path = self._adapter(job, adapter) if adapter is not None else None
            model = load_model(job.model, path, job.dtype, job.device, keep=2)
            teacher = teacher_for(job)
            config, _ = run_config(job.cell.agent, list(job.cell.taus), list(job.cell.seeds), teacher is not None,
                                   job.cell.batch)
            self.answerer = BatchAnswerer(model, bench_for(job), job.cell.split, config, teacher)
            self.cell = job.cell.name
        return self.answerer.records(seed, tasks)

    def train(self, job: SFTJob) -> tuple[dict[str, Any], dict[str, bytes]]:
        """Train an SFT adapter here; its sft.json record and its adapter's files."""
        from ttsi.reproduce.execute import train_adapter

        with tempfile.TemporaryDirectory() as tmp:
            record = train_adapter(job, Path(tmp))
            adapter = Path(tmp) / "adapter"
            return record, {p.name: p.read_bytes() for p in adapter.iterdir() if p.is_file()}

    def _adapter(self, job: Job, files: dict[str, bytes]) -> str:
        key = str(job.adapter)
        if key not in self.adapters:
            path = Path(tempfile.mkdtemp(prefix="ttsi-adapter-"))
            for name, data in files.items():
                (path / name).write_bytes(data)
            self.adapters[key] = str(path)
        return self.adapters[key]


@dataclass
class _Cell:
    """The driver's view of one cell: its run directory, its units, and the records not yet appended in order."""

    job: Job
    run: Any
    units: list[tuple[int, list[Any]]]
    ready: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    appended: int = 0


class RayRun:
    """The driver: a pool of actors, a queue of units, in-flight units by reference."""

    def __init__(self, ray: Any, console: Console, on_unit: Callable[[RayRun], None] | None = None):
        self.ray, self.console, self.on_unit = ray, console, on_unit
        gpus = ray.cluster_resources().get("GPU", 0)
        cpus = ray.cluster_resources().get("CPU", 1)
        self.options = {"num_gpus": 1, "num_cpus": 1} if gpus >= 1 else {"num_cpus": 1}
        self.size = int(gpus) if gpus >= 1 else max(1, int(cpus))
        self.actor_class = ray.remote(CellActor)
        self.actors: list[Any] = []
        self.pids: dict[Any, int] = {}
        self.busy: dict[Any, Any] = {}  # object ref -> actor
        self.requeued = 0

    def start(self, n: int) -> None:
        while len(self.actors) < min(n, self.size):
            self._new_actor()

    def _new_actor(self) -> Any:
        actor = self.actor_class.options(**self.options).remote(1)
        self.pids[actor] = self.ray.get(actor.pid.remote())
        self.actors.append(actor)
        return actor

    def replace(self, actor: Any) -> Any:
        self.actors.remove(actor)
        self.pids.pop(actor, None)
        self.ray.kill(actor, no_restart=True)
        return self._new_actor()

    def in_flight(self) -> list[Any]:
        """The actors answering a unit now."""
        return list(self.busy.values())

    def idle(self) -> list[Any]:
        working = set(self.busy.values())
        return [a for a in self.actors if a not in working]

    def map(self, items: list[Any], submit: Callable[[Any, Any], Any],
            done: Callable[[Any, Any], None]) -> None:
        """Every item through `submit(actor, item)` on some actor, `done(item, result)` as each result arrives; an
        item whose actor died goes again, to another actor."""
        ray = self.ray
        queue = deque(items)
        tries: dict[int, int] = {}
        which: dict[Any, Any] = {}
        self.start(len(items))
        while queue or self.busy:
            for actor in self.idle():
                if not queue:
                    break
                item = queue.popleft()
                ref = submit(actor, item)
                self.busy[ref], which[ref] = actor, item
            finished, _ = ray.wait(list(self.busy), num_returns=1)
            ref = finished[0]
            actor, item = self.busy.pop(ref), which.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError:
                tries[id(item)] = tries.get(id(item), 0) + 1
                if tries[id(item)] >= MAX_TRIES:
                    raise ConfigError(f"a work unit killed {MAX_TRIES} Ray actors; stopping") from None
                self.requeued += 1
                queue.appendleft(item)
                self.replace(actor)
                continue
            except ray.exceptions.RayTaskError as e:
                raise e.as_instanceof_cause() from None
            done(item, result)
            if self.on_unit is not None:
                self.on_unit(self)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors.clear()


def run_ray(sft_jobs: list[SFTJob], jobs: list[Job], resume: bool, address: str, console: Console,
            on_unit: Callable[[RayRun], None] | None = None) -> dict[str, dict[str, Any]]:
    """Run every job's units on Ray actors; each cell's summary by name. `address`: "local" starts a local
    cluster (or joins $RAY_ADDRESS); anything else is passed to ray.init (auto, ray://HOST:PORT). A cluster
    already initialised in this process is used as it is."""
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
    pool = RayRun(ray, console, on_unit)
    try:
        adapters = _train_adapters(pool, sft_jobs)
        return _answer(pool, jobs, resume, adapters, console)
    finally:
        pool.close()
        if started:
            ray.shutdown()


def _train_adapters(pool: RayRun, sft_jobs: list[SFTJob]) -> dict[Path, Any]:
    """Every SFT adapter, trained on the actors (or found in --out), put in the object store: directory -> ref."""
    import json

    from ttsi.reproduce.execute import describe_sft, sft_done

    todo = [job for job in sft_jobs if not sft_done(job)]

    def done(job: SFTJob, result: tuple[dict[str, Any], dict[str, bytes]]) -> None:
        record, files = result
        (job.out / "adapter").mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (job.out / "adapter" / name).write_bytes(data)
        (job.out / "sft.json").write_text(json.dumps(record, indent=2))  # last: it marks the adapter complete
        pool.console.print(describe_sft(record))

    if todo:
        pool.map(todo, lambda actor, job: actor.train.remote(job), done)
    return {job.out / "adapter": pool.ray.put({p.name: p.read_bytes() for p in (job.out / "adapter").iterdir()})
            for job in sft_jobs}


def _answer(pool: RayRun, jobs: list[Job], resume: bool, adapters: dict[Path, Any],
            console: Console) -> dict[str, dict[str, Any]]:
    from ttsi.evaluation.records import RunDir
    from ttsi.evaluation.runner import run_config, work_units, write_run_summary

    ray = pool.ray
    cells: list[_Cell] = []
    summaries: dict[str, dict[str, Any]] = {}
    try:
        for job in jobs:  # every run directory opened (locked, resume checked) before any unit is sent
            config, _ = run_config(job.cell.agent, list(job.cell.taus), list(job.cell.seeds),
                                   job.cell.teacher is not None, job.cell.batch)
            plan = [(t.id, seed) for seed in job.cell.seeds for t in job.tasks]
            run = RunDir(job.out, job.settings, resume, plan=plan, method=config.method)
            cells.append(_Cell(job, run, work_units(list(job.tasks), list(job.cell.seeds), run.done,
                                                    job.cell.batch)))
        refs = {id(c): ray.put(c.job) for c in cells}
        units = [(i, k) for i, c in enumerate(cells) for k in range(len(c.units))]
        columns = [TextColumn("items on Ray"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("items", total=sum(len(b) for c in cells for _, b in c.units))

            def submit(actor: Any, unit: tuple[int, int]) -> Any:
                c = cells[unit[0]]
                seed, batch = c.units[unit[1]]
                adapter = adapters.get(c.job.adapter) if c.job.adapter is not None else None
                return actor.answer.remote(refs[id(c)], seed, batch, adapter)

            def done(unit: tuple[int, int], records: list[dict[str, Any]]) -> None:
                c = cells[unit[0]]
                c.ready[unit[1]] = records
                while c.appended in c.ready:  # in the run's order, as a local run appends them
                    for record in c.ready.pop(c.appended):
                        c.run.append(record)
                    c.appended += 1
                bar.update(task, advance=len(records))
                if c.appended == len(c.units):
                    finish(c)

            def finish(c: _Cell) -> None:
                from ttsi.reproduce.execute import bench_for

                c.run.close()
                summaries[c.job.cell.name] = write_run_summary(c.job.out, bench_for(c.job), c.job.cell.split,
                                                               sorted(c.job.cell.taus), list(c.job.tasks),
                                                               c.job.settings)

            for c in cells:
                if not c.units:
                    finish(c)
            pool.map(units, submit, done)
    finally:
        for c in cells:
            c.run.close()
    return {job.cell.name: summaries[job.cell.name] for job in jobs}
