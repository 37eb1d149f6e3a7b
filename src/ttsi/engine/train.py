"""Training many LoRA slots at once: encoding and collation of examples, the paper's schedule, a per-slot AdamW.

`SlotTrainer.train` trains slot s on its own examples exactly as it would train alone, because nothing couples
the slots:

- loss: the sum over slots of each slot's own mean answer-token loss. Rows never interact (attention stays within
  a row, the base is frozen) and slot s's A and B only touch slot s's rows, so d(loss)/d(slot s) is the gradient
  slot s's loss would have alone.
- clipping: each slot's gradient norm is taken over its own A and B slices (a global clip would couple slots).
- optimizer: `SlotAdamW`, torch's AdamW update applied elementwise with a per-slot learning rate and step count;
  slots without a batch at a step are left exactly as they are.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ttsi.config import LearnConfig
from ttsi.engine.lora import MultiLoRA

IGNORE = -100  # label of prompt tokens: the loss covers answer tokens only
Example = tuple[str, str]  # (prompt text, answer text)
Encoded = tuple[list[int], list[int]]  # (input ids, labels) of one example, as `encode_pair` makes them


@dataclass
class TrainLog:
    """What one slot's training did, step by step."""

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


class SlotAdamW:
    """torch.optim.AdamW's update on stacked (slot, ...) tensors: one independent optimizer per slot.

    Each slot has its own step count (so its own bias correction) and learning rate; a step touches only the slots
    it is given, leaving the others' parameters and moments exactly as they were. The moments are float32, as the
    adapters are, whatever the model's dtype.
    """

    def __init__(self, params: list[nn.Parameter], slots: int, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        self.params = params
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = [0] * slots

    @torch.no_grad()
    def clear(self, slots: Iterable[int]) -> None:
        """Forget the moments and step counts of these slots (a fresh optimizer for them)."""
        slots = list(slots)
        if len(slots) == len(self.steps):  # every slot: one fused zeroing instead of one small write per slot
            self.steps = [0] * len(self.steps)
            torch._foreach_zero_([*self.exp_avg, *self.exp_avg_sq])
            return
        for slot in slots:
            self.steps[slot] = 0
            for state in (*self.exp_avg, *self.exp_avg_sq):
                state[slot] = 0.0

    @torch.no_grad()
    def step(self, active: Sequence[int], lrs: Sequence[float]) -> None:
        """One AdamW step for each slot in `active`, slot `active[i]` at learning rate `lrs[i]`."""
        if len(active) != len(lrs):
            raise ValueError(f"{len(active)} slots but {len(lrs)} learning rates")
        if not active:
            return
        beta1, beta2 = self.betas
        for slot in active:
            self.steps[slot] += 1
        counts = [self.steps[s] for s in active]
        # Python floats, as torch computes them, turned into per-slot vectors below
        decay = [1 - lr * self.weight_decay for lr in lrs]
        neg_step = [-lr / (1 - beta1 ** n) for lr, n in zip(lrs, counts, strict=True)]
        bc2_sqrt = [(1 - beta2 ** n) ** 0.5 for n in counts]
        every = len(active) == len(self.steps) and list(active) == list(range(len(self.steps)))
        for param, exp_avg, exp_avg_sq in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if param.grad is None:
                continue
            if every:  # all slots in order: update in place, no gather/scatter of the stacked tensors
                grad, p, m, v = param.grad, param.data, exp_avg, exp_avg_sq
            else:
                idx = torch.tensor(active, device=param.device)
                grad, p = param.grad.index_select(0, idx), param.index_select(0, idx)
                m, v = exp_avg.index_select(0, idx), exp_avg_sq.index_select(0, idx)
            p.mul_(_per_slot(decay, p))
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / _per_slot(bc2_sqrt, p)).add_(self.eps)
            p.addcdiv_(m * _per_slot(neg_step, p), denom)
            if not every:
                param.index_copy_(0, idx, p)
                exp_avg.index_copy_(0, idx, m)
                exp_avg_sq.index_copy_(0, idx, v)


