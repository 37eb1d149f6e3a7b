"""The evaluation commands: `ttsi eval`, `score`, `report`, `sft` and `benchmarks`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

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
from ttsi.config import AgentConfig, GateConfig, LearnConfig, SynthesisConfig, TeacherConfig
from ttsi.errors import ConfigError

if TYPE_CHECKING:
    from ttsi.benchmarks import Benchmark
    from ttsi.task import Task

BENCHMARK = typer.Option(..., "--benchmark", help="NAME[:SPLIT], e.g. sealtools:test_out_domain (`ttsi benchmarks` "
                                                  "lists them).")
DATA_DIR = typer.Option(None, "--data-dir", help="Benchmark data directory (default: $TTSI_DATA_DIR).")
LIMIT = typer.Option(None, help="Only the first N items of the split.")
ADAPTER = typer.Option(None, help="A PEFT adapter directory merged into the model first (e.g. from ttsi sft).")
SCORING = typer.Option(None, "--scoring", help="Scoring mode, for benchmarks that have several (`ttsi benchmarks` "
                                                "lists them): official (their default) or lenient (the earlier, more "
                                                "forgiving reading). Recorded in the run's settings.")


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or len(set(values)) != len(values):
        raise ConfigError(f"{what} must name distinct integers, got {text!r}")
    return values


def load_split(spec: str, data_dir: str | None, limit: int | None,
               scoring: str | None = None) -> tuple[Benchmark, str, list[Task], Path | None]:
    """The benchmark (in scoring mode `scoring`), its split, the split's first `limit` tasks, and their data dir."""
    from ttsi.benchmarks import parse_spec, resolve_data_dir

    bench, split = parse_spec(spec)
    bench = bench.with_scoring(scoring)
    path = resolve_data_dir(data_dir) if bench.needs_data else None
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    tasks = bench.load(path, split)[:limit]
    return bench, split, tasks, path


