"""Self-learning: a LoRA on the frozen base, a few gradient steps on the synthetic pairs, then an exact reset.

The model is wrapped once. `reset()` copies the initial adapter tensors back in place, so the LoRA update
B @ A is exactly zero again and every logit is bit-identical to the base model's; nothing is re-wrapped or
deep-copied per input, and each `adapt()` starts from a fresh optimizer.
"""

from __future__ import annotations

import math
import random
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ttsi.config import LearnConfig
from ttsi.model import HFModel

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
    """Owns the model's LoRA: `adapt(examples)` trains it, `reset()` restores its initial state in place."""

    def __init__(self, model: HFModel, config: LearnConfig, seed: int = 0):
        self.model = model
        self.config = config
        self.seed = seed
        self.peft_model: Any = None
        self._params: list[torch.nn.Parameter] = []
        self._initial: list[torch.Tensor] = []

    @classmethod
    def attach(cls, model: HFModel, config: LearnConfig, seed: int = 0) -> Learner:
        """The model's learner: shared by every agent on the model, so LoRA layers are never inserted twice."""
        current = _ATTACHED.get(model)
        if current is not None and current.config == config and current.seed == seed:
            return current
        if current is not None:
            current.unwrap()
        _ATTACHED[model] = learner = cls(model, config, seed)
        return learner

    @property
    def wrapped(self) -> bool:
        return self.peft_model is not None

    def wrap(self) -> None:
        """Insert the LoRA layers once (lazily: a base-only run never imports peft)."""
        if self.wrapped:
            return
        from peft import LoraConfig, get_peft_model

        c = self.config
        lora = LoraConfig(r=c.rank, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=c.target_modules,
                          task_type="CAUSAL_LM")
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)  # the initial A matrices; B starts at zero
            self.peft_model = get_peft_model(self.model.model, lora)
        # get_peft_model injects the LoRA layers into the model object itself, so self.model keeps working.
        self._params = [p for n, p in self.peft_model.named_parameters() if p.requires_grad and "lora_" in n]
        self._initial = [p.detach().clone() for p in self._params]
        self.model.model.eval()

    def adapt(self, examples: list[tuple[str, str]], seed: int = 0,
              progress: Callable[[int, float], None] | None = None) -> TrainLog:
        """Train the adapter on (prompt text, answer text) pairs with the configured schedule."""
        self.wrap()
        c = self.config
        encoded = [self._encode(prompt, answer) for prompt, answer in examples]
        per_epoch = math.ceil(len(encoded) / c.batch_size)
        total = c.epochs * per_epoch
        warmup = math.ceil(c.warmup_ratio * total)
        optimizer = torch.optim.AdamW(self._params, lr=c.lr, weight_decay=c.weight_decay)
        order_rng = random.Random(seed)
        losses, lrs = [], []
        self.model.model.train()
        try:
            for _ in range(c.epochs):
                order = list(range(len(encoded)))
                order_rng.shuffle(order)
                for start in range(0, len(order), c.batch_size):
                    lr = c.lr * lr_factor(len(losses), total, warmup)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    batch = collate([encoded[i] for i in order[start: start + c.batch_size]],
                                    self.model.pad_id, self.model.device)
                    loss = self.model.model(**batch).loss
                    loss.backward()
                    if c.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(self._params, c.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    losses.append(float(loss.detach()))
                    lrs.append(lr)
                    if progress is not None:
                        progress(len(losses) - 1, losses[-1])
        finally:
            self.model.model.eval()
        return TrainLog(steps=len(losses), losses=losses, lrs=lrs)

    def unwrap(self) -> None:
        """Take the LoRA layers out again, leaving the original modules (used when the LoRA settings change)."""
        if self.wrapped:
            self.peft_model.unload()
            self.peft_model, self._params, self._initial = None, [], []

    @torch.no_grad()
    def reset(self) -> None:
        """Restore the initial adapter in place: the model is the base model again, bit for bit."""
        for param, initial in zip(self._params, self._initial, strict=True):
            param.copy_(initial)
            param.grad = None

    def save(self, directory: str | Path) -> None:
        """Write the current adapter in PEFT's format (adapter_config.json + adapter_model.safetensors)."""
        self.wrap()
        self.peft_model.save_pretrained(str(directory))

    def _encode(self, prompt: str, answer: str) -> tuple[list[int], list[int]]:
        return encode_pair(self.model.encode, prompt, answer, self.model.eos_ids[:1])  # learn to stop, too
