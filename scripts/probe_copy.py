"""How well a causal LM copies from its context: next-token accuracy on the repeat of random token spans.

    python scripts/probe_copy.py MODEL_DIR [MODEL_DIR ...] [--spans 200] [--seed 0]

Each probe is 8-32 uniformly random tokens of the model's vocabulary (no special tokens), a newline, and the same
tokens again. The accuracy counts the repeat's tokens from the third on (the first two can only be guessed): the
share where the model's most likely next token is the right one. Nothing about a random span can be remembered,
so only a model that looks back and copies scores well. Same seed, same probes for every model with one tokenizer.
"""

from __future__ import annotations

import argparse
import random

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def copy_accuracy(model: object, tokenizer: object, spans: int = 200, seed: int = 0,
                  lengths: tuple[int, int] = (8, 32)) -> float:
    """Greedy next-token accuracy on the repeats of `spans` random spans (from each repeat's third token on)."""
    rng = random.Random(seed)
    vocab = [i for i in range(len(tokenizer)) if i not in tokenizer.added_tokens_decoder]
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    right = total = 0
    for _ in range(spans):
        span = [rng.choice(vocab) for _ in range(rng.randint(*lengths))]
        ids = span + newline + span
        with torch.no_grad():
            guess = model(input_ids=torch.tensor([ids])).logits[0].argmax(-1).tolist()
        start = len(span) + len(newline)
        right += sum(guess[start + j - 1] == span[j] for j in range(2, len(span)))
        total += len(span) - 2
    return right / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model directories (or hub ids)")
    parser.add_argument("--spans", type=int, default=200, help="random spans per model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in args.models:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        print(f"{path}: copies {copy_accuracy(model, tokenizer, args.spans, args.seed):.1%} of random-span tokens "
              f"({args.spans} spans, seed {args.seed})")


if __name__ == "__main__":
    main()
