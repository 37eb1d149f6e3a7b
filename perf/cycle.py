"""One full TT-SI cycle per input, a straightforward implementation vs ours, for K = 1 and 5 LoRA steps.

A cycle on one uncertain input: gate over 5 candidates after a 512-token prompt, K LoRA steps on one ~100-token
synthetic example, a ~20-token greedy answer to the prompt, and a reset so the next input starts from the base.

- straightforward (written here, as one would without the library): naive gate (`score_naive`, one forward per
  candidate); training on a `copy.deepcopy` of the base wrapped by a fresh `peft.get_peft_model`, with a plain
  PyTorch loop and a new AdamW at Hugging Face Trainer's defaults (betas 0.9/0.999, eps 1e-8, no weight decay,
  linear decay, grad-norm clip 1.0); generation on that copy; reset = drop the copy, deep-copy the base again
  and re-wrap it (what the next input needs).
- ours: `HFModel.score` (shared prefix), `Learner.adapted` (train, then on exit an in-place copy of the initial
  adapter tensors), the lean decoder with the trained slot (`Learner.generate`); the model is wrapped once.

Reported: seconds per cycle (median) for each and their ratio, the per-phase medians, and our reset's time as a
fraction of one training step (target < 1%; the step time is our train phase / K). On a GPU, the Qwen2.5-1.5B
shape must do gate + 5 steps + answer + reset in under 0.5 s.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from perf.common import (
    Check,
    Column,
    Log,
    ModelSpec,
    Phases,
    Section,
    Settings,
    candidates,
    chat_prompt_of_length,
    example_pair,
    measure,
    release,
)
from perf.efficiency import model_counts, reference_flops, step_flops
from ttsi.config import LearnConfig
from ttsi.learn import Learner
from ttsi.model import HFModel

GATE_CANDIDATES = 5
RESET_TARGET_PCT = 1.0
GPU_CYCLE_TARGET_S = 0.5  # Qwen2.5-1.5B shape, K = 5
RATIO_TARGET = {1: 4.0, 5: 2.5}  # CPU: straightforward / ours at K LoRA steps
IGNORE = -100


@dataclass
class Workload:
    """What one cycle works on: the input's prompt, the gate's candidates, one synthetic training example."""

    prompt: str
    candidates: list[str]
    example: tuple[str, str]
    answer_tokens: int


def make_workload(model: HFModel, settings: Settings) -> Workload:
    return Workload(chat_prompt_of_length(model, settings.prompt_tokens), candidates(GATE_CANDIDATES),
                    example_pair(model, settings.example_tokens, seed=1), settings.answer_tokens)


class Straightforward:
    """The cycle without shared-prefix scoring or in-place reset: deep copy + fresh PEFT wrap per input."""

    def __init__(self, model: HFModel, config: LearnConfig, seed: int = 0):
        self.base = model
        self.config = config
        self.seed = seed
        self.work = self._fresh_copy()

    def _fresh_copy(self) -> HFModel:
        """A deep copy of the base with a newly initialised LoRA on it."""
        from peft import LoraConfig, get_peft_model

        c = self.config
        lora = LoraConfig(r=c.rank, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=c.target_modules,
                          task_type="CAUSAL_LM")
        torch.manual_seed(self.seed)
        net = copy.deepcopy(self.base.model)
        get_peft_model(net, lora)  # injects the LoRA layers into `net` itself
        return HFModel(net, self.base.tokenizer, name=self.base.name)

    def cycle(self, w: Workload, phases: Phases) -> str:
        with phases("gate"):
            self.base.score_naive(w.prompt, w.candidates, batch_size=1)
        with phases("train"):
            train_plain(self.work, w.example, self.config)
        with phases("answer"):
            answer = self.work.generate([w.prompt], max_new_tokens=w.answer_tokens)[0]
        with phases("reset"):
            del self.work  # drop the adapted copy before making the next one
            self.work = self._fresh_copy()
        return answer


def train_plain(model: HFModel, example: tuple[str, str], config: LearnConfig) -> list[float]:
    """`config.epochs` steps on one (prompt, answer) example, loss on the answer and its end token.

    A fresh AdamW and linear decay with Hugging Face Trainer's defaults, the grad-norm clip at its default 1.0.
    """
    steps = config.epochs
    prompt_ids, answer_ids = model.encode(example[0]), [*model.encode(example[1]), model.eos_ids[0]]
    ids = torch.tensor([prompt_ids + answer_ids], device=model.device)
    labels = torch.tensor([[IGNORE] * len(prompt_ids) + answer_ids], device=model.device)
    params = [p for p in model.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / steps))
    losses = []
    model.model.train()
    for _ in range(steps):
        loss = model.model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.model.eval()
    return losses


class Ours:
    """The library's cycle: shared-prefix gate, `Learner.adapted` (train; reset on exit), lean `generate`."""

    def __init__(self, model: HFModel, config: LearnConfig, seed: int = 0):
        self.model = model
        self.learner = Learner(model, config, seed=seed)

    def cycle(self, w: Workload, phases: Phases) -> str:
        with phases("gate"):
            self.model.score(w.prompt, w.candidates)
        scope = self.learner.adapted([[w.example]], [0])
        with phases("train"):
            scope.__enter__()  # trains slot 0
        try:
            with phases("answer"):
                answer = self.learner.generate([w.prompt], [0], max_new_tokens=w.answer_tokens)[0]
        finally:
            with phases("reset"):
                scope.__exit__(None, None, None)  # resets every slot in place
        return answer


