"""`ttsi` command line: respond to one task, calibrate tau, run the demo. Heavy libraries load inside commands."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from ttsi import cli_eval, cli_reproduce, cli_serve, jsonio
from ttsi.cli_common import (
    CANDIDATES,
    DEVICE,
    DTYPE,
    EPOCHS,
    ICL_SOURCE,
    LR,
    MAX_NEW_TOKENS,
    MEASURE,
    METHOD,
    MODEL,
    NORMALIZE,
    REFERENCE,
    TAU,
    TEACHER_KEY_ENV,
    TEACHER_MODEL,
    TEACHER_URL,
    TOKEN_COUNT,
    TOKEN_PERCENTILE,
    TOKEN_SHARE,
    TOKEN_STAT,
    VERIFY,
    K,
    cli_errors,
    gate_config,
    quiet_libraries,
    verifiers,
)
from ttsi.config import AgentConfig, LearnConfig, SynthesisConfig, TeacherConfig
from ttsi.errors import ConfigError

if TYPE_CHECKING:
    from ttsi.task import Task

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Self-improving LLM agents at test time (TT-SI): gate, synthesize, adapt, answer, reset.")
cli_eval.register(app)  # eval, score, report, sft
cli_serve.register(app)  # serve
cli_reproduce.register(app)  # reproduce


@app.command()
@cli_errors
def respond(
    model: str = MODEL,
    task: Path = typer.Option(..., "--task", help="Task JSON file (see README: the task format)."),
    method: str = METHOD,
    tau: float = TAU,
    k: int = K,
    verify: str = VERIFY,
    seed: int = typer.Option(AgentConfig.seed, help="Seed for LoRA init, synthesis sampling and data order."),
    teacher_url: str | None = TEACHER_URL,
    teacher_model: str | None = TEACHER_MODEL,
    teacher_key_env: str = TEACHER_KEY_ENV,
    icl_source: str = ICL_SOURCE,
    measure: str = MEASURE,
    candidates: str = CANDIDATES,
    normalize: str = NORMALIZE,
    reference: str | None = REFERENCE,
    token_stat: str = TOKEN_STAT,
    token_percentile: float = TOKEN_PERCENTILE,
    token_count: int | None = TOKEN_COUNT,
    token_share: float | None = TOKEN_SHARE,
    epochs: int = EPOCHS,
    lr: float = LR,
    max_new_tokens: int = MAX_NEW_TOKENS,
    dtype: str = DTYPE,
    device: str | None = DEVICE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (answer + full trace)."),
    tool_parser: str | None = typer.Option(
        None, "--tool-parser", help="Answer in this format instead of the task's own: a native tool-call format "
                                    "(hermes, llama3_json, mistral, pythonic), another format name, or auto (the "
                                    "one the model's chat template writes)."),
) -> None:
    """Answer one task with the chosen method and show the trace (gate, synthesis, training, timings)."""
    config = AgentConfig(
        method=method, gate=gate_config(tau, measure, candidates, normalize, reference, token_stat, token_percentile,
                                        token_count, token_share),
        synthesis=SynthesisConfig(k=k, verify=verifiers(verify)),
        teacher=TeacherConfig(url=teacher_url, model=teacher_model, api_key_env=teacher_key_env),
        learn=LearnConfig(epochs=epochs, lr=lr), icl_source=icl_source, max_new_tokens=max_new_tokens, seed=seed,
    ).validate()
    from ttsi.task import load_task

    the_task = load_task(task)
    if tool_parser is not None and tool_parser != "auto":
        from ttsi.formats import get_format

        get_format(tool_parser)  # an unknown name fails before the model loads
        the_task.format = tool_parser
    quiet_libraries()
    from ttsi.agent import SelfImprovingAgent
    from ttsi.errors import ContextLengthError
    from ttsi.formats import native_format
    from ttsi.model import HFModel

    teacher = None
    if config.uses_teacher:  # checked before the model loads: an unreachable teacher fails in a second
        from ttsi.teacher import TeacherSynthesizer

        teacher = TeacherSynthesizer(config.teacher, config.synthesis)
        teacher.check()
    hf_model = HFModel.from_pretrained(model, dtype=dtype, device=device)
    if tool_parser == "auto":
        native = native_format(hf_model)
        if native is None:
            raise ConfigError(f"--tool-parser auto: the chat template of {model} writes no known tool-call format; "
                              "name one (hermes, llama3_json, mistral, pythonic)")
        the_task.format = native
    agent = SelfImprovingAgent(hf_model, config, teacher=teacher)
    response = agent.respond(the_task)
    if response.error == "context_length":  # refused, not answered: an error, not a response
        raise ContextLengthError(f"task {response.id!r} does not fit in the model's context window: "
                                 f"{response.reason}")
    if as_json:
        typer.echo(jsonio.dumps(response.to_dict(), ensure_ascii=False))
    else:
        from ttsi.show import print_response

        print_response(response)


@app.command()
@cli_errors
def calibrate(
    model: str = MODEL,
    tasks: Path | None = typer.Option(None, "--tasks", help="Tasks (.json list or .jsonl) to run the gate on."),
    benchmark: str | None = typer.Option(None, "--benchmark", help="Or a benchmark split, e.g. sealshift:id (then "
                                                                   "its own scorer says which answers are correct)."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Benchmark data directory (default: "
                                                                 "$TTSI_DATA_DIR)."),
    percentile: float | None = typer.Option(None, help="Known-good reference set: tau = this percentile of "
                                                       "their confidence (e.g. 5)."),
    budget: float | None = typer.Option(None, help="Target fraction of inputs to adapt (e.g. 0.3)."),
    profile: Path | None = typer.Option(None, "--profile", help="Token gate: write the reference profile of these "
                                                               "(known-good) tasks' greedy answers here."),
    every: bool = typer.Option(False, "--all", help="With --profile: every answer enters the profile, not only "
                                                    "those matching the task's gold answer."),
    max_new_tokens: int = MAX_NEW_TOKENS,
    measure: str = MEASURE,
    candidates: str = CANDIDATES,
    normalize: str = NORMALIZE,
    dtype: str = DTYPE,
    device: str | None = DEVICE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Choose tau from data (a percentile of confidence on known-good inputs, or a target adaptation budget), or
    write the token gate's reference profile (--profile)."""
    if (tasks is None) == (benchmark is None):
        raise ConfigError("give exactly one of --tasks FILE or --benchmark NAME:SPLIT")
    if profile is not None:
        if percentile is not None or budget is not None:
            raise ConfigError("--profile builds the token gate's reference: give it without --percentile/--budget")
        _calibrate_profile(model, tasks, benchmark, data_dir, profile, every, max_new_tokens, dtype, device, as_json)
        return
    if (percentile is None) == (budget is None):
        raise ConfigError("give exactly one of --percentile (reference set) or --budget (fraction to adapt), or "
                          "--profile FILE (the token gate's reference)")
    if percentile is not None and not 0 <= percentile <= 100:
        raise ConfigError(f"--percentile must be in [0, 100], got {percentile}")
    if budget is not None and not 0 <= budget <= 1:
        raise ConfigError(f"--budget must be in [0, 1], got {budget}")
    gate = gate_config(0.0, measure, candidates, normalize)
    AgentConfig(method="base", gate=gate).validate()
    the_tasks, _ = _reference_tasks(tasks, benchmark, data_dir)
    quiet_libraries()
    from ttsi.calibrate import calibrate_tau
    from ttsi.model import HFModel

    result = calibrate_tau(HFModel.from_pretrained(model, dtype=dtype, device=device), the_tasks, gate,
                           percentile=percentile, budget=budget, progress=not as_json)
    if as_json:
        typer.echo(jsonio.dumps(result))
    else:
        typer.echo(f"tau = {result['tau']:.6f}  ({result['rule']}; {result['flagged']} of {result['n']} inputs "
                   f"would be adapted)")


