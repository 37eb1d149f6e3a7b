"""Many independent LoRA adapters on one frozen model, trained together in one forward/backward per step.

TT-SI adapts a fresh LoRA per uncertain input. Doing that one input at a time leaves the accelerator mostly idle
(a handful of short sequences per step), so this module keeps S adapter *slots* side by side: every target
`nn.Linear` becomes a `StackedLoRALinear` whose A and B carry a leading slot dimension, and each row of a batch
uses the slot a shared `SlotIndex` assigns to it. Training slot s on its own examples is then exactly what
`Learner.adapt` does alone, because nothing couples the slots:

- loss: the sum over slots of each slot's own mean answer-token loss. Rows never interact (attention stays within
  a row, the base is frozen) and slot s's A and B only touch slot s's rows, so d(loss)/d(slot s) is the gradient
  slot s's loss would have alone.
- clipping: each slot's gradient norm is taken over its own A and B slices (a global clip would couple slots).
- optimizer: `SlotAdamW`, torch's AdamW update applied elementwise with a per-slot learning rate and step count;
  slots without a batch at a step are left exactly as they are.

`reset()` copies the initial tensors back in place (B is zero again, so the model is the base model bit for bit),
and `save()` writes one slot in PEFT's format. Lora dropout is not supported: per-slot dropout masks would depend
on which other inputs share the batch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ttsi.config import LearnConfig
from ttsi.errors import ConfigError
from ttsi.learn import IGNORE, TrainLog, collate, encode_pair, lr_factor
from ttsi.model import HFModel

NO_ADAPTER = -1  # the slot of a row that runs on the base model alone
Encoded = tuple[list[int], list[int]]  # (input ids, labels) of one example, as `encode_pair` makes them


class SlotIndex:
    """Which adapter slot each row of the next forward passes uses; one object shared by all stacked layers.

    When every row uses the same slot (or none does), `uniform` holds it and the layers take a plain matmul path
    that works for any batch size; otherwise `rows` holds one slot per row and `off` marks rows without one.
    Index tensors live on the model's device at install time (move the model before installing).
    """

    def __init__(self, slots: int, device: torch.device):
        self.slots = slots
        self.device = device
        self.uniform: int | None = NO_ADAPTER
        self.rows: torch.Tensor | None = None
        self.off: torch.Tensor | None = None
        self.assigned: list[int] | None = None

    def set(self, rows: Sequence[int] | None) -> None:
        """Assign a slot (or NO_ADAPTER) to every row; None: every row runs on the base model."""
        rows = None if rows is None else [int(s) for s in rows]
        bad = [s for s in rows or [] if not NO_ADAPTER <= s < self.slots]
        if bad:
            raise ValueError(f"slot {bad[0]} out of range: {self.slots} slots (or {NO_ADAPTER} for none)")
        self.assigned = rows
        if not rows or len(set(rows)) == 1:
            self.uniform, self.rows, self.off = (rows[0] if rows else NO_ADAPTER), None, None
            return
        slots = torch.tensor(rows, dtype=torch.long)
        self.uniform = None
        self.rows = slots.clamp(min=0).to(self.device)
        self.off = (slots < 0).to(self.device) if NO_ADAPTER in rows else None


class StackedLoRALinear(nn.Module):
    """A frozen `nn.Linear` plus S LoRA adapters: row i of the input gets base(x) + B[s_i] A[s_i] x * alpha / r.

    A (`lora_A`) is (S, r, in) and B (`lora_B`) is (S, out, r), both float32 whatever the base dtype (as PEFT keeps
    its adapters); the frozen layer is `base_layer`, PEFT's names, so code that looks for LoRA parameters finds them.
    Every slot starts from the same A, so an input's result never depends on which slot it was given.
    """

    def __init__(self, base: nn.Linear, slots: int, rank: int, alpha: float, index: SlotIndex,
                 initial_A: torch.Tensor):
        super().__init__()
        self.base_layer = base
        self.index = index
        self.scale = alpha / rank
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(slots, rank, base.in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(slots, base.out_features, rank, device=device))
        self.register_buffer("initial_A", initial_A.to(device=device, dtype=torch.float32).clone(), persistent=False)
        self.reset()

    @torch.no_grad()
    def reset(self, slot: int | None = None) -> None:
        """Copy the initial A and a zero B into one slot (or all) in place."""
        which = slice(None) if slot is None else slot
        self.lora_A[which] = self.initial_A
        self.lora_B[which] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        uniform = self.index.uniform
        if uniform == NO_ADAPTER:
            return result
        h = x.to(self.lora_A.dtype)
        # one slot for the whole batch: the two matmuls PEFT does; else each row through its own slot
        if uniform is None:
            lora = self._per_row(h)
        else:
            lora = F.linear(F.linear(h, self.lora_A[uniform]), self.lora_B[uniform])
        return (result + lora * self.scale).to(result.dtype)

    def _per_row(self, h: torch.Tensor) -> torch.Tensor:
        """Each row through its own slot: gather A[s_i] and B[s_i], then two batched matmuls over the sequence."""
        rows, off = self.index.rows, self.index.off
        assert rows is not None
        if h.shape[0] != rows.shape[0]:
            raise ValueError(f"the slot index assigns {rows.shape[0]} rows but the batch has {h.shape[0]}")
        flat = h.reshape(h.shape[0], -1, h.shape[-1])  # (batch, seq, in)
        out = torch.bmm(torch.bmm(flat, self.lora_A[rows].transpose(1, 2)), self.lora_B[rows].transpose(1, 2))
        if off is not None:  # those rows borrowed slot 0's adapter; a fill (not a product) stays 0 even on inf
            out = out.masked_fill(off[:, None, None], 0.0)
        return out.reshape(*h.shape[:-1], out.shape[-1])


class SlotAdamW:
    """torch.optim.AdamW's update on stacked (slot, ...) tensors: one independent optimizer per slot.

    Each slot has its own step count (so its own bias correction) and learning rate; a step touches only the slots
    it is given, leaving the others' parameters and moments exactly as they were.
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
        for param, exp_avg, exp_avg_sq in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if param.grad is None:
                continue
            idx = torch.tensor(active, device=param.device)
            grad, p = param.grad.index_select(0, idx), param.index_select(0, idx)
            m, v = exp_avg.index_select(0, idx), exp_avg_sq.index_select(0, idx)
            p.mul_(_per_slot(decay, p))
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / _per_slot(bc2_sqrt, p)).add_(self.eps)
            p.addcdiv_(m * _per_slot(neg_step, p), denom)
            param.index_copy_(0, idx, p)
            exp_avg.index_copy_(0, idx, m)
            exp_avg_sq.index_copy_(0, idx, v)


