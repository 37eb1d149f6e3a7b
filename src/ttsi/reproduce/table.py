"""The plan's report: a paper-style table per benchmark (methods as rows, splits as columns), the difference from
the base model with its paired 95% CI, and the paper's published numbers beside ours where PAPER.md has them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from ttsi.reproduce.plan import Plan

NOTE = ("acc: accuracy (%), mean ± std over seeds. vs base: the difference from the base model's answers to the same "
        "items and seeds (points) with its paired bootstrap 95% CI; helps / hurts only when the whole interval is "
        "above / below 0, n.s. otherwise. adapt: inputs answered by an adapted model, synth: synthetic pairs trained "
        "on (per seed); +s: median synthesis + training + reset seconds per adapted input; AUROC: gate confidence "
        "against base errors (these four on the first split).")
PAPER_NOTE = (" paper: PAPER.md's published figure (an accuracy, or TT-SI's gain over base, which compares with vs "
              "base).")


@dataclass(frozen=True)
class Grid:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def grids(plan: Plan, summaries: dict[str, dict[str, Any]]) -> list[Grid]:
    """One grid per benchmark, and the average over benchmarks when the plan has several."""
    out = []
    benchmarks = list(dict.fromkeys(c.benchmark for c in plan.cells))
    for bench in benchmarks:
        cells = [c for c in plan.cells if c.benchmark == bench]
        splits = list(dict.fromkeys(c.split for c in cells))
        labels = list(dict.fromkeys(c.label for c in cells))
        by = {(c.label, c.split): summaries.get(c.name) for c in cells}
        first = splits[0]
        sampled = next((k for s in by.values() if s for k in s if k.startswith("pass@")), None)
        published = any(b == bench for b, _ in plan.published)
        headers = ["method"]
        for split in splits:
            headers += [f"{split} acc", f"{split} vs base (95% CI)"]
        headers += ["adapt", "synth", "+s", "AUROC"] + (["majority", sampled] if sampled else [])
        headers += ["paper"] if published else []
        rows = []
        for label in labels:
            row = [label]
            for split in splits:
                row += [acc(by.get((label, split))), vs_base(by.get((label, split)))]
            s = by.get((label, first))
            row += [per_seed(s, "adapted"), per_seed(s, "synthetic_used"), extra(s), auroc(s)]
            row += [acc(s, "majority"), acc(s, sampled)] if sampled else []
            row += [plan.published.get((bench, label), "")] if published else []
            rows.append(tuple(row))
            for point in (s or {}).get("by_tau", [])[:-1]:  # a sweep: the smaller taus, read off the same run
                name = f"{label} (tau {point['tau']:g})"
                sub = [name]
                for split in splits:
                    sub += [acc({"accuracy": point["accuracy"]}) if split == first else "-", "-"]
                sub += ["-"] * (4 + (2 if sampled else 0)) + ([plan.published.get((bench, name), "")] if published
                                                               else [])
                rows.append(tuple(sub))
        n = {split: next((s["n"] for (_, sp), s in by.items() if s and sp == split), "?") for split in splits}
        seeds = sorted({len(c.seeds) for c in cells})
        title = f"{bench}: " + ", ".join(f"{sp} n={n[sp]}" for sp in splits) + \
            f"; {'/'.join(map(str, seeds))} seed(s)"
        out.append(Grid(title, tuple(headers), tuple(rows)))
        measured = next((s["gate_measures"] for c in cells if (s := summaries.get(c.name)) and s.get("gate_measures")
                         and any(k.startswith("token_") for k in s["gate_measures"])), None)
        if measured:  # the token gate ran: every measure's AUROC on the same inputs, side by side
            answers = max(m["n"] for m in measured.values())
            out.append(Grid(f"{bench}:{first}: gate AUROC against base errors, per measure ({answers} answers)",
                            tuple(measured), ((*(_num(m["auroc"]) for m in measured.values()),),)))
    if len(benchmarks) > 1 and plan.average:
        out.append(_average(plan, summaries, benchmarks))
    return out


def _num(x: float | None) -> str:
    """An AUROC in a table: two decimals, "-" where it is undefined (None, or NaN: one class only)."""
    return "-" if x is None or math.isnan(x) else f"{x:.2f}"


def _average(plan: Plan, summaries: dict[str, dict[str, Any]], benchmarks: list[str]) -> Grid:
    """Each method's accuracy averaged over the benchmarks (their first split), as the paper's Table 1 averages."""
    first = {b: next(c.split for c in plan.cells if c.benchmark == b) for b in benchmarks}
    labels = list(dict.fromkeys(c.label for c in plan.cells))
    modes = [("direct", "accuracy"), ("majority", "majority"), ("pass@5", "pass@5")]
    rows = []
    for label in labels:
        cells = {c.benchmark: summaries.get(c.name) for c in plan.cells
                 if c.label == label and c.split == first[c.benchmark]}
        if set(cells) != set(benchmarks):
            continue
        row = [label]
        for _, key in modes:
            means = [s[key]["mean"] for s in cells.values() if s and (s.get(key) or {}).get("mean") is not None]
            row.append(f"{100 * sum(means) / len(means):.2f}" if len(means) == len(benchmarks) else "-")
        rows.append((*row, plan.published.get(("average", label), "")))
    return Grid(f"average over {', '.join(f'{b}:{first[b]}' for b in benchmarks)}",
                ("method", *(m for m, _ in modes), "paper"), tuple(rows))


def acc(s: dict[str, Any] | None, key: str | None = "accuracy") -> str:
    stat = (s or {}).get(key) if key else None
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{100 * stat['mean']:.1f} ± {100 * (stat.get('std') or 0):.1f}"


def vs_base(s: dict[str, Any] | None) -> str:
    c = (s or {}).get("vs_base")
    if not c:
        return "-"
    short = {"helps": "helps", "hurts": "hurts"}.get(c["verdict"], "n.s.")
    return f"{100 * c['difference']:+.1f} [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}] {short}"


def per_seed(s: dict[str, Any] | None, key: str) -> str:
    if not s:
        return "-"
    value = s[key]["per_seed"]["mean"] if key == "adapted" else s[key]["mean"]
    return f"{value:.1f}"


def extra(s: dict[str, Any] | None) -> str:
    return f"{s['extra_s_per_adapted']['p50']:.2f}" if s and s["extra_s_per_adapted"]["n"] else "-"


def auroc(s: dict[str, Any] | None) -> str:
    return _num((s or {}).get("gate", {}).get("auroc"))


def print_grids(plan: Plan, summaries: dict[str, dict[str, Any]], console: Console) -> None:
    for grid in grids(plan, summaries):
        table = Table(title=grid.title, box=box.SIMPLE_HEAD)
        for i, header in enumerate(grid.headers):
            table.add_column(header, justify="left" if i == 0 or header == "paper" else "right",
                             no_wrap=header != "paper")
        for row in grid.rows:
            table.add_row(*row)
        console.print(table)
    console.print(NOTE + (PAPER_NOTE if plan.published else ""))


def markdown(plan: Plan, summaries: dict[str, dict[str, Any]]) -> str:
    lines = [f"# Plan {plan.name}", "", plan.note, ""] if plan.note else [f"# Plan {plan.name}", ""]
    for grid in grids(plan, summaries):
        lines += [f"## {grid.title}", "", "| " + " | ".join(grid.headers) + " |",
                  "|" + "---|" * len(grid.headers)]
        lines += ["| " + " | ".join(row) + " |" for row in grid.rows]
        lines.append("")
    return "\n".join([*lines, NOTE + (PAPER_NOTE if plan.published else ""), ""])
