"""The lean decoder (`ttsi.engine.decode.decode`) against Hugging Face's `generate`, token for token.

The reference is `model.generate` with every decoding field pinned exactly as `HFModel.generate` pins them (left
padding, greedy or temperature/top-p sampling with top_k off, `torch.manual_seed(seed)` inside `fork_rng`), written
out here so that it stays the library's reference whatever `HFModel.generate` itself is routed through.

The tiny test models get fresh random weights with a large spread: at the default init (std 0.02) a 2-layer model
repeats one token forever, which would make every comparison below trivially true.
"""

from __future__ import annotations

import pytest
import torch

from ttsi.engine.cache import PrefixCache
from ttsi.engine.decode import decode
from ttsi.model import HFModel

TEXTS = ["What is the weather in Paris?", "hi", "Send an email to ana@mail.com about the meeting on Friday at 7"]


def _spread(model: torch.nn.Module, seed: int, std: float = 0.3) -> None:
    """Redraw every weight matrix (norms and biases stay) so that greedy output varies from token to token."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def _load(path, seed: int, dtype: str = "float32") -> HFModel:
    model = HFModel.from_pretrained(str(path), dtype=dtype, device="cpu")
    _spread(model.model, seed)
    return model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models this small run fastest on one thread, and do not stall while other processes hold the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(qwen_dir, llama_dir) -> dict[str, HFModel]:
    return {"qwen2": _load(qwen_dir, seed=1), "llama": _load(llama_dir, seed=2)}


def _prompts(model: HFModel, texts: list[str] = TEXTS) -> list[list[int]]:
    """Chat prompts of different lengths, as token ids."""
    return [model.encode(model.chat_prompt([{"role": "user", "content": t}])) for t in texts]


def reference(model: HFModel, prompts: list[list[int]], max_new_tokens: int, stop_ids: list[int],
              temperature: float = 0.0, top_p: float = 1.0, n: int = 1, seed: int | None = None) -> list[list[int]]:
    """Hugging Face's generate pinned as HFModel.generate pins it: each row's new ids, pad tokens included."""
    return model.hf_generate_ids(prompts, max_new_tokens, temperature, top_p, n, seed, stop_ids=stop_ids)


def _cut(row: list[int], stop_ids: list[int]) -> list[int]:
    """A reference row up to and including its first stop token (generate pads the rest)."""
    end = next((j + 1 for j, t in enumerate(row) if t in stop_ids), len(row))
    return row[:end]


def _assert_same(model: HFModel, ours: list[list[int]], ref: list[list[int]], stop_ids: list[int]) -> None:
    """Same ids as generate's rows (cut at the stop) and the same text as HFModel.generate decodes from them."""
    assert ours == [_cut(row, stop_ids) for row in ref]
    decode_text = model.tokenizer.decode
    assert [decode_text(r, skip_special_tokens=True) for r in ours] == \
        [decode_text(r, skip_special_tokens=True) for r in ref]


def _stop_token(free: list[list[int]]) -> int:
    """A token the first row emits early and the last row never does: row 0 stops early, the last row runs on."""
    return next(t for t in free[0][1:10] if t not in free[-1])


def _prefix(model: HFModel, ids: list[int]) -> PrefixCache:
    """The prompt's KV cache and last logits from a plain forward (what the gate hands over)."""
    with torch.no_grad():
        out = model.model(input_ids=torch.tensor([ids]), use_cache=True)
    cache = out.get("cache") or out.past_key_values  # `cache` since transformers 5.2x, `past_key_values` before
    return PrefixCache(list(ids), [(layer.keys, layer.values) for layer in cache.layers], out.logits[0, -1])


