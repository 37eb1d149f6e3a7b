"""Attention for candidate rows that read their prompt's keys/values in place: no copy per candidate or KV group.

The gate's candidates belong to prompts whose keys/values (prompt plus the candidates' shared tokens, RoPE applied)
are computed once per prompt, as (prompts, kv_heads, length, head_dim) per layer. A candidate's query attends to
two key sets:

1. **its prompt's prefix.** The queries of all rows of a prompt and all query heads of one KV head are laid side by
   side (`grouped`: (prompts, kv_heads, slots * groups * width, head_dim)), which rearranges only the small query
   tensor; one batched matmul per layer then scores them against the prefix keys *as they are* (a slice view,
   batch dimension = prompts: no `expand`, no `repeat_kv`, no `torch.cat`). The prompts' right padding is masked
   with an additive -inf bias per prompt.
2. **its own tokens** (causal): the keys/values the model just computed for the row.

Each part yields its own softmax's log-sum-exp and softmax-weighted values (fp32); weighing each part by
exp(its log-sum-exp - the total's) gives exactly one softmax over the union of both key sets. The only tensors whose
size grows with prompt length times candidates are the fp32 scores of part 1, which any attention computes.

A forward runs in one of two layouts, set by its `PrefixPlan`:

- **packed** (`prompt_width` > 0): each batch row is one prompt, `[prompt + shared tokens, right-padded to
  prompt_width | slot 0 | slot 1 | ...]`, a slot holding one candidate's remaining tokens (right-padded). The prompt
  columns attend causally among themselves (sdpa; padding comes after every real token, so no mask), their keys/
  values become the prefix of the slots in the same layer, and are recorded in `plan.layers` (the prompt's cache,
  as views). Prompt and candidates thus take one forward.
- **rows** (`prompt_width` == 0): each batch row is one candidate; the prefix is `plan.layers`, recorded by an
  earlier packed forward (for candidates that did not fit in it).

The function is registered in transformers' `AttentionInterface` as `IMPLEMENTATION` (with sdpa's mask builder, so
a forward that is not ours gets plain sdpa, mask included) and reached by switching `config._attn_implementation`
for the duration of the forwards (`switched_attention`). The plan travels as a forward keyword argument
(`PLAN_KWARG`): transformers hands a model's extra forward kwargs to the attention function. The forwards run
without a cache (`use_cache=False`), so nothing concatenates keys/values behind the attention's back either.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

IMPLEMENTATION = "ttsi_shared_prefix"
PLAN_KWARG = "ttsi_prefix_plan"

Parts = tuple[torch.Tensor, torch.Tensor]  # (log-sum-exp of the scores, softmax-weighted values), fp32
KV = tuple[torch.Tensor, torch.Tensor]
_GQA_SDPA = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 5)  # sdpa's enable_gqa


class Unsupported(RuntimeError):
    """The model asks the attention for something it does not implement (sliding window, soft-capping, sinks, ...)."""


@dataclass
class PrefixPlan:
    """What the candidate rows of one forward attend to besides themselves: their prompts' prefixes.

    `layers[i]` are decoder layer i's prefix (keys, values), (prompts, kv_heads, width, head_dim), as views; a
    packed forward (`prompt_width` > 0) fills them. `bias` (prompts, 1, 1, width) fp32 is 0 on a prompt's own
    columns and -inf on its padding (`padded`: whether there is any). Candidate row r belongs to prompt
    `row_prompt[r]` and is its `row_slot[r]`-th row; `slots` is the most rows of one prompt (in a packed forward,
    the slots of every prompt row, rows taken prompt-major). `calls` counts the layers that ran through the plan
    (a model whose layers bypass the attention interface leaves it short).
    """

    layers: list[KV | None]
    bias: torch.Tensor
    padded: bool
    row_prompt: torch.Tensor
    row_slot: torch.Tensor
    slots: int
    prompt_width: int = 0
    calls: int = 0


def make_plan(lengths: list[int], width: int, row_prompt: list[int], device: torch.device | str,
              layers: list[KV | None], packed: bool = False) -> PrefixPlan:
    """The plan of candidate rows whose prompts (indices into `lengths`, each its own columns) are `row_prompt`.

    `width` is the prefix width (columns of `layers`); `packed`: the forward's first `width` columns are the prompts
    themselves, and `layers` (one None per decoder layer) is filled by the forward.
    """
    columns = torch.arange(width, device=device)
    padding = columns[None, :] >= torch.tensor(lengths, device=device)[:, None]
    bias = torch.zeros(padding.shape, dtype=torch.float32, device=device).masked_fill_(padding, float("-inf"))
    seen: dict[int, int] = {}
    row_slot = []
    for b in row_prompt:
        row_slot.append(seen.get(b, 0))
        seen[b] = row_slot[-1] + 1
    return PrefixPlan(layers, bias[:, None, None, :], min(lengths) < width, torch.tensor(row_prompt, device=device),
                      torch.tensor(row_slot, device=device), max(seen.values(), default=0), width if packed else 0)


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, plan: PrefixPlan, prefix: KV,
           scaling: float) -> torch.Tensor:
    """Attention output (rows, heads, width, v_dim) of candidate rows over their prompt's prefix and themselves.

    `query` (rows, heads, width, dim) and `key`/`value` (rows, kv_heads, width, dim) are the rows' own projections;
    a row's right padding only sees real tokens before it, so it never changes a real token's output.
    """
    rows, heads, width, _ = query.shape
    kv_heads = key.shape[1]
    if heads % kv_heads or prefix[0].shape[1] != kv_heads:
        raise Unsupported(f"{heads} query heads do not group onto {kv_heads} key/value heads")
    merged = _merge(_prefix_parts(query, prefix, plan, scaling), _local_parts(query, key, value, scaling))
    return merged.view(rows, heads, width, -1).to(query.dtype)


def _prefix_parts(query: torch.Tensor, prefix: KV, plan: PrefixPlan, scaling: float) -> Parts:
    """Softmax pieces of every row's queries against its own prompt's prefix, as (rows, kv, groups, width, ·)."""
    keys, values = prefix
    rows, heads, width, dim = query.shape
    prompts, kv_heads = keys.shape[:2]
    groups = heads // kv_heads
    # Head h reads KV head h // groups (as repeat_kv lays them out), so splitting the head axis into (kv, groups)
    # puts every query on its KV head; rows of one prompt go side by side in its slots. Only queries move here
    # (and are scaled here, where they are small, rather than in the scores).
    grouped = query.new_zeros(prompts, kv_heads, plan.slots, groups, width, dim)
    grouped[plan.row_prompt, :, plan.row_slot] = query.view(rows, kv_heads, groups, width, dim) * scaling
    scores = torch.matmul(grouped.view(prompts, kv_heads, -1, dim), keys.transpose(-1, -2)).float()
    if plan.padded:
        scores.add_(plan.bias)
    parts = _softmax_parts(scores, values)
    return tuple(p.view(prompts, kv_heads, plan.slots, groups, width, -1)[plan.row_prompt, :, plan.row_slot]
                 for p in parts)  # type: ignore[return-value]


def _local_parts(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float) -> Parts:
    """Softmax pieces of every row's queries against its own keys (causal), as (rows, kv, groups, width, ·)."""
    rows, heads, width, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    scores = torch.matmul(query.reshape(rows, kv_heads, groups * width, dim) * scaling,
                          key.transpose(-1, -2)).float()
    future = torch.ones(width, width, dtype=torch.bool, device=query.device).triu_(1)
    scores.view(rows, kv_heads, groups, width, width).masked_fill_(future, float("-inf"))
    return tuple(p.view(rows, kv_heads, groups, width, -1) for p in _softmax_parts(scores, value))  # type: ignore


