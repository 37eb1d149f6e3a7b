"""Choosing tau from data: the gate's confidence over a set of inputs, reduced to one threshold."""

from __future__ import annotations

import math
from typing import Any

from ttsi.awareness import assess, tau_for_budget, tau_from_reference
from ttsi.config import AgentConfig, GateConfig
from ttsi.errors import ConfigError, ContextLengthError, TaskError
from ttsi.formats import get_format
from ttsi.model import HFModel
from ttsi.prompts import answer_prompt
from ttsi.task import Task


def gate_confidences(model: HFModel, tasks: list[Task], gate: GateConfig, progress: bool = False) -> list[float]:
    """The gate's confidence on each task, scored after the same prompt the agent answers from."""
    from rich.progress import track

    confidences = []
    for task in track(tasks, description="scoring candidates", disable=not progress, transient=True):
        if not task.tools:
            raise TaskError(f"task {task.id!r} has no tools: the gate has nothing to score")
        fmt = get_format(task.format)
        prompt = answer_prompt(model, task, fmt)
        try:
            confidences.append(assess(model, prompt, task.tools, fmt, gate).confidence)
        except ContextLengthError as e:
            raise ContextLengthError(f"task {task.id!r} does not fit in the model's context window: {e}") from None
    return confidences


def calibrate_tau(model: HFModel, tasks: list[Task], gate: GateConfig, percentile: float | None = None,
                  budget: float | None = None, progress: bool = False) -> dict[str, Any]:
    """tau from a reference percentile (known-good inputs) or a budget (fraction of these inputs to adapt).

    Exactly one of `percentile` (in [0, 100]) and `budget` (in [0, 1]) is given; ConfigError otherwise, before
    anything is scored.
    """
    if (percentile is None) == (budget is None):
        raise ConfigError("give exactly one of a percentile (reference set) or a budget (fraction to adapt)")
    if percentile is not None:
        _check_range("percentile", percentile, 100)
    if budget is not None:
        _check_range("budget", budget, 1)
    AgentConfig(method="base", gate=gate).validate()
    if not tasks:
        raise TaskError("no tasks to calibrate on")
    confidences = gate_confidences(model, tasks, gate, progress)
    if percentile is not None:
        tau, rule = tau_from_reference(confidences, percentile), f"{percentile:g}th percentile of the reference set"
    else:
        assert budget is not None
        tau, rule = tau_for_budget(confidences, budget), f"adapt at most {budget:.0%} of inputs"
    return {"tau": tau, "rule": rule, "measure": gate.measure, "n": len(confidences),
            "flagged": sum(c < tau for c in confidences), "confidences": confidences}


def _check_range(name: str, value: Any, top: float) -> None:
    """ConfigError unless `value` is a finite number in [0, top] (NaN passes every comparison, so test it first)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if not 0 <= value <= top:
        raise ConfigError(f"{name} must be in [0, {top:g}], got {value:g}")