# ---- greedy ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_greedy_matches_generate(models, arch):
    model = models[arch]
    prompts = _prompts(model)
    assert len({len(p) for p in prompts}) == len(prompts)  # left padding is exercised
    free = decode(model.model, prompts, max_new_tokens=16, stop_ids=[], pad_id=model.pad_id)
    assert len(set(free[0])) > 3  # the model does not just repeat itself
    stops = [_stop_token(free)]
    ours = decode(model.model, prompts, max_new_tokens=16, stop_ids=stops, pad_id=model.pad_id)
    assert len(ours[0]) < 16 and ours[0][-1] == stops[0] and len(ours[-1]) == 16  # one stops, one hits the limit
    _assert_same(model, ours, reference(model, prompts, 16, stops), stops)
    single = decode(model.model, prompts[:1], max_new_tokens=16, stop_ids=stops, pad_id=model.pad_id)
    _assert_same(model, single, reference(model, prompts[:1], 16, stops), stops)
    assert single == ours[:1]


def test_greedy_with_the_tokenizers_eos_and_several_sequences(models):
    model = models["qwen2"]
    prompts = _prompts(model)
    ours = decode(model.model, prompts, max_new_tokens=12, stop_ids=model.eos_ids, pad_id=model.pad_id,
                  num_return_sequences=2)
    once = reference(model, prompts, 12, model.eos_ids)  # generate refuses greedy num_return_sequences > 1
    _assert_same(model, ours, [row for row in once for _ in range(2)], model.eos_ids)


def test_train_mode_is_restored_and_does_not_change_the_tokens(models):
    model = models["llama"]
    prompts = _prompts(model)[:2]
    expected = decode(model.model, prompts, max_new_tokens=8, stop_ids=[], pad_id=model.pad_id)
    model.model.train()
    try:
        assert decode(model.model, prompts, max_new_tokens=8, stop_ids=[], pad_id=model.pad_id) == expected
        assert model.model.training and all(m.training for m in model.model.modules())
    finally:
        model.model.eval()


# ---- sampling -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_seeded_sampling_matches_generate(models, arch):
    model = models[arch]
    prompt = _prompts(model)[:1]
    stops = model.eos_ids
    state = torch.random.get_rng_state()
    ours = decode(model.model, prompt, max_new_tokens=20, stop_ids=stops, pad_id=model.pad_id, temperature=0.7,
                  top_p=0.95, num_return_sequences=3, seeds=[11])
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    ref = reference(model, prompt, 20, stops, temperature=0.7, top_p=0.95, n=3, seed=11)
    _assert_same(model, ours, ref, stops)
    assert len({tuple(r) for r in ours}) > 1  # three different samples


def test_a_prompts_samples_do_not_depend_on_the_batch(models):
    model = models["qwen2"]
    prompts = _prompts(model)
    kwargs = {"max_new_tokens": 20, "stop_ids": model.eos_ids, "pad_id": model.pad_id, "temperature": 0.7,
              "top_p": 0.95, "num_return_sequences": 3}
    for i in (1, 2):  # the shortest prompt (left-padded in the batch) and the longest
        alone = decode(model.model, [prompts[i]], seeds=[5], **kwargs)
        seeds = [7, 8, 9]
        seeds[i] = 5
        batch = decode(model.model, prompts, seeds=seeds, **kwargs)
        assert batch[3 * i: 3 * i + 3] == alone
    other = decode(model.model, [prompts[1]], seeds=[6], **kwargs)
    assert other != alone  # the seed does matter


