"""`make demo` until the embedded default model exists: the full loop on a toy model this project trains itself.

Every figure printed here is computed from the per-item records written beside it (results.jsonl).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ttsi.agent import SelfImprovingAgent
from ttsi.config import AgentConfig
from ttsi.model import HFModel
from ttsi.toy import SEEN, UNSEEN, build_toy_model, make_tasks

NOTICE = ("[yellow]Toy demo.[/yellow] The model is a ~1M-parameter Qwen2-architecture model trained here on 8 toy "
          "tools; the 'unseen' split uses 4 tools it never saw. It shows the TT-SI loop end to end on a CPU; "
          "its numbers say nothing about the paper's claims. The embedded default model replaces it later.")


def ensure_toy_model(model_dir: Path, rebuild: bool, console: Console, steps: int = 1200) -> Path:
    if (model_dir / "config.json").exists() and not rebuild:
        console.print(f"toy model: cached at {model_dir}")
        return model_dir
    columns = [TextColumn("training the toy model"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]:.3f}"), TimeRemainingColumn()]
    with Progress(*columns, console=console) as bar:
        job = bar.add_task("train", total=steps, loss=float("nan"))
        build_toy_model(model_dir, steps=steps, progress=lambda s, loss: bar.update(job, completed=s + 1, loss=loss))
    return model_dir


def run_demo(model_dir: Path, quick: bool = False, rebuild: bool = False, out_dir: Path = Path("runs/demo"),
             console: Console | None = None) -> list[dict[str, Any]]:
    console = console or Console()
    console.print(NOTICE)
    model = HFModel.from_pretrained(str(ensure_toy_model(model_dir, rebuild, console)), dtype="float32")
    n = 6 if quick else 16
    splits = {"seen": make_tasks(n, SEEN, seed=1000, prefix="seen"),
              "unseen": make_tasks(n, UNSEEN, seed=2000, prefix="unseen")}
    methods = ["base", "tt-si", "oracle"] if quick else ["base", "tt-si", "tt-icl", "no-gate", "confident-only",
                                                          "oracle"]
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    with (out_dir / "results.jsonl").open("w") as sink, Progress(console=console, transient=True) as bar:
        job = bar.add_task("responding", total=len(methods) * sum(len(t) for t in splits.values()))
        for method in methods:
            agent = SelfImprovingAgent(model, AgentConfig(method=method))
            for split, tasks in splits.items():
                for task in tasks:
                    r = agent.respond(task).to_dict()
                    gold = [c.to_dict() for c in task.answer or []]
                    record = {"split": split, "correct": r["answer"] == gold,
                              "function_correct": bool(r["answer"]) and r["answer"][0]["name"] == gold[0]["name"],
                              "gold": gold, **r}
                    sink.write(json.dumps(record) + "\n")
                    records.append(record)
                    bar.advance(job)
    summary = summarize(records)
    (out_dir / "summary.json").write_text(json.dumps({"created": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                      "rows": summary}, indent=2))
    print_summary(summary, console)
    console.print(f"per-item records: {out_dir / 'results.jsonl'}; summary: {out_dir / 'summary.json'}")
    return records


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accuracy, adaptation count and stage latency per (method, split), from the per-item records."""
    rows = []
    keys = list(dict.fromkeys((r["method"], r["split"]) for r in records))
    for method, split in keys:
        group = [r for r in records if r["method"] == method and r["split"] == split]
        adapted = [r for r in group if r["adapted"]]
        extra = [r["timings"]["synthesize_s"] + r["timings"]["train_s"] + r["timings"]["reset_s"] for r in adapted]
        rows.append({"method": method, "split": split, "n": len(group),
                     "accuracy": sum(r["correct"] for r in group) / len(group),
                     "function_accuracy": sum(r["function_correct"] for r in group) / len(group),
                     "flagged": sum(bool(r["uncertainty"] and r["uncertainty"]["uncertain"]) for r in group),
                     "adapted": len(adapted), "synthetic": sum(len(r["synthetic"]) for r in adapted),
                     "extra_s_per_adapted": statistics.mean(extra) if extra else 0.0})
    return rows


def print_summary(rows: list[dict[str, Any]], console: Console) -> None:
    n = rows[0]["n"] if rows else 0
    table = Table(title=f"toy model, {n} inputs per split", box=box.SIMPLE_HEAD)
    for column in ("method", "split", "exact", "func", "flag", "adapt", "pairs", "+s"):
        table.add_column(column, justify="left" if column in ("method", "split") else "right", no_wrap=True)
    for r in rows:
        table.add_row(r["method"], r["split"], f"{r['accuracy']:.1%}", f"{r['function_accuracy']:.1%}",
                      str(r["flagged"]), str(r["adapted"]), str(r["synthetic"]), f"{r['extra_s_per_adapted']:.2f}")
    console.print(table)
    console.print("exact: the gold call with identical arguments; func: the right first function; flag: inputs "
                  "the gate called uncertain (tau 0.95); adapt: inputs answered by an adapted model; pairs: "
                  "synthetic pairs trained on; +s: mean synthesis + training + reset seconds per adapted input.")
