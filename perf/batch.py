"""Batched adaptation: inputs adapted per second with B adapter slots trained and answered together.

Each of B inputs has its own synthetic ~100-token example and its own 512-token prompt. One round, with
`MultiLoRA` installed with B slots: `SlotTrainer.train` (slot i on example i, 5 steps, all slots in one
forward/backward per step), one batched greedy generation of ~20 tokens where row i uses slot i, then `reset`.
Throughput is B / the round's median seconds; the ratio B=max / B=1 shows what batching buys (target >= 3x on
CPU, >= 8x on GPU).
"""

from __future__ import annotations

from typing import Any

from perf.common import (
    Check,
    Column,
    Log,
    ModelSpec,
    Section,
    Settings,
    chat_prompt_of_length,
    example_pair,
    measure,
    release,
)
from ttsi.config import LearnConfig
from ttsi.engine.lora import MultiLoRA
from ttsi.engine.train import SlotTrainer
from ttsi.model import HFModel

STEPS = 5
TARGET = {"cpu": 3.0, "cuda": 8.0}  # throughput at the largest B / at B = 1


def inputs(model: HFModel, n: int, settings: Settings) -> tuple[list[str], list[tuple[str, str]]]:
    """n distinct prompts of `settings.prompt_tokens` tokens and n distinct synthetic examples."""
    prompts = [chat_prompt_of_length(model, settings.prompt_tokens, seed=100 + i) for i in range(n)]
    examples = [example_pair(model, settings.example_tokens, seed=200 + i) for i in range(n)]
    return prompts, examples


def measure_round(model: HFModel, b: int, prompts: list[str], examples: list[tuple[str, str]],
                  settings: Settings, warmup: int) -> float:
    """Median seconds of one train + batched answer + reset round for the first b inputs."""
    config = LearnConfig(epochs=STEPS)
    lora = MultiLoRA.install(model, config, slots=b, seed=0)
    trainer = SlotTrainer(lora, config)
    slots = list(range(b))

    def round_() -> None:
        trainer.train([[examples[i]] for i in slots], seeds=slots)
        lora.generate(prompts[:b], slots, max_new_tokens=settings.answer_tokens)
        lora.reset()

    try:
        seconds, _ = measure(round_, settings.repeats, warmup)
    finally:
        lora.uninstall()
    return seconds


def measure_model(spec: ModelSpec, settings: Settings, log: Log) -> list[dict[str, Any]]:
    """One row per B, each with its throughput relative to B = 1 (the first batch size)."""
    model = spec.load()
    prompts, examples = inputs(model, max(settings.batch_sizes), settings)
    rows: list[dict[str, Any]] = []
    for i, b in enumerate(settings.batch_sizes):
        warmup = max(1, settings.warmup) if i == 0 else settings.warmup  # first rounds on a fresh model: untimed
        seconds = measure_round(model, b, prompts, examples, settings, warmup)
        rows.append({"model": spec.name, "b": b, "round_s": seconds, "inputs_per_s": b / seconds})
        log(f"batch {spec.name} B={b}: {seconds:.4f} s per round, {b / seconds:.3f} inputs/s")
    base = rows[0]["inputs_per_s"]
    for row in rows:
        row["ratio_vs_b1"] = row["inputs_per_s"] / base
    return rows


def run(specs: list[ModelSpec], settings: Settings, log: Log) -> Section:
    section = Section("batch", f"Batched adaptation: B inputs, {STEPS} steps each, one batched answer, reset", [
        Column("model", "model"), Column("b", "B"), Column("round_s", "round s"),
        Column("inputs_per_s", "inputs/s", "{:.3f}"), Column("ratio_vs_b1", f"vs B={settings.batch_sizes[0]}",
                                                             "{:.2f}x")])
    largest = max(settings.batch_sizes)
    for spec in specs:
        target = TARGET["cuda" if spec.on_gpu else "cpu"]
        for row in measure_model(spec, settings, log):
            section.add(row, [Check.of(row, "ratio_vs_b1", ">=", target)] if row["b"] == largest else [])
        release()
    section.notes.append(f"ratio = inputs/s at B={largest} / inputs/s at B={settings.batch_sizes[0]}")
    return section
