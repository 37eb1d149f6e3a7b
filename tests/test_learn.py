"""Self-learning: the schedule, loss on answer tokens, learning, and the bit-exact reset."""

from __future__ import annotations

import json

import pytest
import torch

from ttsi.config import LearnConfig
from ttsi.engine.train import IGNORE, collate, encode_pair, lr_factor
from ttsi.errors import ConfigError
from ttsi.formats import get_format
from ttsi.learn import NO_ADAPTER, Learner
from ttsi.model import HFModel
from ttsi.prompts import answer_messages

from .conftest import weather_task


def _examples(model: HFModel, n: int = 1) -> list[tuple[str, str]]:
    fmt = get_format("json")
    cities = ["Oslo", "Lima", "Rome"]
    return [(model.chat_prompt(answer_messages(weather_task().with_query(f"Weather in {c}?"), fmt)),
             f'[{{"name": "get_weather", "arguments": {{"city": "{c}"}}}}]') for c in cities[:n]]


def _logits(model: HFModel, text: str = "What is the weather in Paris?") -> torch.Tensor:
    ids = torch.tensor([model.encode(model.chat_prompt([{"role": "user", "content": text}]))])
    with torch.no_grad():
        return model.model(input_ids=ids).logits


@pytest.mark.parametrize(("total", "ratio"), [(5, 0.03), (20, 0.03), (40, 0.1), (7, 0.0)])
def test_schedule_matches_hugging_face_cosine_with_warmup(total, ratio):
    import math

    from transformers import get_cosine_schedule_with_warmup

    warmup = math.ceil(ratio * total)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_cosine_schedule_with_warmup(opt, warmup, total)
    for step in range(total):
        assert lr_factor(step, total, warmup) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
        opt.step()
        sched.step()


def test_paper_defaults_give_five_steps_with_hf_warmup(qwen):
    with Learner(qwen, LearnConfig(), seed=0).adapted([_examples(qwen, 1)], [0]) as (log,):
        pass
    assert log.steps == 5  # K = 1, batch 1, 5 epochs
    assert log.lrs[0] == 0.0  # ceil(0.03 * 5) = 1 warmup step, which Hugging Face runs at lr 0
    assert log.lrs[1] == pytest.approx(1e-4)


def test_loss_covers_answer_tokens_only(qwen):
    prompt, answer = _examples(qwen, 1)[0]
    ids, labels = encode_pair(qwen.encode, prompt, answer, qwen.eos_ids[:1])
    n_prompt = len(qwen.encode(prompt))
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == [*qwen.encode(answer), qwen.tokenizer.eos_token_id]
    assert ids[n_prompt:] == labels[n_prompt:]


@pytest.mark.slow
def test_loss_falls_on_the_synthetic_pairs(toy):
    # answers the toy model has not learnt: the weather requests are relabelled to another tool
    examples = [(p, a.replace("get_weather", "set_alarm")) for p, a in _examples(toy, 3)]
    with Learner(toy, LearnConfig(lr=1e-2, epochs=5, batch_size=2), seed=0).adapted([examples], [0]) as (log,):
        pass
    assert log.steps == 10  # ceil(3 / 2) * 5
    assert sum(log.losses[-3:]) / 3 < 0.8 * sum(log.losses[:3]) / 3


def test_only_adapter_parameters_train(qwen):
    base = {n: p.detach().clone() for n, p in qwen.model.named_parameters()}
    learner = Learner(qwen, LearnConfig(lr=1e-2))
    with learner.adapted([_examples(qwen)], [0]):
        for name, param in qwen.model.named_parameters():
            if "lora_" not in name:
                original = name.replace(".base_layer", "")
                assert torch.equal(param, base[original]), name
        assert all("lora_" in n for n, p in qwen.model.named_parameters() if p.requires_grad)


