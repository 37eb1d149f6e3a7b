"""Run the TT-SI speed benchmarks: a table per benchmark with ratios and PASS/MISS, and one JSON record.

    python perf/run.py [--quick] [--repeats N] [--only gate,cycle,...] [--out perf/results/latest.json]

`--quick`: the ~10M model only (plus the Qwen2.5-1.5B shape when a GPU is present), one timed run per figure
and a warm-up only where a model or adapter is fresh; about a minute on 2 CPU cores. The full run adds the ~50M
model, with one warm-up and the median of 5 timed runs per figure (several minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `perf` package importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.console import Console
from rich.table import Table

from perf import batch, common, cycle, decode, efficiency, eval_throughput, gate
from perf.common import Log, ModelSpec, Section, Settings
from ttsi.provenance import git_commit, versions

BENCHMARKS: dict[str, Callable[[list[ModelSpec], Settings, Log], Section]] = {
    "gate": gate.run, "cycle": cycle.run, "batch": batch.run, "efficiency": efficiency.run, "decode": decode.run,
    "eval": eval_throughput.run}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_only(value: str | None) -> list[str]:
    """The benchmarks named in a comma-separated `--only` value, in suite order (all of them for None)."""
    if value is None:
        return list(BENCHMARKS)
    names = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown or not names:
        what = f"unknown benchmark {unknown[0]!r}" if unknown else "no benchmark named"
        raise ValueError(f"--only: {what}; choose from {', '.join(BENCHMARKS)} (comma-separated)")
    return [name for name in BENCHMARKS if name in names]


def settings_for(quick: bool) -> Settings:
    return Settings.preset(quick)


def models_for(quick: bool) -> list[ModelSpec]:
    return common.default_models(quick)


def quiet_libraries() -> None:
    """No progress bars or advisory warnings from transformers in the middle of the progress lines."""
    import warnings

    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def run_suite(specs: list[ModelSpec], settings: Settings, only: list[str], log: Log) -> list[Section]:
    """Run the chosen benchmarks on `specs`, in suite order."""
    sections = []
    for name in only:
        sections.append(BENCHMARKS[name](specs, settings, log))
        common.release()
    return sections


def make_record(sections: list[Section], specs: list[ModelSpec], settings: Settings) -> dict[str, Any]:
    """The JSON record: every figure, ratio and target with the machine, versions, commit, date and settings."""
    benchmarks = {section.name: section.to_dict() for section in sections}
    return {"suite": "ttsi-speed", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "quick": settings.quick, "git_commit": git_commit(), "git_dirty": common.git_dirty(),
            "machine": common.machine_info(), "versions": versions(), "settings": asdict(settings),
            "models": {spec.name: spec.info for spec in specs}, "benchmarks": benchmarks,
            "targets": target_summary(benchmarks)}


def target_summary(benchmarks: dict[str, Any]) -> list[dict[str, Any]]:
    """Every checked target of every row, flat: benchmark, model, the row's size, metric, target and outcome."""
    found = []
    for name, section in benchmarks.items():
        for row in section["rows"]:
            size = {k: row[k] for k in ("n", "k", "b", "tokens") if k in row}
            found += [{"benchmark": name, "model": row["model"], **size, **check} for check in row["checks"]]
    return found


def table(section: Section) -> Table:
    """A rich table of one section's rows, with a targets column (PASS green, MISS red)."""
    out = Table(title=section.title, title_justify="left")
    for column in section.columns:
        out.add_column(column.header, justify="left" if column.key == "model" else "right")
    out.add_column("targets")
    for row in section.rows:
        labels = [common.Check(**c).label() for c in row["checks"]]
        styled = "\n".join(f"[{'green' if 'PASS' in t else 'red'}]{t}[/]" for t in labels) or "-"
        out.add_row(*(column.render(row.get(column.key)) for column in section.columns), styled)
    return out


def print_report(sections: list[Section], record: dict[str, Any], console: Console) -> None:
    """A table per benchmark with its notes, then the machine and the count of targets met."""
    for section in sections:
        console.print(table(section))
        for note in section.notes:
            console.print(f"  {note}", style="dim", markup=False, highlight=False)
    m, v = record["machine"], record["versions"]
    console.print(f"machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}, gpu {m['gpu']}, "
                  f"load average {m['load_average']}; torch {v['torch']}, transformers {v['transformers']}, "
                  f"peft {v['peft']}; commit {record['git_commit']} (uncommitted changes: {record['git_dirty']})",
                  markup=False, highlight=False)
    missed = [t for t in record["targets"] if not t["passed"]]
    console.print(f"targets: {len(record['targets']) - len(missed)} PASS, {len(missed)} MISS", markup=False,
                  highlight=False)


def write_record(record: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~10M model only, fewer repeats (about a minute)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON record goes")
    parser.add_argument("--repeats", type=int, help="timed repeats per figure (the median is reported); "
                        "default 1 with --quick, else 5")
    args = parser.parse_args(argv)
    try:
        only = parse_only(args.only)
    except ValueError as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return 2
    quiet_libraries()
    console = Console(width=None if sys.stdout.isatty() else 200)  # a log file gets the whole table
    progress = Console(stderr=True)
    start = time.perf_counter()

    def log(message: str) -> None:
        progress.print(f"[{time.perf_counter() - start:6.1f}s] {message}", markup=False, highlight=False)

    log("preparing models (built once, cached under .cache/ttsi/bench/)")
    specs = models_for(args.quick)
    settings = settings_for(args.quick)
    if args.repeats is not None:
        if args.repeats < 1:
            print("run.py: error: --repeats must be at least 1", file=sys.stderr)
            return 2
        settings = dataclasses.replace(settings, repeats=args.repeats, warmup=max(1, settings.warmup))
    sections = run_suite(specs, settings, only, log)
    record = make_record(sections, specs, settings)
    record["wall_s"] = time.perf_counter() - start
    write_record(record, args.out)
    print_report(sections, record, console)
    console.print(f"wall time {record['wall_s']:.1f} s; record written to {args.out}", markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
