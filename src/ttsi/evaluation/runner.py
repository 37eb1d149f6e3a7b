"""`ttsi eval`: run the agent over a benchmark split for several seeds, one scored record per item per seed."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ttsi.agent import SelfImprovingAgent
from ttsi.augment import Synthesizer
from ttsi.benchmarks import Benchmark, ItemScore
from ttsi.config import AgentConfig
from ttsi.errors import ConfigError
from ttsi.evaluation.records import RESULTS, RunDir, read_records, write_summary
from ttsi.evaluation.summary import summarize, to_json
from ttsi.formats import AnswerParseError, get_format
from ttsi.model import HFModel
from ttsi.task import Task
from ttsi.trace import Decision, Response

GATED = ("tt-si", "tt-d", "tt-icl", "oracle")  # methods whose adaptation follows the gate, so tau can be swept


def check_sweep(config: AgentConfig, taus: list[float]) -> None:
    if not taus:
        raise ConfigError("give at least one tau")
    if len(taus) > 1 and config.method not in GATED:
        raise ConfigError(f"a tau sweep needs a gated method ({', '.join(GATED)}), not {config.method}")
    if len(taus) > 1 and config.gate.measure == "token":
        raise ConfigError("a tau sweep reads the candidate measures; the token gate decides by its position count "
                          "or share (run one setting per run)")
    for tau in taus:
        if not 0 <= tau <= 1:
            raise ConfigError(f"tau must be in [0, 1], got {tau}")


def run_config(config: AgentConfig, taus: list[float] | None, seeds: list[int], teacher_given: bool,
               batch_size: int) -> tuple[AgentConfig, list[float]]:
    """The config a run answers with, and its sorted taus; every setting (each seed's too) checked first.

    The run adapts at the largest tau and records base answers, so every smaller tau is read off the same run.
    """
    taus = sorted(taus or [config.gate.tau])
    check_sweep(config, taus)
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    for seed in seeds:  # checked before the run directory is written
        dataclasses.replace(config, seed=seed).validate(teacher_given=teacher_given)
    config = dataclasses.replace(config, gate=dataclasses.replace(config.gate, tau=taus[-1]),
                                 record_base=config.record_base or len(taus) > 1)
    return config, taus


def work_units(tasks: list[Task], seeds: list[int], done: set[tuple[str, int]] | frozenset[tuple[str, int]],
               batch_size: int) -> list[tuple[int, list[Task]]]:
    """The (seed, tasks) batches still to answer, in the order a run answers them: each seed's items not yet in
    `done`, consecutive, `batch_size` at a time. Whoever answers them (this process, a worker, a Ray actor) answers
    the same batches, so the records are the same."""
    todo = [(seed, t) for seed in seeds for t in tasks if (t.id, seed) not in done]
    return list(_batches(todo, batch_size))


class BatchAnswerer:
    """Answers a run's batches as records: one agent per seed (a fresh one when the seed changes: it draws its
    own initial adapters), the oracle's base agent for items without gold, and the base model's answers to adapted
    inputs when the config records them. `close()` takes the agent's adapters out of the model."""

    def __init__(self, model: HFModel, bench: Benchmark, split: str, config: AgentConfig,
                 teacher: Synthesizer | None = None):
        self.model, self.bench, self.split, self.config, self.teacher = model, bench, split, config, teacher
        self.agent: SelfImprovingAgent | None = None
        self.base: SelfImprovingAgent | None = None

    def records(self, seed: int, batch: list[Task]) -> list[dict[str, Any]]:
        """One record per task of `batch`, in order, answered with `seed`."""
        if self.agent is None or self.agent.config.seed != seed:
            self.close()
            self.agent = SelfImprovingAgent(self.model, dataclasses.replace(self.config, seed=seed),
                                            teacher=self.teacher)
            if self.config.method == "oracle":  # answers the items that have no gold to train on
                self.base = SelfImprovingAgent(self.model, dataclasses.replace(self.config, seed=seed,
                                                                               method="base"))
        responses = _respond(self.agent, self.base, batch)
        base_raws = (base_answers(self.model, responses, self.config) if self.config.record_base
                     else [None] * len(batch))
        return [make_record(self.bench, self.split, task, seed, response, base_raw)
                for task, response, base_raw in zip(batch, responses, base_raws, strict=True)]

    def close(self) -> None:
        if self.agent is not None:
            self.agent.close()
        self.agent = self.base = None