@pytest.mark.slow
@pytest.mark.parametrize("arch_dir", ["qwen_dir", "llama_dir"])
def test_reset_is_bit_identical_to_the_base_model_after_many_cycles(request, arch_dir):
    path = str(request.getfixturevalue(arch_dir))
    reference = HFModel.from_pretrained(path, dtype="float32", device="cpu")  # never wrapped
    model = HFModel.from_pretrained(path, dtype="float32", device="cpu")
    base_logits = _logits(reference)
    learner = Learner(model, LearnConfig(lr=1e-2), seed=3)
    module_ids: set[int] = set()
    for cycle in range(25):
        with learner.adapted([_examples(model, 1 + cycle % 3)], [cycle]), learner.lora.use([0]):
            if cycle == 0:  # the adapter really moved the model, so the equality below is not vacuous
                assert not torch.equal(_logits(model), base_logits)
                module_ids = {id(m) for m in model.model.modules()}
        assert torch.equal(_logits(model), base_logits), f"cycle {cycle}"
    assert {id(m) for m in model.model.modules()} == module_ids  # wrapped once, never re-wrapped


def test_one_model_carries_one_learners_adapters_and_close_takes_them_out(qwen):
    first, second = Learner(qwen, LearnConfig(), seed=0), Learner(qwen, LearnConfig(rank=4), seed=0)
    with first.adapted([_examples(qwen)], [0]):
        n_lora = sum("lora_A" in n for n, _ in qwen.model.named_parameters())
    with pytest.raises(ConfigError, match="already carries adapter layers"), second.adapted([_examples(qwen)], [0]):
        pass
    assert not second.installed
    first.close()
    assert not any("lora_" in n for n, _ in qwen.model.named_parameters())
    with second.adapted([_examples(qwen)], [0]):
        assert sum("lora_A" in n for n, _ in qwen.model.named_parameters()) == n_lora  # not nested
        assert all(p.shape[1] == 4 for n, p in qwen.model.named_parameters() if "lora_A" in n)  # (slots, rank, in)


def test_more_inputs_grow_the_slots_and_keep_the_seeded_initial_adapter(qwen):
    learner = Learner(qwen, LearnConfig(), seed=2)
    initial = learner.install().adapter_state(0)
    with learner.adapted([_examples(qwen)] * 3, [0, 1, 2]):
        assert learner.lora.slots == 3
    with learner.adapted([_examples(qwen)] * 2, [0, 1]):
        assert learner.lora.slots == 3  # never shrinks
    for slot in range(3):
        state = learner.lora.adapter_state(slot)
        assert all(torch.equal(state[k], initial[k]) for k in initial)
    assert sum(isinstance(m, type(next(iter(learner.lora.layers.values())))) for m in qwen.model.modules()) == \
        len(learner.lora.layers)  # re-installed, not nested


def test_adaptation_is_scoped_and_resets_even_when_the_block_fails(qwen):
    learner = Learner(qwen, LearnConfig(lr=1e-2), seed=0)
    base = _logits(qwen)
    with pytest.raises(RuntimeError, match="boom"), learner.adapted([_examples(qwen)], [0]):
        with learner.lora.use([0]):
            assert not torch.equal(_logits(qwen), base)
        raise RuntimeError("boom")
    with learner.lora.use([0]):
        assert torch.equal(_logits(qwen), base)  # slot 0 was reset on the way out
    with learner.adapted([_examples(qwen)], [0]):
        assert torch.equal(_logits(qwen), base)  # outside use(), every forward runs on the base model
        with pytest.raises(RuntimeError, match="do not nest"), learner.adapted([_examples(qwen)], [0]):
            pass
    with pytest.raises(ValueError, match=r"inside learner\.adapted"):
        learner.generate(["hi"], [0])
    with pytest.raises(RuntimeError, match=r"inside learner\.adapted"):
        learner.save("unused")
    assert learner.generate(["hi"], [NO_ADAPTER], max_new_tokens=2) == qwen.generate(["hi"], max_new_tokens=2)


