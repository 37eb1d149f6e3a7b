"""Shared-prefix candidate scoring (`ttsi.engine.scoring`) against per-candidate full forwards, and its attention."""

from __future__ import annotations

import json

import pytest
import torch

from ttsi.engine import prefix_attention, scoring
from ttsi.engine.scoring import score_candidates, shared_prefix_length
from ttsi.model import HFModel
from ttsi.tiny_models import build_tiny_model

PROMPTS = ["What is the weather in Paris?", "Send an email to ana@mail.com about the meeting tomorrow at noon, please",
           "Wake me at 7"]
CALLS = [json.dumps([{"name": n, "arguments": a}]) for n, a in [
    ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo", "unit": "celsius"}),
    ("send_email", {"to": "ana@mail.com"}), ("set_alarm", {"hour": 7})]]


@pytest.fixture(scope="module")
def mha_dir(tmp_path_factory, tokenizer):
    """A Llama without grouped-query attention (as many KV heads as query heads)."""
    return build_tiny_model(tmp_path_factory.mktemp("mha"), tokenizer, arch="llama", seed=1, hidden=32, kv_heads=4)


@pytest.fixture(scope="module")
def sliding_dir(tmp_path_factory, tokenizer):
    """A Qwen2 whose layers all use a sliding window: a model the shared path does not hook."""
    return build_tiny_model(tmp_path_factory.mktemp("sliding"), tokenizer, arch="qwen2", seed=2, hidden=32,
                            use_sliding_window=True, sliding_window=8, max_window_layers=0)


def load(path, dtype="float32") -> HFModel:
    return HFModel.from_pretrained(str(path), dtype=dtype, device="cpu")


def ids_of(model: HFModel, prompts: list[str], conts: list[list[str]]) -> tuple[list[list[int]], list[list[list[int]]]]:
    return [model.encode(model.chat_prompt([{"role": "user", "content": p}])) for p in prompts], \
        [[model.encode(c) for c in cs] for cs in conts]


def naive(model: HFModel, prompts: list[list[int]], conts: list[list[list[int]]]):
    """The reference: `HFModel.score_naive`'s per-candidate full forwards, on the same ids."""
    return [model._score_naive_ids(p, cs, batch_size=1) for p, cs in zip(prompts, conts, strict=True)]


def assert_close(got, ref, tol: float) -> None:
    assert [len(g) for g in got] == [len(r) for r in ref]
    for gs, rs in zip(got, ref, strict=True):
        for g, r in zip(gs, rs, strict=True):
            assert g.n_tokens == r.n_tokens == len(g.token_logprobs)
            assert g.logprob == pytest.approx(sum(g.token_logprobs), abs=1e-4)
            assert g.logprob == pytest.approx(r.logprob, abs=tol)
            assert max(abs(a - b) for a, b in zip(g.token_logprobs, r.token_logprobs, strict=True)) < tol


@pytest.fixture
def shared_only(monkeypatch):
    """Fail a test that would silently pass through the plain fallback."""
    def refuse(*args, **kwargs):
        raise AssertionError("the plain path ran")

    monkeypatch.setattr(scoring, "_score_plain", refuse)


