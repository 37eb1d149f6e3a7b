"""T, self-learning: LoRA on the frozen base, a few gradient steps on the synthetic pairs, answer, exact reset.

The agent's `Learner` owns its adapters explicitly: a `ttsi.engine.lora.MultiLoRA` installed into the model on
first use (a base-only agent never touches the model) with one slot per input adapted together, all starting
from the same initial A (B = 0) drawn from the learner's seed. Adaptation and reset are one scoped operation:

    with learner.adapted(examples_per_input, seeds) as logs:    # slot i trained on examples_per_input[i]
        answers = learner.generate(prompts, slots)              # each prompt with its slot (or the base model)
    # every slot is back to its initial tensors here, in place: the model is the base model, bit for bit

so no path (an exception included) can skip the reset. A second learner on the same model is refused while
this one is installed; `close()` takes the adapters out again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ttsi.config import LearnConfig
from ttsi.engine.lora import NO_ADAPTER, MultiLoRA
from ttsi.engine.train import Example, SlotTrainer, TrainLog
from ttsi.model import HFModel

__all__ = ["NO_ADAPTER", "Learner", "TrainLog"]


class Learner:
    """One agent's LoRA slots on a model: `adapted(...)` trains them for a with-block, then resets them."""

    def __init__(self, model: HFModel, config: LearnConfig, seed: int = 0):
        self.model = model
        self.config = config
        self.seed = seed
        self.lora: MultiLoRA | None = None
        self._trainer: SlotTrainer | None = None
        self._active = False

    @contextmanager
    def adapted(self, batches: Sequence[list[Example]], seeds: Sequence[int],
                progress: Callable[[int, dict[int, float]], None] | None = None) -> Iterator[list[TrainLog]]:
        """Slot i trained on batches[i] (prompt text, answer text pairs) with seed seeds[i], for the with-block.

        Each slot's training is what it would be alone: the configured epochs, seeded shuffle, cosine schedule,
        per-slot clip and a fresh AdamW (see `ttsi.engine.train`). On exit, normal or not, every slot is reset.
        """
        if self._active:
            raise RuntimeError("adapted() blocks do not nest: the slots of the outer block are in use")
        if len(seeds) != len(batches):
            raise ValueError(f"{len(batches)} example lists but {len(seeds)} seeds")
        self._active = True
        try:
            logs = self._trainer_for(len(batches)).train(list(batches), list(seeds), progress) if batches else []
            yield logs
        finally:
            self._active = False
            self.reset()

    def generate(self, prompts: list[str], slots: Sequence[int] | None = None, **kwargs: Any) -> list[str]:
        """Completions of `prompts`, prompt i with adapter slot slots[i] (NO_ADAPTER, or no slots: the base model).

        Keyword arguments are `HFModel.generate`'s. Outside `adapted()` every slot is the base model.
        """
        slots = list(slots) if slots is not None else [NO_ADAPTER] * len(prompts)
        if len(slots) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(slots)} slots")
        if all(s == NO_ADAPTER for s in slots):
            return self.model.generate(prompts, **kwargs)
        if not self._active or self.lora is None:
            raise ValueError("adapter slots hold trained adapters only inside learner.adapted(): generate there")
        return self.lora.generate(prompts, slots, **kwargs)

    def fits(self, examples: Sequence[Example]) -> list[bool]:
        """Whether each example, as training encodes it (prompt, answer, end-of-turn token), fits in the model's
        context window (every one does when the window is unknown)."""
        window = self.model.context_window
        if window is None:
            return [True] * len(examples)
        counts = self.model.count_tokens([text for example in examples for text in example])
        eos = len(self.model.eos_ids[:1])
        return [p + a + eos <= window for p, a in zip(counts[::2], counts[1::2], strict=True)]

    def reset(self) -> None:
        """Restore every slot's initial adapter in place: the model is the base model again, bit for bit."""
        if self.lora is not None:
            self.lora.reset()

    def save(self, directory: str | Path, slot: int = 0) -> None:
        """Write a trained slot's adapter in PEFT's format (call it inside `adapted()`, before the reset)."""
        if self.lora is None or not self._active:
            raise RuntimeError("save() needs a trained adapter: call it inside learner.adapted()")
        self.lora.save(slot, directory)

    def close(self) -> None:
        """Take the LoRA layers out of the model again, leaving its original modules (idempotent)."""
        if self.lora is not None:
            self.lora.uninstall()
            self.lora, self._trainer = None, None

    @property
    def installed(self) -> bool:
        return self.lora is not None

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable adapter tensors (each stacked over the slots); empty before the first adaptation."""
        return [] if self.lora is None else self.lora.parameters()

    def install(self, slots: int = 1) -> MultiLoRA:
        """Install the adapter layers now, with at least `slots` slots (otherwise the first adaptation does).

        An installed engine with fewer slots is replaced; the initial A is drawn from the seed, so it is the same
        for every slot count. Refused (ConfigError) while another learner's adapters are in the model.
        """
        if self.lora is not None and self.lora.slots < slots:
            self.close()
        if self.lora is None:
            self.lora = MultiLoRA.install(self.model, self.config, max(1, slots), self.seed)
            self.model.model.eval()
            self._trainer = SlotTrainer(self.lora, self.config)
        return self.lora

    def _trainer_for(self, slots: int) -> SlotTrainer:
        self.install(slots)
        assert self._trainer is not None
        return self._trainer
