"""Choosing tau from data: the gate's confidence over a set of inputs, reduced to one threshold."""

from __future__ import annotations

import math
from collections.abc import Callable
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
            what = f"is a {task.kind} task (a free-form answer)" if task.free_form else "has no tools"
            raise TaskError(f"task {task.id!r} {what}: the gate has no candidate actions to score (build the token "
                            "gate's profile instead: ttsi calibrate --profile)")
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


def calibrate_profile(model: HFModel, tasks: list[Task], correct: Callable[[Task, str], bool] | None,
                      max_new_tokens: int = 256, batch_size: int = 16, progress: bool = False) -> dict[str, Any]:
    """The token gate's reference profile from these tasks' greedy answers (`ttsi.token_gate`).

    By default only the answers `correct(task, answer)` accepts are known-good and enter the profile (the base
    model's behaviour where it is right); `correct=None` takes every answer. TaskError when none is kept.
    """
    from rich.progress import track

    from ttsi.engine.decode import StepStats
    from ttsi.token_gate import build_profile

    if not tasks:
        raise TaskError("no tasks to calibrate on")
    rows: list[list[tuple[float, float, float]]] = []
    kept = 0
    batches = [tasks[i: i + batch_size] for i in range(0, len(tasks), batch_size)]
    for batch in track(batches, description="answering the reference inputs", disable=not progress,
                       transient=True):
        prompts = [answer_prompt(model, task, get_format(task.format)) for task in batch]
        for task, problem in zip(batch, model.no_room(prompts), strict=True):
            if problem is not None:
                raise ContextLengthError(f"task {task.id!r} does not fit in the model's context window: the prompt "
                                         f"is {problem}")
        stats = StepStats()
        answers = model.generate(prompts, max_new_tokens=max_new_tokens, stats=stats)
        for task, answer, row in zip(batch, answers, stats.rows(), strict=True):
            if correct is None or correct(task, answer):
                rows.append(row)
                kept += 1
    if not rows:
        raise TaskError(f"the base model answered none of the {len(tasks)} reference inputs correctly: no known-good "
                        "behaviour to build a profile from (use every input with --all, or other reference inputs)")
    profile = build_profile(rows, model.name, len(model.tokenizer), "correct" if correct is not None else "all")
    return {"profile": profile, "n": len(tasks), "kept": kept}


def _check_range(name: str, value: Any, top: float) -> None:
    """ConfigError unless `value` is a finite number in [0, top] (NaN passes every comparison, so test it first)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if not 0 <= value <= top:
        raise ConfigError(f"{name} must be in [0, {top:g}], got {value:g}")
