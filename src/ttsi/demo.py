"""`make demo`: every method on the embedded default model, under a real distribution shift, on a laptop CPU.

The shipped SealShift base model (trained by `ttsi train-base` on in-domain fields only) answers the
out-of-domain test (tools of fields it never saw) and the in-domain control. Each method is one evaluation run
(`ttsi eval`'s runner: per-item records, summary.json, resumable); the table and the report are computed from
those records. Runs are spread over worker processes, one CPU thread each, since a tiny model cannot keep two
cores busy in one process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ttsi.config import AgentConfig, LearnConfig
from ttsi.errors import ConfigError
from ttsi.evaluation.report import method_label
from ttsi.sealshift.recipe import MODELS

METHODS = ("base", "tt-si", "tt-d", "tt-icl", "no-gate", "confident-only", "oracle", "sft")
SPLITS = ("ood", "id")
# LoRA learning rate for the tiny from-scratch model, set before any demo measurement and not tuned: the paper's
# 1e-4 is for a pretrained 1.5B model and barely moves one trained from scratch at lr 3e-3.
DEMO_LR = 1e-3
SFT = {"epochs": 2, "batch_size": 4}  # the SFT baseline: LoRA on every labelled ood_train item


@dataclass(frozen=True)
class Plan:
    """What one demo run evaluates."""

    n: dict[str, int]  # items per split, a seeded sample of the test split
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    workers: int = 2
    batch: int = 8  # uncertain inputs adapted together (multi-adapter LoRA); results equal one at a time
    sft_items: int | None = None  # labelled ood_train items for the SFT baseline (None: all of them)


FULL = Plan(n={"ood": 24, "id": 12}, seeds=(0, 1, 2), methods=METHODS)
QUICK = Plan(n={"ood": 16, "id": 8}, seeds=(0,), methods=("base", "tt-si", "tt-d", "sft"), sft_items=64)


def agent_config(method: str) -> AgentConfig:
    """The demo's settings for one method: the paper's defaults except the LoRA learning rate (see DEMO_LR).

    The teacher is a local model, passed to the runner as a `Synthesizer` object (see `_run_job`), so the config
    names no teacher endpoint. Adapted inputs are also answered by the base model, so every method's gate AUROC
    covers every input.
    """
    return AgentConfig(method="base" if method == "sft" else method, learn=LearnConfig(lr=DEMO_LR),
                       record_base=True).validate(teacher_given=True)


def demo_tasks(plan: Plan) -> dict[str, list[Any]]:
    """A fixed seeded sample of each test split (the same items for every method and seed)."""
    from ttsi.benchmarks import get_benchmark

    bench = get_benchmark("sealshift")
    out = {}
    for split in SPLITS:
        tasks = bench.load(None, split)
        out[split] = random.Random(f"demo-{split}").sample(tasks, min(plan.n[split], len(tasks)))
    return out


def run_demo(plan: Plan = FULL, out_dir: Path = Path("runs/demo"), model_dir: Path = MODELS["base"],
             teacher_dir: Path = MODELS["teacher"], resume: bool = False,
             console: Console | None = None) -> list[dict[str, Any]]:
    """Evaluate every (method, split) of `plan`, print the comparison table, write the report; return summaries.

    A fresh run replaces the previous demo's outputs in `out_dir`; `resume` continues an interrupted one.
    """
    from ttsi.evaluation.report import write_report

    console = console or Console()
    start = time.perf_counter()
    console.print(f"[bold]SealShift demo[/bold]: base model {model_dir.name} "
                  f"({_params(model_dir)} parameters, trained on in-domain fields only), "
                  f"{plan.n['ood']} out-of-domain + {plan.n['id']} in-domain inputs, seeds {list(plan.seeds)}")
    if not resume and out_dir.exists() and any(out_dir.iterdir()):
        if not _is_demo_dir(out_dir):
            raise ConfigError(f"{out_dir} is not empty and holds no earlier demo; choose another --out")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(m, s) for m in plan.methods for s in SPLITS]
    columns = [TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
               TimeElapsedColumn()]
    summaries: dict[tuple[str, str], dict[str, Any]] = {}
    with Progress(*columns, console=console) as bar, ProcessPoolExecutor(
            max_workers=plan.workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        job = bar.add_task("runs", total=len(jobs), last="")

        def submit(method: str, split: str) -> Future:
            return pool.submit(_run_job, method, split, plan, out_dir, model_dir, teacher_dir, resume)

        pending: dict[Future, tuple[str, str]] = {}
        if "sft" in plan.methods:  # submitted first: it trains while the other runs go on, then its runs start
            pending[pool.submit(_train_sft, model_dir, out_dir / "sft", plan.sft_items)] = ("sft", "training")
        pending.update({submit(m, s): (m, s) for m, s in jobs if m != "sft"})
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                method, split = pending.pop(future)
                if split == "training":
                    console.print(future.result())
                    pending.update({submit("sft", s): ("sft", s) for s in SPLITS})
                    continue
                summaries[method, split] = future.result()
                acc = summaries[method, split]["accuracy"]["mean"]
                bar.update(job, advance=1, last=f"{method} on {split}: {acc:.1%}")
    rows = [summaries[m, s] for m, s in jobs]
    print_table(rows, plan, console)
    report = write_report([out_dir / f"{s}-{m}" for m, s in jobs], out_dir / "report")
    (out_dir / "demo.json").write_text(json.dumps({"plan": dataclasses.asdict(plan), "lr": DEMO_LR, "sft": SFT,
                                                   "seconds": round(time.perf_counter() - start, 1)}, indent=2))
    console.print(f"report: {report} · per-item records: {out_dir}/<split>-<method>/results.jsonl · "
                  f"{time.perf_counter() - start:.0f} s")
    return rows


def _is_demo_dir(path: Path) -> bool:
    return (path / "demo.json").exists() or any(path.glob("*/run.json")) or (path / "sft" / "sft.json").exists()


def _params(model_dir: Path) -> str:
    info = model_dir / "train_info.json"
    return f"{json.loads(info.read_text())['parameters'] / 1e6:.1f}M" if info.is_file() else "?"


def _train_sft(model_dir: Path, out: Path, items: int | None) -> str:
    """The SFT baseline's adapter, trained once on the labelled out-of-domain items (cached in `out`)."""
    if (out / "sft.json").is_file():
        return "SFT baseline: the adapter of the interrupted run"
    from ttsi.benchmarks import get_benchmark
    from ttsi.evaluation.sft import train_sft
    from ttsi.model import HFModel

    bench = get_benchmark("sealshift")
    learn = dataclasses.replace(agent_config("sft").learn, **SFT)
    record = train_sft(HFModel.from_pretrained(str(model_dir), dtype="float32"), bench, "ood_train",
                       bench.load(None, "ood_train")[:items], learn, out, settings={"model": str(model_dir)},
                       console=Console(quiet=True))  # in a worker: the parent's bar reports progress
    return (f"SFT baseline: LoRA on {record['samples']} labelled out-of-domain samples, {record['steps']} steps, "
            f"final loss {record['final_loss']:.3f}")


