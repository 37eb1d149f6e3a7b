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
from ttsi.evaluation.records import RunDir, read_records, write_summary
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


def run_eval(model: HFModel, bench: Benchmark, split: str, tasks: list[Task], config: AgentConfig, seeds: list[int],
             out: Path, settings: dict[str, Any], taus: list[float] | None = None, resume: bool = False,
             teacher: Synthesizer | None = None, console: Console | None = None, batch_size: int = 1) -> dict[str, Any]:
    """Evaluate, appending each record as it is made; return (and write) the summary of all records.

    `batch_size` > 1: the remaining items of each seed go through `SelfImprovingAgent.respond_batch` that many at
    a time (their adaptations trained together); records are still appended one per item, in order.
    """
    taus = sorted(taus or [config.gate.tau])
    check_sweep(config, taus)
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    for seed in seeds:  # every setting, each seed included, is checked before the run directory is written
        dataclasses.replace(config, seed=seed).validate(teacher_given=teacher is not None)
    # The run adapts at the largest tau and records base answers, so every smaller tau is read off the same run.
    config = dataclasses.replace(config, gate=dataclasses.replace(config.gate, tau=taus[-1]),
                                 record_base=config.record_base or len(taus) > 1)
    console = console or Console(stderr=True)
    plan = [(t.id, seed) for seed in seeds for t in tasks]  # every record is config.method's (an oracle's too)
    with RunDir(out, settings, resume, plan=plan, method=config.method) as run:
        todo = [(seed, t) for seed in seeds for t in tasks if (t.id, seed) not in run.done]
        done_before = len(seeds) * len(tasks) - len(todo)
        correct = Counter(r["correct"] for r in read_records(run.results))
        columns = [TextColumn(f"{bench.name}:{split} {config.method}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("acc {task.fields[acc]}"), TimeRemainingColumn()]
        with Progress(*columns, console=console, transient=False) as bar:
            job = bar.add_task("eval", total=len(seeds) * len(tasks), completed=done_before, acc=_acc(correct))
            agent: SelfImprovingAgent | None = None
            base = None
            try:
                for seed, batch in _batches(todo, batch_size):
                    if agent is None or agent.config.seed != seed:
                        if agent is not None:
                            agent.close()  # the next seed's agent draws its own initial adapters
                        agent = SelfImprovingAgent(model, dataclasses.replace(config, seed=seed), teacher=teacher)
                        if config.method == "oracle":  # answers the items that have no gold to train on
                            base = SelfImprovingAgent(model, dataclasses.replace(config, seed=seed, method="base"))
                    responses = _respond(agent, base, batch)
                    base_raws = base_answers(model, responses, config) if config.record_base else [None] * len(batch)
                    for task, response, base_raw in zip(batch, responses, base_raws, strict=True):
                        record = make_record(bench, split, task, seed, response, base_raw)
                        run.append(record)
                        correct[record["correct"]] += 1
                        bar.update(job, advance=1, acc=_acc(correct))
            finally:
                if agent is not None:
                    agent.close()
    records = read_records(run.results)
    summary = summarize(records, bench, split, taus, tasks) | {"settings": settings}
    write_summary(Path(out), to_json(summary))
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