class SlotTrainer:
    """Trains the slots of one `MultiLoRA` with the configured epochs, schedule, clip and a fresh AdamW per slot."""

    def __init__(self, lora: MultiLoRA, config: LearnConfig):
        self.lora = lora
        self.config = config
        self.optimizer = SlotAdamW(lora.parameters(), lora.slots, weight_decay=config.weight_decay)

    def train(self, batches: list[list[Example]], seeds: list[int],
              progress: Callable[[int, dict[int, float]], None] | None = None) -> list[TrainLog]:
        """Train slot s on batches[s] with seed seeds[s]; a log per slot.

        Every slot runs its own epochs x ceil(n_s / batch_size) steps with its own shuffle, cosine schedule,
        clip and a fresh AdamW; at each step all slots still training go through one forward/backward. A slot
        continues from its current adapter (reset it first for a fresh one); a slot with no examples is not
        touched. `progress(step, {slot: loss})` is called after every step.
        """
        lora = self.lora
        if len(batches) > lora.slots:
            raise ValueError(f"{len(batches)} example lists but only {lora.slots} adapter slots")
        if len(seeds) != len(batches):
            raise ValueError(f"{len(batches)} example lists but {len(seeds)} seeds")
        plans = [self._plan(examples, seed) for examples, seed in zip(batches, seeds, strict=True)]
        totals = [len(plan) for plan in plans]
        warmups = [math.ceil(self.config.warmup_ratio * total) for total in totals]
        trained = [slot for slot, total in enumerate(totals) if total]
        self.optimizer.clear(trained)
        logs = [TrainLog(steps=total, losses=[], lrs=[]) for total in totals]
        net = lora.model.model
        net.train()
        try:
            for step in range(max(totals, default=0)):
                active = [slot for slot in trained if step < totals[slot]]
                lrs = [self.config.lr * lr_factor(step, totals[s], warmups[s]) for s in active]
                losses = self._step(active, [plans[s][step] for s in active], lrs)
                for slot, loss, lr in zip(active, losses, lrs, strict=True):
                    logs[slot].losses.append(loss)
                    logs[slot].lrs.append(lr)
                if progress is not None:
                    progress(step, dict(zip(active, losses, strict=True)))
        finally:
            net.eval()
        return logs

    def _plan(self, examples: list[Example], seed: int) -> list[list[Encoded]]:
        """The mini-batches one slot trains on, in order: epochs of a seeded shuffle, cut into batches."""
        encoded = [self._encode(prompt, answer) for prompt, answer in examples]
        size = self.config.batch_size
        order_rng = random.Random(seed)
        plan = []
        for _ in range(self.config.epochs):
            order = list(range(len(encoded)))
            order_rng.shuffle(order)
            plan += [[encoded[i] for i in order[start: start + size]] for start in range(0, len(order), size)]
        return plan

    def _step(self, active: list[int], minibatches: list[list[Encoded]], lrs: list[float]) -> list[float]:
        """One forward/backward over every active slot's rows, a per-slot clip and AdamW step; the slots' losses."""
        model = self.lora.model
        rows = [example for minibatch in minibatches for example in minibatch]
        row_slots = [slot for slot, minibatch in zip(active, minibatches, strict=True) for _ in minibatch]
        batch = collate(rows, model.pad_id, model.device)
        with self.lora.use(row_slots):
            logits = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 use_cache=False).logits
        per_slot = slot_losses(logits, batch["labels"], torch.tensor(row_slots, device=logits.device),
                               self.lora.slots)
        active_losses = per_slot[torch.tensor(active, device=logits.device)]
        active_losses.sum().backward()
        params = self.lora.parameters()
        if self.config.max_grad_norm is not None:
            clip_per_slot([p.grad for p in params if p.grad is not None], self.config.max_grad_norm)
        self.optimizer.step(active, lrs)
        for param in params:
            param.grad = None
        return active_losses.detach().tolist()

    def _encode(self, prompt: str, answer: str) -> Encoded:
        """The answer and the first end-of-turn token are the only labelled tokens (the model learns to stop)."""
        model = self.lora.model
        ids, labels = encode_pair(model.encode, prompt, answer, model.eos_ids[:1])
        if all(label == IGNORE for label in labels):
            raise ValueError(f"example answer {answer!r} has no tokens to learn (and the model has no EOS token)")
        return ids, labels


def slot_losses(logits: torch.Tensor, labels: torch.Tensor, row_slots: torch.Tensor, slots: int) -> torch.Tensor:
    """Each slot's mean next-token cross-entropy over its rows' labelled tokens, as HF's causal-LM loss; (slots,).

    Slots without rows get NaN (0 / 0); callers sum only the slots they trained.
    """
    targets = labels[:, 1:]
    token_loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                 ignore_index=IGNORE, reduction="none").view(targets.shape)
    zeros = torch.zeros(slots, device=logits.device)
    total = zeros.index_add(0, row_slots, token_loss.sum(1))
    count = zeros.index_add(0, row_slots, (targets != IGNORE).sum(1).float())
    return total / count


def slot_grad_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """Each slot's gradient norm over its own slices of all stacked tensors: (slots,)."""
    per_tensor = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])
    return torch.linalg.vector_norm(per_tensor, dim=0)


@torch.no_grad()
def clip_per_slot(grads: list[torch.Tensor], max_norm: float) -> None:
    """`torch.nn.utils.clip_grad_norm_` for each slot on its own: a slot's gradients scale by its own norm only."""
    coef = (max_norm / (slot_grad_norms(grads) + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(coef.view((-1,) + (1,) * (grad.dim() - 1)))


def _per_slot(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """One value per slot, shaped to broadcast over the slot dimension of `like`."""
    shape = (-1,) + (1,) * (like.dim() - 1)
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(shape)


__all__ = ["IGNORE", "Encoded", "Example", "SlotAdamW", "SlotTrainer", "TrainLog", "clip_per_slot", "collate",
           "encode_pair", "lr_factor", "slot_grad_norms", "slot_losses"]