def _init_worker() -> None:
    import torch

    from ttsi.cli_common import quiet_libraries

    torch.set_num_threads(1)
    quiet_libraries()


_MODELS: dict[str, Any] = {}


def _model(path: str, adapter: str | None = None) -> Any:
    from ttsi.model import HFModel

    key = f"{path}+{adapter}"
    if key not in _MODELS:
        _MODELS[key] = HFModel.from_pretrained(path, dtype="float32", adapter=adapter)
    return _MODELS[key]


def _run_job(method: str, split: str, plan: Plan, out_dir: Path, model_dir: Path, teacher_dir: Path,
             resume: bool) -> dict[str, Any]:
    """One evaluation run in a worker: the runner's records and summary in out_dir/<split>-<method>."""
    from ttsi.augment import SelfSynthesizer
    from ttsi.benchmarks import get_benchmark
    from ttsi.evaluation.runner import run_eval

    config = agent_config(method)
    adapter = str(out_dir / "sft" / "adapter") if method == "sft" else None
    model = _model(str(model_dir), adapter)
    teacher = None
    if config.uses_teacher:
        teacher = SelfSynthesizer(_model(str(teacher_dir)), config.synthesis, source="teacher")
    tasks = demo_tasks(plan)[split]
    settings = {"model": str(model_dir), "adapter": adapter, "label": method, "benchmark": "sealshift",
                "split": split, "n": len(tasks), "seeds": list(plan.seeds), "agent": config.to_dict(),
                "teacher": str(teacher_dir) if teacher else None, "batch": plan.batch, "demo": True}
    quiet = Console(quiet=True)  # workers report through the parent's bar
    return run_eval(model, get_benchmark("sealshift"), split, tasks, config, list(plan.seeds),
                    out_dir / f"{split}-{method}", settings, resume=resume, teacher=teacher, console=quiet,
                    batch_size=plan.batch)


