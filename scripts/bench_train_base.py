"""Side by side: the recipe's training step before and after `answer_loss` + `length_grouped`, on SealShift data.

    python scripts/bench_train_base.py [--steps 20] [--examples 3000]

Both variants train the same freshly initialised base-model shape on the same examples, alternating blocks of
steps so that anything else running on the machine slows both alike. Prints the padding share of each batching
and the median seconds per step, and the ratio. Absolute seconds depend on the machine; the ratio is the point.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

from ttsi.benchmarks.sealshift import load_split
from ttsi.engine.train import collate, encode_pair
from ttsi.sealshift.recipe import Recipe, model_sizes, recipe_pairs, recipe_tokenizer, supervised
from ttsi.sealshift.train import answer_loss, length_grouped
from ttsi.tiny_models import tiny_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (in blocks of 5)")
    parser.add_argument("--examples", type=int, default=3000, help="training tasks to draw examples from")
    args = parser.parse_args()
    r = Recipe()
    pairs = recipe_pairs(r, load_split("train")[: args.examples])
    tokenizer = recipe_tokenizer(r, pairs)
    encoded = [encode_pair(lambda t: tokenizer(t, add_special_tokens=False)["input_ids"], *supervised(
        tokenizer, m, a, r.request_loss), [tokenizer.eos_token_id]) for m, a in pairs]
    config = tiny_config("qwen2", len(tokenizer), pad_token_id=tokenizer.pad_token_id, **model_sizes(r))

    def plain_batches():
        rng = random.Random(0)
        while True:
            yield rng.sample(encoded, r.batch_size)

    variants = {
        "before (model loss, random batches)": (lambda m, b: m(**b).loss, plain_batches()),
        "after (answer_loss, length_grouped)": (answer_loss, length_grouped(encoded, r.batch_size, random.Random(0))),
    }
    models, times, padding = {}, {name: [] for name in variants}, {}
    for name in variants:
        torch.manual_seed(0)
        models[name] = AutoModelForCausalLM.from_config(config)
        drawn = [next(variants[name][1]) for _ in range(200)]
        padding[name] = sum(max(len(e[0]) for e in b) * len(b) - sum(len(e[0]) for e in b) for b in drawn) / sum(
            max(len(e[0]) for e in b) * len(b) for b in drawn)
    optimizers = {name: torch.optim.AdamW(models[name].parameters(), lr=r.lr) for name in variants}
    for block in range(args.steps // 5 + 1):  # block 0 warms up and is not timed
        for name, (loss_fn, batches) in variants.items():
            for _ in range(5):
                start = time.perf_counter()
                loss = loss_fn(models[name], collate(next(batches), tokenizer.pad_token_id))
                loss.backward()
                optimizers[name].step()
                optimizers[name].zero_grad(set_to_none=True)
                if block:
                    times[name].append(time.perf_counter() - start)
    print(f"{torch.get_num_threads()} threads, batch {r.batch_size}, {len(encoded)} examples, "
          f"{args.steps} timed steps each")
    for name in variants:
        print(f"  {name:38s} padding {padding[name]:5.1%}   {statistics.median(times[name]):.3f} s/step")
    before, after = (statistics.median(t) for t in times.values())
    print(f"  speed-up: {before / after:.2f}x")


if __name__ == "__main__":
    main()
