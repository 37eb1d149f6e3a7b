"""Tiny causal LMs built from scratch: a BPE tokenizer trained locally, a Qwen2- or Llama-shaped model from a config.

Weights cannot be downloaded where this project is built and tested, so tests, the interim demo and speed
benchmarks make their models here and load them back through `HFModel.from_pretrained`, the path users take.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

# ChatML, as Qwen2.5-Instruct writes it: the tiny models speak the same chat format as the paper's model.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's pre-tokenizer split, so tiny models cut text into the same pre-tokens as the paper's model.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, chat_template: str | None = CHATML_TEMPLATE) -> Any:
    """A byte-level BPE tokenizer with Qwen2's pre-tokenization, trained on `texts` (deterministic)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def tiny_config(arch: str, vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                intermediate: int | None = None, max_positions: int = 2048, **kw: Any) -> Any:
    """A config of the real architecture (same modelling code as Qwen2.5 / Llama), only small."""
    from transformers import LlamaConfig, Qwen2Config

    classes = {"qwen2": Qwen2Config, "llama": LlamaConfig}
    if arch not in classes:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(classes)}")
    return classes[arch](vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads,
                         intermediate_size=intermediate or 3 * hidden, max_position_embeddings=max_positions,
                         tie_word_embeddings=True, **kw)


def build_tiny_model(out_dir: str | Path, tokenizer: Any, arch: str = "qwen2", seed: int = 0, **sizes: Any) -> Path:
    """Initialise a tiny model with `tokenizer`'s vocabulary and save both to `out_dir`."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(arch, len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, **sizes)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def train_causal_lm(model: Any, tokenizer: Any, examples: list[tuple[str, str]], steps: int, lr: float = 3e-3,
                    batch_size: int = 16, seed: int = 0, progress: Callable[[int, float], None] | None = None,
                    checkpoint: Callable[[int, Any], None] | None = None, every: int = 200) -> list[float]:
    """Full-parameter training on (prompt text, answer text) pairs, loss on answer tokens; returns step losses.

    `checkpoint(step, model)` is called every `every` steps (e.g. to save it, so a long run can be inspected).
    """
    from ttsi.learn import collate, encode_pair

    rng = random.Random(seed)
    torch.manual_seed(seed)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    encoded = [encode_pair(encode, prompt, answer, [tokenizer.eos_token_id]) for prompt, answer in examples]
    batches = length_grouped(encoded, batch_size, rng)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    model.train()
    losses = []
    for step in range(steps):
        scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        loss = answer_loss(model, collate(next(batches), tokenizer.pad_token_id))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if progress:
            progress(step, losses[-1])
        if checkpoint and (step + 1) % every == 0 and step + 1 < steps:
            model.eval()
            checkpoint(step + 1, model)
            model.train()
    model.eval()
    return losses


def length_grouped(encoded: list[Any], batch_size: int, rng: random.Random, group: int = 8) -> Iterator[list[Any]]:
    """Endless random batches with little padding: draw `group` batches, sort their examples by length, re-cut.

    Every example is drawn as often as with plain random batches; only who shares a batch changes, so a batch
    pads to a length close to its own examples' (on SealShift, 5% padding instead of 27%).
    """
    size = min(batch_size, len(encoded))
    while size == len(encoded):  # every batch holds every example: nothing to group
        yield rng.sample(encoded, size)
    while True:
        pool = sorted((ex for _ in range(group) for ex in rng.sample(encoded, size)), key=lambda ex: len(ex[0]))
        cut = [pool[i:i + size] for i in range(0, len(pool), size)]
        rng.shuffle(cut)
        yield from cut


def answer_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The causal LM loss of `model(**batch)`, computed for less: the LM head runs on the labelled positions only.

    Batches are right-padded, so no attention mask is needed: a causal model never looks ahead at the padding.
    Without the mask the attention takes its fused causal kernel, and the vocabulary projection and softmax run
    on the answer tokens (a fraction of each sequence) instead of every position.
    """
    from ttsi.learn import IGNORE

    hidden = model.get_decoder()(input_ids=batch["input_ids"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])
