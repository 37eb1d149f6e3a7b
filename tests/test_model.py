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