def _softmax_parts(scores: torch.Tensor, values: torch.Tensor) -> Parts:
    """(log-sum-exp, softmax-weighted values) over the last axis of fp32 `scores` (finite: every query sees a key)."""
    total = torch.logsumexp(scores, -1, keepdim=True)
    weights = torch.softmax(scores, -1)
    return total, torch.matmul(weights.to(values.dtype), values).float()


def _merge(a: Parts, b: Parts) -> torch.Tensor:
    """One softmax over two key sets from each set's own: weigh each by its share of the total exp-sum."""
    total = torch.logaddexp(a[0], b[0])
    return a[1] * torch.exp(a[0] - total) + b[1] * torch.exp(b[0] - total)


def attend_packed(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, plan: PrefixPlan, layer: int,
                  scaling: float) -> torch.Tensor:
    """Attention output (prompts, heads, columns, v_dim) of a packed forward: prompt columns, then slots.

    Records the layer's prompt keys/values (views) in `plan.layers[layer]`.
    """
    width = plan.prompt_width
    prefix = (key[:, :, :width], value[:, :, :width])
    plan.layers[layer] = prefix
    head = _causal(query[:, :, :width], *prefix, scaling)
    if query.shape[2] == width:
        return head
    prompts, columns = query.shape[0], query.shape[2]
    slots, slot_width = plan.slots, (columns - width) // plan.slots

    def as_rows(x: torch.Tensor) -> torch.Tensor:  # (prompts, h, slots * w, d) -> (prompts * slots, h, w, d)
        return x[:, :, width:].unflatten(2, (slots, slot_width)).transpose(1, 2).flatten(0, 1)

    out = attend(as_rows(query), as_rows(key), as_rows(value), plan, prefix, scaling)
    tail = out.unflatten(0, (prompts, slots)).transpose(1, 2).flatten(2, 3)  # back to (prompts, h, slots * w, d)
    return torch.cat([head, tail], dim=2)


