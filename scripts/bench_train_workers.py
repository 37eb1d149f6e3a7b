"""Side by side: the recipe's training steps in one process (all threads) and data-parallel over N processes.

    python scripts/bench_train_workers.py [--workers 2] [--steps 30] [--rounds 2] [--examples 3000]

Both train the base model's shape from the same initial weights on the same SealShift examples, taking turns
(one process, then N workers, `--rounds` times) so that anything else running on the machine slows both alike.
A step's time is the gap between two progress reports, the first 3 steps of every turn (start-up) left out.
Prints the median seconds per step of each and the ratio; absolute seconds depend on the machine.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

from ttsi.benchmarks.sealshift import load_split
from ttsi.sealshift.recipe import Recipe, model_sizes, recipe_pairs, recipe_tokenizer, supervised
from ttsi.sealshift.train import train_causal_lm
from ttsi.tiny_models import tiny_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="processes of the data-parallel variant")
    parser.add_argument("--steps", type=int, default=30, help="steps per turn")
    parser.add_argument("--rounds", type=int, default=2, help="turns of each variant")
    parser.add_argument("--examples", type=int, default=3000, help="training tasks to draw examples from")
    args = parser.parse_args()
    r = Recipe()
    pairs = recipe_pairs(r, load_split("train")[: args.examples])
    tokenizer = recipe_tokenizer(r, pairs)
    examples = [supervised(tokenizer, m, a, r.request_loss) for m, a in pairs]
    config = tiny_config("qwen2", len(tokenizer), pad_token_id=tokenizer.pad_token_id, **model_sizes(r))
    torch.manual_seed(0)
    initial = AutoModelForCausalLM.from_config(config).state_dict()
    variants = {"1 process": 1, f"{args.workers} workers": args.workers}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for turn in range(args.rounds):
        for name, workers in variants.items():
            model = AutoModelForCausalLM.from_config(config)
            model.load_state_dict(initial)
            stamps: list[float] = []
            train_causal_lm(model, tokenizer, examples, steps=args.steps, lr=r.lr, batch_size=r.batch_size,
                            seed=turn, progress=functools.partial(_stamp, stamps), workers=workers)
            times[name] += [b - a for a, b in itertools.pairwise(stamps[3:])]
    print(f"{torch.get_num_threads()} threads, batch {r.batch_size}, {len(examples)} examples, "
          f"{args.rounds} x {args.steps} steps each")
    for name, gaps in times.items():
        print(f"  {name:12s} {statistics.median(gaps):.3f} s/step")
    single, parallel = (statistics.median(t) for t in times.values())
    print(f"  speed-up: {single / parallel:.2f}x")


def _stamp(stamps: list[float], step: int, loss: float) -> None:
    stamps.append(time.perf_counter())


if __name__ == "__main__":
    main()