def run_cycles(cycle: Callable[[Workload, Phases], str], w: Workload, settings: Settings,
               warmup: int) -> tuple[dict, str]:
    """Per-phase and total medians over `settings.repeats` cycles after `warmup` untimed ones."""
    phases = Phases()
    for _ in range(warmup):
        cycle(w, phases)
    phases.clear()
    answer = ""
    for _ in range(max(1, settings.repeats)):
        answer = cycle(w, phases)
    medians = phases.medians()
    totals = [sum(parts) for parts in zip(*phases.samples.values(), strict=True)]
    return {"total": statistics.median(totals), **medians}, answer


def phase_flops(counts: dict[str, int], candidate_tokens: list[int], prompt_tokens: int, example_tokens: int,
                k: int, answer_tokens: int) -> dict[str, float]:
    """Each phase's matmul FLOPs (the least work it can do), in `efficiency.step_flops`' terms.

    A forward over T new tokens after C cached ones: 2 P_mm T + 4 L T (C + T) d_attn (QK^T and AV); the gate is
    the prompt's forward plus each candidate's tokens after it, the answer the prompt's forward plus one token at
    a time, training K steps of `step_flops`.
    """
    p, layers, d = counts["p_matmul"], counts["layers"], counts["attn_dim"]

    def forward(new: int, cached: int = 0) -> float:
        return 2.0 * p * new + 4.0 * layers * new * (cached + new) * d

    gate = forward(prompt_tokens) + sum(forward(n, prompt_tokens) for n in candidate_tokens)
    answer = forward(prompt_tokens) + sum(forward(1, prompt_tokens + i) for i in range(answer_tokens))
    return {"gate": gate, "train": k * step_flops(tokens=example_tokens, **counts), "answer": answer, "reset": 0.0}


