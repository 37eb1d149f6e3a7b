"""Gate scoring: N candidate continuations after one 512-token prompt, naive vs shared prefix.

- naive: `HFModel.score_naive(..., batch_size=1)`, one full prompt + candidate forward per candidate (N forwards,
  the prompt recomputed every time);
- shared: `HFModel.score(..., batch_size=N)`, one prompt forward that keeps its KV cache, then all N candidates in
  one batch on top of it.

Both return the same log-probabilities (the row records the largest difference as a check). With a prompt of P
tokens and candidates of C tokens, the naive path computes about N (P + C) token positions and the shared one
P + N C, so the ideal ratio is N (P + C) / (P + N C): ~4.5x at N = 5 and ~13x at N = 20 for P = 512, C = 16.
"""

from __future__ import annotations

from benchmarks.common import (
    Check,
    Column,
    Log,
    ModelSpec,
    Section,
    Settings,
    candidates,
    chat_prompt_of_length,
    measure,
)

TARGETS = {5: 3.0, 20: 8.0}  # naive / shared at N candidates (no target for other N)


def measure_model(spec: ModelSpec, settings: Settings, log: Log) -> list[dict]:
    """One row per N: seconds of the naive and shared gate and their ratio."""
    model = spec.load()
    prompt = chat_prompt_of_length(model, settings.prompt_tokens)
    rows = []
    for i, n in enumerate(settings.gate_ns):
        conts = candidates(n)
        warmup = max(1, settings.warmup) if i == 0 else settings.warmup  # first calls on a fresh model: untimed
        naive_s, naive = measure(lambda c=conts: model.score_naive(prompt, c, batch_size=1), settings.repeats, warmup)
        shared_s, shared = measure(lambda c=conts: model.score(prompt, c, batch_size=len(c)), settings.repeats, warmup)
        rows.append({"model": spec.name, "n": n, "prompt_tokens": settings.prompt_tokens,
                     "candidate_tokens": sum(s.n_tokens for s in shared) / n, "naive_s": naive_s,
                     "shared_s": shared_s, "ratio": naive_s / shared_s,
                     "max_abs_diff": max(abs(a.logprob - b.logprob) for a, b in zip(naive, shared, strict=True))})
        log(f"gate {spec.name} N={n}: naive {naive_s:.4f} s, shared {shared_s:.4f} s, x{naive_s / shared_s:.2f}")
    return rows


def run(specs: list[ModelSpec], settings: Settings, log: Log) -> Section:
    section = Section("gate", "Gate: N candidates after a 512-token prompt (naive N forwards vs shared prefix)", [
        Column("model", "model"), Column("n", "N"), Column("candidate_tokens", "cand. tokens", "{:.1f}"),
        Column("naive_s", "naive s"), Column("shared_s", "shared s"), Column("ratio", "naive/shared", "{:.2f}x"),
        Column("max_abs_diff", "max |Δ logprob|", "{:.1e}")])
    for spec in specs:
        for row in measure_model(spec, settings, log):
            target = TARGETS.get(row["n"])
            section.add(row, [Check.of(row, "ratio", ">=", target)] if target else [])
    return section
