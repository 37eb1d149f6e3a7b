"""Tiny causal LMs built from scratch: a BPE tokenizer trained locally, a Qwen2- or Llama-shaped model from a config.

Weights cannot be downloaded where this project is built and tested, so tests, the toy model, the embedded model's
recipe and the speed suite make their models here and load them back through `HFModel.from_pretrained`, the path
users take. The loop that trains them is `ttsi.sealshift.train`.
"""

from __future__ import annotations

from collections.abc import Iterable
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
# The same, except that a run of letters is also cut where a lowercase letter meets an uppercase one ("get",
# "Weather", "Forecast"; "HTTP", "Server"), so that a small vocabulary codes a camelCase name's words as it codes
# them in prose instead of in arbitrary pieces of the whole name.
CAMEL_SPLIT = QWEN2_SPLIT.replace(r"[^\r\n\p{L}\p{N}]?\p{L}+",
                                  r"[^\r\n\p{L}\p{N}]?(?:\p{Lu}+(?!\p{Ll})|\p{Lu}?\p{Ll}+|\p{L}+)")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, chat_template: str | None = CHATML_TEMPLATE,
                    split: str = QWEN2_SPLIT) -> Any:
    """A byte-level BPE tokenizer with Qwen2's pre-tokenization (or `split`), trained on `texts` (deterministic)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated"),
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
