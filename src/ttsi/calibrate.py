"""Choosing tau from data: the gate's confidence over a set of inputs, reduced to one threshold."""

from __future__ import annotations

from typing import Any

from ttsi.awareness import assess, tau_for_budget, tau_from_reference
from ttsi.config import GateConfig
from ttsi.errors import TaskError
from ttsi.formats import get_format
from ttsi.model import HFModel
from ttsi.prompts import answer_messages
from ttsi.task import Task


def gate_confidences(model: HFModel, tasks: list[Task], gate: GateConfig, progress: bool = False) -> list[float]:
    """The gate's confidence on each task, scored after the same prompt the agent answers from."""
    from rich.progress import track

    confidences = []
    for task in track(tasks, description="scoring candidates", disable=not progress, transient=True):
        if not task.tools:
            raise TaskError(f"task {task.id!r} has no tools: the gate has nothing to score")
        fmt = get_format(task.format)
        prompt = model.chat_prompt(answer_messages(task, fmt))
        confidences.append(assess(model, prompt, task.tools, fmt, gate).confidence)
    return confidences


def calibrate_tau(model: HFModel, tasks: list[Task], gate: GateConfig, percentile: float | None = None,
                  budget: float | None = None, progress: bool = False) -> dict[str, Any]:
    """tau from a reference percentile (known-good inputs) or a budget (fraction of these inputs to adapt)."""
    confidences = gate_confidences(model, tasks, gate, progress)
    if percentile is not None:
        tau, rule = tau_from_reference(confidences, percentile), f"{percentile:g}th percentile of the reference set"
    elif budget is not None:
        tau, rule = tau_for_budget(confidences, budget), f"adapt at most {budget:.0%} of inputs"
    else:
        raise ValueError("give a percentile or a budget")
    return {"tau": tau, "rule": rule, "measure": gate.measure, "n": len(confidences),
            "flagged": sum(c < tau for c in confidences), "confidences": confidences}