def _causal(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float) -> torch.Tensor:
    """Plain causal attention of the prompt columns (grouped-query without repeating K/V where torch can)."""
    groups = query.shape[1] // key.shape[1]
    if groups > 1 and not _GQA_SDPA:  # torch < 2.5: one repeat of the prompt's K/V, as transformers' sdpa does
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    kwargs = {"enable_gqa": True} if groups > 1 and _GQA_SDPA else {}
    return torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                                            **kwargs)


def attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
                      **kwargs: Any) -> tuple[torch.Tensor, None]:
    """The `AttentionInterface` entry: shared-prefix attention when the forward carries a plan, sdpa otherwise."""
    plan = kwargs.pop(PLAN_KWARG, None)
    if plan is None:  # someone else's forward while the model is switched: behave as the default
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    _check_supported(module, kwargs)
    if query.shape[1] % key.shape[1]:
        raise Unsupported(f"{query.shape[1]} query heads do not group onto {key.shape[1]} key/value heads")
    scaling = scaling or query.shape[-1] ** -0.5
    if plan.prompt_width:
        out = attend_packed(query, key, value, plan, module.layer_idx, scaling)
    else:
        out = attend(query, key, value, plan, plan.layers[module.layer_idx], scaling)
    plan.calls += 1
    return out.transpose(1, 2), None  # (batch, columns, heads, v_dim), the layout the attention modules reshape


def _check_supported(module: torch.nn.Module, kwargs: dict[str, Any]) -> None:
    """Refuse (before computing anything wrong) features this attention does not implement."""
    for name in ("sliding_window", "softcap", "s_aux", "sinks"):
        if kwargs.get(name) is not None:
            raise Unsupported(f"attention with {name} is not supported")
    if not getattr(module, "is_causal", True) or not isinstance(getattr(module, "layer_idx", None), int):
        raise Unsupported(f"{type(module).__name__} is not a causal self-attention with a layer index")


def register() -> None:
    """Make `IMPLEMENTATION` a valid attention implementation name (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(IMPLEMENTATION, attention_forward)
    AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


@contextmanager
def switched_attention(model: Any) -> Iterator[None]:
    """`model` runs its attention through `attention_forward` inside the block; its own choice comes back after.

    The config attribute itself is swapped (the attention modules share the model's config and read it at every
    forward), and restored in a `finally`, so an error in the block leaves the model as it was. Other forwards of
    the same model while the block runs go through sdpa.
    """
    register()
    config = model.config
    previous = config._attn_implementation_internal
    config._attn_implementation_internal = IMPLEMENTATION
    try:
        yield
    finally:
        config._attn_implementation_internal = previous