class MultiLoRA:
    """S LoRA adapter slots installed into an HFModel: train many inputs' adapters at once, answer, reset.

    Use `MultiLoRA.install(model, config, slots, seed)`; `uninstall()` puts the original layers back. While
    installed, rows run on the base model unless a slot is assigned (`use`, `set_slots`, `generate`).
    """

    def __init__(self, model: HFModel, config: LearnConfig, slots: int, index: SlotIndex,
                 layers: dict[str, StackedLoRALinear], requires_grad: dict[str, bool]):
        self.model = model
        self.config = config
        self.slots = slots
        self.index = index
        self.layers = layers
        self._requires_grad = requires_grad
        self._optimizer = SlotAdamW(self._params(), slots, weight_decay=config.weight_decay)

    @classmethod
    def install(cls, model: HFModel, config: LearnConfig, slots: int, seed: int = 0) -> MultiLoRA:
        """Replace every target Linear of `model` by a StackedLoRALinear with `slots` slots; freeze the base.

        The initial A of each layer is drawn once (kaiming-uniform, as PEFT) from a generator seeded with `seed`,
        in module order, and copied into every slot; B starts at zero.
        """
        _check_install(model, config, slots)
        net = model.model
        names = _target_names(net, config.target_modules)
        requires_grad = {name: p.requires_grad for name, p in net.named_parameters()}
        net.requires_grad_(False)
        generator = torch.Generator().manual_seed(seed)
        index = SlotIndex(slots, model.device)
        layers = {}
        for name in names:
            base = net.get_submodule(name)
            initial = torch.empty(config.rank, base.in_features)
            nn.init.kaiming_uniform_(initial, a=math.sqrt(5), generator=generator)
            layers[name] = StackedLoRALinear(base, slots, config.rank, config.alpha, index, initial)
            net.set_submodule(name, layers[name])
        return cls(model, config, slots, index, layers, requires_grad)

    def uninstall(self) -> None:
        """Put the original Linear modules back and restore which base parameters required gradients."""
        self._check_installed()
        net = self.model.model
        for name, layer in self.layers.items():
            net.set_submodule(name, layer.base_layer)
        for name, param in net.named_parameters():
            param.requires_grad_(self._requires_grad.get(name, param.requires_grad))
        self.layers = {}

    # ---- slot selection ---------------------------------------------------------------------------------------

    def set_slots(self, rows: Sequence[int] | None) -> None:
        """The slot of each row of the following forward passes (NO_ADAPTER or None: the base model)."""
        self._check_installed()
        self.index.set(rows)

    @contextmanager
    def use(self, rows: Sequence[int] | None) -> Iterator[None]:
        """`set_slots(rows)` for the duration of a with-block, then the previous assignment again.

        With different slots per row, every forward in the block must have exactly len(rows) rows (a ValueError
        says otherwise); one slot for all rows works with any batch, e.g. `HFModel.score`'s prompt-then-chunks.
        """
        previous = self.index.assigned
        self.set_slots(rows)
        try:
            yield
        finally:
            self.index.set(previous)

    def generate(self, prompts: list[str], slots: Sequence[int], **kwargs: Any) -> list[str]:
        """`HFModel.generate` where prompt i is answered with adapter slot `slots[i]` (NO_ADAPTER: base model).

        Hugging Face expands each prompt into num_return_sequences consecutive rows, so the slots are expanded
        the same way. Greedy answers equal each prompt's answer alone; sampled ones draw from one shared RNG,
        so they depend on the batch (as they do for `HFModel.generate` itself).
        """
        if len(slots) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(slots)} slots")
        repeat = kwargs.get("num_return_sequences", 1)
        with self.use([s for s in slots for _ in range(repeat)]):
            return self.model.generate(prompts, **kwargs)

    # ---- state ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def reset(self, slot: int | None = None) -> None:
        """Restore one slot (or all) to the initial adapter in place and clear its optimizer state."""
        self._check_installed()
        which = range(self.slots) if slot is None else [self._check_slot(slot)]
        for layer in self.layers.values():
            layer.reset(slot)
            layer.lora_A.grad = layer.lora_B.grad = None
        self._optimizer.clear(which)

    @torch.no_grad()
    def load_initial(self, lora_A: Mapping[str, torch.Tensor]) -> None:
        """Start every slot from these A matrices (module name -> (rank, in)), e.g. a PEFT adapter's; resets all."""
        self._check_installed()
        if set(lora_A) != set(self.layers):
            missing, extra = sorted(set(self.layers) - set(lora_A)), sorted(set(lora_A) - set(self.layers))
            raise ValueError(f"initial A must name exactly the adapted modules; missing {missing}, extra {extra}")
        for name, layer in self.layers.items():
            layer.initial_A.copy_(lora_A[name])
        self.reset()

    def adapter_state(self, slot: int) -> dict[str, torch.Tensor]:
        """Slot `slot`'s adapter as PEFT names it in adapter_model.safetensors (copies, detached)."""
        self._check_installed()
        self._check_slot(slot)
        state = {}
        for name, layer in self.layers.items():
            state[f"base_model.model.{name}.lora_A.weight"] = layer.lora_A[slot].detach().clone()
            state[f"base_model.model.{name}.lora_B.weight"] = layer.lora_B[slot].detach().clone()
        return state

    def save(self, slot: int, directory: str | Path) -> None:
        """Write one slot as a PEFT adapter (adapter_config.json + adapter_model.safetensors)."""
        from peft import LoraConfig
        from safetensors.torch import save_file

        state = self.adapter_state(slot)
        c = self.config
        targets = (sorted({name.rsplit(".", 1)[-1] for name in self.layers}) if c.target_modules == "all-linear"
                   else list(c.target_modules))
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        LoraConfig(r=c.rank, lora_alpha=c.alpha, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM",
                   base_model_name_or_path=self.model.name or None).save_pretrained(str(out))
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / "adapter_model.safetensors"),
                  metadata={"format": "pt"})

    # ---- training ---------------------------------------------------------------------------------------------

    def train(self, batches: list[list[tuple[str, str]]], seeds: list[int],
              progress: Callable[[int, dict[int, float]], None] | None = None) -> list[TrainLog]:
        """Train slot s on batches[s] (prompt text, answer text pairs) as `Learner.adapt(batches[s], seeds[s])`.

        Every slot runs its own epochs x ceil(n_s / batch_size) steps with its own shuffle, cosine schedule,
        clip and a fresh AdamW; at each step all slots still training go through one forward/backward. Like
        `adapt`, a slot continues from its current adapter (`reset` it first for a fresh one); a slot with no
        examples is not touched. `progress(step, {slot: loss})` is called after every step.
        """
        self._check_installed()
        if len(batches) > self.slots:
            raise ValueError(f"{len(batches)} example lists but only {self.slots} adapter slots")
        if len(seeds) != len(batches):
            raise ValueError(f"{len(batches)} example lists but {len(seeds)} seeds")
        plans = [self._plan(examples, seed) for examples, seed in zip(batches, seeds, strict=True)]
        totals = [len(plan) for plan in plans]
        warmups = [math.ceil(self.config.warmup_ratio * total) for total in totals]
        trained = [slot for slot, total in enumerate(totals) if total]
        self._optimizer.clear(trained)
        logs = [TrainLog(steps=total, losses=[], lrs=[]) for total in totals]
        net = self.model.model
        previous = self.index.assigned
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
            self.index.set(previous)
        return logs

    def _plan(self, examples: list[tuple[str, str]], seed: int) -> list[list[Encoded]]:
        """The mini-batches one slot trains on, in order: `Learner.adapt`'s epochs, shuffles and batching."""
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
        rows = [example for minibatch in minibatches for example in minibatch]
        row_slots = [slot for slot, minibatch in zip(active, minibatches, strict=True) for _ in minibatch]
        batch = collate(rows, self.model.pad_id, self.model.device)
        self.index.set(row_slots)
        logits = self.model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  use_cache=False).logits
        per_slot = slot_losses(logits, batch["labels"], torch.tensor(row_slots, device=logits.device), self.slots)
        active_losses = per_slot[torch.tensor(active, device=logits.device)]
        active_losses.sum().backward()
        params = self._params()
        if self.config.max_grad_norm is not None:
            clip_per_slot([p.grad for p in params if p.grad is not None], self.config.max_grad_norm)
        self._optimizer.step(active, lrs)
        for param in params:
            param.grad = None
        return active_losses.detach().tolist()

    def _encode(self, prompt: str, answer: str) -> Encoded:
        """As `Learner._encode`: the answer and the first end-of-turn token are the only labelled tokens."""
        ids, labels = encode_pair(self.model.encode, prompt, answer, self.model.eos_ids[:1])
        if all(label == IGNORE for label in labels):
            raise ValueError(f"example answer {answer!r} has no tokens to learn (and the model has no EOS token)")
        return ids, labels

    def _params(self) -> list[nn.Parameter]:
        return [p for layer in self.layers.values() for p in (layer.lora_A, layer.lora_B)]

    def _check_installed(self) -> None:
        if not self.layers:
            raise RuntimeError("this MultiLoRA was uninstalled; install a new one")

    def _check_slot(self, slot: int) -> int:
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} out of range: {self.slots} slots")
        return slot


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


