"""Self-learning: LoRA adapters on the frozen base, a few gradient steps on the synthetic pairs, then an exact reset.

The adapters live in a `ttsi.multilora.MultiLoRA` engine installed into the model once: every target Linear
carries `slots` independent adapters, all starting from the same initial A (B = 0), drawn from a generator seeded
with the learner's seed. Slot 0 is the model's active adapter, as a PEFT adapter would be: `adapt()` trains it;
`adapt_many()` trains one slot per example list in one forward/backward per step, and
`engine.generate(prompts, slots)` answers each prompt with its own slot. `reset()` copies the initial tensors back
into every slot in place, so each update B @ A is exactly zero again and every logit is bit-identical to the base
model's; nothing is re-wrapped or deep-copied per input, and each training starts from a fresh optimizer. peft is
imported only to write an adapter in its format (`save`).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ttsi.config import LearnConfig
from ttsi.model import HFModel

if TYPE_CHECKING:
    from ttsi.multilora import MultiLoRA

IGNORE = -100  # label of prompt tokens: the loss covers answer tokens only
_ATTACHED: weakref.WeakKeyDictionary[HFModel, Learner] = weakref.WeakKeyDictionary()


@dataclass
class TrainLog:
    """What one adaptation did, step by step."""

    steps: int
    losses: list[float]
    lrs: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_pair(encode: Callable[[str], list[int]], prompt: str, answer: str,
                eos: list[int]) -> tuple[list[int], list[int]]:
    """(input ids, labels) for one example: the loss covers the answer and its end-of-turn token only."""
    prompt_ids, answer_ids = encode(prompt), encode(answer) + eos
    return prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int,
            device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (positions start at 0 without extra position ids)."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (seq, lab) in enumerate(batch):
        ids[row, : len(seq)], labels[row, : len(lab)], mask[row, : len(seq)] = torch.tensor(seq), torch.tensor(lab), 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup then cosine decay to 0, as Hugging Face's cosine schedule (step 0 of a warmup is lr 0)."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


class Learner:
    """Owns the model's LoRA slots: `adapt(examples)` trains slot 0, `reset()` restores every slot in place."""

    def __init__(self, model: HFModel, config: LearnConfig, seed: int = 0, slots: int = 1):
        if slots < 1:
            raise ValueError(f"need at least one adapter slot, got {slots}")
        self.model = model
        self.config = config
        self.seed = seed
        self.slots = slots
        self.engine: MultiLoRA | None = None

    @classmethod
    def attach(cls, model: HFModel, config: LearnConfig, seed: int = 0, slots: int = 1) -> Learner:
        """The model's learner: shared by every agent on the model, so LoRA layers are never inserted twice.

        The same settings and seed give the same learner, grown to at least `slots` slots; other settings replace it.
        """
        current = _ATTACHED.get(model)
        if current is not None and current.config == config and current.seed == seed:
            current.reserve(slots)
            return current
        if current is not None:
            current.unwrap()
        _ATTACHED[model] = learner = cls(model, config, seed, slots)
        return learner

    @property
    def wrapped(self) -> bool:
        return self.engine is not None

    def wrap(self) -> None:
        """Install the adapter slots once (lazily: a base-only run never touches the model); slot 0 is active."""
        if self.engine is not None:
            return
        from ttsi.multilora import MultiLoRA  # it builds on this module's helpers

        self.engine = MultiLoRA.install(self.model, self.config, self.slots, self.seed)
        self.engine.set_slots([0])  # as a PEFT adapter: the model runs with slot 0 (B = 0 until trained)
        self.model.model.eval()

    def reserve(self, slots: int) -> None:
        """Have at least `slots` slots: an installed engine with fewer is uninstalled and installed again.

        The initial adapter is drawn from the seed, so it is the same for every slot count; trained slots are lost
        (call it between inputs, after `reset`).
        """
        if slots <= self.slots:
            return
        self.slots = slots
        if self.engine is not None:
            self.unwrap()
            self.wrap()

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable adapter tensors (each stacked over the slots); empty before `wrap`."""
        return [] if self.engine is None else self.engine._params()

    def adapt(self, examples: list[tuple[str, str]], seed: int = 0,
              progress: Callable[[int, float], None] | None = None) -> TrainLog:
        """Train slot 0 on (prompt text, answer text) pairs with the configured schedule; the model then uses it."""
        each = None if progress is None else (lambda step, losses: progress(step, losses[0]))
        return self.adapt_many([examples], [seed], each)[0]

    def adapt_many(self, batches: list[list[tuple[str, str]]], seeds: list[int],
                   progress: Callable[[int, dict[int, float]], None] | None = None) -> list[TrainLog]:
        """Train slot i on batches[i] with seed seeds[i], all in one forward/backward per step; a log per slot.

        Each slot's training is `adapt(batches[i], seeds[i])` on its own (see `MultiLoRA.train`); answer with
        `engine.generate(prompts, slots)`. Slots continue from their current state: `reset()` first for fresh ones.
        """
        self.reserve(len(batches))
        self.wrap()
        assert self.engine is not None
        return self.engine.train(batches, seeds, progress)

    def unwrap(self) -> None:
        """Take the LoRA layers out again, leaving the original modules (used when the LoRA settings change)."""
        if self.engine is not None:
            self.engine.uninstall()
            self.engine = None

    def reset(self) -> None:
        """Restore every slot's initial adapter in place: the model is the base model again, bit for bit."""
        if self.engine is not None:
            self.engine.reset()

    def save(self, directory: str | Path) -> None:
        """Write slot 0's adapter in PEFT's format (adapter_config.json + adapter_model.safetensors)."""
        self.wrap()
        assert self.engine is not None
        self.engine.save(0, directory)

    def _encode(self, prompt: str, answer: str) -> tuple[list[int], list[int]]:
        return encode_pair(self.model.encode, prompt, answer, self.model.eos_ids[:1])  # learn to stop, too
