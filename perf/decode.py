"""Decoding: new tokens per second after a 512-token prompt, Hugging Face's `generate` vs the lean decoder.

- generate: `model.generate` with greedy decoding pinned as `HFModel.generate` pins it (left padding, top_k and
  friends inert), on token ids (no tokenization or text decoding in the timing);
- ours: `ttsi.engine.decode.decode` (preallocated KV cache read in place, no logits processors, no per-step mask
  rebuild).

Both are forced to produce exactly N new tokens (no stop token: `eos_token_id=None` / `stop_ids=[]`), at B = 1
and B = 16 distinct prompts, N = 20 (an answer) and 64. Each call is split where the model's first forward (the
prompt's) returns, seen by a forward hook: before it is the prefill (setup included), after it the decoding, whose
throughput is B (N - 1) / its seconds (N token choices, N - 1 one-token forwards). `total_ratio` compares whole
calls. Every row also records whether both produced the same tokens.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, TypeVar

from perf.common import Check, Column, Log, ModelSpec, Section, Settings, chat_prompt_of_length, synchronize
from ttsi.engine.decode import decode
from ttsi.model import HFModel

BATCHES = (1, 16)
TARGET = 3.0  # decoding tokens/s, ours / generate, at B = 1 on the model below
TARGET_MODEL = "10M"
T = TypeVar("T")


def generate_ids(model: HFModel, prompts: list[list[int]], n: int) -> list[list[int]]:
    """Hugging Face's generate, greedy as HFModel.generate configures it but with no stop: exactly n new tokens."""
    return model.hf_generate_ids(prompts, n, stop_ids=[])


def decode_ids(model: HFModel, prompts: list[list[int]], n: int) -> list[list[int]]:
    """The lean decoder, greedy, with no stop token: exactly n new tokens per row."""
    return decode(model.model, prompts, max_new_tokens=n, stop_ids=[], pad_id=model.pad_id)


def split_timed(model: HFModel, fn: Callable[[], T]) -> tuple[float, float, T]:
    """(prefill s, decoding s, result) of one call: the prefill ends when the model's first forward returns."""
    marks: list[float] = []

    def mark(*_: Any) -> None:
        if not marks:  # only the first forward (the prompt's): no sync inside the decoding steps
            synchronize()
            marks.append(time.perf_counter())

    handle = model.model.register_forward_hook(mark)
    try:
        synchronize()
        start = time.perf_counter()
        result = fn()
        synchronize()
        end = time.perf_counter()
    finally:
        handle.remove()
    return marks[0] - start, end - marks[0], result


def measure_split(model: HFModel, fn: Callable[[], T], repeats: int, warmup: int) -> tuple[float, float, T]:
    """Median prefill and decoding seconds of `repeats` calls after `warmup` untimed ones; the last result."""
    for _ in range(warmup):
        fn()
    runs = [split_timed(model, fn) for _ in range(max(1, repeats))]
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), runs[-1][2])


def measure_batch(model: HFModel, prompts: list[list[int]], settings: Settings, first: bool,
                  log: Log, name: str) -> list[dict[str, Any]]:
    """One row per N for these prompts: prefill seconds, decoding tokens/s and whole-call seconds of both sides."""
    b = len(prompts)
    rows = []
    for i, n in enumerate(settings.decode_tokens):
        warmup = max(1, settings.warmup) if first and i == 0 else settings.warmup  # a fresh model: one untimed
        hf_pre, hf_dec, hf_out = measure_split(model, lambda n=n: generate_ids(model, prompts, n), settings.repeats,
                                               warmup)
        our_pre, our_dec, our_out = measure_split(model, lambda n=n: decode_ids(model, prompts, n),
                                                  settings.repeats, warmup)
        hf_tps, our_tps = b * (n - 1) / hf_dec, b * (n - 1) / our_dec
        rows.append({"model": name, "b": b, "tokens": n, "prompt_tokens": settings.prompt_tokens,
                     "hf_prefill_s": hf_pre, "ours_prefill_s": our_pre, "hf_decode_s": hf_dec,
                     "ours_decode_s": our_dec, "hf_tokens_per_s": hf_tps, "ours_tokens_per_s": our_tps,
                     "ratio": our_tps / hf_tps, "total_ratio": (hf_pre + hf_dec) / (our_pre + our_dec),
                     "same_tokens": hf_out == our_out})
        log(f"decode {name} B={b} N={n}: generate {hf_tps:.1f} tok/s, ours {our_tps:.1f} tok/s, "
            f"x{our_tps / hf_tps:.2f}; prefill {hf_pre:.3f} / {our_pre:.3f} s")
    return rows


def measure_model(spec: ModelSpec, settings: Settings, log: Log) -> list[dict[str, Any]]:
    """Rows for B = 1 and B = 16 (the suite's largest batch size when that is smaller), each N."""
    model = spec.load()
    largest = min(BATCHES[-1], max(settings.batch_sizes))
    prompts = [model.encode(chat_prompt_of_length(model, settings.prompt_tokens, seed=100 + i))
               for i in range(largest)]
    rows = []
    for i, b in enumerate(dict.fromkeys((1, largest))):
        rows += measure_batch(model, prompts[:b], settings, i == 0, log, spec.name)
    return rows


def run(specs: list[ModelSpec], settings: Settings, log: Log) -> Section:
    section = Section("decode", f"Decoding after a {settings.prompt_tokens}-token prompt: generate vs ours (greedy)", [
        Column("model", "model"), Column("b", "B"), Column("tokens", "N"),
        Column("hf_prefill_s", "generate prefill s"), Column("ours_prefill_s", "ours prefill s"),
        Column("hf_decode_s", "generate decode s"), Column("ours_decode_s", "ours decode s"),
        Column("hf_tokens_per_s", "generate tok/s", "{:.1f}"), Column("ours_tokens_per_s", "ours tok/s", "{:.1f}"),
        Column("ratio", "ours/generate", "{:.2f}x"), Column("total_ratio", "whole call", "{:.2f}x"),
        Column("same_tokens", "same tokens")])
    for spec in specs:
        for row in measure_model(spec, settings, log):
            checked = spec.name == TARGET_MODEL and row["b"] == 1
            section.add(row, [Check.of(row, "ratio", ">=", TARGET)] if checked else [])
    section.notes.append("prefill: until the prompt's forward returns; tok/s: B (N - 1) / the seconds after it; "
                         "whole call: generate s / ours s")
    return section
