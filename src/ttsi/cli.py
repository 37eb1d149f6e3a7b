"""`ttsi` command line: respond to one task, calibrate tau, run the demo. Heavy libraries load inside commands."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from ttsi.config import METHODS, AgentConfig, GateConfig, LearnConfig, SynthesisConfig, TeacherConfig
from ttsi.errors import ConfigError, TTSIError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Self-improving LLM agents at test time (TT-SI): gate, synthesize, adapt, answer, reset.")
F = TypeVar("F", bound=Callable[..., Any])


def _errors(fn: F) -> F:
    """One clear line and exit code 2 for bad input; 130 on Ctrl-C; never a traceback for either."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TTSIError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _quiet_libraries() -> None:
    """Library warnings and loading bars off: stderr carries our own messages only."""
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation chatter between peft and transformers
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _gate(tau: float, measure: str, candidates: str, normalize: str) -> GateConfig:
    return GateConfig(tau=tau, measure=measure, candidates=candidates, normalize=normalize)


MODEL = typer.Option(..., "--model", help="Hugging Face model id or local directory.")
DTYPE = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.")
DEVICE = typer.Option(None, help="cuda, cpu, cuda:1, ... (default: cuda when available).")
MEASURE = typer.Option("margin", help="Gate confidence: margin (RSS, the paper), entropy, perplexity.")
CANDIDATES = typer.Option("name", help="Candidate actions: name (answer prefix naming each function) or call.")
NORMALIZE = typer.Option("sum", help="Candidate log-prob: sum over tokens, or mean (length-normalised).")


@app.command()
@_errors
def respond(
    model: str = MODEL,
    task: Path = typer.Option(..., "--task", help="Task JSON file (see README: the task format)."),
    method: str = typer.Option("tt-si", help=f"One of: {', '.join(METHODS)}."),
    tau: float = typer.Option(0.95, help="Adapt when the gate's confidence is below tau (in [0, 1])."),
    k: int = typer.Option(1, "--k", help="Synthetic examples per uncertain input."),
    seed: int = typer.Option(0, help="Seed for LoRA init, synthesis sampling and data order."),
    teacher_url: str | None = typer.Option(None, help="TT-D teacher: OpenAI-compatible base URL (.../v1)."),
    teacher_model: str | None = typer.Option(None, help="TT-D teacher: model name at that URL."),
    teacher_key_env: str = typer.Option("OPENAI_API_KEY", help="Environment variable holding the teacher's key."),
    icl_source: str = typer.Option("self", help="tt-icl demonstrations from 'self' or the 'teacher'."),
    measure: str = MEASURE,
    candidates: str = CANDIDATES,
    normalize: str = NORMALIZE,
    epochs: int = typer.Option(5, help="LoRA epochs over the synthetic pairs."),
    lr: float = typer.Option(1e-4, help="LoRA learning rate."),
    max_new_tokens: int = typer.Option(256, help="Answer length budget."),
    dtype: str = DTYPE,
    device: str | None = DEVICE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (answer + full trace)."),
) -> None:
    """Answer one task with the chosen method and show the trace (gate, synthesis, training, timings)."""
    config = AgentConfig(
        method=method, gate=_gate(tau, measure, candidates, normalize), synthesis=SynthesisConfig(k=k),
        teacher=TeacherConfig(url=teacher_url, model=teacher_model, api_key_env=teacher_key_env),
        learn=LearnConfig(epochs=epochs, lr=lr), icl_source=icl_source, max_new_tokens=max_new_tokens, seed=seed,
    ).validate()
    from ttsi.task import load_task

    the_task = load_task(task)
    _quiet_libraries()
    from ttsi.agent import SelfImprovingAgent
    from ttsi.model import HFModel

    teacher = None
    if config.uses_teacher:  # checked before the model loads: an unreachable teacher fails in a second
        from ttsi.teacher import TeacherSynthesizer

        teacher = TeacherSynthesizer(config.teacher, config.synthesis)
        teacher.check()
    agent = SelfImprovingAgent(HFModel.from_pretrained(model, dtype=dtype, device=device), config, teacher=teacher)
    response = agent.respond(the_task)
    if as_json:
        typer.echo(json.dumps(response.to_dict(), ensure_ascii=False))
    else:
        from ttsi.show import print_response

        print_response(response)


@app.command()
@_errors
def calibrate(
    model: str = MODEL,
    tasks: Path = typer.Option(..., "--tasks", help="Tasks (.json list or .jsonl) to run the gate on."),
    percentile: float | None = typer.Option(None, help="Known-good reference set: tau = this percentile of "
                                                       "their confidence (e.g. 5)."),
    budget: float | None = typer.Option(None, help="Target fraction of inputs to adapt (e.g. 0.3)."),
    measure: str = MEASURE,
    candidates: str = CANDIDATES,
    normalize: str = NORMALIZE,
    dtype: str = DTYPE,
    device: str | None = DEVICE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Choose tau from data: a percentile of confidence on known-good inputs, or a target adaptation budget."""
    if (percentile is None) == (budget is None):
        raise ConfigError("give exactly one of --percentile (reference set) or --budget (fraction to adapt)")
    if percentile is not None and not 0 <= percentile <= 100:
        raise ConfigError(f"--percentile must be in [0, 100], got {percentile}")
    if budget is not None and not 0 <= budget <= 1:
        raise ConfigError(f"--budget must be in [0, 1], got {budget}")
    gate = _gate(0.0, measure, candidates, normalize)
    AgentConfig(method="base", gate=gate).validate()
    from ttsi.task import load_tasks

    the_tasks = load_tasks(tasks)
    _quiet_libraries()
    from ttsi.calibrate import calibrate_tau
    from ttsi.model import HFModel

    result = calibrate_tau(HFModel.from_pretrained(model, dtype=dtype, device=device), the_tasks, gate,
                           percentile=percentile, budget=budget, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"tau = {result['tau']:.6f}  ({result['rule']}; {result['flagged']} of {result['n']} inputs "
                   f"would be adapted)")


@app.command()
@_errors
def demo(
    quick: bool = typer.Option(False, "--quick", help="Fewer tasks and methods: about a minute."),
    model_dir: Path = typer.Option(Path(".cache/ttsi/toy-model"), help="Where the toy model is built and cached."),
    rebuild: bool = typer.Option(False, help="Retrain the toy model even if it is cached."),
) -> None:
    """The whole loop end to end on a tiny tool-calling model this project trains itself (a toy, say so)."""
    _quiet_libraries()
    from ttsi.demo import run_demo

    run_demo(model_dir=model_dir, quick=quick, rebuild=rebuild)


def main() -> None:
    app(prog_name="ttsi")


if __name__ == "__main__":
    sys.exit(main())
