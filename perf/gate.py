"""Gate scoring: N candidate continuations after one 512-token prompt, naive vs the library's shared-prefix scorer.

- naive: `HFModel.score_naive(..., batch_size=1)`, one full prompt + candidate forward per candidate (N forwards,
  the prompt recomputed every time);
- ours: `HFModel.score` (`ttsi.engine.scoring.score_candidates`), one forward: the prompt with the candidates'
  common token prefix, then each candidate's remaining tokens packed after it, their attention reading the prompt's
  keys/values in place (no copy per candidate or per KV group).

Both return the same log-probabilities (each row records the largest difference). With a prompt of P tokens and
candidates of C tokens, the naive path computes about N (P + C) token positions and ours P + S + N (C - S) for a
shared prefix of S tokens, so the ideal ratio is about N (P + C) / (P + N C): ~4.5x at N = 5 and ~13x at N = 20
for P = 512, C = 16 before the shared prefix.

The N = 5 row also times B = 16 different prompts with 5 candidates each: 16 `HFModel.score` calls against one
`HFModel.score_many` call over all 16 (the gate of a batch of inputs).
"""

from __future__ import annotations

from perf.common import (
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
from ttsi.model import HFModel

TARGETS = {5: 4.0, 20: 10.0}  # naive / ours at N candidates (no target for other N)
BATCH_PROMPTS, BATCH_N = 16, 5


def largest_diff(a: list, b: list) -> float:
    """How far two scorers' summed log-probabilities of the same candidates are apart (the worst candidate)."""
    return max(abs(x.logprob - y.logprob) for x, y in zip(a, b, strict=True))


def measure_model(spec: ModelSpec, settings: Settings, log: Log) -> list[dict]:
    """One row per N: seconds of the naive and our gate and their ratio (+ the B-prompt batch at N=5)."""
    model = spec.load()
    prompt = chat_prompt_of_length(model, settings.prompt_tokens)
    rows = []
    for i, n in enumerate(settings.gate_ns):
        conts = candidates(n)
        warmup = max(1, settings.warmup) if i == 0 else settings.warmup  # first calls on a fresh model: untimed
        naive_s, naive = measure(lambda c=conts: model.score_naive(prompt, c, batch_size=1), settings.repeats, warmup)
        shared_s, shared = measure(lambda c=conts: model.score(prompt, c), settings.repeats, warmup)
        row = {"model": spec.name, "n": n, "prompt_tokens": settings.prompt_tokens,
               "candidate_tokens": sum(s.n_tokens for s in shared) / n, "naive_s": naive_s,
               "shared_s": shared_s, "ratio": naive_s / shared_s, "max_abs_diff": largest_diff(naive, shared)}
        log(f"gate {spec.name} N={n}: naive {naive_s:.4f} s, ours {shared_s:.4f} s, x{naive_s / shared_s:.2f}")
        if n == BATCH_N:
            row.update(measure_batch(model, settings, log, spec.name))
        rows.append(row)
    return rows


def measure_batch(model: HFModel, settings: Settings, log: Log, name: str) -> dict:
    """B different prompts x N candidates: B separate `HFModel.score` calls vs one `HFModel.score_many`."""
    prompts = [chat_prompt_of_length(model, settings.prompt_tokens, seed=s) for s in range(BATCH_PROMPTS)]
    conts = candidates(BATCH_N)
    separate_s, separate = measure(lambda: [model.score(p, conts) for p in prompts], settings.repeats,
                                   settings.warmup)
    batched_s, (batched, _) = measure(lambda: model.score_many(prompts, [conts] * len(prompts)), settings.repeats,
                                      settings.warmup)
    diff = max(largest_diff(a, b) for a, b in zip(separate, batched, strict=True))
    log(f"gate {name} B={BATCH_PROMPTS}xN={BATCH_N}: {BATCH_PROMPTS} score calls {separate_s:.4f} s, "
        f"one score_many {batched_s:.4f} s, x{separate_s / batched_s:.2f}")
    return {"batch_prompts": BATCH_PROMPTS, "batch_separate_s": separate_s, "batch_many_s": batched_s,
            "batch_ratio": separate_s / batched_s, "batch_max_abs_diff": diff}


def run(specs: list[ModelSpec], settings: Settings, log: Log) -> Section:
    title = "Gate: N candidates after a 512-token prompt (naive N forwards vs the shared-prefix scorer)"
    section = Section("gate", title, [
        Column("model", "model"), Column("n", "N"), Column("candidate_tokens", "cand. tokens", "{:.1f}"),
        Column("naive_s", "naive s"), Column("shared_s", "ours s"), Column("ratio", "naive/ours", "{:.2f}x"),
        Column("max_abs_diff", "max |Δ logprob|", "{:.1e}"),
        Column("batch_separate_s", f"{BATCH_PROMPTS}x score s"),
        Column("batch_many_s", f"score_many({BATCH_PROMPTS}) s"),
        Column("batch_ratio", "separate/batched", "{:.2f}x")])
    for spec in specs:
        for row in measure_model(spec, settings, log):
            target = TARGETS.get(row["n"])
            section.add(row, [Check.of(row, "ratio", ">=", target)] if target else [])
    return section
