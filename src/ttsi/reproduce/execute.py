"""What runs a job, wherever it runs: the models it needs (loaded once per process), its teacher, the SFT adapter's
training, and the runner. The local executor and the Ray actors both call these."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rich.console import Console

from ttsi.reproduce.jobs import Job, SFTJob

_MODELS: dict[tuple[str, str | None, str, str | None], Any] = {}


def load_model(path: str, adapter: str | None = None, dtype: str = "auto", device: str | None = None,
               keep: int = 4) -> Any:
    """The model (with `adapter` merged), loaded once per process; at most `keep` are held (oldest dropped)."""
    from ttsi.model import HFModel

    key = (path, adapter, dtype, device)
    if key not in _MODELS:
        while len(_MODELS) >= keep:
            del _MODELS[next(iter(_MODELS))]
        _MODELS[key] = HFModel.from_pretrained(path, dtype=dtype, device=device, adapter=adapter)
    return _MODELS[key]


def teacher_for(job: Job) -> Any:
    """The cell's local teacher model as a synthesizer (None: no local teacher; an endpoint teacher in the agent
    settings is built by the agent itself)."""
    config = job.cell.agent
    if job.cell.teacher is None or not config.uses_teacher:
        return None
    from ttsi.augment import SelfSynthesizer

    teacher = load_model(job.cell.teacher, None, job.dtype, job.device)
    return SelfSynthesizer(teacher, config.synthesis, source="teacher")


def bench_for(job: Job) -> Any:
    from ttsi.benchmarks import get_benchmark

    return get_benchmark(job.cell.benchmark).with_scoring(job.cell.scoring)


def check_teacher(job: Job) -> None:
    """An endpoint teacher is reachable and serves its model (before any work)."""
    config = job.cell.agent
    if config.uses_teacher and job.cell.teacher is None:
        from ttsi.teacher import TeacherSynthesizer

        TeacherSynthesizer(config.teacher, config.synthesis).check()


def run_job(job: Job, resume: bool, console: Console | None = None) -> dict[str, Any]:
    """The cell's whole run in this process (`ttsi eval`'s runner): records, summary.json; the summary."""
    from ttsi.evaluation.runner import run_eval

    model = load_model(job.model, str(job.adapter) if job.adapter else None, job.dtype, job.device)
    return run_eval(model, bench_for(job), job.cell.split, list(job.tasks), job.cell.agent, list(job.cell.seeds),
                    job.out, job.settings, taus=list(job.cell.taus), resume=resume, teacher=teacher_for(job),
                    console=console or Console(quiet=True), batch_size=job.cell.batch)


def sft_settings(job: SFTJob) -> dict[str, Any]:
    return {"model": job.model, "sft": dataclasses.asdict(job.spec)}


def sft_done(job: SFTJob) -> bool:
    """Whether the adapter was trained already (an interrupted plan's); one trained otherwise is refused."""
    import json

    from ttsi.errors import ConfigError

    record = job.out / "sft.json"
    if not record.is_file():
        return False
    saved = json.loads(record.read_text())
    if {k: saved.get(k) for k in ("model", "sft")} != sft_settings(job):
        raise ConfigError(f"{job.out} holds an adapter trained with other settings; choose another --out")
    return (job.out / "adapter").is_dir()


def train_adapter(job: SFTJob, out: Path | None = None) -> dict[str, Any]:
    """Train the SFT adapter into `out` (default: the job's directory); sft.json's record."""
    from ttsi.benchmarks import get_benchmark
    from ttsi.config import LearnConfig
    from ttsi.evaluation.sft import train_sft

    bench = get_benchmark(job.spec.benchmark)
    learn = dataclasses.replace(LearnConfig(), lr=job.spec.lr, epochs=job.spec.epochs,
                                batch_size=job.spec.batch_size)
    model = load_model(job.model, None, job.dtype, job.device)
    return train_sft(model, bench, job.spec.split, list(job.tasks), learn, out or job.out, seed=job.spec.seed,
                     settings=sft_settings(job), console=Console(quiet=True))


def describe_sft(record: dict[str, Any]) -> str:
    return (f"SFT adapter: LoRA on {record['samples']} labelled {record['benchmark']}:{record['split']} items, "
            f"{record['steps']} steps, final loss {record['final_loss']:.3f}")