def measure_model(spec: ModelSpec, settings: Settings, log: Log, peaks: dict[str, float]) -> list[dict[str, Any]]:
    """One row per K: both implementations' cycle times, their ratio, phases and our reset fraction."""
    base = spec.load()
    workload = make_workload(base, settings)
    counts = model_counts(base, LearnConfig().rank)
    peak = reference_flops(spec, settings, peaks, log)
    rows = []
    for i, k in enumerate(settings.cycle_ks):
        config = replace(LearnConfig(), epochs=k)
        # the base model is fresh at the first K only; ours is a fresh model every time (wrapped on its first adapt)
        warmup = max(1, settings.warmup) if i == 0 else settings.warmup
        naive, naive_answer = run_cycles(Straightforward(base, config).cycle, workload, settings, warmup)
        log(f"cycle {spec.name} K={k}: straightforward {naive['total']:.4f} s")
        ours_impl = Ours(spec.load(), config)
        ours, ours_answer = run_cycles(ours_impl.cycle, workload, settings, max(1, settings.warmup))
        reset_s, _ = measure(ours_impl.learner.reset, settings.reset_repeats, warmup=1)
        step_s = ours["train"] / k
        example_tokens = sum(len(base.encode(t)) for t in workload.example) + 1
        bound = {name: flops / peak for name, flops in phase_flops(
            counts, [len(base.encode(c)) for c in workload.candidates], settings.prompt_tokens, example_tokens, k,
            settings.answer_tokens).items()}
        log(f"cycle {spec.name} K={k}: ours {ours['total']:.4f} s, reset {reset_s * 1e3:.3f} ms "
            f"({100 * reset_s / step_s:.3f}% of a step)")
        rows.append({
            "model": spec.name, "k": k, "naive_s": naive["total"], "ours_s": ours["total"],
            "ratio": naive["total"] / ours["total"],
            "naive_phases_s": {p: naive[p] for p in ("gate", "train", "answer", "reset")},
            "ours_phases_s": {p: ours[p] for p in ("gate", "train", "answer", "reset")},
            "ours_step_s": step_s, "ours_reset_s": reset_s, "reset_pct_of_step": 100 * reset_s / step_s,
            "ours_bound_s": bound, "ours_x_bound": {p: ours[p] / bound[p] for p in ("gate", "train", "answer")},
            "naive_reset_s": naive["reset"], "example_tokens": example_tokens,
            "answer_tokens": {"naive": len(base.encode(naive_answer)), "ours": len(base.encode(ours_answer))}})
        del ours_impl
        release()
    return rows


def checks(spec: ModelSpec, row: dict[str, Any]) -> list[Check]:
    found = [Check.of(row, "reset_pct_of_step", "<", RESET_TARGET_PCT)]
    if not spec.on_gpu and row["k"] in RATIO_TARGET:
        found.append(Check.of(row, "ratio", ">=", RATIO_TARGET[row["k"]]))
    if spec.on_gpu and row["k"] == 5:
        found.append(Check.of(row, "ours_s", "<", GPU_CYCLE_TARGET_S))
    return found


def run(specs: list[ModelSpec], settings: Settings, log: Log) -> Section:
    section = Section("cycle", "TT-SI cycle: gate(5) + K LoRA steps + ~20-token answer + reset, per input", [
        Column("model", "model"), Column("k", "K"), Column("naive_s", "straightf. s"), Column("ours_s", "ours s"),
        Column("ratio", "straightf./ours", "{:.2f}x"),
        Column("naive_phases_s", "straightf. gate/train/answer/reset s", "{:.3f}"),
        Column("ours_phases_s", "ours gate/train/answer/reset s", "{:.3f}"),
        Column("ours_step_s", "ours step s"), Column("ours_reset_s", "ours reset ms", "{:.3f}", 1e3),
        Column("reset_pct_of_step", "reset/step", "{:.2f}%"),
        Column("ours_x_bound", "ours / FLOP-bound gate/train/answer", "{:.1f}x")])
    peaks: dict[str, float] = {}
    for spec in specs:
        for row in measure_model(spec, settings, log, peaks):
            section.add(row, checks(spec, row))
    section.notes.append("straightforward: score_naive + deepcopy/get_peft_model + plain AdamW loop + generate; "
                         "ours: score + Learner.adapted + Learner.generate + reset on exit; FLOP-bound: the phase's "
                         "matmul FLOPs at the machine's dense matmul rate (see perf/efficiency.py)")
    return section