def test_unseeded_sampling_is_generates_draw_and_leaves_the_rng_alone(models):
    model = models["llama"]
    prompts = _prompts(model)
    state = torch.random.get_rng_state()
    ours = decode(model.model, prompts, max_new_tokens=12, stop_ids=model.eos_ids, pad_id=model.pad_id,
                  temperature=1.0, num_return_sequences=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    _assert_same(model, ours, reference(model, prompts, 12, model.eos_ids, temperature=1.0, n=2), model.eos_ids)


# ---- prefixes -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_prefixes_give_the_same_greedy_tokens(models, arch):
    model = models[arch]
    prompts = _prompts(model)
    prefixes = [_prefix(model, p) for p in prompts]
    kwargs = {"max_new_tokens": 12, "stop_ids": model.eos_ids, "pad_id": model.pad_id, "num_return_sequences": 2}
    plain = decode(model.model, prompts, **kwargs)
    assert decode(model.model, prompts, prefixes=prefixes, **kwargs) == plain
    assert decode(model.model, prompts, prefixes=[prefixes[0], None, prefixes[2]], **kwargs) == plain
    assert decode(model.model, prompts, prefixes=[None, prefixes[1], None], **kwargs) == plain


def test_every_forward_keeps_all_rows(models):
    """A caller's per-row state (LoRA slots) stays valid: the prefill and each step see every row, in order."""
    model = models["qwen2"]
    prompts = _prompts(model)
    first = _prefix(model, prompts[0])
    batches: list[int] = []
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        for prefixes in (None, [first, None, None]):
            batches.clear()
            decode(model.model, prompts, max_new_tokens=6, stop_ids=[], pad_id=model.pad_id, num_return_sequences=2,
                   prefixes=prefixes)
            assert batches == [6] * 6  # one prefill + 5 steps, 3 prompts x 2 rows each
        batches.clear()
        decode(model.model, prompts[:1], max_new_tokens=6, stop_ids=[], pad_id=model.pad_id, prefixes=[first])
        assert batches == [1] * 5  # nothing to prefill: every prompt came with its cache
    finally:
        hook.remove()


def test_finished_rows_leave_the_batch_and_the_tokens_stay_generates(models):
    """Greedy: a row that stopped leaves the next forwards (the caller is told which rows remain); every row still
    gets generate's tokens."""
    model = models["qwen2"]
    prompts = _prompts(model)
    free = decode(model.model, prompts, max_new_tokens=16, stop_ids=[], pad_id=model.pad_id)
    stops = [_stop_token(free)]
    batches: list[int] = []
    told: list[list[int]] = []
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        ours = decode(model.model, prompts, max_new_tokens=16, stop_ids=stops, pad_id=model.pad_id,
                      on_rows=told.append)
    finally:
        hook.remove()
    stopped = len(ours[0])
    assert stopped < 16 and ours[0][-1] == stops[0]
    assert told and told[0] == [1, 2]  # row 0 went first; the others keep their original indices
    assert batches[:stopped] == [3] * stopped  # the prefill and every step while row 0 still ran
    assert batches[stopped] < 3 and len(batches) <= 16
    _assert_same(model, ours, reference(model, prompts, 16, stops), stops)


def test_sampled_rows_leave_only_with_every_row_of_their_generator(models):
    """Sampling: a seeded prompt's rows go together, once all are done, so the generator each remaining prompt
    draws from is consumed as generate consumes it: every prompt's samples equal its samples alone."""
    model = models["qwen2"]
    prompts = _prompts(model)
    kwargs = {"pad_id": model.pad_id, "temperature": 1.0, "num_return_sequences": 2}
    free = decode(model.model, prompts, max_new_tokens=24, stop_ids=[], seeds=[1, 2, 3], **kwargs)
    stop = next(t for t in free[2][1:10] if t not in free[3])  # ends prompt 1's first row, never its second
    limits = [3, 24, 24]  # prompt 0's rows both end at 3 tokens
    told: list[list[int]] = []
    ours = decode(model.model, prompts, max_new_tokens=limits, stop_ids=[stop], seeds=[1, 2, 3],
                  on_rows=told.append, **kwargs)
    assert told and told[0] == [2, 3, 4, 5], "prompt 0 did not leave: the test does not exercise dropping"
    assert len(ours[2]) < 10 and ours[2][-1] == stop and len(ours[3]) > len(ours[2])
    for origin in told:  # whole prompts only: rows 2i and 2i+1 leave together (row 2 stays while row 3 runs)
        assert all((r ^ 1) in origin for r in origin)
    assert all(2 in origin for origin in told if 3 in origin)
    for i, (seed, limit) in enumerate(zip((1, 2, 3), limits, strict=True)):
        alone = decode(model.model, [prompts[i]], max_new_tokens=limit, stop_ids=[stop], seeds=[seed], **kwargs)
        assert ours[2 * i: 2 * i + 2] == alone


# ---- bf16 -----------------------------------------------------------------------------------------------------

def test_bf16_matches_generate(qwen_dir):
    model = _load(qwen_dir, seed=1, dtype="bfloat16")
    assert model.model.dtype == torch.bfloat16
    prompts = _prompts(model)
    free = decode(model.model, prompts, max_new_tokens=12, stop_ids=[], pad_id=model.pad_id)
    assert [len(r) for r in free] == [12, 12, 12]
    assert all(0 <= t < model.model.config.vocab_size for row in free for t in row)
    stops = [_stop_token(free)]
    ours = decode(model.model, prompts, max_new_tokens=12, stop_ids=stops, pad_id=model.pad_id)
    # Equal here: the bf16 kernels see the same inputs and the same shapes as generate's. Were a tie to round
    # differently (the cache is read as a view here, a fresh tensor there), the first token would still agree.
    _assert_same(model, ours, reference(model, prompts, 12, stops), stops)
    sampled = decode(model.model, prompts[:1], max_new_tokens=12, stop_ids=stops, pad_id=model.pad_id,
                     temperature=0.7, top_p=0.95, num_return_sequences=2, seeds=[3])
    _assert_same(model, sampled, reference(model, prompts[:1], 12, stops, temperature=0.7, top_p=0.95, n=2, seed=3),
                 stops)


# ---- limits and bad input -------------------------------------------------------------------------------------

def test_per_row_max_new_tokens(models):
    model = models["qwen2"]
    prompts = _prompts(model)[:2]
    full = decode(model.model, prompts, max_new_tokens=9, stop_ids=[], pad_id=model.pad_id, num_return_sequences=2)
    per_prompt = decode(model.model, prompts, max_new_tokens=[3, 7], stop_ids=[], pad_id=model.pad_id,
                        num_return_sequences=2)
    assert [len(r) for r in per_prompt] == [3, 3, 7, 7]
    per_row = decode(model.model, prompts, max_new_tokens=[2, 9, 4, 1], stop_ids=[], pad_id=model.pad_id,
                     num_return_sequences=2)
    assert [len(r) for r in per_row] == [2, 9, 4, 1]
    for rows in (per_prompt, per_row):
        assert all(r == f[: len(r)] for r, f in zip(rows, full, strict=True))
    stop = full[2][2]  # a stop inside a row's own limit still ends it there
    stopped = decode(model.model, prompts, max_new_tokens=[9, 9, 8, 1], stop_ids=[stop], pad_id=model.pad_id,
                     num_return_sequences=2)
    assert stopped[2] == full[2][: full[2].index(stop) + 1] and len(stopped[3]) == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"prompts": []}, "at least one prompt"),
    ({"prompts": [[5, 6], []]}, "prompt 1 is empty"),
    ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    ({"max_new_tokens": [4, 0]}, "max_new_tokens must be >= 1"),
    ({"max_new_tokens": [4, 4, 4]}, "one per prompt or one per row"),
    ({"num_return_sequences": 0}, "num_return_sequences"),
    ({"temperature": -0.1}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"seeds": [1]}, "seeds for 2 prompts"),
    ({"prefixes": [None]}, "prefixes for 2 prompts"),
    ({"stop_ids": [-1]}, "non-negative"),
])
def test_bad_input_is_refused(models, kwargs, message):
    model = models["qwen2"]
    args = {"prompts": [[5, 6, 7], [8, 9]], "max_new_tokens": 4, "stop_ids": [], "pad_id": model.pad_id, **kwargs}
    prompts = args.pop("prompts")
    with pytest.raises(ValueError, match=message):
        decode(model.model, prompts, **args)


def test_a_prefix_must_be_its_prompts_cache(models):
    model = models["qwen2"]
    prompts = _prompts(model)[:2]
    prefix = _prefix(model, prompts[0])
    with pytest.raises(ValueError, match=r"prefix 1 .* not prompt 1"):
        decode(model.model, prompts, max_new_tokens=4, stop_ids=[], pad_id=model.pad_id, prefixes=[None, prefix])
    short = PrefixCache(prefix.ids, prefix.layers[:-1], prefix.next_logits)
    with pytest.raises(ValueError, match="layers"):
        decode(model.model, prompts, max_new_tokens=4, stop_ids=[], pad_id=model.pad_id, prefixes=[short, None])
