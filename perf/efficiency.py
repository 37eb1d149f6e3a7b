"""Hardware efficiency of one LoRA training step: achieved FLOP/s against the machine's dense matmul FLOP/s.

One step is `SlotTrainer.train` (one slot) on one example of T tokens with one epoch (forward, backward, clip,
AdamW). Its FLOPs are estimated, counting matrix multiplications only (norms, softmax, rotary, the optimizer are
left out):

    F = 4 · P_mm · T  +  6 · P_lora · T  +  12 · L · T² · d_attn

- 2 · P_mm · T forward through the frozen weights (P_mm: every Linear weight, the LM head included, since all T
  positions get logits in training; the embedding lookup is not a matmul), plus 2 · P_mm · T backward for the
  activation gradients. Frozen weights get no weight gradient, which saves the usual third 2 · P · T (so this is
  4 P T rather than the 6 P T of full training; the first layer's input gradient, not needed, is ≈ 1/L of it).
- 6 · P_lora · T for the adapters (P_lora = r · (in + out) per adapted Linear): forward, activation and weight
  gradients.
- attention: Q Kᵀ and A V are 2 · T² · d_attn FLOPs each per layer forward (d_attn = heads · head_dim, counted
  for all T² pairs as in PaLM's MFU accounting, although the mask makes half of them unused), twice that backward:
  12 · L · T² · d_attn in all.

The reference is a square `size` x `size` matmul (2 n³ FLOPs) timed the same way, fp32 on the CPU and bf16 on a
GPU; the row reports achieved / reference as a percentage (no target: small models on short sequences are far from
it, which is the point of batching inputs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from perf.common import (
    Column,
    Log,
    ModelSpec,
    Section,
    Settings,
    example_pair,
    matmul_flops,
    measure,
    release,
)
from ttsi.config import LearnConfig
from ttsi.engine.lora import MultiLoRA
from ttsi.engine.train import SlotTrainer
from ttsi.model import HFModel

PEAK_REPEATS = 3


def step_flops(p_matmul: int, p_lora: int, layers: int, attn_dim: int, tokens: int) -> float:
    """The module docstring's estimate of one LoRA training step's FLOPs on `tokens` tokens."""
    return 4.0 * p_matmul * tokens + 6.0 * p_lora * tokens + 12.0 * layers * tokens**2 * attn_dim


def model_counts(model: HFModel, rank: int) -> dict[str, int]:
    """P_mm, P_lora (all-linear LoRA of `rank`: every Linear but the output head), layers and d_attn of the base."""
    net = model.model
    head = net.get_output_embeddings()
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    cfg = net.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return {"p_matmul": sum(m.weight.numel() for m in linears),
            "p_lora": sum(rank * (m.in_features + m.out_features) for m in linears if m is not head),
            "layers": cfg.num_hidden_layers, "attn_dim": cfg.num_attention_heads * head_dim}


def reference_flops(spec: ModelSpec, settings: Settings, cache: dict[str, float], log: Log) -> float:
    """The device's dense matmul FLOP/s (measured once per device)."""
    device = spec.info["device"]
    if device not in cache:
        size, dtype = (8192, torch.bfloat16) if device == "cuda" else (settings.matmul_size, torch.float32)
        cache[device] = matmul_flops(size, device, dtype, repeats=PEAK_REPEATS)
        log(f"efficiency matmul {size}x{size} {str(dtype).removeprefix('torch.')} on {device}: "
            f"{cache[device] / 1e9:.1f} GFLOP/s")
    return cache[device]


def measure_model(spec: ModelSpec, settings: Settings, peak: float, log: Log) -> list[dict[str, Any]]:
    """One row per sequence length: step seconds, estimated FLOPs, achieved FLOP/s and its share of `peak`."""
    config = LearnConfig(epochs=1)
    model = spec.load()
    counts = model_counts(model, config.rank)
    trainer = SlotTrainer(MultiLoRA.install(model, config, slots=1, seed=0), config)
    rows = []
    for i, target_tokens in enumerate(settings.efficiency_tokens):
        example = example_pair(model, target_tokens, seed=300 + i)
        tokens = len(model.encode(example[0])) + len(model.encode(example[1])) + 1  # + the end-of-turn token
        warmup = max(1, settings.warmup) if i == 0 else settings.warmup  # the first adapt installs the adapter
        seconds, _ = measure(lambda e=example: trainer.train([[e]], [0]), settings.repeats, warmup)
        flops = step_flops(tokens=tokens, **counts)
        rows.append({"model": spec.name, "tokens": tokens, "step_s": seconds, "gflop": flops / 1e9,
                     "achieved_gflops": flops / seconds / 1e9, "peak_gflops": peak / 1e9,
                     "pct_of_peak": 100 * flops / seconds / peak, **counts})
        log(f"efficiency {spec.name} T={tokens}: {seconds:.4f} s/step, {flops / seconds / 1e9:.2f} GFLOP/s "
            f"({100 * flops / seconds / peak:.2f}% of matmul)")
    return rows


def run(specs: list[ModelSpec], settings: Settings, log: Log) -> Section:
    section = Section("efficiency", "LoRA training step: achieved FLOP/s vs the machine's dense matmul FLOP/s", [
        Column("model", "model"), Column("tokens", "T"), Column("step_s", "step s"),
        Column("gflop", "GFLOP/step", "{:.2f}"), Column("achieved_gflops", "achieved GFLOP/s", "{:.1f}"),
        Column("peak_gflops", "matmul GFLOP/s", "{:.1f}"), Column("pct_of_peak", "% of matmul", "{:.1f}%")])
    peaks: dict[str, float] = {}
    for spec in specs:
        peak = reference_flops(spec, settings, peaks, log)
        for row in measure_model(spec, settings, peak, log):
            section.add(row)
        release()
    section.notes.append("FLOPs = 4·P_mm·T + 6·P_lora·T + 12·L·T²·d_attn (see perf/efficiency.py)")
    return section
