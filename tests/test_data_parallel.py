"""Data-parallel training (`ttsi.sealshift.data_parallel`, `train_causal_lm(workers=...)`): one process's steps."""

import re
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from ttsi.sealshift import data_parallel
from ttsi.sealshift.recipe import call_names
from ttsi.sealshift.train import train_causal_lm
from ttsi.tiny_models import tiny_config

from .conftest import SCRIPTS


def _pairs(n: int) -> list[tuple[str, str]]:
    tools = ["getWeather", "addEvent", "sendMail", "findHotel"]
    return [(f"<|im_start|>user\nplease {i} with tool {tools[i % 4]} now<|im_end|>\n",
             f'[{{"name": "{tools[i % 4]}", "arguments": {{"n": {i * (i % 3)}}}}}]') for i in range(n)]


def _model(tokenizer):
    torch.manual_seed(0)
    config = tiny_config("qwen2", len(tokenizer), hidden=32, pad_token_id=tokenizer.pad_token_id)
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("emphasis", [None, (call_names, 4.0)], ids=["plain", "weighted"])
def test_two_workers_take_the_single_process_steps_on_the_same_batches(tokenizer, emphasis):
    pairs = _pairs(24)
    one, two = _model(tokenizer), _model(tokenizer)
    seen = []
    threads = torch.get_num_threads()
    args = dict(steps=6, lr=3e-3, batch_size=6, seed=3, emphasis=emphasis)
    single = train_causal_lm(one, tokenizer, pairs, **args)
    parallel = train_causal_lm(two, tokenizer, pairs, workers=2, progress=lambda step, loss: seen.append(step),
                               **args)
    assert seen == list(range(6))  # progress is reported by this process, every step
    assert parallel == pytest.approx(single, rel=1e-4)  # the loss of the whole batch, not of a share
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=2e-5), name
    assert not torch.equal(one.state_dict()["model.norm.weight"], _model(tokenizer).state_dict()["model.norm.weight"])
    assert torch.get_num_threads() == threads  # the workers' share of the threads is given back
    assert data_parallel.rank_and_size() == (0, 1)  # the group is gone


def test_more_workers_than_a_batch_holds_is_refused(tokenizer):
    with pytest.raises(ValueError, match="workers must be between 1 and the batch size"):
        train_causal_lm(_model(tokenizer), tokenizer, _pairs(8), steps=1, batch_size=2, workers=3)


def _failing_helper() -> None:
    raise OSError("disk full in the helper")


def _reduce_once() -> float:
    import torch.distributed as dist

    value = torch.ones(1)
    dist.all_reduce(value)
    return value.item()


def _adding_helper() -> None:
    _reduce_once()


@pytest.mark.slow
@pytest.mark.subprocess
def test_run_returns_rank_0s_result_after_the_helpers_join():
    assert data_parallel.run(2, _reduce_once, _adding_helper, ()) == 2.0


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_helper_that_dies_is_one_clear_error():
    with pytest.raises(RuntimeError, match=r"data-parallel worker 1 of 2 stopped \(exit code 1\)"):
        data_parallel.run(2, _reduce_once, _failing_helper, ())
    assert data_parallel.rank_and_size() == (0, 1)


def _failing_main() -> float:
    raise ValueError("rank 0 gave up")


@pytest.mark.slow
@pytest.mark.subprocess
def test_rank_0_failing_stops_the_helpers_and_leaves_no_group():
    with pytest.raises(ValueError, match="rank 0 gave up"):
        data_parallel.run(2, _failing_main, _adding_helper, ())  # the helper waits in all_reduce: it is stopped
    assert data_parallel.rank_and_size() == (0, 1)
    assert data_parallel.run(2, _reduce_once, _adding_helper, ()) == 2.0  # and a new group can start


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_workers_benchmark_prints_both_variants_and_the_ratio():
    out = subprocess.run([sys.executable, str(SCRIPTS / "bench_train_workers.py"), "--steps", "5", "--rounds", "1",
                          "--examples", "40"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^\s+1 process\s+\d+\.\d{3} s/step$", out.stdout, re.M)
    assert re.search(r"^\s+2 workers\s+\d+\.\d{3} s/step$", out.stdout, re.M)
    assert re.search(r"speed-up: \d+\.\d\dx", out.stdout)
