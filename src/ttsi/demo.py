"""`make demo`: every method on the embedded default model, under a real distribution shift, on a laptop CPU.

The shipped SealShift base model (trained by `ttsi train-base` on in-domain fields only) answers the
out-of-domain test (tools of fields it never saw) and the in-domain control. The demo is a plan
(`ttsi.reproduce.builtin.demo_plan`) run by the same machinery as `ttsi reproduce`, locally: each method on each
split is one cell (`ttsi eval`'s runner: per-item records, summary.json, resumable), spread over worker processes,
one CPU thread each; the tables and the report are computed from those records.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from ttsi.errors import ConfigError
from ttsi.reproduce.builtin import EMBEDDED_LR, demo_plan
from ttsi.reproduce.plan import Plan

DEMO_LR = EMBEDDED_LR  # the embedded model's LoRA learning rate (the speed suite's eval benchmark uses it too)


def run_demo(plan: Plan | None = None, out_dir: Path = Path("runs/demo"), resume: bool = False, workers: int = 2,
             console: Console | None = None) -> dict[str, dict[str, Any]]:
    """Run the demo plan (default: the full one) locally, print its tables, write the report; the summaries.

    A fresh run replaces the previous demo's outputs in `out_dir`; `resume` continues an interrupted one.
    """
    from ttsi.reproduce.run import run_plan

    plan = plan or demo_plan()
    console = console or Console(width=max(Console().width, 150))  # the tables are wide
    start = time.perf_counter()
    models = sorted({c.model for c in plan.cells if c.model})
    console.print(f"[bold]{plan.name}[/bold]: {', '.join(_describe(Path(m)) for m in models)}; {plan.note}")
    if not resume and out_dir.exists() and any(out_dir.iterdir()):
        if not _is_demo_dir(out_dir):
            raise ConfigError(f"{out_dir} is not empty and holds no earlier demo; choose another --out")
        shutil.rmtree(out_dir)
    summaries = run_plan(plan, out_dir, resume=resume, workers=workers, console=console, dtype="float32")
    (out_dir / "demo.json").write_text(json.dumps({"plan": plan.name, "cells": len(plan.cells), "workers": workers,
                                                   "seconds": round(time.perf_counter() - start, 1)}, indent=2))
    return summaries


def _is_demo_dir(path: Path) -> bool:
    return (path / "demo.json").exists() or (path / "plan.json").exists() or any(path.glob("*/run.json"))


def _describe(model_dir: Path) -> str:
    info = model_dir / "train_info.json"
    size = f"{json.loads(info.read_text())['parameters'] / 1e6:.1f}M parameters" if info.is_file() else "?"
    return f"model {model_dir.name} ({size})"