@pytest.mark.slow
def test_adapt_many_trains_each_slot_as_adapt_alone(qwen_dir):
    config = LearnConfig(lr=1e-3, epochs=3, batch_size=2, warmup_ratio=0.1)
    many = Learner(HFModel.from_pretrained(str(qwen_dir), dtype="float32", device="cpu"), config, seed=1)
    one = Learner(HFModel.from_pretrained(str(qwen_dir), dtype="float32", device="cpu"), config, seed=1)
    batches = [_examples(many.model, 1), _examples(many.model, 3), _examples(many.model, 2)]
    with many.adapted(batches, [4, 5, 6]) as logs:
        assert many.lora.slots == 3 and [log.steps for log in logs] == [3, 6, 3]
        for slot, (examples, seed) in enumerate(zip(batches, [4, 5, 6], strict=True)):
            with one.adapted([examples], [seed]) as (alone,), one.lora.use([0]), many.lora.use([slot]):
                assert alone.lrs == logs[slot].lrs and alone.losses == pytest.approx(logs[slot].losses, abs=1e-5)
                assert (_logits(many.model) - _logits(one.model)).abs().max().item() < 1e-5


def _peft_reference(model: HFModel, config: LearnConfig, seed: int, examples: list[tuple[str, str]],
                    order_seed: int) -> tuple[dict[str, torch.Tensor], list[float], list[float]]:
    """The Learner as it was on PEFT (get_peft_model, torch's AdamW and clip, HF's loss): initial A, losses, lrs."""
    import math
    import random

    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0, target_modules=config.target_modules,
                      task_type="CAUSAL_LM")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        peft_model = get_peft_model(model.model, lora)
    initial = {n.removeprefix("base_model.model.").removesuffix(".lora_A.default.weight"): p.detach().clone()
               for n, p in peft_model.named_parameters() if "lora_A" in n}
    params = [p for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n]
    encoded = [encode_pair(model.encode, p, a, model.eos_ids[:1]) for p, a in examples]
    total = config.epochs * math.ceil(len(encoded) / config.batch_size)
    warmup = math.ceil(config.warmup_ratio * total)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    rng, losses, lrs = random.Random(order_seed), [], []
    model.model.train()
    for _ in range(config.epochs):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            lr = config.lr * lr_factor(len(losses), total, warmup)
            optimizer.param_groups[0]["lr"] = lr
            batch = collate([encoded[i] for i in order[start: start + config.batch_size]], model.pad_id)
            loss = model.model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            lrs.append(lr)
    model.model.eval()
    return initial, losses, lrs


@pytest.mark.slow
def test_the_learner_trains_as_its_peft_version_did_from_the_same_initial_adapter(qwen_dir):
    """Only the initial A draw differs (MultiLoRA's seeded generator, not PEFT's global RNG): given PEFT's A,
    the stacked learner follows the PEFT learner's losses and lands on the same model."""
    config = LearnConfig(lr=1e-3, epochs=3, batch_size=2, warmup_ratio=0.1, max_grad_norm=0.05)  # clips
    reference = HFModel.from_pretrained(str(qwen_dir), dtype="float32", device="cpu")
    model = HFModel.from_pretrained(str(qwen_dir), dtype="float32", device="cpu")
    examples = _examples(model, 3)
    initial, losses, lrs = _peft_reference(reference, config, 0, examples, order_seed=3)
    learner = Learner(model, config, seed=0)
    learner.install().load_initial(initial)
    with learner.adapted([examples], [3]) as (log,), learner.lora.use([0]):
        assert log.lrs == lrs and log.losses == pytest.approx(losses, abs=1e-5)
        assert (_logits(model) - _logits(reference)).abs().max().item() < 1e-5
    plain = HFModel.from_pretrained(str(qwen_dir), dtype="float32", device="cpu")
    assert (_logits(plain) - _logits(reference)).abs().max().item() > 1e-3  # training did move the model


