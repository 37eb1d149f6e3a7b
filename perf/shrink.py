"""Finished rows leaving a batched decode: SealShift synthesis drafts with the batch kept whole vs shrinking.

    python perf/shrink.py [--batches 1,8,16,32] [--repeats 3] [--model DIR]

What the TT-SI loop does when B uncertain inputs adapt together: `SelfSynthesizer.synthesize_many` writes
k * oversample = 2 drafts per input (temperature 0.7, top-p 0.95, at most 256 new tokens) in one sampled decode,
each input from its own seed. Most drafts end after 50-100 tokens; a few ramble to the limit. Kept whole, the
batch runs every row until the longest is done; shrinking, rows leave once their input's drafts are all done
(`ttsi.engine.decode`). The whole-batch side is the same decoder with `_Batch.droppable` answering "keep
everything", so the only difference is the dropping. Per B it prints the median seconds of each side (one warm-up
call, then `--repeats` timed calls, alternating sides), the ratio, the share of computed row-steps whose token was
kept (whole batch), and whether both sides wrote the same drafts (they must). Tasks: SealShift `ood` items
100.. (the embedded model by default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `perf` package importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.common import machine_line


@contextmanager
def whole_batch() -> Iterator[None]:
    """Decode without ever dropping a finished row (the decoder before rows could leave)."""
    from ttsi.engine import decode

    real = decode._Batch.droppable
    decode._Batch.droppable = lambda self, done: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        decode._Batch.droppable = real  # type: ignore[method-assign]


@contextmanager
def row_steps(model: Any) -> Iterator[list[int]]:
    """Count the rows each forward of `model` runs (prefill included)."""
    counts: list[int] = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: counts.append(kwargs["input_ids"].shape[0]),
                                           with_kwargs=True)
    try:
        yield counts
    finally:
        hook.remove()


def timed(synthesizer: Any, tasks: list[Any], fmts: list[Any], seeds: list[int]) -> tuple[float, int, list[Any]]:
    """(seconds, rows summed over forwards, drafts kept) of one batched synthesis."""
    with row_steps(synthesizer.model.model) as counts:
        start = time.perf_counter()
        out = synthesizer.synthesize_many(tasks, fmts, seeds)
        seconds = time.perf_counter() - start
    return seconds, sum(counts), [(s.pairs, s.rejected) for s in out]


def run(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--model", default=None, help="model directory (default: the embedded SealShift model)")
    p.add_argument("--batches", default="1,8,16,32")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    from ttsi.augment import SelfSynthesizer
    from ttsi.benchmarks import get_benchmark
    from ttsi.config import SynthesisConfig
    from ttsi.formats import get_format
    from ttsi.model import HFModel
    from ttsi.sealshift.recipe import MODELS

    model = HFModel.from_pretrained(args.model or str(MODELS["base"]))
    tasks = get_benchmark("sealshift").load(None, "ood")[100:]
    synthesizer = SelfSynthesizer(model, SynthesisConfig())
    print(f"# python perf/shrink.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {machine_line()}")
    rows = []
    for b in (int(x) for x in args.batches.split(",")):
        batch, seeds = tasks[:b], list(range(b))
        fmts = [get_format(t.format) for t in batch]
        with whole_batch():
            timed(synthesizer, batch, fmts, seeds)  # warm-up, untimed
        timed(synthesizer, batch, fmts, seeds)
        whole, shrink = [], []
        for _ in range(max(1, args.repeats)):  # alternate, so that a noisy stretch hits both sides
            with whole_batch():
                whole.append(timed(synthesizer, batch, fmts, seeds))
            shrink.append(timed(synthesizer, batch, fmts, seeds))
        row = {"b": b, "rows": 2 * b, "whole_s": statistics.median(w[0] for w in whole),
               "shrink_s": statistics.median(s[0] for s in shrink), "whole_row_steps": whole[-1][1],
               "shrink_row_steps": shrink[-1][1], "same": all(w[2] == s[2] for w, s in zip(whole, shrink, strict=True))}
        row["ratio"] = row["whole_s"] / row["shrink_s"]
        rows.append(row)
        print(f"[{time.strftime('%H:%M:%S')}] B={b}: whole {row['whole_s']:.3f} s, shrinking {row['shrink_s']:.3f} s, "
              f"x{row['ratio']:.2f}, same drafts: {row['same']}", file=sys.stderr, flush=True)
    print(f"{'B':>4} {'rows':>5} {'whole s':>9} {'shrinking s':>12} {'ratio':>7} {'row-steps whole':>16} "
          f"{'row-steps shrinking':>20} {'same drafts':>12}")
    for r in rows:
        print(f"{r['b']:>4} {r['rows']:>5} {r['whole_s']:>9.3f} {r['shrink_s']:>12.3f} {r['ratio']:>6.2f}x "
              f"{r['whole_row_steps']:>16} {r['shrink_row_steps']:>20} {r['same']!s:>12}")
    print(f"# ratio = whole-batch seconds / shrinking seconds (median of {args.repeats}); {machine_line()}")
    return rows


if __name__ == "__main__":
    run()
