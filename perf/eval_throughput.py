"""End to end: `ttsi eval` with tt-si on SealShift's out-of-domain test, items per second, vs a per-item loop.

Both run the embedded SealShift base model (the demo's model) on the same first `eval_items` items of
`sealshift:ood`, one seed, the demo's LoRA learning rate, everything else at the paper's defaults:

- per-item loop (written here, as one would without the library): for each item, the naive gate (one forward per
  candidate), and when uncertain Hugging Face `generate` for the synthetic drafts, the same validation, a
  `copy.deepcopy` of the base wrapped by a fresh `peft.get_peft_model`, a plain AdamW loop, `generate` on that copy
  for the answer; otherwise `generate` on the base; then the benchmark's scorer.
- ours: `ttsi.evaluation.runner.run_eval` with `--batch` inputs at a time (records written and fsynced, summary
  and all), which runs `SelfImprovingAgent.respond_batch`.

Reported: seconds and items per second of each, their ratio, accuracy and adapted inputs of each (the two should
agree up to sampling details, or the comparison would not be of the same work). Target: >= 3x.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from perf.common import Check, Column, Log, ModelSpec, Section, Settings, timed
from perf.cycle import Straightforward, train_plain
from ttsi.agent import input_seed
from ttsi.augment import select_pairs
from ttsi.awareness import uncertainty_of
from ttsi.config import AgentConfig, LearnConfig
from ttsi.formats import get_format
from ttsi.model import HFModel
from ttsi.prompts import answer_messages, synthesis_messages

TARGET = 3.0
BATCH = 16


def embedded_model() -> HFModel:
    from ttsi.sealshift.recipe import MODELS

    return HFModel.from_pretrained(str(MODELS["base"]), dtype="float32", device="cpu")


def config() -> AgentConfig:
    from ttsi.demo import DEMO_LR  # the demo's LoRA learning rate for the embedded model

    return AgentConfig(method="tt-si", learn=LearnConfig(lr=DEMO_LR)).validate()


def per_item_loop(model: HFModel, bench: Any, tasks: list[Any], c: AgentConfig) -> tuple[int, int]:
    """The straightforward loop over items: (correct, adapted)."""
    correct = adapted = 0
    s = c.synthesis
    for task in tasks:
        fmt = get_format(task.format)
        prompt = model.chat_prompt(answer_messages(task, fmt))
        candidates = [fmt.name_prefix(t.name, task.tools) for t in task.tools]
        scored = model.score_naive(prompt, candidates, batch_size=1)
        gate = uncertainty_of(task.tools, candidates, scored, c.gate)
        raw = None
        if gate.uncertain:
            seed = input_seed(c.seed, task.id)
            drafts = model.hf_generate([model.chat_prompt(synthesis_messages(task, fmt))], s.max_new_tokens,
                                       s.temperature, s.top_p, s.k * s.oversample, seed=seed)
            pairs = select_pairs(drafts, task, fmt, s.k, "self").pairs
            if pairs:
                copy = Straightforward(model, c.learn, seed=c.seed).work
                for pair in pairs:
                    example = (model.chat_prompt(answer_messages(task.with_query(pair.query), fmt)),
                               fmt.render(pair.answer, task.tools))
                    train_plain(copy, example, c.learn)
                raw = copy.hf_generate([prompt], c.max_new_tokens)[0]
                adapted += 1
                del copy
        if raw is None:
            raw = model.hf_generate([prompt], c.max_new_tokens)[0]
        correct += bench.score(task, raw).correct
    return correct, adapted


def ours(model: HFModel, bench: Any, tasks: list[Any], c: AgentConfig, out: Path) -> tuple[int, int]:
    """`ttsi eval`'s runner, BATCH inputs at a time: (correct, adapted) from its summary's records."""
    from ttsi.evaluation.records import read_records
    from ttsi.evaluation.runner import run_eval

    run_eval(model, bench, "ood", tasks, c, [0], out, {"benchmark": "eval_throughput"}, batch_size=BATCH,
             console=Console(quiet=True))
    records = read_records(out / "results.jsonl")
    return sum(r["correct"] for r in records), sum(r["adapted"] for r in records)


def run(specs: list[ModelSpec], settings: Settings, log: Log) -> Section:
    from ttsi.benchmarks import get_benchmark

    section = Section("eval", f"ttsi eval end to end: tt-si on sealshift:ood, embedded model, batch {BATCH}", [
        Column("model", "model"), Column("items", "items"), Column("naive_s", "per-item loop s"),
        Column("ours_s", "ttsi eval s"), Column("naive_items_per_s", "loop items/s", "{:.2f}"),
        Column("ours_items_per_s", "eval items/s", "{:.2f}"), Column("ratio", "eval/loop", "{:.2f}x"),
        Column("naive_correct", "loop correct", "{}"), Column("ours_correct", "eval correct", "{}"),
        Column("naive_adapted", "loop adapted", "{}"), Column("ours_adapted", "eval adapted", "{}")])
    bench = get_benchmark("sealshift")
    tasks = bench.load(None, "ood")[: settings.eval_items]
    c = config()
    model = embedded_model()
    per_item_loop(model, bench, tasks[:1], c)  # warm-up: first-call costs (kernels, tokenizer caches) untimed
    naive_s, (naive_correct, naive_adapted) = timed(lambda: per_item_loop(model, bench, tasks, c))
    log(f"eval: per-item loop {naive_s:.2f} s for {len(tasks)} items")
    with tempfile.TemporaryDirectory() as tmp:
        ours(model, bench, tasks[:1], c, Path(tmp) / "warm")
        ours_s, (ours_correct, ours_adapted) = timed(lambda: ours(model, bench, tasks, c, Path(tmp) / "run"))
    log(f"eval: ttsi eval {ours_s:.2f} s for {len(tasks)} items")
    row = {"model": "sealshift-base", "items": len(tasks), "naive_s": naive_s, "ours_s": ours_s,
           "naive_items_per_s": len(tasks) / naive_s, "ours_items_per_s": len(tasks) / ours_s,
           "ratio": naive_s / ours_s, "naive_correct": naive_correct, "ours_correct": ours_correct,
           "naive_adapted": naive_adapted, "ours_adapted": ours_adapted}
    section.add(row, [Check.of(row, "ratio", ">=", TARGET)])
    section.notes.append("per-item loop: score_naive + HF generate + deepcopy/get_peft_model + plain AdamW per item; "
                         f"ttsi eval: run_eval --batch {BATCH} (records, summary) on the same items")
    return section
