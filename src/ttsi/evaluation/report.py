"""`ttsi report`: the paper-style table and plots from run directories (their summary.json and results.jsonl)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from ttsi import jsonio
from ttsi.errors import FileError, TaskError
from ttsi.evaluation.compare import across_runs
from ttsi.evaluation.records import RESULTS, SUMMARY, json_type, read_records
from ttsi.evaluation.stats import auroc


def load_run(path: Path) -> dict[str, Any]:
    summary_file = path / SUMMARY
    if not os.path.lexists(summary_file):
        raise TaskError(f"{path} is not a finished run: it has no {SUMMARY} (resume it with ttsi eval --resume)")
    summary = jsonio.loads(jsonio.read_text(summary_file, "summary file", FileError), str(summary_file), TaskError)
    problem = summary_problem(summary)
    if problem:
        raise TaskError(f"{summary_file} is not a ttsi summary: {problem}")
    return {"path": path, "summary": summary, "records": read_records(path / RESULTS, TaskError)}


_NUMBER = (int, float)
# What the report reads of a summary: key -> the types it may have, what they are called, the numbers a dict holds.
_SUMMARY_KEYS: dict[str, tuple[tuple[type, ...], str, tuple[str, ...]]] = {
    "benchmark": ((str,), "a string", ()), "split": ((str,), "a string", ()),
    "method": ((str, type(None)), "a string", ()), "n": ((int,), "an integer", ()), "seeds": ((list,), "an array", ()),
    "accuracy": ((dict,), "an object", ("mean", "std")), "adapted": ((dict,), "an object", ("fraction",)),
    "synthetic_used": ((dict,), "an object", ("mean",)),
}
_OPTIONAL_DICTS = ("settings", "gate", "adapted_effect", "extra_s_per_adapted", "majority", "vs_base")


def summary_problem(summary: Any) -> str | None:
    """Why `summary` is not a summary.json `ttsi report` can read (None when it is)."""
    if not isinstance(summary, dict):
        return f"it is a JSON {json_type(summary)}, not an object"
    missing = [k for k in _SUMMARY_KEYS if k not in summary]
    if missing:
        return f"it lacks {', '.join(missing)}"
    for key, (kinds, says, numbers) in _SUMMARY_KEYS.items():
        value = summary[key]
        if not isinstance(value, kinds) or isinstance(value, bool):
            return f"{key!r} is a JSON {json_type(value)}, not {says}"
        bad = [k for k in numbers if k not in value or not isinstance(value[k], (*_NUMBER, type(None)))]
        if bad:
            return f"{key!r} lacks the number {', '.join(bad)}"
    for key in [*_OPTIONAL_DICTS, *(k for k in summary if k.startswith("pass@"))]:
        if summary.get(key) is not None and not isinstance(summary[key], dict):
            return f"{key!r} is a JSON {json_type(summary[key])}, not an object"
    points = summary.get("by_tau") or []
    if not isinstance(points, list) or not all(
            isinstance(p, dict) and isinstance(p.get("tau"), _NUMBER) and isinstance(p.get("accuracy"), dict)
            and isinstance(p.get("adapted_fraction"), dict) for p in points):
        return "'by_tau' is not a list of points with tau, accuracy and adapted_fraction"
    return None


def _pct(x: Any) -> float:
    """A fraction in percent for a plot (NaN where the figure is undefined, null in the summary)."""
    return math.nan if x is None else 100 * x


def _pm(stat: dict[str, float] | None) -> str:
    """A rate's mean ± std over seeds, in percent."""
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{_num(_pct(stat['mean']), '.2f')} ± {_num(_pct(stat.get('std')), '.2f')}"


