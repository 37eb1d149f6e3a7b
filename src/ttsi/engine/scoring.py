"""Batched shared-prefix scoring: summed log P(candidate | prompt) for many candidates after many prompts at once.

`score_candidates` is the gate's scorer over token ids. Per call:

1. **Plan.** For each prompt, the candidates' longest common token prefix (capped at the longest candidate's length
   minus one, so that it never ends in a token no candidate continues from) becomes *shared*: it is appended to the
   prompt and computed once. A single candidate is shared whole but for its last token, so it is one forward.
2. **One packed forward** for all prompts: row b is `[prompt b + shared tokens | slot 0 | slot 1 | ...]`, prompts
   right-padded to a common width, one slot per candidate holding its remaining tokens but the last (right-padded),
   with positions continuing from its prompt (+ shared tokens). The prompt columns attend causally among
   themselves (a real token only sees earlier, real positions, so padding never leaks); each slot attends to its
   prompt's columns, read in place, and to itself (`prefix_attention`, whose docstring says how nothing is copied
   per candidate or per query-head group). The LM head runs only where a token is predicted (a boolean
   `logits_to_keep`): each shared token's log-probability is taken once and added to every candidate's.
3. **Overflow.** Where the packed forward would exceed `max_elements`, prompts are split into groups, and a group's
   candidates go into further forwards of one candidate per batch row, attending to the prompt keys/values the
   packed forward (then of prompts alone) recorded.

Log-probabilities are log-softmaxes of fp32 copies of the logits. The result equals per-candidate full forwards
(`HFModel.score_naive`) up to float rounding: ~1e-6 per token in fp32. In bf16 the two round different
intermediate results (sdpa vs a split softmax, different batch shapes): ~5e-3 per token, ~1e-2 on a summed
log-probability of ~16 tokens on the tiny test models.

A model this cannot hook (layers with a sliding window, an attention that bypasses transformers' interface,
attention features such as soft-capping or sinks) is scored the plain way, each candidate in a full prompt +
candidate row, with the same results; no prompt caches are returned then.

The model's attention implementation is switched for the duration of the call and restored after it (also on an
error); a forward of the same model from another thread in the meantime runs plain sdpa.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ttsi.engine import prefix_attention
from ttsi.engine.cache import PrefixCache
from ttsi.engine.prefix_attention import PrefixPlan, Unsupported

DEFAULT_MAX_ELEMENTS = 1 << 27  # of one forward's largest tensor (kept logits, MLP activations, a layer's scores)


@dataclass
class Scored:
    """Log-probability of one continuation after a prompt (the fields of `ttsi.model.Scored`)."""

    logprob: float  # summed over the continuation's tokens
    n_tokens: int
    token_logprobs: list[float]


@dataclass
class _Prompt:
    """One prompt's part of the plan: its ids, its candidates, and the tokens they share (computed once)."""

    ids: list[int]
    candidates: list[list[int]]
    shared: list[int]

    @property
    def length(self) -> int:
        """Tokens this prompt's row of the prompt forward computes."""
        return len(self.ids) + len(self.shared)


@dataclass
class _Row:
    """One candidate's row in a candidate forward: the tokens it feeds and the tokens they predict."""

    prompt: int  # index into the call's prompts
    candidate: int
    inputs: list[int]
    targets: list[int]