def print_table(rows: list[dict[str, Any]], plan: Plan, console: Console) -> None:
    """The paper-style comparison: accuracy mean ± std per split, adaptation counts, latency, gate AUROC."""
    table = Table(title=f"SealShift, {len(plan.seeds)} seed(s); out-of-domain n={plan.n['ood']}, "
                        f"in-domain n={plan.n['id']}", box=box.SIMPLE_HEAD)
    for column in ("method", "OOD acc", "OOD vs base (95% CI)", "ID acc", "adapt", "synth", "+s", "AUROC"):
        table.add_column(column, justify="left" if column == "method" else "right", no_wrap=True)
    by = {(method_label(r), r["split"]): r for r in rows}
    for method in plan.methods:
        ood, ind = by.get((method, "ood")), by.get((method, "id"))
        table.add_row(method, _acc(ood), _vs_base(ood), _acc(ind), _per_seed(ood, "adapted"),
                      _per_seed(ood, "synthetic_used"), _extra(ood), _auroc(ood))
    console.print(table)
    console.print("acc: exact call, mean ± std over seeds. On the out-of-domain test: adapt: inputs answered by an "
                  "adapted model, synth: synthetic pairs trained on (per seed); +s: median synthesis + training + "
                  "reset seconds per adapted input; AUROC: gate confidence against base errors. vs base: the "
                  "difference from the base model's answers to the same items and seeds (points), with its paired "
                  "bootstrap 95% CI and verdict: a method helps only when the whole interval is above 0 (n.s.: the "
                  "interval contains 0, no difference shown).")


def _acc(s: dict[str, Any] | None) -> str:
    return f"{100 * s['accuracy']['mean']:.1f} ± {100 * s['accuracy']['std']:.1f}" if s else "-"


def _vs_base(s: dict[str, Any] | None) -> str:
    c = (s or {}).get("vs_base")
    if not c:
        return "-"
    short = {"helps": "helps", "hurts": "hurts"}.get(c["verdict"], "n.s.")
    return f"{100 * c['difference']:+.1f} [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}] {short}"


def _per_seed(s: dict[str, Any] | None, key: str) -> str:
    if not s:
        return "-"
    value = s[key]["per_seed"]["mean"] if key == "adapted" else s[key]["mean"]
    return f"{value:.1f}"


def _extra(s: dict[str, Any] | None) -> str:
    return f"{s['extra_s_per_adapted']['p50']:.2f}" if s and s["extra_s_per_adapted"]["n"] else "-"


def _auroc(s: dict[str, Any] | None) -> str:
    value = (s or {}).get("gate", {}).get("auroc")
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"
