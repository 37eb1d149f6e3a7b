"""The embedded model's training loop (`ttsi.sealshift.train`): its cheaper loss is the model's own loss, and its
batches draw every example fairly; and the tokenizer splits of `ttsi.tiny_models`."""

import os
import random
import re
import signal
import subprocess
import sys
from collections import Counter

import pytest
import torch
from transformers import AutoModelForCausalLM

from ttsi.engine.train import IGNORE, collate
from ttsi.errors import ConfigError
from ttsi.sealshift.train import TrainState, answer_loss, length_grouped, train_causal_lm
from ttsi.tiny_models import tiny_config

from .conftest import SCRIPTS, load_script


def _examples(lengths: list[int], seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    out = []
    for n in lengths:
        ids = [rng.randrange(3, 300) for _ in range(n)]
        out.append((ids, [IGNORE] * (n // 2) + ids[n // 2:]))
    return out


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_answer_loss_is_the_models_loss_on_a_right_padded_batch(arch):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, 300, hidden=32, pad_token_id=0))
    batch = collate(_examples([5, 12, 9, 20]), pad_id=0)
    expected = model(**batch).loss
    expected.backward()
    want = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    got = answer_loss(model, batch)
    assert torch.allclose(got, expected, atol=1e-5)
    got.backward()  # and it trains what the full loss trains: the same gradient on every parameter
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert grads.keys() == want.keys() and all(g is not None for g in grads.values())
    assert [n for n in want if not torch.allclose(grads[n], want[n], atol=1e-6, rtol=1e-4)] == []


def test_weighted_answer_loss_is_a_weighted_mean_over_the_labelled_positions():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("qwen2", 300, hidden=32, pad_token_id=0))
    examples = _examples([5, 12, 9])
    batch = collate(examples, pad_id=0)
    ones = torch.ones(batch["input_ids"].shape)
    assert torch.allclose(answer_loss(model, batch, ones), answer_loss(model, batch), atol=1e-6)
    weights = torch.rand(batch["input_ids"].shape) * 5
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    logits = model(input_ids=batch["input_ids"]).logits[:, :-1][keep]
    each = torch.nn.functional.cross_entropy(logits, labels[keep], reduction="none")
    want = (each * weights[:, 1:][keep]).sum() / weights[:, 1:][keep].sum()
    assert torch.allclose(answer_loss(model, batch, weights), want, atol=1e-5)
    assert not torch.allclose(want, answer_loss(model, batch), atol=1e-4)


def test_emphasised_pairs_weigh_the_tokens_in_the_spans_and_encode_as_encode_pair(tokenizer):
    from ttsi.engine.train import encode_pair
    from ttsi.sealshift.recipe import call_names
    from ttsi.sealshift.train import _weighted_pair

    answer = 'Request: Add it.\nAnswer: [{"name": "addFeature", "arguments": {"name": "x"}}, {"name": "getPose"}]'
    assert [answer[a:b] for a, b in call_names(answer)] == ["addFeature", "x", "getPose"]  # "x": a "name" argument
    prompt = "<|im_start|>user\nhi<|im_end|>\n"
    ids, labels, weights = _weighted_pair(tokenizer, prompt, answer, call_names, 4.0)
    assert (ids, labels) == encode_pair(lambda t: tokenizer(t, add_special_tokens=False)["input_ids"], prompt,
                                        answer, [tokenizer.eos_token_id])
    n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert weights[:n] == [0.0] * n and set(weights[n:]) == {1.0, 4.0} and len(weights) == len(ids)
    heavy = tokenizer.decode([i for i, w in zip(ids, weights, strict=True) if w == 4.0])
    assert "addFeature" in heavy and "getPose" in heavy and "Request" not in heavy and "arguments" not in heavy


def test_length_grouped_batches_pad_less_and_draw_every_example_alike():
    examples = _examples([random.Random(i).randint(5, 60) for i in range(40)])
    batches = length_grouped(examples, batch_size=4, rng=random.Random(0))
    drawn = [next(batches) for _ in range(2000)]
    assert all(len(b) == 4 for b in drawn)
    counts = Counter(id(ex) for b in drawn for ex in b)
    assert len(counts) == 40 and all(abs(c - 200) < 50 for c in counts.values())  # 8,000 draws / 40

    def padding(bs):
        return sum(max(len(e[0]) for e in b) * len(b) - sum(len(e[0]) for e in b) for b in bs)

    rng = random.Random(0)
    plain = [rng.sample(examples, 4) for _ in range(2000)]
    assert padding(drawn) < 0.5 * padding(plain)
    again = length_grouped(examples, batch_size=4, rng=random.Random(0))
    assert [next(again) for _ in range(50)] == drawn[:50]


def test_length_grouped_on_fewer_examples_than_a_batch():
    examples = _examples([3, 7])
    batch = next(length_grouped(examples, batch_size=16, rng=random.Random(0)))
    assert sorted(map(len, (e[0] for e in batch))) == [3, 7]


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_training_step_benchmark_prints_both_variants_and_the_ratio():
    script = SCRIPTS / "bench_train_base.py"
    out = subprocess.run([sys.executable, str(script), "--steps", "5", "--examples", "40"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    row = r"^  {} \(.*\)\s+padding\s+(\d+\.\d)%\s+\d+\.\d{{3}} s/step$"
    before, after = (re.search(row.format(name), out.stdout, re.M) for name in ("before", "after"))
    assert before and after, out.stdout
    assert float(after.group(1)) < float(before.group(1))  # length-grouped batches pad less
    assert re.search(r"^  speed-up: \d+\.\d\dx$", out.stdout, re.M)


class _Copier(torch.nn.Module):
    """Logits for `span, newline, span` inputs: a perfect copier predicts each repeat token, the other always 0."""

    def __init__(self, vocab: int, perfect: bool):
        super().__init__()
        self.vocab, self.perfect = vocab, perfect

    def forward(self, input_ids):
        ids = input_ids[0].tolist()
        start = (len(ids) - 1) // 2 + 1  # where the repeat begins (one newline token between the two spans)
        logits = torch.zeros(1, len(ids), self.vocab)
        for pos in range(len(ids)):
            copy = self.perfect and start <= pos + 1 < len(ids)
            logits[0, pos, ids[pos + 1 - start] if copy else 0] = 1.0
        return type("Out", (), {"logits": logits})()


def test_copy_probe_scores_a_perfect_copier_1_and_a_constant_guess_0(tokenizer):
    probe = load_script("probe_copy")
    assert len(tokenizer("\n", add_special_tokens=False)["input_ids"]) == 1
    assert probe.copy_accuracy(_Copier(len(tokenizer), perfect=True), tokenizer, spans=20) == 1.0
    assert probe.copy_accuracy(_Copier(len(tokenizer), perfect=False), tokenizer, spans=20) == 0.0


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_copy_probe_script_runs_on_a_model_directory(qwen_dir):
    script = SCRIPTS / "probe_copy.py"
    out = subprocess.run([sys.executable, str(script), str(qwen_dir), "--spans", "5"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert re.search(r"copies \d+\.\d% of random-span tokens \(5 spans, seed 0\)", out.stdout)


def test_the_camel_split_cuts_names_into_words_and_is_qwen2s_split_otherwise():
    from ttsi.tiny_models import CAMEL_SPLIT, QWEN2_SPLIT, train_tokenizer

    texts = ['{"name": "getWeatherForecast", "arguments": {"city": "Paris"}} get the weather forecast',
             "HTTPServer listens; the JSONData is parsed 3 times"] * 20
    camel, plain = (train_tokenizer(texts, vocab_size=300, split=s) for s in (CAMEL_SPLIT, QWEN2_SPLIT))
    pieces = camel.convert_ids_to_tokens(camel("getWeatherForecast HTTPServer")["input_ids"])
    words = ["get", "Weather", "Forecast", "ĠHTTP", "Server"]  # Ġ: byte-level space
    ends = {sum(len(w) for w in words[:i + 1]) for i in range(len(words))}
    cuts = {sum(len(p) for p in pieces[:i + 1]) for i in range(len(pieces))}
    assert ends <= cuts  # no piece crosses a word boundary
    split = [[w for w, _ in t.backend_tokenizer.pre_tokenizer.pre_tokenize_str("getWeatherForecast, 3 times")]
             for t in (camel, plain)]
    assert split == [["get", "Weather", "Forecast", ",", "Ġ", "3", "Ġtimes"],
                     ["getWeatherForecast", ",", "Ġ", "3", "Ġtimes"]]
    prose = "the weather, 3 times; Paris"
    assert camel(prose)["input_ids"] and camel.decode(camel(prose)["input_ids"]) == prose


PAIRS = [(f"say {w}", f"{w} {w} {w}") for w in ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]]


def _fresh(tokenizer):
    torch.manual_seed(0)
    config = tiny_config("qwen2", len(tokenizer), hidden=32, layers=1, heads=2, kv_heads=1,
                         pad_token_id=tokenizer.pad_token_id)
    return AutoModelForCausalLM.from_config(config)


def _train(tokenizer, model, **kw):
    return train_causal_lm(model, tokenizer, PAIRS, steps=7, batch_size=2, **kw)


class Crash(Exception):
    pass


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_a_crashed_training_resumes_from_its_last_save_to_the_same_weights_bit_for_bit(tokenizer, tmp_path):
    whole = _fresh(tokenizer)
    want = _train(tokenizer, whole)
    state = TrainState(tmp_path / "state.pt", {"recipe": "a"})

    def crash(step, loss):
        if step == 4:
            raise Crash

    with pytest.raises(Crash):
        _train(tokenizer, _fresh(tokenizer), every=2, state=state, progress=crash)
    assert torch.load(state.path, weights_only=True)["step"] == 4  # saved after steps 2 and 4
    resumed = _fresh(tokenizer)
    assert _train(tokenizer, resumed, every=2, state=state) == want
    assert _same_weights(resumed, whole)
    with pytest.raises(ConfigError, match=r"saved with other settings \(recipe\)"):
        _train(tokenizer, _fresh(tokenizer), state=TrainState(state.path, {"recipe": "b"}))


@pytest.mark.slow
def test_ctrl_c_stops_training_at_a_step_boundary_with_its_state_saved(tokenizer, tmp_path):
    whole = _fresh(tokenizer)
    want = _train(tokenizer, whole)
    state = TrainState(tmp_path / "state.pt", {})

    def ctrl_c(step, loss):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        _train(tokenizer, _fresh(tokenizer), every=100, state=state, progress=ctrl_c)
    assert torch.load(state.path, weights_only=True)["step"] == 3  # the step in flight finished, then it stopped
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is Ctrl-C again
    resumed = _fresh(tokenizer)
    assert _train(tokenizer, resumed, state=state) == want
    assert _same_weights(resumed, whole)