def _reference_tasks(tasks: Path | None, benchmark: str | None,
                     data_dir: str | None) -> tuple[list[Task], Callable[[Task, str], bool]]:
    """The calibration tasks from a file or a benchmark split, and how to tell a correct answer to them."""
    if benchmark is not None:
        from ttsi.cli_eval import load_split

        bench, _, the_tasks, _ = load_split(benchmark, data_dir, None)
        return the_tasks, lambda task, raw: bench.score(task, raw).correct
    from ttsi.task import load_tasks

    assert tasks is not None
    return load_tasks(tasks), _matches_gold


def _calibrate_profile(model: str, tasks: Path | None, benchmark: str | None, data_dir: str | None, out: Path,
                       every: bool, max_new_tokens: int, dtype: str, device: str | None, as_json: bool) -> None:
    """`ttsi calibrate --profile`: the token gate's reference from the tasks the base model answers correctly."""
    AgentConfig(method="base", max_new_tokens=max_new_tokens).validate()
    the_tasks, correct = _reference_tasks(tasks, benchmark, data_dir)
    if not every:
        missing = [t.id for t in the_tasks if not t.labelled]
        if missing:
            raise ConfigError(f"task {missing[0]!r} has no gold answer ({len(missing)} without one): a profile keeps "
                              "only correctly answered inputs; give --all to keep every answer")
    quiet_libraries()
    from ttsi.calibrate import calibrate_profile
    from ttsi.model import HFModel

    result = calibrate_profile(HFModel.from_pretrained(model, dtype=dtype, device=device), the_tasks,
                               None if every else correct, max_new_tokens, progress=not as_json)
    built = result["profile"]
    built.save(out)
    thresholds = {stat: built.threshold(stat, 5.0) for stat in ("top1", "margin", "entropy")}
    if as_json:
        typer.echo(jsonio.dumps({"profile": str(out), "n": result["n"], "kept": result["kept"],
                                 "positions": built.n_positions, "at_5th_percentile": thresholds}))
    else:
        typer.echo(f"wrote {out}: {result['kept']} of {result['n']} reference answers ({built.source}), "
                   f"{built.n_positions:,} positions; at the 5th percentile: top1 {thresholds['top1']:.4f}, "
                   f"margin {thresholds['margin']:.4f}, entropy (95th) {thresholds['entropy']:.4f}")


