"""Many independent LoRA adapters on one frozen model: the stacked layer, slot selection, reset and saving.

TT-SI adapts a fresh LoRA per uncertain input. Doing that one input at a time leaves the accelerator mostly idle
(a handful of short sequences per step), so this engine keeps S adapter *slots* side by side: every target
`nn.Linear` becomes a `StackedLoRALinear` whose A and B carry a leading slot dimension, and each row of a batch
uses the slot assigned to it. Rows run on the base model unless a slot is assigned, and a slot is only ever
assigned inside `MultiLoRA.use(rows)`, a scope that restores the previous assignment on exit, so no forward pass
outside it (the gate's scoring, another agent's generation) sees an adapter. `MultiLoRA.generate(prompts, slots)`
is the one entry point for generating with adapters; training is `ttsi.engine.train.SlotTrainer`.

`reset()` copies the initial tensors back in place (B is zero again, so the model is the base model bit for bit),
and `save()` writes one slot in PEFT's format. Lora dropout is not supported: per-slot dropout masks would depend
on which other inputs share the batch. A model carries at most one `MultiLoRA`: installing a second is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ttsi.config import LearnConfig
from ttsi.errors import ConfigError
from ttsi.model import HFModel

NO_ADAPTER = -1  # the slot of a row that runs on the base model alone


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


class MultiLoRA:
    """S LoRA adapter slots installed into an HFModel: answer each row with its own adapter, reset them in place.

    Use `MultiLoRA.install(model, config, slots, seed)`; `uninstall()` puts the original layers back. While
    installed, every forward pass runs on the base model except inside `use(rows)` (and `generate`, which uses it).
    """

    def __init__(self, model: HFModel, config: LearnConfig, slots: int, index: SlotIndex,
                 layers: dict[str, StackedLoRALinear], requires_grad: dict[str, bool]):
        self.model = model
        self.config = config
        self.slots = slots
        self.index = index
        self.layers = layers
        self._requires_grad = requires_grad

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

    @contextmanager
    def use(self, rows: Sequence[int] | None) -> Iterator[None]:
        """Row i of every forward pass in the with-block uses slot rows[i] (NO_ADAPTER or None: the base model).

        With different slots per row, every forward in the block must have exactly len(rows) rows (a ValueError
        says otherwise); one slot for all rows works with any batch. On exit the previous assignment is back.
        """
        self._check_installed()
        previous = self.index.assigned
        self.index.set(rows)
        try:
            yield
        finally:
            self.index.set(previous)

    def generate(self, prompts: list[str], slots: Sequence[int], **kwargs: Any) -> list[str]:
        """`HFModel.generate` where prompt i is answered with adapter slot `slots[i]` (NO_ADAPTER: base model).

        The one entry point for generating with adapters. Each prompt becomes num_return_sequences consecutive
        rows, so the slots are expanded the same way; when finished rows leave the batch mid-generation, the
        assignment follows the rows that remain.
        """
        if len(slots) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(slots)} slots")
        repeat = kwargs.get("num_return_sequences", 1)
        rows = [s for s in slots for _ in range(repeat)]
        with self.use(rows):
            return self.model.generate(prompts, on_rows=lambda origin: self.index.set([rows[i] for i in origin]),
                                       **kwargs)

    # ---- state ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def reset(self, slot: int | None = None) -> None:
        """Restore one slot (or all) to the initial adapter in place: those rows compute the base model again."""
        self._check_installed()
        if slot is not None:
            self._check_slot(slot)
        for layer in self.layers.values():
            layer.reset(slot)
            layer.lora_A.grad = layer.lora_B.grad = None

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

    def parameters(self) -> list[nn.Parameter]:
        """The trainable adapter tensors, each stacked over the slots (float32 whatever the model's dtype)."""
        return [p for layer in self.layers.values() for p in (layer.lora_A, layer.lora_B)]

    def _check_installed(self) -> None:
        if not self.layers:
            raise RuntimeError("this MultiLoRA was uninstalled; install a new one")

    def _check_slot(self, slot: int) -> int:
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} out of range: {self.slots} slots")
        return slot


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
            raise ConfigError(f"the model already carries adapter layers ({name}), e.g. another agent's: one "
                              "model serves one agent's adapters at a time; close() that agent (or load the "
                              "model again) first")


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


__all__ = ["NO_ADAPTER", "MultiLoRA", "SlotIndex", "StackedLoRALinear"]
