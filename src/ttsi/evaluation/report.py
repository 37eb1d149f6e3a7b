"""`ttsi report`: the paper-style table and plots from run directories (their summary.json and results.jsonl)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from ttsi.errors import TaskError
from ttsi.evaluation.records import RESULTS, SUMMARY, read_records


def load_run(path: Path) -> dict[str, Any]:
    summary_file = path / SUMMARY
    if not summary_file.exists():
        raise TaskError(f"{path} is not a finished run: it has no {SUMMARY} (resume it with ttsi eval --resume)")
    try:
        summary = json.loads(summary_file.read_text())
    except json.JSONDecodeError as e:
        raise TaskError(f"{summary_file} is not valid JSON: {e.msg}") from None
    return {"path": path, "summary": summary, "records": read_records(path / RESULTS)}


def _pm(stat: dict[str, float] | None) -> str:
    """A rate's mean ± std over seeds, in percent."""
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def _num(x: Any, fmt: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def write_report(paths: list[Path], out: Path) -> Path:
    runs = [load_run(Path(p)) for p in paths]
    if not runs:
        raise TaskError("give at least one run directory")
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# ttsi report", "", f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} from:", ""]
    for r in runs:
        s = r["summary"]
        model = s.get("settings", {}).get("model", "-")
        lines.append(f"- `{r['path']}`: {s['benchmark']}:{s['split']}, method {s['method']}, model `{model}`, "
                     f"n={s['n']}, seeds {s['seeds']}")
    lines += ["", "## Accuracy (%), mean ± std over seeds", "", *_comparison(runs), "",
              "## Details", "", *_details(runs)]
    sweeps = [r for r in runs if r["summary"].get("by_tau")]
    if sweeps:
        lines += ["", "## Accuracy against tau", "", *_sweep_table(sweeps)]
    notes = sorted({(r["summary"]["benchmark"], r["summary"].get("note")) for r in runs if r["summary"].get("note")})
    if notes:
        lines += ["", "## Scoring notes", ""] + [f"- {b}: {n}" for b, n in notes]
    plots = _plots(runs, out)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in plots]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def method_label(summary: dict[str, Any]) -> str:
    """The method's name in tables: a run may label itself (e.g. `sft` for a base run of an SFT adapter)."""
    return summary.get("settings", {}).get("label") or summary["method"]


def _comparison(runs: list[dict[str, Any]]) -> list[str]:
    """Methods as rows, benchmark:split as columns, as in the paper's main table."""
    columns = list(dict.fromkeys(f"{r['summary']['benchmark']}:{r['summary']['split']}" for r in runs))
    methods = list(dict.fromkeys(method_label(r["summary"]) for r in runs))
    cell = {(method_label(r["summary"]), f"{r['summary']['benchmark']}:{r['summary']['split']}"): r["summary"]
            for r in runs}
    rows = ["| method | " + " | ".join(columns) + (" | average |" if len(columns) > 1 else " |"),
            "|---|" + "---|" * (len(columns) + (len(columns) > 1))]
    for m in methods:
        stats = [cell.get((m, c), {}).get("accuracy") for c in columns]
        row = f"| {m} | " + " | ".join(_pm(s) for s in stats)
        if len(columns) > 1:
            means = [s["mean"] for s in stats if s]
            row += f" | {100 * sum(means) / len(means):.2f}" if len(means) == len(columns) else " | -"
        rows.append(row + " |")
    return rows


def _details(runs: list[dict[str, Any]]) -> list[str]:
    head = ("| run | accuracy | majority | pass@k | adapted | synthetic / seed | gate AUROC | TPR / FPR at tau | "
            "fixed / broken | extra s per adapted (p50 / p95) |")
    rows = [head, "|" + "---|" * 10]
    for r in runs:
        s = r["summary"]
        gate = s.get("gate") or {}
        effect = s.get("adapted_effect")
        extra = s.get("extra_s_per_adapted") or {}
        pass_key = next((k for k in s if k.startswith("pass@")), None)
        fixed = f"{effect['fixed']} / {effect['broken']}" if effect else "-"
        rows.append(
            f"| {s['benchmark']}:{s['split']} {s['method']} | {_pm(s['accuracy'])} | {_pm(s.get('majority'))} | "
            f"{(pass_key + ' ' + _pm(s[pass_key])) if pass_key else '-'} | {100 * s['adapted']['fraction']:.1f}% | "
            f"{_num(s['synthetic_used']['mean'], '.1f')} | {_num(gate.get('auroc'))} | "
            f"{_num(gate.get('tpr'), '.2f')} / {_num(gate.get('fpr'), '.2f')} | "
            f"{fixed} | "
            f"{_num(extra.get('p50'), '.2f')} / {_num(extra.get('p95'), '.2f')} |")
    return rows


def _sweep_table(runs: list[dict[str, Any]]) -> list[str]:
    rows = ["| run | tau | accuracy | adapted |", "|---|---|---|---|"]
    for r in runs:
        s = r["summary"]
        for point in s["by_tau"]:
            rows.append(f"| {s['benchmark']}:{s['split']} {s['method']} | {point['tau']} | "
                        f"{_pm(point['accuracy'])} | {100 * point['adapted_fraction']['mean']:.1f}% |")
    return rows


def _plots(runs: list[dict[str, Any]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(runs)), 3.5))
    labels = [f"{method_label(r['summary'])}\n{r['summary']['benchmark']}:{r['summary']['split']}" for r in runs]
    means = [100 * r["summary"]["accuracy"]["mean"] for r in runs]
    stds = [100 * r["summary"]["accuracy"]["std"] for r in runs]
    ax.bar(range(len(runs)), means, yerr=stds, capsize=3, color="#4C72B0")
    ax.set_xticks(range(len(runs)), labels, fontsize=7)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy per method (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(out / "accuracy_per_method.png", dpi=120)
    plt.close(fig)
    written.append("accuracy_per_method.png")

    sweeps = [r for r in runs if r["summary"].get("by_tau")]
    if sweeps:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for r in sweeps:
            points = r["summary"]["by_tau"]
            ax.errorbar([p["tau"] for p in points], [100 * p["accuracy"]["mean"] for p in points],
                        yerr=[100 * p["accuracy"]["std"] for p in points], marker="o", capsize=3,
                        label=f"{method_label(r['summary'])} {r['summary']['benchmark']}:{r['summary']['split']}")
        ax.set_xlabel("tau (adapt when confidence < tau)")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "accuracy_vs_tau.png", dpi=120)
        plt.close(fig)
        written.append("accuracy_vs_tau.png")

    gated = [r for r in runs if any(x["gate"] and x["base_correct"] is not None for x in r["records"])]
    if gated:
        fig, axes = plt.subplots(1, len(gated), figsize=(4 * len(gated), 3), squeeze=False)
        for ax, r in zip(axes[0], gated, strict=True):
            known = [x for x in r["records"] if x["gate"] and x["base_correct"] is not None]
            bins = [i / 20 for i in range(21)]
            ax.hist([x["gate"]["margin"] for x in known if x["base_correct"]], bins=bins, alpha=0.6,
                    label="base correct", color="#55A868")
            ax.hist([x["gate"]["margin"] for x in known if not x["base_correct"]], bins=bins, alpha=0.6,
                    label="base wrong", color="#C44E52")
            s = r["summary"]
            ax.set_title(f"{s['benchmark']}:{s['split']} {method_label(s)}", fontsize=8)
            ax.set_xlabel("margin p(1) - p(2)")
            ax.set_ylabel("inputs")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "margin_distribution.png", dpi=120)
        plt.close(fig)
        written.append("margin_distribution.png")
    return written