def _matches_gold(task: Task, raw: str) -> bool:
    """Whether an answer parses, in the task's format, to exactly the task's gold calls (or, a free-form task, to one
    of its accepted answers)."""
    from ttsi.benchmarks.base import exact_match

    return exact_match(task, raw).correct


@app.command()
@cli_errors
def demo(
    quick: bool = typer.Option(False, "--quick", help="Fewer inputs and methods: about a minute."),
    out: Path = typer.Option(Path("runs/demo"), help="Where the runs, the SFT adapter and the report go."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted demo in --out."),
    workers: int = typer.Option(2, min=1, help="Worker processes (one CPU thread each)."),
) -> None:
    """Every method on the embedded SealShift model: out-of-domain test and in-domain control, table + report."""
    quiet_libraries()
    from ttsi.demo import run_demo
    from ttsi.reproduce.builtin import demo_plan

    run_demo(demo_plan(quick), out_dir=out, resume=resume, workers=workers)


@app.command("train-base")
@cli_errors
def train_base(
    out: Path | None = typer.Option(None, help="Where to write the model and tokenizer (default "
                                               ".cache/ttsi/SETTING-base)."),
    setting: str = typer.Option("sealshift", "--setting", help="The embedded setting: sealshift (tool calls, "
                                "`Recipe`) or arithshift (math word problems, `ArithRecipe`)."),
    teacher: bool = typer.Option(False, "--teacher", help="Train the TT-D teacher instead: the base model "
                                 "(--base) trained further on in-domain plus labelled out-of-domain data."),
    base: Path | None = typer.Option(None, help="The base model the teacher starts from (default: the shipped one)."),
    steps: int | None = typer.Option(None, min=1, help="Task training steps after the copy warm-up "
                                     "(default: the recipe's)."),
    checkpoints: bool = typer.Option(False, "--checkpoints", help="Also save the base model every 200 task steps."),
    workers: int = typer.Option(1, min=1, help="Train data-parallel on this many processes (2 on 2 cores: about "
                                "twice the steps per second for the small recipe model; weights then differ from "
                                "a 1-process run by float rounding)."),
    settings: list[str] = typer.Option([], "--set", help="Change a recipe field, e.g. --set rename_fraction=0 "
                                       "(repeatable; the fields are `Recipe`'s, `TeacherRecipe`'s or "
                                       "`ArithRecipe`'s)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write over a model --out already holds."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out (same options)."),
) -> None:
    """Train an embedded model from scratch, deterministically (seeded): SealShift's default model (or its teacher),
    or ArithShift's math model (--setting arithshift)."""
    import dataclasses

    quiet_libraries()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ttsi.sealshift.recipe import MODELS, STATES, Recipe, TeacherRecipe, train_base, train_teacher, with_settings

    if setting not in ("sealshift", "arithshift"):
        raise ConfigError(f"--setting must be sealshift or arithshift, got {setting!r}")
    if setting == "arithshift" and teacher:
        raise ConfigError("--teacher: ArithShift has no teacher model (its TT-D needs a teacher endpoint)")
    if setting == "arithshift" and checkpoints:
        raise ConfigError("--checkpoints: ArithShift's recipe saves no intermediate checkpoints (its training state "
                          "is saved every 200 steps for --resume)")
    out = out or Path(f".cache/ttsi/{setting}-base")
    recipe: Any
    if setting == "arithshift":
        from ttsi.arithshift.recipe import ArithRecipe, check_arith_recipe, train_arith

        recipe = with_settings(ArithRecipe(), settings, check_arith_recipe)
    else:
        recipe = with_settings(TeacherRecipe() if teacher else Recipe(), settings)
    if steps is not None:
        recipe = dataclasses.replace(recipe, steps=steps)
    if workers > recipe.batch_size:
        raise ConfigError(f"--workers {workers}: each worker takes a share of every batch, so at most the batch "
                          f"size ({recipe.batch_size})")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    interrupted = any((out / name).exists() for name in STATES.values())
    if out.exists() and any(out.iterdir()) and not (overwrite or resume):
        hint = "pass --resume to continue the run interrupted there, or " if interrupted else ""
        raise ConfigError(f"--out {out} is not empty: {hint}choose another directory, or pass --overwrite to "
                          "write the new model over what it holds")
    if teacher:
        base = base or MODELS["base"]
        if not (base / "config.json").is_file():
            raise ConfigError(f"no base model at {base} (train one with `ttsi train-base --out DIR`)")
    columns = [TextColumn("training the teacher" if teacher else "training the base model"), BarColumn(),
               MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"), TimeRemainingColumn()]
    try:
        with Progress(*columns, console=Console(stderr=True)) as bar:
            total = recipe.steps + getattr(recipe, "copy_steps", 0)
            job = bar.add_task("train", total=total, loss=float("nan"))

            def progress(step: int, loss: float) -> None:
                bar.update(job, completed=step + 1, loss=loss)

            if setting == "arithshift":
                info = train_arith(out, recipe, progress=progress, workers=workers, resume=resume)
            elif teacher:
                info = train_teacher(base, out, recipe, progress=progress, workers=workers,  # type: ignore[arg-type]
                                     resume=resume)
            else:
                info = train_base(out, recipe, progress=progress, checkpoints=checkpoints,  # type: ignore[arg-type]
                                  workers=workers, resume=resume)
    except KeyboardInterrupt:
        saved = [name for name in STATES.values() if (out / name).exists()]
        typer.echo(f"interrupted: the training state is saved in {out / saved[-1]}; run the same command with "
                   "--resume to continue" if saved else "interrupted before training started", err=True)
        raise typer.Exit(130) from None
    typer.echo(f"saved {out} ({info['parameters']:,} parameters, {info['seconds']} s, "
               f"final loss {info['final_loss']:.3f}); evaluate it with "
               f"`ttsi eval --model {out} --benchmark {setting}:id --method base`")


def main() -> None:
    app(prog_name="ttsi")


if __name__ == "__main__":
    sys.exit(main())
