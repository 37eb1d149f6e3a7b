"""The multi-slot LoRA engine: slots trained together equal slots trained alone, and equal PEFT's LoRA.

Tolerances. Stacked slots differ from single-slot training only in float rounding (batched vs plain matmuls,
padding to the widest row, summation order in the loss and clip). Adam divides by the gradient's running RMS,
so an element whose gradient nearly cancels across steps amplifies that rounding: at lr 1e-2 a few elements out of
~10k drift by up to 3e-5, at lr 1e-3 (used here) the largest difference seen is ~2e-7, so adapters are compared
at 1e-5 while they move by ~1e-3 from their initial values.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import ttsi.engine.train as train
from ttsi.config import LearnConfig
from ttsi.engine.lora import NO_ADAPTER, MultiLoRA, StackedLoRALinear
from ttsi.engine.train import SlotAdamW, SlotTrainer
from ttsi.errors import ConfigError
from ttsi.model import HFModel

CONFIG = LearnConfig(lr=1e-3, epochs=3, batch_size=2, warmup_ratio=0.1)
TOL = 1e-5
CITIES = ["Oslo", "Lima", "Rome", "Paris", "Kyiv", "Quito", "Bern", "Doha", "Cairo"]


def _load(path) -> HFModel:
    return HFModel.from_pretrained(str(path), dtype="float32", device="cpu")


def _prompt(model: HFModel, city: str) -> str:
    return model.chat_prompt([{"role": "user", "content": f"What is the weather in {city}?"}])


def _pairs(model: HFModel, cities: list[str], repeat: int = 1) -> list[tuple[str, str]]:
    """Synthetic (prompt, answer) pairs; `repeat` makes the answer that many calls long."""
    answer = '{{"name": "get_weather", "arguments": {{"city": "{}"}}}}'
    return [(_prompt(model, c), ", ".join([answer.format(c)] * repeat)) for c in cities]


def _logits(lora: MultiLoRA, ids: torch.Tensor, rows: list[int] | None) -> torch.Tensor:
    with torch.no_grad(), lora.use(rows):
        return lora.model.model(input_ids=ids).logits


def _ids(model: HFModel, city: str = "Cairo") -> torch.Tensor:
    return torch.tensor([model.encode(_prompt(model, city))])


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.slow
def test_slots_trained_together_equal_each_trained_alone(qwen_dir):
    together = MultiLoRA.install(_load(qwen_dir), CONFIG, slots=4, seed=0)
    alone = MultiLoRA.install(_load(qwen_dir), CONFIG, slots=4, seed=0)
    model = together.model
    batches = [_pairs(model, CITIES[0:1]), _pairs(model, CITIES[1:4]), _pairs(model, CITIES[4:6]),
               _pairs(model, CITIES[6:7], repeat=3)]
    seeds = [5, 6, 7, 8]
    logs = SlotTrainer(together, CONFIG).train(batches, seeds)
    assert [log.steps for log in logs] == [3, 6, 3, 3]  # epochs x ceil(n / batch size)
    for slot, (examples, seed) in enumerate(zip(batches, seeds, strict=True)):
        solo = SlotTrainer(alone, CONFIG).train([[]] * slot + [examples], [0] * slot + [seed])[slot]
        assert solo.lrs == logs[slot].lrs
        assert solo.losses == pytest.approx(logs[slot].losses, abs=1e-5)
    initial = MultiLoRA.install(_load(qwen_dir), CONFIG, slots=1, seed=0).adapter_state(0)
    for slot in range(4):
        assert _max_diff(together.adapter_state(slot), alone.adapter_state(slot)) < TOL
        assert _max_diff(together.adapter_state(slot), initial) > 100 * TOL  # the adapters did move
    prompts = [_prompt(model, c) for c in ("Cairo", "Oslo", "Bern", "Lima")]
    batched = together.generate(prompts, [0, 1, 2, 3], max_new_tokens=8)
    assert batched == [alone.generate([p], [slot], max_new_tokens=8)[0] for slot, p in enumerate(prompts)]


@pytest.mark.slow
def test_one_slot_trains_as_the_peft_learner(qwen_dir):
    from .test_learn import _peft_reference

    peft_model, stacked_model = _load(qwen_dir), _load(qwen_dir)
    lora = MultiLoRA.install(stacked_model, CONFIG, slots=1)
    ids = _ids(stacked_model)
    base = _logits(lora, ids, None)
    examples = _pairs(peft_model, CITIES[:3])
    initial_A, peft_losses, peft_lrs = _peft_reference(peft_model, CONFIG, 0, examples, order_seed=3)
    lora.load_initial(initial_A)
    stacked_log = SlotTrainer(lora, CONFIG).train([examples], [3])[0]
    assert stacked_log.lrs == peft_lrs
    assert stacked_log.losses == pytest.approx(peft_losses, abs=1e-5)
    with torch.no_grad():
        expected = peft_model.model(input_ids=ids).logits
    got = _logits(lora, ids, [0])
    assert (got - expected).abs().max().item() < TOL  # observed: 0.0 (same kernels on one slot)
    assert (expected - base).abs().max().item() > 100 * TOL


@pytest.mark.slow
def test_clipping_is_per_slot(qwen_dir, monkeypatch):
    config = LearnConfig(lr=1e-3, epochs=3, batch_size=1, warmup_ratio=0.1, max_grad_norm=0.05)  # clips both
    model = _load(qwen_dir)
    batches = [_pairs(model, CITIES[:2]), _pairs(model, CITIES[2:3], repeat=10)]  # slot 1: a long answer

    def trained(slot_norms=train.slot_grad_norms) -> tuple[MultiLoRA, MultiLoRA]:
        monkeypatch.setattr(train, "slot_grad_norms", slot_norms)
        together = MultiLoRA.install(_load(qwen_dir), config, slots=2)
        SlotTrainer(together, config).train(batches, [1, 2])
        alone = MultiLoRA.install(_load(qwen_dir), config, slots=2)
        SlotTrainer(alone, config).train(batches[:1], [1])
        return together, alone

    together, alone = trained()
    assert _max_diff(together.adapter_state(0), alone.adapter_state(0)) < TOL
    # the test would catch a global clip: slot 1's norm then scales slot 0's gradients too
    together, alone = trained(lambda grads: torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
                              .expand(grads[0].shape[0]))
    assert _max_diff(together.adapter_state(0), alone.adapter_state(0)) > 10 * TOL  # observed: 1.6e-4


@pytest.mark.slow
def test_reset_and_uninstall_restore_the_base_model_exactly(qwen_dir):
    model = _load(qwen_dir)
    ids = _ids(model)
    with torch.no_grad():
        before = model.model(input_ids=ids).logits
    linears = {name: m for name, m in model.model.named_modules() if isinstance(m, nn.Linear)}
    lora = MultiLoRA.install(model, CONFIG, slots=3, seed=1)
    initial = lora.adapter_state(1)
    SlotTrainer(lora, CONFIG).train([_pairs(model, CITIES[i: i + 2]) for i in range(3)], [0, 1, 2])
    trained = [lora.adapter_state(slot) for slot in range(3)]
    lora.reset(slot=1)
    after = [lora.adapter_state(slot) for slot in range(3)]
    assert all(torch.equal(after[1][k], initial[k]) for k in initial)
    for slot in (0, 2):
        assert all(torch.equal(after[slot][k], trained[slot][k]) for k in initial)
    lora.reset()
    for rows in (None, [NO_ADAPTER], [0], [2]):
        assert torch.equal(_logits(lora, ids, rows), before)
    lora.uninstall()
    assert {name: m for name, m in model.model.named_modules() if isinstance(m, nn.Linear)} == linears
    assert not any(isinstance(m, StackedLoRALinear) for m in model.model.modules())
    assert all(p.requires_grad for p in model.model.parameters())
    with torch.no_grad():
        assert torch.equal(model.model(input_ids=ids).logits, before)


@pytest.mark.slow
def test_each_row_uses_its_own_slot(qwen_dir):
    model = _load(qwen_dir)
    lora = MultiLoRA.install(model, CONFIG, slots=3)
    SlotTrainer(lora, CONFIG).train([_pairs(model, CITIES[i: i + 2]) for i in range(3)], [0, 1, 2])
    ids = torch.randint(3, len(model.tokenizer), (4, 12), generator=torch.Generator().manual_seed(0))
    rows = [2, 0, NO_ADAPTER, 1]
    batched = _logits(lora, ids, rows)
    for i, slot in enumerate(rows):
        assert (batched[i] - _logits(lora, ids[i: i + 1], [slot])[0]).abs().max().item() < TOL
    assert (batched[0] - _logits(lora, ids[:1], [1])[0]).abs().max().item() > 100 * TOL  # slots do differ
    with pytest.raises(ValueError, match="assigns 4 rows"), lora.use(rows):
        lora.model.model(input_ids=ids[:2])
    prompts = [_prompt(model, c) for c in ("Oslo", "Rome")]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # slot 2 far from slot 0, so that a row on the wrong slot writes other tokens
        for layer in lora.layers.values():
            layer.lora_B[2].copy_(torch.randn(layer.lora_B[2].shape, generator=gen))
    kwargs = {"max_new_tokens": 4, "temperature": 1.0, "num_return_sequences": 2, "seed": 0}
    sampled = lora.generate(prompts, [0, 2], **kwargs)
    # each prompt's slot follows it into its expanded rows: rows 0-1 are prompt 0 on slot 0, rows 2-3 prompt 1 on 2
    assert sampled[:2] == lora.generate(prompts[:1], [0], **kwargs)
    assert sampled[2:] == lora.generate(prompts[1:], [2], **kwargs)
    assert sampled[2:] != lora.generate(prompts[1:], [0], **kwargs)  # not vacuous: the slot changes the samples


@pytest.mark.slow
def test_slots_follow_the_rows_that_remain_when_finished_rows_leave(qwen_dir):
    """Rows that finish leave the batch mid-generation: the slot assignment must follow the rows that stay."""
    model = _load(qwen_dir)
    lora = MultiLoRA.install(model, CONFIG, slots=3)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # three far-apart adapters, so a row on the wrong slot writes other tokens
        for layer in lora.layers.values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen))
    prompts = [_prompt(model, c) for c in ("Oslo", "Rome", "Lima", "Bern")]
    slots = [2, NO_ADAPTER, 0, 1]
    free = [lora.generate([p], [s], max_new_tokens=12) for p, s in zip(prompts, slots, strict=True)]
    ids = [model.encode(f[0]) for f in free]
    stop = next(t for t in ids[0][:4] if all(t not in row for row in ids[1:]))  # prompt 0 stops early, alone
    model.eos_ids = [stop]
    told: list[list[int]] = []
    real_set = lora.index.set
    lora.index.set = lambda rows: (told.append(rows), real_set(rows))[1]  # type: ignore[method-assign]
    try:
        together = lora.generate(prompts, slots, max_new_tokens=12)
    finally:
        lora.index.set = real_set  # type: ignore[method-assign]
    assert [2, NO_ADAPTER, 0, 1] in told and [NO_ADAPTER, 0, 1] in told  # the index followed the drop
    assert together == [lora.generate([p], [s], max_new_tokens=12)[0] for p, s in zip(prompts, slots, strict=True)]
    assert together[1:] == [f[0] for f in free[1:]]
    assert lora.index.uniform == NO_ADAPTER  # and the base model again after the block


@pytest.mark.slow
def test_saved_slot_loads_in_peft_with_the_same_logits(qwen_dir, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    model = _load(qwen_dir)
    lora = MultiLoRA.install(model, CONFIG, slots=2)
    SlotTrainer(lora, CONFIG).train([_pairs(model, CITIES[:2]), _pairs(model, CITIES[2:5])], [0, 1])
    lora.save(1, tmp_path)
    keys = load_file(str(tmp_path / "adapter_model.safetensors")).keys()
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert json.loads((tmp_path / "adapter_config.json").read_text())["r"] == CONFIG.rank
    peft_model = PeftModel.from_pretrained(_load(qwen_dir).model, str(tmp_path)).eval()
    ids = _ids(model)
    with torch.no_grad():
        loaded = peft_model(input_ids=ids).logits
    assert (loaded - _logits(lora, ids, [1])).abs().max().item() < TOL
    assert (loaded - _logits(lora, ids, None)).abs().max().item() > 100 * TOL


def test_slot_adamw_is_torch_adamw_per_slot():
    gen = torch.Generator().manual_seed(0)
    stacked = nn.Parameter(torch.randn(3, 4, 5, generator=gen))
    singles = [nn.Parameter(stacked[s].detach().clone()) for s in range(3)]
    ours = SlotAdamW([stacked], slots=3, weight_decay=0.1)
    theirs = [torch.optim.AdamW([p], lr=1.0, weight_decay=0.1) for p in singles]
    schedule = [([0, 1, 2], [1e-2, 3e-2, 0.0]), ([0, 2], [2e-2, 1e-2]), ([1], [5e-3]), ([0, 1, 2], [1e-3, 1e-2, 1e-1])]
    for active, lrs in schedule:
        stacked.grad = torch.randn(3, 4, 5, generator=gen)
        ours.step(active, lrs)
        for slot, lr in zip(active, lrs, strict=True):
            theirs[slot].param_groups[0]["lr"] = lr
            singles[slot].grad = stacked.grad[slot].clone()
            theirs[slot].step()
    for slot in range(3):
        assert (stacked[slot] - singles[slot]).abs().max().item() < 1e-7


def test_targets_and_bad_arguments(qwen_dir):
    model = _load(qwen_dir)
    with pytest.raises(ConfigError, match="dropout"):
        MultiLoRA.install(model, LearnConfig(dropout=0.1), slots=2)
    with pytest.raises(ConfigError, match="match no Linear"):
        MultiLoRA.install(model, LearnConfig(target_modules=["nope"]), slots=2)
    lora = MultiLoRA.install(model, LearnConfig(target_modules=["q_proj", "v_proj"]), slots=2)
    assert {name.rsplit(".", 1)[-1] for name in lora.layers} == {"q_proj", "v_proj"}
    with pytest.raises(ConfigError, match="already carries adapter layers"):
        MultiLoRA.install(model, CONFIG, slots=2)
    examples = _pairs(model, CITIES[:1])
    with pytest.raises(ValueError, match="only 2 adapter slots"):
        SlotTrainer(lora, CONFIG).train([examples] * 3, [0, 1, 2])
    with pytest.raises(ValueError, match="seeds"):
        SlotTrainer(lora, CONFIG).train([examples], [0, 1])
    with pytest.raises(ValueError, match="out of range"), lora.use([0, 2]):
        pass
    with pytest.raises(ValueError, match="out of range"):
        lora.reset(slot=5)
    with pytest.raises(ValueError, match="2 prompts but 1 slots"):
        lora.generate(["a", "b"], [0])
    lora.uninstall()
    with pytest.raises(RuntimeError, match="uninstalled"):
        lora.reset()
