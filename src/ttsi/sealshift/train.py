"""The training loop of the embedded model's recipe (`ttsi train-base`) and of the toy model: full-parameter training
of a causal LM on (prompt, answer) pairs, resumable, in one process or data-parallel (`ttsi.sealshift.data_parallel`).

The models it trains are built by `ttsi.tiny_models`.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def train_causal_lm(model: Any, tokenizer: Any, examples: list[tuple[str, str]], steps: int, lr: float = 3e-3,
                    batch_size: int = 16, seed: int = 0, progress: Callable[[int, float], None] | None = None,
                    checkpoint: Callable[[int, Any], None] | None = None, every: int = 200,
                    emphasis: tuple[Callable[[str], list[tuple[int, int]]], float] | None = None,
                    workers: int = 1, state: TrainState | None = None) -> list[float]:
    """Full-parameter training on (prompt text, answer text) pairs, loss on answer tokens; returns step losses.

    `checkpoint(step, model)` is called every `every` steps (e.g. to save it, so a long run can be inspected).
    `emphasis = (spans, weight)`: the answer tokens that overlap `spans(answer)` (character ranges) count
    `weight` times in the loss, the others once (a weighted mean); without it the loss is the plain mean.
    `workers > 1` trains data-parallel (`ttsi.sealshift.data_parallel`): every process draws the same batches and takes
    its share of each, and their gradients are added up, so each step is the single-process step on the same
    batch up to float rounding, in about 1 / `workers` of the time when the cores are free.
    With `state`, the loop's state (weights, optimizer, losses, step) is saved to `state.path` every `every` steps,
    at the end, and when Ctrl-C stops it (at the next step boundary); if the file exists when training starts, the
    loop continues from it, so a resumed run ends with the same weights, bit for bit, as one that never stopped.
    """
    from ttsi.engine.train import encode_pair

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    encoded: list[tuple[list[int], ...]]
    if emphasis is None:
        encoded = [encode_pair(encode, prompt, answer, [tokenizer.eos_token_id]) for prompt, answer in examples]
    else:
        encoded = [_weighted_pair(tokenizer, prompt, answer, *emphasis) for prompt, answer in examples]
    loop = _Loop(steps, lr, batch_size, seed, tokenizer.pad_token_id, weighted=emphasis is not None, state=state)
    if workers == 1:
        return _train(model, encoded, loop, progress, checkpoint, every)
    if workers < 1 or min(batch_size, len(encoded)) < workers:
        raise ValueError(f"workers must be between 1 and the batch size ({min(batch_size, len(encoded))}), "
                         f"not {workers}")
    import io

    from ttsi.sealshift import data_parallel

    state = io.BytesIO()
    torch.save(model.state_dict(), state)
    return data_parallel.run(workers, lambda: _train(model, encoded, loop, progress, checkpoint, every),
                             _train_helper, (model.config, state.getvalue(), encoded, loop))


@dataclass(frozen=True)
class TrainState:
    """Where `train_causal_lm` keeps its resumable state, and what it must match (e.g. the recipe) to resume."""

    path: Path
    meta: dict[str, Any]


@dataclass(frozen=True)
class _Loop:
    steps: int
    lr: float
    batch_size: int
    seed: int
    pad_id: int
    weighted: bool
    state: TrainState | None = None


def _train(model: Any, encoded: list[Any], loop: _Loop, progress: Callable[[int, float], None] | None = None,
           checkpoint: Callable[[int, Any], None] | None = None, every: int = 200) -> list[float]:
    """The training loop of `train_causal_lm`, in one process or as one rank of a data-parallel group."""
    from ttsi.sealshift import data_parallel

    rank, world = data_parallel.rank_and_size()
    rng = random.Random(loop.seed)
    torch.manual_seed(loop.seed)
    batches = length_grouped(encoded, loop.batch_size, rng)
    optimizer = torch.optim.AdamW(model.parameters(), lr=loop.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, loop.steps // 20)
    losses: list[float] = []
    if loop.state and loop.state.path.exists():
        losses = _load_state(loop.state, model, optimizer, loop.steps)
        for _ in losses:  # the batches the saved steps drew: the data order goes on where it stopped
            next(batches)
    model.train()
    with _stop_on_ctrl_c(loop.state is not None and rank == 0) as stop:
        for step in range(len(losses), loop.steps):
            if stop.requested:
                _save_state(loop.state, model, optimizer, losses)
                raise KeyboardInterrupt
            _step(model, optimizer, loop, next(batches), step, warmup, losses, rank, world)
            if progress:
                progress(step, losses[-1])
            done = step + 1
            if loop.state and rank == 0 and (done % every == 0 or done == loop.steps):
                _save_state(loop.state, model, optimizer, losses)
            if checkpoint and done % every == 0 and done < loop.steps:
                model.eval()
                checkpoint(done, model)
                model.train()
    model.eval()
    return losses


def _step(model: Any, optimizer: Any, loop: _Loop, batch: list[Any], step: int, warmup: int, losses: list[float],
          rank: int, world: int) -> None:
    """One optimizer step on this rank's share of `batch`; its loss (the whole batch's) is appended to `losses`."""
    from ttsi.engine.train import collate
    from ttsi.sealshift import data_parallel

    scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / loop.steps))
    for group in optimizer.param_groups:
        group["lr"] = loop.lr * scale
    mine = batch[rank::world]
    inputs = collate([(ids, labels) for ids, labels, *_ in mine], loop.pad_id)
    weights = _pad_weights(mine) if loop.weighted else None
    if world == 1:
        loss = answer_loss(model, inputs, weights)
        loss.backward()
    else:  # each rank's share of the batch mean; their sum is the mean over the whole batch
        loss = answer_loss(model, inputs, weights, denominator=sum(_supervised(ex) for ex in batch))
        loss.backward()
        loss = data_parallel.sum_gradients(model, loss.detach())
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    losses.append(loss.item())


class _StopRequest:
    requested = False


@contextlib.contextmanager
def _stop_on_ctrl_c(enabled: bool) -> Iterator[_StopRequest]:
    """While enabled (in the main thread), Ctrl-C asks the loop to stop at the next step boundary instead of
    interrupting a step half done, so the state it saves is exactly that of the steps it finished."""
    stop = _StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request(signum: int, frame: Any) -> None:
        stop.requested = True

    previous = signal.signal(signal.SIGINT, request)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _save_state(state: TrainState | None, model: Any, optimizer: Any, losses: list[float]) -> None:
    """The loop's state after `len(losses)` steps, written to a temporary file and renamed over the last one."""
    if state is None:
        return
    state.path.parent.mkdir(parents=True, exist_ok=True)
    partial = state.path.with_name(state.path.name + ".partial")
    torch.save({"meta": state.meta, "step": len(losses), "losses": losses, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, partial)
    os.replace(partial, state.path)


def _load_state(state: TrainState, model: Any, optimizer: Any, steps: int) -> list[float]:
    """Restore a saved loop into `model` and `optimizer`; the losses of its steps (as many as it took)."""
    from ttsi.errors import ConfigError

    try:
        saved = torch.load(state.path, weights_only=True)
    except Exception as e:  # a file that is not a state this loop wrote
        raise ConfigError(f"{state.path} cannot be resumed from: {e}") from None
    changed = sorted(k for k in saved["meta"].keys() | state.meta.keys() if saved["meta"].get(k) != state.meta.get(k))
    if changed:
        raise ConfigError(f"cannot resume from {state.path}: it was saved with other settings ({', '.join(changed)})")
    if saved["step"] > steps:
        raise ConfigError(f"cannot resume from {state.path}: it is {saved['step']} steps in, beyond {steps}")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
    return list(saved["losses"])


def _train_helper(config: Any, state: bytes, encoded: list[Any], loop: _Loop) -> None:
    """A data-parallel rank other than 0: the same model from `state`, the same loop; its copy is then dropped."""
    import io

    from transformers import AutoModelForCausalLM

    weights = torch.load(io.BytesIO(state), weights_only=True)
    model = AutoModelForCausalLM.from_config(config).to(next(iter(weights.values())).dtype)
    model.load_state_dict(weights)
    _train(model, encoded, loop)


def _supervised(example: tuple[Any, ...]) -> float:
    """How much `example` adds to the loss's denominator: its labelled tokens, or their weights if it has them."""
    from ttsi.engine.train import IGNORE

    labels = example[1][1:]
    if len(example) < 3:
        return float(sum(label != IGNORE for label in labels))
    return float(sum(w for label, w in zip(labels, example[2][1:], strict=True) if label != IGNORE))


def _weighted_pair(tokenizer: Any, prompt: str, answer: str, spans: Callable[[str], list[tuple[int, int]]],
                   weight: float) -> tuple[list[int], list[int], list[float]]:
    """(input ids, labels, loss weights): `encode_pair`'s ids and labels, with `weight` on the emphasised tokens."""
    from ttsi.engine.train import IGNORE

    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    coded = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    ranges = spans(answer)
    weights = [weight if any(a < end and start < b for start, end in ranges) else 1.0
               for a, b in coded["offset_mapping"]]
    answer_ids = coded["input_ids"] + [tokenizer.eos_token_id]
    return (prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids,
            [0.0] * len(prompt_ids) + weights + [1.0])


def _pad_weights(batch: list[tuple[list[int], list[int], list[float]]]) -> torch.Tensor:
    width = max(len(ids) for ids, _, _ in batch)
    out = torch.zeros((len(batch), width))
    for row, (_, _, weights) in enumerate(batch):
        out[row, : len(weights)] = torch.tensor(weights)
    return out


def length_grouped(encoded: list[Any], batch_size: int, rng: random.Random, group: int = 8) -> Iterator[list[Any]]:
    """Endless random batches with little padding: draw `group` batches, sort their examples by length, re-cut.

    Every example is drawn as often as with plain random batches; only who shares a batch changes, so a batch
    pads to a length close to its own examples' (on SealShift, 5% padding instead of 27%).
    """
    size = min(batch_size, len(encoded))
    while size == len(encoded):  # every batch holds every example: nothing to group
        yield rng.sample(encoded, size)
    while True:
        pool = sorted((ex for _ in range(group) for ex in rng.sample(encoded, size)), key=lambda ex: len(ex[0]))
        cut = [pool[i:i + size] for i in range(0, len(pool), size)]
        rng.shuffle(cut)
        yield from cut


def answer_loss(model: Any, batch: dict[str, torch.Tensor], weights: torch.Tensor | None = None,
                denominator: float | None = None) -> torch.Tensor:
    """The causal LM loss of `model(**batch)`, computed for less: the LM head runs on the labelled positions only.

    With `weights` (one per position, as `input_ids`), the loss is the weighted mean over the labelled positions.
    With `denominator`, the (weighted) sum is divided by it instead of by this batch's own total: the batch's
    share of the mean over a larger batch that it is part of (data-parallel training).

    Batches are right-padded, so no attention mask is needed: a causal model never looks ahead at the padding.
    Without the mask the attention takes its fused causal kernel, and the vocabulary projection and softmax run
    on the answer tokens (a fraction of each sequence) instead of every position.
    """
    from ttsi.engine.train import IGNORE

    hidden = model.get_decoder()(input_ids=batch["input_ids"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    if weights is None and denominator is None:
        return torch.nn.functional.cross_entropy(logits.float(), labels[keep])
    losses = torch.nn.functional.cross_entropy(logits.float(), labels[keep], reduction="none")
    kept = weights[:, 1:][keep] if weights is not None else torch.ones_like(losses)
    return (losses * kept).sum() / (kept.sum() if denominator is None else denominator)