def eval_command(
    model: str = MODEL,
    benchmark: str = BENCHMARK,
    method: str = METHOD,
    limit: int | None = LIMIT,
    seeds: str = typer.Option("0", help="Comma-separated seeds, e.g. 0,1,2,3,4 (the paper averages 5)."),
    tau: str = typer.Option(str(GateConfig.tau), help="tau, or a comma-separated sweep (0.35,0.5,0.65,0.8,0.95) "
                                                      "read off one run."),
    k: int = K,
    verify: str = VERIFY,
    samples: int = typer.Option(AgentConfig.samples, help="Answers sampled besides the greedy one: majority vote and "
                                                          "pass@k."),
    out: Path | None = typer.Option(None, help="Run directory (default runs/BENCHMARK-SPLIT-METHOD)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    base_answers: bool = typer.Option(True, help="Also answer adapted inputs with the base model (gate AUROC, "
                                                 "fixed/broken counts, tau sweeps)."),
    data_dir: str | None = DATA_DIR,
    scoring: str | None = SCORING,
    adapter: str | None = ADAPTER,
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
    batch: int = typer.Option(1, "--batch", help="Uncertain inputs adapted together in one batched training "
                                                 "(multi-adapter LoRA); 1 = one at a time."),
    dtype: str = DTYPE,
    device: str | None = DEVICE,
    label: str | None = typer.Option(None, help="The run's name in `ttsi report` (default: the method), e.g. "
                                                "tt-si+answer-check for one of several tt-si runs."),
) -> None:
    """Evaluate a method on a benchmark split over seeds: results.jsonl per item, summary.json, resumable."""
    taus, seed_list = sorted(_floats(tau, "--tau")), _ints(seeds, "--seeds")
    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")
    config = AgentConfig(
        method=method, gate=gate_config(taus[-1] if taus else GateConfig.tau, measure, candidates, normalize,
                                        reference, token_stat, token_percentile, token_count, token_share),
        synthesis=SynthesisConfig(k=k, verify=verifiers(verify)), learn=LearnConfig(epochs=epochs, lr=lr),
        teacher=TeacherConfig(url=teacher_url, model=teacher_model, api_key_env=teacher_key_env),
        icl_source=icl_source, max_new_tokens=max_new_tokens, samples=samples, record_base=base_answers,
    ).validate()
    from ttsi.evaluation.runner import check_sweep

    check_sweep(config, taus)
    bench, split, tasks, path = load_split(benchmark, data_dir, limit, scoring)
    out = out or Path("runs") / f"{bench.name}-{split}-{method}"
    from ttsi.evaluation.settings import EvalSettings

    settings = EvalSettings(model=model, adapter=adapter, benchmark=bench.name, split=split, limit=limit,
                            n=len(tasks), seeds=tuple(seed_list), taus=tuple(taus), agent=config, batch=batch,
                            data_dir=str(path) if path else None, dtype=dtype, device=device,
                            scoring=bench.scoring, label=label)
    quiet_libraries()
    from ttsi.evaluation.runner import run_eval
    from ttsi.model import HFModel

    teacher = None
    if config.uses_teacher:
        from ttsi.teacher import TeacherSynthesizer

        teacher = TeacherSynthesizer(config.teacher, config.synthesis)
        teacher.check()
    hf = HFModel.from_pretrained(model, dtype=dtype, device=device, adapter=adapter)
    summary = run_eval(hf, bench, split, tasks, config, seed_list, out, settings.to_dict(), taus=taus, resume=resume,
                       teacher=teacher, batch_size=batch)
    acc = summary["accuracy"]
    typer.echo(f"{bench.name}:{split} {method}: accuracy {acc['mean']:.2%} ± {acc['std']:.2%} over "
               f"{len(seed_list)} seed(s), n={summary['n']}; records: {out / 'results.jsonl'}")


def score_command(
    benchmark: str = BENCHMARK,
    predictions: Path = typer.Option(..., help="JSON Lines: one {\"id\", \"output\"} per item (raw generated text)."),
    data_dir: str | None = DATA_DIR,
    scoring: str | None = SCORING,
    out: Path = typer.Option(Path("runs/scored"), help="Where results.jsonl and summary.json go."),
    allow_missing: bool = typer.Option(False, help="Score items without a prediction as wrong instead of failing."),
) -> None:
    """Score outputs produced by any other system (vLLM, an API) with the same parsers and scorers."""
    from ttsi.evaluation.score import score_predictions

    bench, split, tasks, _ = load_split(benchmark, data_dir, None, scoring)
    summary = score_predictions(bench, split, tasks, predictions, out, allow_missing=allow_missing)
    typer.echo(f"{bench.name}:{split}: accuracy {summary['accuracy']['mean']:.2%}, n={summary['n']}; "
               f"records: {out / 'results.jsonl'}")


def report_command(
    runs: list[Path] = typer.Argument(..., help="Run directories (each with summary.json and results.jsonl)."),
    out: Path = typer.Option(Path("report"), help="Where report.md and the plots go."),
) -> None:
    """The paper-style comparison table and plots (accuracy per method, against tau, margin distributions)."""
    from ttsi.evaluation.report import write_report

    path = write_report(runs, out)
    typer.echo(f"report: {path}")


def sft_command(
    model: str = MODEL,
    benchmark: str = BENCHMARK,
    out: Path = typer.Option(..., help="Where the adapter and sft.json go."),
    limit: int | None = LIMIT,
    epochs: int = typer.Option(3, help="Epochs over the labelled split."),
    lr: float = LR,
    batch_size: int = typer.Option(LearnConfig.batch_size, help="Examples per step (the paper's TT-SI uses 1)."),
    seed: int = typer.Option(0, help="Seed for LoRA init and data order."),
    data_dir: str | None = DATA_DIR,
    dtype: str = DTYPE,
    device: str | None = DEVICE,
) -> None:
    """LoRA on a labelled split with TT-SI's LoRA settings: the supervised baseline, with its sample count."""
    learn = LearnConfig(epochs=epochs, lr=lr, batch_size=batch_size)
    AgentConfig(learn=learn).validate()
    bench, split, tasks, _ = load_split(benchmark, data_dir, limit)
    quiet_libraries()
    from ttsi.evaluation.sft import train_sft
    from ttsi.model import HFModel

    record = train_sft(HFModel.from_pretrained(model, dtype=dtype, device=device), bench, split, tasks, learn,
                       out, seed=seed, settings={"model": model})
    typer.echo(f"trained on {record['samples']} labelled samples ({record['steps']} steps); adapter: "
               f"{out / 'adapter'}; evaluate with: ttsi eval --model {model} --adapter {out / 'adapter'} ...")


def benchmarks_command() -> None:
    """The registered benchmarks: splits (default first), license, and how scoring differs from the official."""
    from ttsi.benchmarks import all_benchmarks

    for name, bench in all_benchmarks().items():
        splits = [bench.default_split] + [s for s in bench.splits if s != bench.default_split]
        typer.echo(f"{name}: {', '.join(splits)}  [{bench.license}]")
        if bench.scorings:
            typer.echo(f"    scoring (--scoring): {', '.join(bench.scorings)}; default {bench.scorings[0]}")
        if bench.note:
            typer.echo(f"    {bench.note}")


def register(app: typer.Typer) -> None:
    app.command("benchmarks")(cli_errors(benchmarks_command))
    app.command("eval")(cli_errors(eval_command))
    app.command("score")(cli_errors(score_command))
    app.command("report")(cli_errors(report_command))
    app.command("sft")(cli_errors(sft_command))


__all__ = ["register"]