def test_adapting_never_imports_peft(qwen, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)  # from here on, any import of peft raises ImportError
    learner = Learner(qwen, LearnConfig(lr=1e-2))
    with learner.adapted([_examples(qwen, 2)], [1]):
        pass
    with learner.adapted([_examples(qwen, 1), _examples(qwen, 2)], [1, 2]):
        learner.generate(["hi", "ho"], [0, 1], max_new_tokens=2)
        with pytest.raises(ImportError, match="peft"):  # only writing an adapter in PEFT's format needs it
            learner.save(tmp_path)


@pytest.mark.slow
def test_saved_adapter_loads_with_peft(qwen_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = HFModel.from_pretrained(str(qwen_dir), dtype="float32", device="cpu")
    learner = Learner(model, LearnConfig(lr=1e-2))
    with learner.adapted([_examples(model)], [0]), learner.lora.use([0]):
        learner.save(tmp_path / "adapter")
        adapted = _logits(model)
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 8
    fresh = AutoModelForCausalLM.from_pretrained(str(qwen_dir), dtype=torch.float32)
    loaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    prompt = model.chat_prompt([{"role": "user", "content": "What is the weather in Paris?"}])
    ids = torch.tensor([model.encode(prompt)])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, adapted, atol=1e-6)


def _live_objects() -> tuple[int, int, int]:
    """(objects the garbage collector tracks, of which tensors, all allocated Python memory blocks) after a collection.

    The block count also sees objects the collector does not track (floats, strings, ...).
    """
    import gc
    import sys

    gc.collect()
    objects = gc.get_objects()
    try:  # type(), not isinstance(): isinstance on some lazy module proxies warns
        return len(objects), sum(issubclass(type(o), torch.Tensor) for o in objects), sys.getallocatedblocks()
    finally:
        del objects


@pytest.mark.slow
def test_a_thousand_adapt_reset_cycles_leave_the_base_model_bit_identical_and_leak_nothing(qwen):
    """The adapter lifecycle is O(adapter): no cycle leaves objects, tensors or module changes behind."""
    base_logits = _logits(qwen)  # before any LoRA was inserted
    # The cheapest cycle (a few tokens, one optimizer step at the full lr, LoRA on two projections) keeps 1,000
    # cycles at a few seconds; the lifecycle (adapt, then copy the initial tensors back in place) is the same.
    config = LearnConfig(epochs=1, warmup_ratio=0.0, lr=1e-2, target_modules=["q_proj", "v_proj"])
    learner = Learner(qwen, config, seed=0)
    example = [("Hi", "ok")]

    def reachable() -> tuple:
        model = qwen.model
        return (len(list(model.modules())), [id(p) for p in model.parameters()], [id(b) for b in model.buffers()],
                len(model.state_dict()), [id(p) for p in learner.parameters()],
                sum(p.grad is not None for p in model.parameters()))

    counts: dict[int, tuple[int, int, int]] = {}
    before: tuple = ()
    for cycle in range(1, 1001):
        with learner.adapted([example], [cycle]) as (log,):
            assert log.steps == 1
            if cycle == 1:  # the adapter really moves the model, so the final equality is not vacuous
                with learner.lora.use([0]):
                    assert log.lrs == [1e-2] and not torch.equal(_logits(qwen), base_logits)
        if cycle == 1:
            before = reachable()
        if cycle in (100, 500, 1000):
            counts[cycle] = _live_objects()
    assert torch.equal(_logits(qwen), base_logits)
    assert reachable() == before and before[-1] == 0  # same modules and tensors, no gradients kept
    (objects_100, tensors_100, _), (_, _, blocks_500), (objects_1000, tensors_1000, blocks_1000) = counts.values()
    assert tensors_1000 == tensors_100
    assert objects_1000 - objects_100 < 50, counts  # one leaked object per cycle would be 900
    # Untracked objects too (measured: the block count settles, growing by 30-70 over cycles 500-1000 as
    # interpreter and torch caches fill; a leak of one block per cycle would add 500).
    assert blocks_1000 - blocks_500 < 250, counts
