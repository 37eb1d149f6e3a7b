"""`ttsi train-base --setting arithshift`: the embedded arithmetic model, trained from scratch on ArithShift's
in-domain scenarios by the same machinery as SealShift's model (`ttsi.sealshift.recipe`, `ttsi.sealshift.train`).

It learns what an instruction-tuned math model knows: solve a word problem step by step with calculator
annotations, ending `#### N` (sometimes after a demonstration, so TT-ICL has something to work with), and, for a
share of the problems, the synthesis instruction: write a new problem like a given one, with its worked solution.
The new problem of a training example is another problem of the same scenario and the same operations, so the
model learns to write problems of the kind it is shown, which is what self-augmentation asks of it at test time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsi.benchmarks.arithshift import SPLITS_DIR, load_split
from ttsi.formats import get_format
from ttsi.prompts import answer_messages, render_pair, synthesis_messages
from ttsi.sealshift.recipe import (
    ASSETS,
    copy_examples,
    finish_stages,
    resumed_steps,
    save_info,
    stage_states,
    started,
    supervised,
)
from ttsi.task import Task

Messages = list[dict[str, str]]
MODEL = ASSETS / "arithshift-base"


@dataclass(frozen=True)
class ArithRecipe:
    """Everything the trained weights depend on (with the data file, whose hash goes in `train_info.json`)."""

    hidden: int = 192
    layers: int = 4
    heads: int = 6
    kv_heads: int = 2
    intermediate: int = 576
    vocab_size: int = 1024
    camel_split: bool = False  # as `Recipe` (read by `recipe_tokenizer`)
    steps: int = 4000
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0
    request_loss: bool = True  # loss on the question too: it learns to copy words and numbers from its context
    synthesis_fraction: float = 0.5
    demo_fraction: float = 0.1
    copy_steps: int = 300
    copy_batch_size: int = 32


def check_arith_recipe(r: ArithRecipe) -> None:
    """Raise ConfigError naming the first field a training run cannot work with."""
    from ttsi.errors import ConfigError
    from ttsi.sealshift.recipe import shape_checks

    checks = [
        (r.steps >= 1 and r.batch_size >= 1, "steps and batch_size must be at least 1"),
        (r.lr > 0, f"lr must be positive, got {r.lr}"),
        *shape_checks(r),
        *((0 <= getattr(r, f) <= 1, f"{f} must be in [0, 1], got {getattr(r, f)}")
          for f in ("synthesis_fraction", "demo_fraction")),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"recipe: {message}")


def kind_of(task: Task) -> tuple[str, tuple[str, ...]]:
    """What makes two problems alike: their scenario and their operations, in order."""
    return task.meta["scenario"], tuple(task.meta["ops"])


def math_examples(tasks: list[Task], seed: int, synthesis_fraction: float,
                  demo_fraction: float) -> list[tuple[Messages, str]]:
    """(messages, reply) pairs: every problem's solution, and for a share of them a synthesis reply.

    A synthesis reply is another problem of the same kind (`kind_of`) with its solution; a demonstration is another
    problem of the same kind with its solution, shown before the problem as TT-ICL shows its synthetic pairs.
    """
    rng = random.Random(seed)
    fmt = get_format("math")
    alike: dict[tuple[str, tuple[str, ...]], list[Task]] = defaultdict(list)
    for t in tasks:
        alike[kind_of(t)].append(t)
    pairs = []
    for task in tasks:
        siblings = [t for t in alike[kind_of(task)] if t.id != task.id]
        demos = ()
        if siblings and rng.random() < demo_fraction:
            other = rng.choice(siblings)
            demos = ((other.query, other.gold_answer),)
        pairs.append((answer_messages(task, fmt, demos), task.gold_answer))
        if siblings and rng.random() < synthesis_fraction:
            other = rng.choice(siblings)
            pairs.append((synthesis_messages(task, fmt), render_pair(other.query, other.gold_answer, fmt)))
    rng.shuffle(pairs)
    return pairs


def train_arith(out_dir: str | Path, recipe: ArithRecipe = ArithRecipe(), data: Path = SPLITS_DIR,
                progress: Callable[[int, float], None] | None = None, workers: int = 1,
                resume: bool = False) -> dict[str, Any]:
    """Train a tokenizer and a Qwen2-architecture model from scratch on the in-domain split; save both and
    `train_info.json`. Resumable as `ttsi.sealshift.recipe.train_base` is (same stages: copy warm-up, task)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ttsi.sealshift.recipe import model_sizes, recipe_tokenizer
    from ttsi.sealshift.train import train_causal_lm
    from ttsi.tiny_models import build_tiny_model

    check_arith_recipe(recipe)
    start = started()
    meta = {"recipe": dataclasses.asdict(recipe), "workers": workers,
            "data": hashlib.sha256((data / "train.jsonl").read_bytes()).hexdigest()}
    states = stage_states(Path(out_dir), ("copy", "task"), resume, meta)
    resumed = resumed_steps(states)
    tasks = load_split("train", data)
    pairs = math_examples(tasks, recipe.seed, recipe.synthesis_fraction, recipe.demo_fraction)
    tokenizer = recipe_tokenizer(recipe, pairs)  # type: ignore[arg-type]
    out = build_tiny_model(out_dir, tokenizer, seed=recipe.seed, **model_sizes(recipe))  # type: ignore[arg-type]
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    examples = [supervised(tokenizer, m, r, recipe.request_loss) for m, r in pairs]
    if recipe.copy_steps:
        spans = copy_examples([c + r for c, r in examples], tokenizer, recipe.copy_steps * recipe.copy_batch_size,
                              recipe.seed)
        train_causal_lm(model, tokenizer, spans, steps=recipe.copy_steps, lr=recipe.lr,
                        batch_size=recipe.copy_batch_size, seed=recipe.seed, progress=progress, workers=workers,
                        state=states["copy"])
    shifted = (lambda step, loss: progress(recipe.copy_steps + step, loss)) if progress else None
    losses = train_causal_lm(model, tokenizer, examples, steps=recipe.steps, lr=recipe.lr,
                             batch_size=recipe.batch_size, seed=recipe.seed, progress=shifted, workers=workers,
                             state=states["task"])
    model.save_pretrained(out)
    info = save_info(out, model, recipe, len(examples), len(tasks), losses, start, data, workers=workers,
                      **({"resumed": resumed} if resumed else {}))
    finish_stages(states)
    return info