def run_eval(model: HFModel, bench: Benchmark, split: str, tasks: list[Task], config: AgentConfig, seeds: list[int],
             out: Path, settings: dict[str, Any], taus: list[float] | None = None, resume: bool = False,
             teacher: Synthesizer | None = None, console: Console | None = None, batch_size: int = 1) -> dict[str, Any]:
    """Evaluate, appending each record as it is made; return (and write) the summary of all records.

    `batch_size` > 1: the remaining items of each seed go through `SelfImprovingAgent.respond_batch` that many at
    a time (their adaptations trained together); records are still appended one per item, in order.
    """
    config, taus = run_config(config, taus, seeds, teacher is not None, batch_size)
    console = console or Console(stderr=True)
    plan = [(t.id, seed) for seed in seeds for t in tasks]  # every record is config.method's (an oracle's too)
    with RunDir(out, settings, resume, plan=plan, method=config.method) as run:
        units = work_units(tasks, seeds, run.done, batch_size)
        correct = Counter(r["correct"] for r in read_records(run.results))
        columns = [TextColumn(f"{bench.name}:{split} {config.method}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("acc {task.fields[acc]}"), TimeRemainingColumn()]
        with Progress(*columns, console=console, transient=False) as bar:
            job = bar.add_task("eval", total=len(seeds) * len(tasks), completed=len(run.done), acc=_acc(correct))
            answerer = BatchAnswerer(model, bench, split, config, teacher)
            try:
                for seed, batch in units:
                    for record in answerer.records(seed, batch):
                        run.append(record)
                        correct[record["correct"]] += 1
                        bar.update(job, advance=1, acc=_acc(correct))
            finally:
                answerer.close()
    return write_run_summary(Path(out), bench, split, taus, tasks, settings)


def write_run_summary(out: Path, bench: Benchmark, split: str, taus: list[float], tasks: list[Task],
                      settings: dict[str, Any]) -> dict[str, Any]:
    """summary.json of a run directory, recomputed from its records (and returned)."""
    records = read_records(out / RESULTS)
    summary = summarize(records, bench, split, taus, tasks) | {"settings": settings}
    write_summary(out, to_json(summary))
    return summary


def base_answers(model: HFModel, responses: list[Response], config: AgentConfig) -> list[str | None]:
    """Measurement only: the base model's answers to the inputs decided for adaptation (None for the others).

    They make the gate's quality (AUROC against base errors), tau sweeps and fixed / broken counts computable for
    every input of a run. The agent has reset its adapters by now, so the model is the base model.
    """
    chosen = [i for i, r in enumerate(responses) if r.decision is Decision.ADAPT]
    out: list[str | None] = [None] * len(responses)
    if chosen:
        texts = model.generate([responses[i].scoring_prompt for i in chosen], max_new_tokens=config.max_new_tokens)
        for i, text in zip(chosen, texts, strict=True):
            out[i] = text
    return out


def _batches(todo: list[tuple[int, Task]], size: int) -> Iterator[tuple[int, list[Task]]]:
    """Consecutive items of one seed, `size` at a time: (seed, tasks)."""
    for seed, items in itertools.groupby(todo, key=lambda item: item[0]):
        tasks = [task for _, task in items]
        for start in range(0, len(tasks), size):
            yield seed, tasks[start: start + size]


def _respond(agent: SelfImprovingAgent, base: SelfImprovingAgent | None, tasks: list[Task]) -> list[Response]:
    """The agent's responses, in order; an oracle run answers items without gold (a data defect) with the base."""
    if base is None:
        return agent.respond_batch(tasks)
    gold = iter(agent.respond_batch([task for task in tasks if task.labelled]))
    responses = []
    for task in tasks:
        if task.labelled:
            responses.append(next(gold))
            continue
        response = base.respond(task)
        response.method, response.reason = "oracle", "oracle: the item has no gold answer to train on; base answer"
        responses.append(response)
    return responses


def _acc(correct: Counter[bool]) -> str:
    n = correct[True] + correct[False]
    return f"{correct[True] / n:.1%}" if n else "-"


def make_record(bench: Benchmark, split: str, task: Task, seed: int, r: Response,
                base_raw: str | None = None) -> dict[str, Any]:
    """One line of results.jsonl: the scored answer, the base model's (`base_raw` for an adapted input), the
    samples', and the agent's trace. An input the agent refused (`r.error`, e.g. context_length) is wrong."""
    final = bench.score(task, r.raw)
    if r.error is not None:  # never answered: wrong even where an empty output would pass (irrelevance items)
        final = ItemScore(False, r.error, r.reason, final.counts)
    base: ItemScore | None = final if r.decision is Decision.SKIP else None  # skipped: answered by the base
    if base_raw is not None:
        base = bench.score(task, base_raw)
    samples = [bench.score(task, text).correct for text in r.samples]
    trace = r.to_dict()
    return {
        "id": task.id, "seed": seed, "benchmark": bench.name, "split": split, "method": r.method,
        "subsets": bench.subsets(task),
        "prediction": trace["answer"], "raw": r.raw, "correct": final.correct, "error": final.reason,
        "error_detail": final.detail, "counts": final.counts,
        "base_raw": base_raw, "base_correct": None if base is None else base.correct,
        "base_error": None if base is None else base.reason,
        "samples": r.samples, "samples_correct": samples,
        "majority_correct": majority_correct(task, r.samples, samples) if samples else None,
        "pass_correct": any(samples) if samples else None,
        "gate": trace["uncertainty"], "decision": trace["decision"], "adapted": r.adapted, "reason": r.reason,
        "synthetic": trace["synthetic"], "rejected": r.rejected, "train": trace["train"], "timings": r.timings,
        "batch": r.batch,
    }


def majority_correct(task: Task, texts: list[str], correct: list[bool]) -> bool:
    """Whether the most common parsed answer among the samples is correct (ties: the earliest answer wins); answers
    are the same when their `fmt.key` is (calls as sorted JSON, free-form answers normalised)."""
    fmt = get_format(task.format)
    keys: list[str | None] = []
    for text in texts:
        try:
            keys.append(fmt.key(fmt.parse(text)))
        except AnswerParseError:
            keys.append(None)  # unparsable samples do not vote
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(k for k in keys if k is not None and votes[k] == top)
    return correct[keys.index(winner)]
