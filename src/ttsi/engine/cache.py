"""A prompt's keys and values computed once and handed from one engine to another (the gate to the decoder)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PrefixCache:
    """The KV cache of one prompt, e.g. kept by the gate's scoring, so that answering it does not recompute it.

    `layers[i]` holds decoder layer i's (keys, values), each (1, kv_heads, length, head_dim) in the model's dtype;
    `next_logits` (vocab,) are the logits at the prompt's last position, which predict the first new token.
    The tensors may be views of a larger buffer: a consumer copies them, never writes into them.
    """

    ids: list[int]  # the prompt's token ids the cache holds, in order
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    next_logits: torch.Tensor

    @property
    def length(self) -> int:
        return len(self.ids)
