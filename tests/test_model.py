"""The model backend: loading through from_pretrained, chat prompts, scoring and generation."""

from __future__ import annotations

import pytest
import torch

from ttsi.errors import ModelLoadError
from ttsi.model import HFModel


@pytest.mark.parametrize("arch_dir", ["qwen_dir", "llama_dir"])
def test_loads_tiny_models_of_real_architectures(request, arch_dir):
    model = HFModel.from_pretrained(str(request.getfixturevalue(arch_dir)), dtype="float32")
    assert model.device.type == "cpu" and model.model.dtype == torch.float32
    assert model.model.config.model_type == {"qwen_dir": "qwen2", "llama_dir": "llama"}[arch_dir]
    prompt = model.chat_prompt([{"role": "user", "content": "hi"}])
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert model.eos_ids == [model.tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_missing_paths_and_non_models_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model path \./no/such/model does not exist"):
        HFModel.from_pretrained("./no/such/model")
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        HFModel.from_pretrained(str(tmp_path))
    with pytest.raises(ModelLoadError, match="could not load model 'nobody/nothing'"):
        HFModel.from_pretrained("nobody/nothing")  # a hub id, offline


def test_devices_this_machine_lacks_are_clear_errors():
    from ttsi.model import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    for bad, message in [("foo", "unknown device 'foo'"), ("meta", "device 'meta' is not supported")]:
        with pytest.raises(ModelLoadError, match=message):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA GPU"):
            resolve_device("cuda")
    else:
        with pytest.raises(ModelLoadError, match="does not exist"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_dtype_resolution():
    from ttsi.model import resolve_dtype

    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32  # bf16 only where the hardware has it
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ModelLoadError, match="unknown dtype 'int3'"):
        resolve_dtype("int3", cpu)


def test_prompt_without_a_chat_template_is_a_plain_transcript(qwen):
    qwen.tokenizer.chat_template = None
    text = qwen.chat_prompt([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert text == "System: S\n\nUser: U\n\nAssistant: "


def test_score_is_independent_of_batching(qwen):
    prompt = qwen.chat_prompt([{"role": "user", "content": "Weather in Paris?"}])
    conts = ['[{"name": "get_weather"', "no", '[{"name": "send_email", "arguments": {}}]']
    together = qwen.score(prompt, conts)
    alone = [qwen.score(prompt, [c])[0] for c in conts]
    for a, b in zip(together, alone, strict=True):
        assert a.n_tokens == b.n_tokens and a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert a.logprob == pytest.approx(sum(a.token_logprobs), rel=1e-6)
    with pytest.raises(ValueError, match="empty continuation"):
        qwen.score(prompt, [""])


def test_generate_is_greedy_by_default_and_seeded_when_sampling(qwen):
    prompts = [qwen.chat_prompt([{"role": "user", "content": q}]) for q in ("hi", "Weather in Paris today?")]
    greedy = qwen.generate(prompts, max_new_tokens=8)
    assert len(greedy) == 2 and greedy == qwen.generate(prompts, max_new_tokens=8)
    first = qwen.generate(prompts[:1], max_new_tokens=8, temperature=1.0, num_return_sequences=3, seed=5)
    assert len(first) == 3 and first == qwen.generate(prompts[:1], max_new_tokens=8, temperature=1.0,
                                                      num_return_sequences=3, seed=5)
    assert len(set(first)) > 1  # sampled, not the greedy answer three times
    assert first != qwen.generate(prompts[:1], max_new_tokens=8, temperature=1.0, num_return_sequences=3, seed=6)
    state = torch.get_rng_state()
    qwen.generate(prompts[:1], max_new_tokens=4, temperature=1.0, seed=1)
    assert torch.equal(state, torch.get_rng_state())  # seeded sampling leaves the caller's RNG alone


def test_greedy_is_argmax_whatever_the_model_ships_as_generation_defaults(qwen):
    qwen.model.generation_config.repetition_penalty = 5.0  # would change greedy output if it leaked in
    qwen.model.generation_config.top_k = 1
    prompt = qwen.chat_prompt([{"role": "user", "content": "Weather in Oslo?"}])
    ids, out = torch.tensor([qwen.encode(prompt)]), []
    for _ in range(10):
        with torch.no_grad():
            token = int(qwen.model(input_ids=ids).logits[0, -1].argmax())
        if token in qwen.eos_ids:
            break
        out.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    assert qwen.generate([prompt], max_new_tokens=10) == [qwen.decode(out)]


# ---- shared-prefix scoring -----------------------------------------------------------------------------------

def _candidates(n: int) -> list[str]:
    """n continuations of different token lengths (one token up to a full call), as the gate scores them."""
    names = ["get_weather", "send_email", "set_alarm", "search", "book_table"]
    pool = [c for f in names for c in (f'[{{"name": "{f}", "arguments":', f"call {f}",
                                        f'[{{"name": "{f}", "arguments": {{"city": "Paris", "unit": "celsius"}}}}]')]
    return (["[", "no", *pool, "{}", "Paris", " the weather in Oslo is mild today"])[:n]


def _assert_scores_match(shared, naive, tol: float = 1e-4) -> float:
    assert len(shared) == len(naive)
    worst = 0.0
    for a, b in zip(shared, naive, strict=True):
        assert a.n_tokens == b.n_tokens == len(a.token_logprobs) == len(b.token_logprobs)
        assert a.logprob == pytest.approx(b.logprob, abs=tol)
        assert a.logprob == pytest.approx(sum(a.token_logprobs), rel=1e-6)
        worst = max(worst, abs(a.logprob - b.logprob), *(abs(x - y) for x, y in
                                                           zip(a.token_logprobs, b.token_logprobs, strict=True)))
    assert worst <= tol
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("arch_dir", ["qwen_dir", "llama_dir"])
@pytest.mark.parametrize("n", [1, 5, 20])
def test_shared_prefix_score_equals_the_naive_reference(request, arch_dir, n):
    model = HFModel.from_pretrained(str(request.getfixturevalue(arch_dir)), dtype="float32", device="cpu")
    prompt = model.chat_prompt([{"role": "user", "content": "What is the weather in Paris? Use a tool."}])
    conts = _candidates(n)
    assert len(conts) == n and len({len(model.encode(c)) for c in conts}) >= min(n, 5)  # lengths differ
    _assert_scores_match(model.score(prompt, conts), model.score_naive(prompt, conts, batch_size=3))


def test_score_many_scores_every_prompt_as_alone_and_keeps_each_prompts_cache(qwen):
    prompts = [qwen.chat_prompt([{"role": "user", "content": q}]) for q in ("Paris?", "What is the weather in Oslo?")]
    conts = [_candidates(5), _candidates(3)]
    scored, caches = qwen.score_many(prompts, conts, keep_cache=True)
    for prompt, cs, got in zip(prompts, conts, scored, strict=True):
        _assert_scores_match(got, qwen.score_naive(prompt, cs))
    for prompt, cache in zip(prompts, caches, strict=True):
        ids = qwen.encode(prompt)
        assert cache.ids == ids
        with torch.no_grad():
            logits = qwen.model(input_ids=torch.tensor([ids])).logits[0, -1]
        assert (cache.next_logits.float() - logits).abs().max().item() < 1e-4
    assert qwen.score_many(prompts, conts)[1] is None  # no cache unless asked


@pytest.mark.slow
def test_shared_prefix_score_equals_naive_under_a_nonzero_lora_and_only_inside_its_scope(qwen):
    from ttsi.config import LearnConfig
    from ttsi.engine.lora import MultiLoRA

    prompt = qwen.chat_prompt([{"role": "user", "content": "What is the weather in Paris?"}])
    conts = _candidates(20)
    base = qwen.score(prompt, conts)
    lora = MultiLoRA.install(qwen, LearnConfig(), slots=1, seed=0)
    name, lora_b = next((n, p) for n, p in qwen.model.named_parameters() if "lora_B" in n and "q_proj" in n)
    with torch.no_grad():
        lora_b.copy_(torch.randn(lora_b.shape, generator=torch.Generator().manual_seed(0)))
    _assert_scores_match(qwen.score(prompt, conts), base, tol=0.0)  # outside use(): the base model
    with lora.use([0]):
        adapted = qwen.score(prompt, conts)
        _assert_scores_match(adapted, qwen.score_naive(prompt, conts, batch_size=7))
    assert max(abs(a.logprob - b.logprob) for a, b in zip(adapted, base, strict=True)) > 1e-3, name  # not vacuous
    lora.reset()
    with lora.use([0]):
        _assert_scores_match(qwen.score(prompt, conts), base, tol=0.0)


def test_shared_prefix_score_edge_cases(qwen):
    prompt = qwen.chat_prompt([{"role": "user", "content": "Weather in Paris?"}])
    assert qwen.score(prompt, []) == [] and qwen.score_naive(prompt, []) == []
    with pytest.raises(ValueError, match="empty continuation"):
        qwen.score(prompt, ["no", ""])
    with pytest.raises(ValueError, match="empty continuation"):
        qwen.score_naive(prompt, ["no", ""])
    conts = _candidates(6)
    for score in (qwen.score, qwen.score_naive):
        with pytest.raises(ValueError, match="empty prompt"):
            score("", conts)
    with pytest.raises(ValueError, match="2 prompts but 1 candidate lists"):
        qwen.score_many([prompt, prompt], [conts])
