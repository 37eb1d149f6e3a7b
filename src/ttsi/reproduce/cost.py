"""A plan's cost before it runs, in forward-token units: token positions passed through the model, a training step
counting 3 (forward + backward), estimated for a nominal input.

Per item and seed, with P prompt tokens, A answer tokens, S synthesis tokens (the nominal input below), f the share
of inputs adapted, K pairs per input, O drafts per pair (oversample), E epochs, M consistency answers:

    gate                       P                     (the candidates' few tokens ignored)
    answer                     A                     (decoded from the gate's cache)
    sampled answers            samples x A           (majority vote, pass@k; when samples > 1)
    each adapted input, + :    synthesis  K O (P + S)          (tt-si, tt-d, tt-icl, no-gate, confident-only)
                               training   3 E K (P + A)        (tt-icl: none; oracle: 3 E (P + A), no synthesis)
                               answer     P + A                (tt-icl: (K + 1) P + A, its demonstrations in the prompt)
                               base answer P + A               (recorded for the gate's AUROC, when base answers are)
                               consistency K O M (P + A)       (when the consistency verifier is on)

f is 0 for base and sft, 1 for no-gate, FLAGGED for the gated methods and 1 - FLAGGED for confident-only, where
FLAGGED = 0.65 is the share tau = 0.95 flags on SealTool in the paper. An SFT adapter costs 3 E (P + A) per labelled
item, once. A teacher's synthesis (tt-d) is counted as if it ran on the same model.
"""

from __future__ import annotations

from dataclasses import dataclass

from ttsi.reproduce.plan import Cell

FLAGGED = 0.65
TRAIN = 3  # a training token: forward + backward


@dataclass(frozen=True)
class Nominal:
    """The nominal input the estimate assumes."""

    prompt: int = 512
    answer: int = 64
    synthesis: int = 128


NOMINAL = Nominal()


def adapted_share(method: str) -> float:
    return {"base": 0.0, "sft": 0.0, "no-gate": 1.0, "confident-only": 1 - FLAGGED}.get(method, FLAGGED)


def per_item(cell: Cell, x: Nominal = NOMINAL) -> float:
    """Forward tokens for one item and one seed of the cell."""
    c = cell.agent
    s = c.synthesis
    p, a = x.prompt, x.answer
    cost = p + a + (c.samples * a if c.samples > 1 else 0)
    pairs = s.k * s.oversample
    adapted = 0.0
    if cell.method == "oracle":
        adapted += TRAIN * c.learn.epochs * (p + a) + (p + a)
    elif cell.method == "tt-icl":
        adapted += pairs * (p + x.synthesis) + (s.k + 1) * p + a
    elif cell.method not in ("base", "sft"):
        adapted += pairs * (p + x.synthesis) + TRAIN * c.learn.epochs * s.k * (p + a) + (p + a)
    if adapted and "consistency" in s.verify and cell.method not in ("oracle", "tt-icl"):
        adapted += pairs * s.consistency_samples * (p + a)
    if adapted and c.record_base:
        adapted += p + a
    return cost + adapted_share(cell.method) * adapted


def sft_cost(cell: Cell, labelled: int, x: Nominal = NOMINAL) -> float:
    """Training the cell's SFT adapter once on `labelled` items (0 for other cells)."""
    return TRAIN * cell.sft.epochs * labelled * (x.prompt + x.answer) if cell.sft else 0.0


def cell_cost(cell: Cell, items: int, labelled: int = 0, x: Nominal = NOMINAL) -> float:
    """The cell's forward tokens: every item for every seed, and its SFT adapter."""
    return items * len(cell.seeds) * per_item(cell, x) + sft_cost(cell, labelled, x)