CASES = {
    "one prompt, shared prefix": ([0], [CALLS]),
    "prompts of different lengths": ([0, 1, 2], [CALLS, CALLS[2:], [*CALLS[:1], "[]"]]),
    "single candidate": ([1], [CALLS[1:2]]),
    "no shared prefix": ([2, 0], [["yes", "[{", "no thanks"], ["Paris", "[]"]]),
    "a candidate that is the shared prefix": ([0], [['[{"name": "', '[{"name": "get_weather"}]', '[{"name": "s']]),
    "identical candidates and none": ([0, 1], [[CALLS[0], CALLS[0]], []]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("arch", ["qwen", "llama", "mha"])
def test_equals_naive_fp32(case, arch, qwen_dir, llama_dir, mha_dir, shared_only):
    model = load({"qwen": qwen_dir, "llama": llama_dir, "mha": mha_dir}[arch])
    which, conts = CASES[case]
    prompts, cands = ids_of(model, [PROMPTS[i] for i in which], conts)
    got, caches = score_candidates(model.model, prompts, cands, pad_id=model.pad_id)
    assert caches is None
    assert_close(got, naive(model, prompts, cands), 1e-4)


@pytest.mark.slow
def test_random_ids_with_many_chunks(qwen_dir, shared_only, monkeypatch):
    """Random ids, candidates of many lengths; small element budgets split prompts and candidates over forwards,
    some candidates packed with their prompt, others in rows of their own over the recorded prefixes."""
    model = load(qwen_dir)
    gen = torch.Generator().manual_seed(0)
    passes = []
    packed, rows = scoring._packed_pass, scoring._rows_pass
    monkeypatch.setattr(scoring, "_packed_pass", lambda *a: passes.append(("packed", len(a[3]))) or packed(*a))
    monkeypatch.setattr(scoring, "_rows_pass", lambda *a: passes.append(("rows", len(a[1]))) or rows(*a))

    def rand(n: int) -> list[int]:
        return torch.randint(3, model.model.config.vocab_size, (n,), generator=gen).tolist()

    stem = rand(5)
    prompts = [rand(n) for n in (9, 2, 30, 1)]
    cands = [[stem + rand(k) for k in (1, 4, 9)] + [stem[:2] + rand(3)], [rand(1)], [stem + rand(2), stem + rand(7)],
             [rand(6), rand(1), rand(3)]]
    ref = naive(model, prompts, cands)
    for budget in (scoring.DEFAULT_MAX_ELEMENTS, 1, 5_000, 10_000, 30_000):
        got, _ = score_candidates(model.model, prompts, cands, pad_id=model.pad_id, max_elements=budget)
        assert_close(got, ref, 1e-4)
    assert ("packed", 8) in passes and ("packed", 0) in passes and ("rows", 1) in passes
    assert any(kind == "packed" and 0 < n < 8 for kind, n in passes)  # a group packed, another not


@pytest.mark.parametrize("arch", ["qwen", "llama"])
def test_bf16_close_to_naive_bf16(arch, qwen_dir, llama_dir, shared_only):
    """bf16: the two paths round different intermediates (sdpa vs split softmax, batch shapes), so only close."""
    model = load(qwen_dir if arch == "qwen" else llama_dir, dtype="bfloat16")
    prompts, cands = ids_of(model, PROMPTS, [CALLS, CALLS[1:3], CALLS[:1]])
    got, _ = score_candidates(model.model, prompts, cands, pad_id=model.pad_id)
    assert_close(got, naive(model, prompts, cands), 5e-2)


def test_prompt_cache_equals_a_plain_forward(qwen_dir):
    model = load(qwen_dir)
    prompts, cands = ids_of(model, PROMPTS, [CALLS, CALLS[:1], []])
    _, caches = score_candidates(model.model, prompts, cands, pad_id=model.pad_id, keep_prompt_cache=True)
    assert len(caches) == len(prompts)
    for ids, cache in zip(prompts, caches, strict=True):
        out = model.model(input_ids=torch.tensor([ids]), use_cache=True)
        assert cache.ids == ids and cache.length == len(ids)
        assert len(cache.layers) == len(out.past_key_values.layers)
        for (k, v), layer in zip(cache.layers, out.past_key_values.layers, strict=True):
            assert k.shape == layer.keys.shape and v.shape == layer.values.shape
            torch.testing.assert_close(k, layer.keys, atol=1e-5, rtol=0)
            torch.testing.assert_close(v, layer.values, atol=1e-5, rtol=0)
        assert cache.next_logits.shape == (model.model.config.vocab_size,)
        torch.testing.assert_close(cache.next_logits, out.logits[0, -1], atol=1e-5, rtol=0)


def test_attention_implementation_is_restored(qwen_dir, monkeypatch):
    model = load(qwen_dir)
    before = model.model.config._attn_implementation
    prompts, cands = ids_of(model, PROMPTS[:1], [CALLS])
    score_candidates(model.model, prompts, cands, pad_id=model.pad_id)
    assert model.model.config._attn_implementation == before

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(prefix_attention, "attend", boom)
    with pytest.raises(RuntimeError, match="boom"):
        score_candidates(model.model, prompts, cands, pad_id=model.pad_id)
    assert model.model.config._attn_implementation == before
    # and the model still runs its ordinary attention: it scores as a model that never went through the switch
    fresh = load(qwen_dir).score_naive(PROMPTS[0], CALLS[:2])
    assert [(s.logprob, s.n_tokens) for s in model.score_naive(PROMPTS[0], CALLS[:2])] == \
        [(s.logprob, s.n_tokens) for s in fresh]


def test_unhookable_model_takes_the_plain_path(sliding_dir):
    model = load(sliding_dir)
    assert not scoring._hookable(model.model)
    prompts, cands = ids_of(model, PROMPTS[:2], [CALLS, CALLS[:1]])
    got, caches = score_candidates(model.model, prompts, cands, pad_id=model.pad_id, keep_prompt_cache=True)
    assert caches is None
    assert_close(got, naive(model, prompts, cands), 1e-4)


def test_attention_refusing_a_feature_falls_back(qwen_dir, monkeypatch):
    """An `Unsupported` raised inside the forward (e.g. an attention kwarg we do not implement) -> the plain path."""
    model = load(qwen_dir)
    before = model.model.config._attn_implementation

    def refuse(module, kwargs):
        raise prefix_attention.Unsupported("test")

    monkeypatch.setattr(prefix_attention, "_check_supported", refuse)
    prompts, cands = ids_of(model, PROMPTS[:2], [CALLS, CALLS[1:]])
    got, caches = score_candidates(model.model, prompts, cands, pad_id=model.pad_id, keep_prompt_cache=True)
    assert caches is None and model.model.config._attn_implementation == before
    assert_close(got, naive(model, prompts, cands), 1e-4)


def test_layer_bypassing_the_attention_falls_back(qwen_dir):
    """A layer that does not run through the switched attention (here: its own config copy) is noticed."""
    import copy

    model = load(qwen_dir)
    attention = model.model.model.layers[0].self_attn
    attention.config = copy.copy(attention.config)
    prompts, cands = ids_of(model, PROMPTS[:2], [CALLS, CALLS[1:]])
    got, caches = score_candidates(model.model, prompts, cands, pad_id=model.pad_id, keep_prompt_cache=True)
    assert caches is None
    assert_close(got, naive(model, prompts, cands), 1e-4)


def test_peft_wrapped_model(qwen_dir, shared_only):
    from peft import LoraConfig, get_peft_model

    model = load(qwen_dir)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    wrapped = get_peft_model(model.model, config).eval()
    model.model = wrapped  # naive goes through the wrapper too: the LoRA deltas count in both
    prompts, cands = ids_of(model, PROMPTS[:2], [CALLS, CALLS[:2]])
    got, _ = score_candidates(wrapped, prompts, cands, pad_id=model.pad_id)
    assert_close(got, naive(model, prompts, cands), 1e-4)


def test_input_errors(qwen_dir):
    model = load(qwen_dir)
    with pytest.raises(ValueError, match="empty prompt"):
        score_candidates(model.model, [[]], [[[1]]], pad_id=0)
    with pytest.raises(ValueError, match="empty continuation"):
        score_candidates(model.model, [[1, 2]], [[[3], []]], pad_id=0)
    with pytest.raises(ValueError, match="candidate lists"):
        score_candidates(model.model, [[1, 2]], [], pad_id=0)
    assert score_candidates(model.model, [], [], pad_id=0) == ([], None)


def test_shared_prefix_length():
    assert shared_prefix_length([]) == 0
    assert shared_prefix_length([[1, 2, 3]]) == 2  # a single candidate: all but the last token
    assert shared_prefix_length([[1, 2, 3], [1, 2, 4, 5]]) == 2
    assert shared_prefix_length([[1, 2], [1, 2, 4]]) == 2  # a candidate may end where the shared part ends
    assert shared_prefix_length([[1, 2], [1, 2]]) == 1  # ... but something must still be predicted after it
    assert shared_prefix_length([[1], [2, 3]]) == 0


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (4, 4), (6, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_equals_sdpa_on_expanded_kv(heads, kv_heads, dtype):
    """The split softmax over (prompt prefix, own tokens) equals sdpa on each row's concatenated, repeated K/V."""
    gen = torch.Generator().manual_seed(0)
    dim, width, lengths = 8, 5, [7, 3, 11]
    row_prompt = [0, 0, 2, 2, 2, 1]  # prompt 1's row comes last: rows need not be grouped for the attention

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    prefix = (rand(3, kv_heads, max(lengths), dim), rand(3, kv_heads, max(lengths), dim))
    rows = len(row_prompt)
    query = rand(rows, heads, width, dim)
    key, value = rand(rows, kv_heads, width, dim), rand(rows, kv_heads, width, dim)
    plan = prefix_attention.make_plan(lengths, max(lengths), row_prompt, "cpu", [prefix])
    got = prefix_attention.attend(query, key, value, plan, prefix, dim**-0.5)
    for r, b in enumerate(row_prompt):
        n = lengths[b]
        keys = torch.cat([prefix[0][b, :, :n], key[r]], dim=1).repeat_interleave(heads // kv_heads, dim=0)
        values = torch.cat([prefix[1][b, :, :n], value[r]], dim=1).repeat_interleave(heads // kv_heads, dim=0)
        mask = torch.ones(width, n + width, dtype=torch.bool).tril(n)  # everything of the prefix, causal after
        want = torch.nn.functional.scaled_dot_product_attention(query[r].float(), keys.float(), values.float(),
                                                                attn_mask=mask)
        torch.testing.assert_close(got[r].float(), want, atol=1e-5 if dtype == torch.float32 else 3e-2, rtol=0)


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (2, 2)])
def test_packed_attention_equals_sdpa(heads, kv_heads):
    """Packed rows [prompt | slot 0 | slot 1]: the prompt causal, each slot over its prompt and itself; sdpa on
    expanded K/V per sequence gives the same, and the prompt's keys/values are recorded as views."""
    gen = torch.Generator().manual_seed(1)
    dim, lengths, slots, slot_width = 8, [6, 4], 2, 3
    width = max(lengths)
    columns = width + slots * slot_width

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    query, key, value = rand(2, heads, columns, dim), rand(2, kv_heads, columns, dim), rand(2, kv_heads, columns, dim)
    plan = prefix_attention.make_plan(lengths, width, [0, 0, 1, 1], "cpu", [None], packed=True)
    got = prefix_attention.attend_packed(query, key, value, plan, 0, dim**-0.5)
    assert plan.layers[0][0].data_ptr() == key.data_ptr() and plan.layers[0][0].shape == (2, kv_heads, width, dim)
    groups = heads // kv_heads
    for b, n in enumerate(lengths):
        k, v = key[b].repeat_interleave(groups, dim=0), value[b].repeat_interleave(groups, dim=0)
        want = torch.nn.functional.scaled_dot_product_attention(query[b, :, :n], k[:, :n], v[:, :n], is_causal=True)
        torch.testing.assert_close(got[b, :, :n], want, atol=1e-5, rtol=0)
        for s in range(slots):
            cols = list(range(n)) + list(range(width + s * slot_width, width + (s + 1) * slot_width))
            mask = torch.ones(slot_width, len(cols), dtype=torch.bool).tril(n)
            q = query[b, :, width + s * slot_width: width + (s + 1) * slot_width]
            want = torch.nn.functional.scaled_dot_product_attention(q, k[:, cols], v[:, cols], attn_mask=mask)
            torch.testing.assert_close(got[b, :, width + s * slot_width: width + (s + 1) * slot_width], want,
                                       atol=1e-5, rtol=0)


def test_attention_function_is_sdpa_without_a_plan(qwen_dir):
    """A forward that is not ours, while the model is switched, is plain sdpa (its padding mask included)."""
    model = load(qwen_dir)
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    want = model.model(input_ids=ids, attention_mask=mask).logits
    with prefix_attention.switched_attention(model.model):
        assert model.model.config._attn_implementation == prefix_attention.IMPLEMENTATION
        got = model.model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1, 2:], want[1, 2:])