def _num(x: Any, fmt: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


AGAINST_NOTE = ("A method helps (or hurts) only where the whole 95% interval lies above (or below) 0. The interval is "
                "a paired bootstrap over items (all seeds of an item resampled together, 10,000 resamples); fixed / "
                "broken count the paired outcomes that changed, with the exact two-sided sign test on them.")


def write_report(paths: list[Path], out: Path) -> Path:
    runs = [load_run(Path(p)) for p in paths]
    if not runs:
        raise TaskError("give at least one run directory")
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# ttsi report", "", f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} from:", ""]
    lines += [_source(r) for r in runs]
    lines += ["", "## Accuracy (%), mean ± std over seeds", "", *_comparison(runs), ""]
    against = against_base(runs)
    if against:
        lines += ["## Against the base model (paired: same items, same seeds)", "", *_against_table(against), "",
                  AGAINST_NOTE,
                  ""]
    lines += ["## Details", "", *_details(runs)]
    measured = gate_measure_groups(runs)
    if measured:
        lines += ["", "## Gate quality per measure (AUROC against base errors)", "", *_measures_table(measured), "",
                  MEASURES_NOTE]
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
    return (summary.get("settings") or {}).get("label") or summary["method"]


def _source(run: dict[str, Any]) -> str:
    """One run directory in the report's list of sources: what it evaluated, with which method and model."""
    s = run["summary"]
    settings = s.get("settings") or {}
    label = method_label(s)
    method = label if label == s["method"] else f"{label} (method {s['method']})"
    adapter = f", adapter `{settings['adapter']}`" if settings.get("adapter") else ""
    return (f"- `{run['path']}`: {s['benchmark']}:{s['split']}, {method}, model `{settings.get('model', '-')}`"
            f"{adapter}, n={s['n']}, seeds {s['seeds']}")


def _name(summary: dict[str, Any]) -> str:
    return f"{summary['benchmark']}:{summary['split']} {method_label(summary)}"


def _grid(runs: list[dict[str, Any]]) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    """The benchmark:split columns and method rows, in order of appearance, and each (method, column)'s summary."""
    columns = list(dict.fromkeys(f"{r['summary']['benchmark']}:{r['summary']['split']}" for r in runs))
    methods = list(dict.fromkeys(method_label(r["summary"]) for r in runs))
    cell = {(method_label(r["summary"]), f"{r['summary']['benchmark']}:{r['summary']['split']}"): r["summary"]
            for r in runs}
    return columns, methods, cell


def _comparison(runs: list[dict[str, Any]]) -> list[str]:
    """Methods as rows, benchmark:split as columns, as in the paper's main table."""
    columns, methods, cell = _grid(runs)
    rows = ["| method | " + " | ".join(columns) + (" | average |" if len(columns) > 1 else " |"),
            "|---|" + "---|" * (len(columns) + (len(columns) > 1))]
    for m in methods:
        stats = [cell.get((m, c), {}).get("accuracy") for c in columns]
        row = f"| {m} | " + " | ".join(_pm(s) for s in stats)
        if len(columns) > 1:
            means = [s["mean"] for s in stats if s and s.get("mean") is not None]
            row += f" | {100 * sum(means) / len(means):.2f}" if len(means) == len(columns) else " | -"
        rows.append(row + " |")
    return rows


def against_base(runs: list[dict[str, Any]]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(column, method, source, comparison) for every non-base run: against the base run of its benchmark:split in
    this report when there is one (paired on its records), else against the base answers it recorded itself."""
    base = {f"{r['summary']['benchmark']}:{r['summary']['split']}": r for r in runs
            if r["summary"]["method"] == "base" and method_label(r["summary"]) == "base"}
    out = []
    for r in runs:
        s = r["summary"]
        column = f"{s['benchmark']}:{s['split']}"
        if s["method"] == "base" and method_label(s) == "base":
            continue
        if column in base:
            c = across_runs(r["records"], base[column]["records"])
            if c is not None:
                out.append((column, method_label(s), "base run", c))
                continue
        if s.get("vs_base"):
            out.append((column, method_label(s), "own base answers", s["vs_base"]))
    return out


def _against_table(rows: list[tuple[str, str, str, dict[str, Any]]]) -> list[str]:
    lines = ["| benchmark:split | method | difference (points) | 95% CI | fixed / broken | sign test p | per seed | "
             "verdict | paired against |", "|" + "---|" * 9]
    for column, method, source, c in rows:
        per_seed = ", ".join(f"{100 * d:+.1f}" for d in c["per_seed"].values())
        lines.append(f"| {column} | {method} | {100 * c['difference']:+.2f} | {100 * c['ci_low']:+.2f} to "
                     f"{100 * c['ci_high']:+.2f} | {c['fixed']} / {c['broken']} | {c['sign_test_p']:.3g} | "
                     f"{per_seed} | **{c['verdict']}** | {source} ({c['pairs']} pairs) |")
    return lines


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
        fixed = f"{effect.get('fixed', '-')} / {effect.get('broken', '-')}" if effect else "-"
        rows.append(
            f"| {_name(s)} | {_pm(s['accuracy'])} | {_pm(s.get('majority'))} | "
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
            rows.append(f"| {_name(s)} | {point['tau']} | "
                        f"{_pm(point['accuracy'])} | {_num(_pct(point['adapted_fraction'].get('mean')), '.1f')}% |")
    return rows


MEASURES_NOTE = ("Each measure's confidence on the same inputs, scored against the base model's errors (1.0: every "
                 "wrong answer less confident than every right one; 0.5: chance). rss_*: the candidate measures "
                 "(Relative Softmax Scoring's margin, entropy over the candidates, the top candidate's 1 / "
                 "perplexity); token_*: the token gate's (1 - the unsure share, mean token log-prob, minimum token "
                 "probability, mean entropy). Runs that gate the same inputs with the same base model share a row.")


def gate_measure_groups(runs: list[dict[str, Any]]) -> list[tuple[str, dict[str, dict[str, float]]]]:
    """(title, summary `gate_measures`) per distinct set of measures: runs of several methods over the same items,
    which gate with the same base model, report the same AUROCs and share one entry."""
    groups: dict[tuple[str, str], list[str]] = {}
    measures: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for r in runs:
        s = r["summary"]
        if not s.get("gate_measures"):
            continue
        key = (f"{s['benchmark']}:{s['split']}", json.dumps(s["gate_measures"], sort_keys=True))
        groups.setdefault(key, []).append(method_label(s))
        measures[key] = s["gate_measures"]
    return [(f"{split} ({', '.join(labels)})", measures[split, m]) for (split, m), labels in groups.items()]


def _undefined_as_nan(x: float | None) -> float:
    """An AUROC for a plot: NaN (no bar) where it is undefined (null in the summary: one class only)."""
    return math.nan if x is None else x


def _measures_table(groups: list[tuple[str, dict[str, dict[str, float]]]]) -> list[str]:
    names = list(dict.fromkeys(name for _, m in groups for name in m))
    lines = ["| runs | " + " | ".join(names) + " | n |", "|" + "---|" * (len(names) + 2)]
    for title, m in groups:
        n = max(v["n"] for v in m.values())
        lines.append(f"| {title} | " + " | ".join(_num(m[name]["auroc"], ".3f") if name in m else "-"
                                                  for name in names) + f" | {n} |")
    return lines


PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")


def gate_groups(runs: list[dict[str, Any]]) -> list[tuple[str, list[tuple[float, bool]]]]:
    """The gate's (margin, base correct) pairs per run, one entry per distinct set (candidate measures only: the
    token gate has no candidate margin).

    With `record_base`, every method run on the same items with the same model gates with the same base margins;
    those runs share one entry (titled with all their methods), so the plot shows each distinct gate once.
    """
    groups: dict[tuple[str, tuple[Any, ...]], list[str]] = {}
    for r in runs:
        known = tuple(sorted((x["id"], x["seed"], x["gate"]["margin"], bool(x["base_correct"])) for x in r["records"]
                             if x.get("gate") and x["gate"].get("measure") != "token"
                             and x.get("base_correct") is not None))
        if known:
            s = r["summary"]
            groups.setdefault((f"{s['benchmark']}:{s['split']}", known), []).append(method_label(s))
    return [(f"{split}: {', '.join(labels)}", [(m, ok) for _, _, m, ok in known])
            for (split, known), labels in groups.items()]


def _plots(runs: list[dict[str, Any]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    columns, methods, cell = _grid(runs)
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(methods) * max(1, len(columns) / 2) + 1.5), 3.5))
    for j, column in enumerate(columns):
        xs = [i + (j - (len(columns) - 1) / 2) * width for i, m in enumerate(methods) if (m, column) in cell]
        acc = [cell[m, column]["accuracy"] for m in methods if (m, column) in cell]
        ax.bar(xs, [_pct(a["mean"]) for a in acc], width, yerr=[_pct(a["std"]) for a in acc], capsize=2,
               label=column, color=PALETTE[j % len(PALETTE)])
    ax.set_xticks(range(len(methods)), methods, fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy per method (mean ± std over seeds)")
    if len(columns) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "accuracy_per_method.png", dpi=120)
    plt.close(fig)
    written.append("accuracy_per_method.png")

    against = against_base(runs)
    if against:
        fig, ax = plt.subplots(figsize=(6, 0.45 * len(against) + 1.2))
        ys = list(range(len(against)))[::-1]
        diffs = [100 * c["difference"] for *_, c in against]
        lows = [100 * (c["difference"] - c["ci_low"]) for *_, c in against]
        highs = [100 * (c["ci_high"] - c["difference"]) for *_, c in against]
        colors = [{"helps": "#55A868", "hurts": "#C44E52"}.get(c["verdict"], "#8C8C8C") for *_, c in against]
        for y, d, lo, hi, color in zip(ys, diffs, lows, highs, colors, strict=True):
            ax.errorbar([d], [y], xerr=[[lo], [hi]], fmt="o", capsize=3, color=color)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(ys, [f"{m} ({col})" for col, m, _, _ in against], fontsize=7)
        ax.set_xlabel("accuracy difference from base (points), 95% paired bootstrap CI")
        fig.tight_layout()
        fig.savefig(out / "difference_from_base.png", dpi=120)
        plt.close(fig)
        written.append("difference_from_base.png")

    sweeps = [r for r in runs if r["summary"].get("by_tau")]
    if sweeps:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for r in sweeps:
            points = r["summary"]["by_tau"]
            ax.errorbar([p["tau"] for p in points], [_pct(p["accuracy"].get("mean")) for p in points],
                        yerr=[_pct(p["accuracy"].get("std")) for p in points], marker="o", capsize=3,
                        label=f"{method_label(r['summary'])} {r['summary']['benchmark']}:{r['summary']['split']}")
        ax.set_xlabel("tau (adapt when confidence < tau)")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "accuracy_vs_tau.png", dpi=120)
        plt.close(fig)
        written.append("accuracy_vs_tau.png")

    measured = gate_measure_groups(runs)
    if measured:
        names = list(dict.fromkeys(name for _, m in measured for name in m))
        fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(names) * len(measured) + 2), 3.5))
        width = 0.8 / len(measured)
        for j, (title, m) in enumerate(measured):
            xs = [i + (j - (len(measured) - 1) / 2) * width for i, name in enumerate(names) if name in m]
            ax.bar(xs, [_undefined_as_nan(m[name]["auroc"]) for name in names if name in m], width, label=title,
                   color=PALETTE[j % len(PALETTE)])
        ax.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(names)), names, fontsize=7, rotation=20)
        ax.set_ylim(0, 1)
        ax.set_ylabel("AUROC against base errors")
        ax.set_title("gate quality per measure (0.5: chance)")
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "gate_measures.png", dpi=120)
        plt.close(fig)
        written.append("gate_measures.png")

    groups = gate_groups(runs)
    if groups:
        cols = min(4, len(groups))
        rows = math.ceil(len(groups) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
        bins = [i / 20 for i in range(21)]
        for ax, (title, known) in zip(axes.flat, groups, strict=False):
            ax.hist([m for m, ok in known if ok], bins=bins, alpha=0.6, label="base correct", color="#55A868")
            ax.hist([m for m, ok in known if not ok], bins=bins, alpha=0.6, label="base wrong", color="#C44E52")
            score = auroc([-m for m, _ in known], [not ok for _, ok in known])
            ax.set_title(f"{title}\nmargin AUROC against base errors: {_num(score, '.2f')}", fontsize=8)
            ax.set_xlabel("margin p(1) - p(2)")
            ax.set_ylabel("inputs")
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(groups):]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out / "margin_distribution.png", dpi=120)
        plt.close(fig)
        written.append("margin_distribution.png")
    return written