def shared_prefix_length(candidates: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all `candidates` share, capped at the longest one's length - 1 (0 for none).

    The shared tokens are inputs of the prompt forward; the cap leaves at least one token to predict after them
    (identical candidates would otherwise feed a last token whose prediction nobody reads).
    """
    if not candidates:
        return 0
    first, shortest = candidates[0], min(len(c) for c in candidates)
    common = 0
    while common < shortest and all(c[common] == first[common] for c in candidates):
        common += 1
    return min(common, max(len(c) for c in candidates) - 1)


@torch.no_grad()
def score_candidates(model: Any, prompts: list[list[int]], candidates: list[list[list[int]]], *, pad_id: int,
                     keep_prompt_cache: bool = False, max_elements: int = DEFAULT_MAX_ELEMENTS,
                     ) -> tuple[list[list[Scored]], list[PrefixCache] | None]:
    """Summed log P(candidate | prompt) of `candidates[b]` after `prompts[b]`, for every b, in a few forwards.

    `model` is a Hugging Face causal LM (a PEFT wrapper of one is fine); ids are token ids, no special tokens
    added; `pad_id` fills padding (it is never attended to by a real token). `max_elements` bounds the elements of
    one forward's largest tensor (kept logits, MLP activations, one layer's attention scores): prompts and
    candidates are split over several forwards beyond it.

    With `keep_prompt_cache`, the second value holds, per prompt, its own keys/values (exactly its tokens: not the
    shared candidate tokens, no padding; views of the forward's key/value projections, RoPE applied) and the logits
    at its last position; it is None without `keep_prompt_cache` or when the model had to be scored the plain way.
    """
    plans = _plan(prompts, candidates)
    if _hookable(model):
        try:
            return _score_shared(model, plans, pad_id, keep_prompt_cache, max_elements)
        except Unsupported:
            pass  # found out mid-way (e.g. an attention kwarg we do not implement): the plain way below
    return _score_plain(model, plans, pad_id, max_elements), None


def _plan(prompts: list[list[int]], candidates: list[list[list[int]]]) -> list[_Prompt]:
    """The inputs checked (no empty prompt or candidate) and each prompt's shared candidate tokens chosen."""
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
    plans = []
    for ids, conts in zip(prompts, candidates, strict=True):
        if not ids:
            raise ValueError("cannot score after an empty prompt (nothing predicts the first token)")
        if any(not c for c in conts):
            raise ValueError("cannot score an empty continuation")
        conts = [list(c) for c in conts]
        plans.append(_Prompt(list(ids), conts, conts[0][: shared_prefix_length(conts)] if conts else []))
    return plans


# ---- which models can be hooked --------------------------------------------------------------------------------

def _base(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (the model itself otherwise)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def _hookable(model: Any) -> bool:
    """Whether the model routes attention through transformers' interface with full (causal) attention only."""
    base = _base(model)
    config = getattr(base, "config", None)
    can_set = getattr(type(base), "_can_set_attn_implementation", None)
    if config is None or not hasattr(config, "_attn_implementation_internal") or can_set is None or not can_set():
        return False
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return all(t == "full_attention" for t in layer_types)
    return getattr(config, "sliding_window", None) is None


def _keeps_logits(model: Any) -> bool:
    """Whether the model's forward can compute logits at chosen positions only (`logits_to_keep`)."""
    return "logits_to_keep" in inspect.signature(_base(model).forward).parameters


def _device(model: Any) -> torch.device:
    """Where the model's weights, hence its inputs, live."""
    return next(model.parameters()).device


def _forward(model: Any, ids: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor,
             **kwargs: Any) -> tuple[Any, torch.Tensor]:
    """(model output, logits (kept positions, vocab)) of one forward; the LM head only at `keep` when it can."""
    if _keeps_logits(model):
        out = model(input_ids=ids, position_ids=positions, logits_to_keep=keep, **kwargs)
        return out, out.logits
    out = model(input_ids=ids, position_ids=positions, **kwargs)
    return out, out.logits[keep]


# ---- the shared path -------------------------------------------------------------------------------------------

def _score_shared(model: Any, plans: list[_Prompt], pad_id: int, keep_prompt_cache: bool,
                  max_elements: int) -> tuple[list[list[Scored]], list[PrefixCache] | None]:
    lps: dict[tuple[int, int], list[float]] = {(b, i): [] for b, p in enumerate(plans)
                                               for i in range(len(p.candidates))}
    caches: list[PrefixCache] = []
    sizes = _Sizes.of(model)
    with prefix_attention.switched_attention(_base(model)):
        for first, group in _prompt_groups(plans, sizes, max_elements):
            rows = [r for b, p in enumerate(group, start=first) for r in _rows(b, p)]
            packed = rows if _packed_cost(group, rows, sizes) <= max_elements else []
            layers, next_logits = _packed_pass(model, group, first, packed, pad_id, sizes.layers, lps)
            for chunk in _row_chunks([] if packed else rows, plans, sizes, max_elements):
                _rows_pass(model, chunk, plans, first, layers, pad_id, lps)
            if keep_prompt_cache:
                caches += [PrefixCache(p.ids, [(k[i: i + 1, :, : len(p.ids)], v[i: i + 1, :, : len(p.ids)])
                                               for k, v in layers], next_logits[i]) for i, p in enumerate(group)]
    scored = [[_scored(lps[b, i]) for i in range(len(p.candidates))] for b, p in enumerate(plans)]
    return scored, caches if keep_prompt_cache else None


def _scored(lps: list[float]) -> Scored:
    """A candidate's result from its tokens' log-probabilities, summed in double precision."""
    return Scored(float(sum(lps)), len(lps), lps)


@dataclass(frozen=True)
class _Sizes:
    """The model dimensions that set how much one forward holds: per kept position, per token, per prefix score."""

    vocab: int
    heads: int
    widest: int  # the widest activation per token (the MLP's inner width)
    layers: int

    @classmethod
    def of(cls, model: Any) -> _Sizes:
        base = _base(model)
        config, head = base.config, base.get_output_embeddings()
        vocab = int(head.weight.shape[0]) if head is not None else int(config.vocab_size)
        widest = int(getattr(config, "intermediate_size", None) or 4 * config.hidden_size)
        return cls(vocab, int(config.num_attention_heads), widest, int(config.num_hidden_layers))


def _prompt_groups(plans: list[_Prompt], sizes: _Sizes, max_elements: int) -> Iterator[tuple[int, list[_Prompt]]]:
    """Consecutive prompts whose packed forward without candidates fits `max_elements` (at least one prompt each)."""
    start = 0
    for b in range(1, len(plans) + 1):
        if b == len(plans) or _packed_cost(plans[start: b + 1], [], sizes) > max_elements:
            yield start, plans[start:b]
            start = b


def _packed_cost(group: list[_Prompt], rows: list[_Row], sizes: _Sizes) -> int:
    """Elements of the largest tensor of a packed forward: kept logits, MLP activations or one layer's candidate
    scores (the prompt columns' own attention is sdpa's, which does not hold its scores)."""
    width = max(p.length for p in group)
    slots = max(Counter(r.prompt for r in rows).values(), default=0)
    candidate_columns = slots * max((len(r.inputs) for r in rows), default=0)
    kept = sum(len(p.shared) + 1 for p in group) + sum(len(r.inputs) for r in rows)
    return max(kept * sizes.vocab, len(group) * (width + candidate_columns) * sizes.widest,
               len(group) * sizes.heads * candidate_columns * width)


@dataclass
class _Targets:
    """What the kept positions of one forward predict, and whose log-probabilities those are.

    Pairs (kept position, token) in the order of the kept positions (a candidate's tokens thus stay in order);
    a shared token is one pair owned by every candidate of its prompt.
    """

    positions: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    owners: list[list[tuple[int, int]]] = field(default_factory=list)
    kept: int = 0  # kept positions so far

    def add(self, token: int, owners: list[tuple[int, int]]) -> None:
        """`token` is predicted at the current kept position (call `next` to move on)."""
        self.positions.append(self.kept)
        self.tokens.append(token)
        self.owners.append(owners)

    def next(self) -> None:
        self.kept += 1

    def record(self, logits: torch.Tensor, lps: dict[tuple[int, int], list[float]]) -> None:
        """Append each pair's fp32 log-probability, from `logits` (kept positions, vocab), to its owners' lists."""
        if not self.tokens:
            return
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        picked = logprobs[torch.tensor(self.positions, device=logits.device),
                          torch.tensor(self.tokens, device=logits.device)].tolist()
        for value, owners in zip(picked, self.owners, strict=True):
            for key in owners:
                lps[key].append(value)


def _packed_pass(model: Any, group: list[_Prompt], first: int, rows: list[_Row], pad_id: int, n_layers: int,
                 lps: dict[tuple[int, int], list[float]]) -> tuple[list[prefix_attention.KV], list[torch.Tensor]]:
    """One forward of the prompts of `group` (+ shared tokens), each row followed by its prompt's candidate `rows`.

    Returns the prompts' per-layer keys/values (views; prompt i's are row i's first columns) and each prompt's
    logits at its last position.
    """
    device = _device(model)
    width = max(p.length for p in group)
    by_prompt = [[r for r in rows if r.prompt == b] for b in range(first, first + len(group))]
    slots = max((len(rs) for rs in by_prompt), default=0)
    slot_width = max((len(r.inputs) for r in rows), default=0)
    ids = torch.full((len(group), width + slots * slot_width), pad_id, dtype=torch.long)
    positions = torch.arange(ids.shape[1]).repeat(len(group), 1)
    keep = torch.zeros(ids.shape, dtype=torch.bool)
    targets, last = _Targets(), []
    for i, (p, own) in enumerate(zip(group, by_prompt, strict=True)):
        ids[i, : p.length] = torch.tensor(p.ids + p.shared, dtype=torch.long)
        keep[i, len(p.ids) - 1: p.length] = True  # the prompt's last position predicts the first shared token
        last.append(targets.kept)
        _prompt_targets(targets, first + i, p)
        for s in range(slots):  # a slot continues its prompt (+ shared tokens), whether it holds a candidate or not
            start = width + s * slot_width
            positions[i, start: start + slot_width] = torch.arange(p.length, p.length + slot_width)
            if s < len(own):
                ids[i, start: start + len(own[s].inputs)] = torch.tensor(own[s].inputs, dtype=torch.long)
                keep[i, start: start + len(own[s].inputs)] = True
                _row_targets(targets, own[s])
    plan = prefix_attention.make_plan([p.length for p in group], width, [i for i in range(len(group))
                                      for _ in range(slots)], device, [None] * n_layers, packed=True)
    logits = _run(model, ids, positions, keep, plan)
    targets.record(logits, lps)
    return plan.layers, [logits[k].clone() for k in last]  # type: ignore[return-value]


def _prompt_targets(targets: _Targets, b: int, p: _Prompt) -> None:
    """The prompt columns' predictions: the shared tokens (once, for all candidates), then each first own token."""
    everyone = [(b, i) for i in range(len(p.candidates))]
    for token in p.shared:
        targets.add(token, everyone)
        targets.next()
    n = len(p.shared)
    for i, c in enumerate(p.candidates):
        if len(c) > n:
            targets.add(c[n], [(b, i)])
    targets.next()


def _row_targets(targets: _Targets, row: _Row) -> None:
    """A candidate row's predictions: each fed token predicts the candidate's next one."""
    for token in row.targets:
        targets.add(token, [(row.prompt, row.candidate)])
        targets.next()


def _run(model: Any, ids: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor, plan: PrefixPlan) -> torch.Tensor:
    """Logits (kept positions, vocab) of one forward through the shared-prefix attention, checked to have used it."""
    device = _device(model)
    _, logits = _forward(model, ids.to(device), positions.to(device), keep.to(device), use_cache=False,
                         **{prefix_attention.PLAN_KWARG: plan})
    if plan.calls != len(plan.layers) or any(layer is None for layer in plan.layers):
        raise Unsupported(f"{plan.calls} of {len(plan.layers)} layers went through the shared-prefix attention")
    return logits


def _rows(b: int, p: _Prompt) -> list[_Row]:
    """The candidate rows of prompt `b`: every candidate with two or more tokens after the shared ones."""
    n = len(p.shared)
    return [_Row(b, i, c[n:-1], c[n + 1:]) for i, c in enumerate(p.candidates) if len(c) > n + 1]


def _row_chunks(rows: list[_Row], plans: list[_Prompt], sizes: _Sizes, max_elements: int) -> Iterator[list[_Row]]:
    """Consecutive rows whose logits and per-layer prefix scores stay within `max_elements` (one row at least)."""
    chunk: list[_Row] = []
    tokens = width = prefix = 0
    for row in rows:
        grown = (tokens + len(row.inputs), max(width, len(row.inputs)), max(prefix, plans[row.prompt].length))
        cost = max(grown[0] * sizes.vocab, (len(chunk) + 1) * grown[1] * max(sizes.heads * grown[2], sizes.widest))
        if chunk and cost > max_elements:
            yield chunk
            chunk, grown = [], (len(row.inputs), len(row.inputs), plans[row.prompt].length)
        chunk.append(row)
        tokens, width, prefix = grown
    if chunk:
        yield chunk


def _rows_pass(model: Any, rows: list[_Row], plans: list[_Prompt], first: int, layers: list[prefix_attention.KV],
               pad_id: int, lps: dict[tuple[int, int], list[float]]) -> None:
    """One forward of candidate rows (one per batch row) over the prefixes a packed forward recorded."""
    width = max(len(r.inputs) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    keep = torch.zeros((len(rows), width), dtype=torch.bool)
    starts = torch.tensor([plans[r.prompt].length for r in rows])
    targets = _Targets()
    for i, r in enumerate(rows):
        ids[i, : len(r.inputs)] = torch.tensor(r.inputs, dtype=torch.long)
        keep[i, : len(r.inputs)] = True
        _row_targets(targets, r)
    positions = starts[:, None] + torch.arange(width)  # each row continues its own prompt (+ shared tokens)
    lo, hi = rows[0].prompt, rows[-1].prompt  # rows come prompt by prompt, so their prompts form a range
    lengths = [plans[b].length for b in range(lo, hi + 1)]
    prefix = max(lengths)  # columns past every prompt of the range are padding of the others: not even read
    local = slice(lo - first, hi + 1 - first)
    plan = prefix_attention.make_plan(lengths, prefix, [r.prompt - lo for r in rows], _device(model),
                                      [(k[local, :, :prefix], v[local, :, :prefix]) for k, v in layers])
    targets.record(_run(model, ids, positions, keep, plan), lps)


# ---- the plain path --------------------------------------------------------------------------------------------

def _score_plain(model: Any, plans: list[_Prompt], pad_id: int, max_elements: int) -> list[list[Scored]]:
    """Every candidate in its own full prompt + candidate row (left-padded batches per prompt): the reference way."""
    sizes = _Sizes.of(model)
    results = []
    for p in plans:
        scored: list[Scored] = []
        longest = max((len(c) for c in p.candidates), default=0)
        per_row = max((longest + 1) * sizes.vocab, (len(p.ids) + longest) * sizes.widest)  # logits, activations
        rows = max(1, max_elements // per_row)
        for i in range(0, len(p.candidates), rows):
            scored += _plain_batch(model, p.ids, p.candidates[i: i + rows], pad_id)
        results.append(scored)
    return results


def _plain_batch(model: Any, prompt: list[int], conts: list[list[int]], pad_id: int) -> list[Scored]:
    """One forward of full prompt + candidate rows, left-padded (as `HFModel.score_naive` runs them)."""
    device = _device(model)
    seqs = [prompt + c for c in conts]
    width, keep = max(len(s) for s in seqs), max(len(c) for c in conts) + 1  # positions predicting candidate tokens
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    kwargs: dict[str, Any] = {"logits_to_keep": keep} if _keeps_logits(model) else {}
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                use_cache=False, **kwargs)
    logprobs = torch.log_softmax(out.logits[:, -keep:].float(), dim=-1)
    scored = []
    for row, c in enumerate(conts):
        target = torch.tensor(c, device=logprobs.device)
        lps = logprobs[row, keep - len(c) - 1: keep - 1].gather(-1, target[:, None])[:, 0].tolist()
        scored.append(_scored(lps))
    return scored