def _check_install(model: HFModel, config: LearnConfig, slots: int) -> None:
    """Raise for settings the stacked layers cannot honour, or a model that already carries adapters."""
    if slots < 1:
        raise ValueError(f"need at least one adapter slot, got {slots}")
    if config.rank < 1 or config.alpha <= 0:
        raise ConfigError(f"LoRA rank and alpha must be positive, got r={config.rank} alpha={config.alpha}")
    if config.dropout:
        raise ConfigError(f"batched adapters need lora dropout 0 (got {config.dropout}): per-slot dropout masks "
                          "would depend on the other inputs in the batch")
    if config.batch_size < 1 or config.epochs < 1:
        raise ConfigError("epochs and batch size must be at least 1")
    for name, module in model.model.named_modules():
        if isinstance(module, StackedLoRALinear) or name.rsplit(".", 1)[-1].startswith("lora_"):
            raise ValueError(f"the model already has adapter layers ({name}); unwrap or uninstall them first")


def _target_names(net: nn.Module, targets: str | list[str]) -> list[str]:
    """Names of the Linear modules to adapt: "all-linear" (all but the output head, as PEFT) or name suffixes."""
    linear = [name for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    if isinstance(targets, str):
        if targets != "all-linear":
            raise ConfigError(f"target_modules must be 'all-linear' or a list of module names, got {targets!r}")
        head = net.get_output_embeddings() if hasattr(net, "get_output_embeddings") else None
        names = [name for name in linear if net.get_submodule(name) is not head]
    else:
        names = [name for name in linear if any(name == t or name.endswith(f".{t}") for t in targets)]
    if not names:
        raise ConfigError(f"target_modules {targets!r} match no Linear layer of the model")
    return names


__all__ = ["NO_ADAPTER", "MultiLoRA", "SlotAdamW", "SlotIndex", "StackedLoRALinear", "clip_per_slot",
           "slot_grad_norms", "slot_losses"]
