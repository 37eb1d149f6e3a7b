"""Lean batched decoding: a preallocated KV cache, greedy or Hugging Face-identical sampling, per-row stops.

`decode(model, prompts, ...)` produces what Hugging Face's `generate` produces as `HFModel.generate` configures it
(the same tokens, so the same text once decoded with `skip_special_tokens=True`) without `model.generate`'s
per-step machinery: no logits-processor or stopping-criteria objects, no attention-mask rebuild, no `torch.cat`
of the whole cache every step. Per step it runs the forward and picks the tokens, nothing else.

The batch shrinks as it finishes: once enough rows are done (a quarter of those running, at least one), they are
dropped from the cache and the next forwards run only the others. Without this a batched decode runs every row to
the longest one, and one rambling draft in 64 makes the whole batch pay for it (synthesis drafts of 256 tokens next
to answers of 60: about a quarter of the computed tokens were kept). What a row produces does not change: under
greedy decoding any finished row can go; under sampling, rows drawn from one generator (a seeded prompt's
`num_return_sequences` rows, or all the unseeded rows) go together once all of them are done, so every remaining
generator is consumed as `generate` consumes it. A caller that assigns something per row around the forward passes
(the LoRA slot of `ttsi.engine.lora.SlotIndex`) passes `on_rows`, which is told the original indices of the rows
still running after each drop. The prefill runs over all `len(prompts) * num_return_sequences` rows: a prompt's
copies may use different slots.

A prompt whose keys and values were already computed (the gate's `PrefixCache`) is not run again: its tensors are
copied into its rows of the buffer and its first token is chosen from the prefix's `next_logits`. The prefix must
have been computed by the model the rows run on (no LoRA slot assigned to them, in the TT-SI loop).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from ttsi.engine.cache import PrefixCache

CUDA_CHECK_EVERY = 4  # steps between "is every row done?" reads on a GPU: each read waits for the device to catch up


# ---- the cache ------------------------------------------------------------------------------------------------

class BufferLayer(CacheLayerMixin):
    """One decoder layer's keys and values in a buffer allocated once per decode and written in place.

    The buffer is (rows, kv_heads, length, head_dim), `length` = prompt width + new tokens. Columns `[start, end)`
    are what the running forward attends to; `update` writes the new tokens at `end` and returns a *view* of the
    filled columns. Why not Hugging Face's caches: `DynamicLayer.update` concatenates the whole cache with the new
    token every step (a copy that grows with the sequence), and `StaticLayer` returns the full preallocated buffer
    with `get_mask_sizes` = its full length, so every step attends (masked) over the unfilled columns too. This layer
    has the static buffer without the second cost: attention reads `end` columns, not `length`.
    """

    is_sliding = False
    is_compileable = False

    def __init__(self, rows: int, length: int):
        super().__init__()
        self.rows, self.length = rows, length
        self.start = 0  # first column the running forward attends to (the prefill's first column while it runs)
        self.end = 0  # columns written so far
        self.write_rows: torch.Tensor | None = None  # during a prefill: the only rows whose keys are kept

    def allocate(self, heads: int, key_dim: int, value_dim: int, dtype: torch.dtype, device: torch.device) -> None:
        """Allocate the buffers (uninitialised: every column is written before it is read, or zeroed by the caller)."""
        self.keys = torch.empty(self.rows, heads, self.length, key_dim, dtype=dtype, device=device)
        self.values = torch.empty(self.rows, heads, self.length, value_dim, dtype=dtype, device=device)
        self.device = device
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.allocate(key_states.shape[1], key_states.shape[-1], value_states.shape[-1], key_states.dtype,
                      key_states.device)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new tokens' keys and values at the end of the filled columns; return what attention reads."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        begin, end = self.end, self.end + key_states.shape[-2]
        if self.write_rows is None:
            self.keys[:, :, begin:end] = key_states
            self.values[:, :, begin:end] = value_states
        else:
            self.keys[self.write_rows, :, begin:end] = key_states[self.write_rows]
            self.values[self.write_rows, :, begin:end] = value_states[self.write_rows]
        self.end = end
        if begin == self.start:  # a prefill: attend to these tokens alone, laid out as DynamicCache's first
            return key_states.contiguous(), value_states.contiguous()  # concatenation gives them (same kernels)
        return self.keys[:, :, self.start:end], self.values[:, :, self.start:end]

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only these rows (indices into the current ones, in order): the others are done decoding."""
        self.keys, self.values = self.keys.index_select(0, rows), self.values.index_select(0, rows)
        self.rows = rows.shape[0]

    def get_seq_length(self) -> int:
        return self.end - self.start

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.end - self.start + query_length, 0

    def get_max_length(self) -> int:
        return self.length - self.start


class BufferCache(Cache):
    """A `transformers.Cache` of `BufferLayer`s: one preallocated buffer per decoder layer, all rows, all steps."""

    layers: list[BufferLayer]

    def __init__(self, num_layers: int, rows: int, length: int):
        super().__init__(layers=[BufferLayer(rows, length) for _ in range(num_layers)])

    def begin_prefill(self, column: int, rows: torch.Tensor | None = None) -> None:
        """The next forward is a prefill whose first token goes at `column`, keeping only `rows` (None: all)."""
        for layer in self.layers:
            layer.start = layer.end = column
            layer.write_rows = rows

    def end_prefill(self, width: int) -> None:
        """Every row's prompt is in columns [0, width): decoding steps attend from column 0 and write at `width`."""
        for layer in self.layers:
            layer.start, layer.end, layer.write_rows = 0, width, None

    def allocate_like(self, layers: Sequence[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> None:
        """Allocate every layer's buffer with the head count, head size and dtype of a prefix's tensors."""
        for layer, (k, v) in zip(self.layers, layers, strict=True):
            if not layer.is_initialized:
                layer.allocate(k.shape[1], k.shape[-1], v.shape[-1], k.dtype, device)

    def zero_columns(self, end: int) -> None:
        """Zero columns [0, end) of every row: positions a row never writes must hold finite numbers (masked
        attention weighs them 0, and 0 * NaN from uninitialised memory would still be NaN)."""
        for layer in self.layers:
            layer.keys[:, :, :end].zero_()
            layer.values[:, :, :end].zero_()

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only these rows of every layer (indices into the current rows, in order)."""
        for layer in self.layers:
            layer.select_rows(rows)

    def copy_prefix(self, rows: slice, layers: Sequence[tuple[torch.Tensor, torch.Tensor]], width: int) -> None:
        """Copy one prompt's per-layer (1, heads, L, dim) keys/values into `rows`, right-aligned at column `width`."""
        for layer, (k, v) in zip(self.layers, layers, strict=True):
            length = k.shape[-2]
            layer.keys[rows, :, width - length: width] = k
            layer.values[rows, :, width - length: width] = v


# ---- inputs ---------------------------------------------------------------------------------------------------

@dataclass
class _Plan:
    """Validated inputs, expanded to rows (prompt-major, `n` rows per prompt)."""

    prompts: list[list[int]]
    n: int  # rows per prompt
    limits: list[int]  # max new tokens per row
    seeds: list[int | None]  # per prompt
    prefixes: list[PrefixCache | None]  # per prompt

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.n

    @property
    def width(self) -> int:
        return max(len(p) for p in self.prompts)

    @property
    def max_new(self) -> int:
        return max(self.limits)

    def rows_of(self, prompt: int) -> slice:
        return slice(prompt * self.n, (prompt + 1) * self.n)


def _plan(prompts: list[list[int]], max_new_tokens: int | Sequence[int], num_return_sequences: int,
          seeds: Sequence[int | None] | None, prefixes: Sequence[PrefixCache | None] | None, temperature: float,
          top_p: float) -> _Plan:
    """Check every argument and expand per-prompt settings to rows; ValueError names the first problem found."""
    if not prompts:
        raise ValueError("decode needs at least one prompt")
    for i, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {i} is empty: decoding needs at least one token to predict from")
    n = num_return_sequences
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"num_return_sequences must be a positive integer, got {n!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    seeds = [None] * len(prompts) if seeds is None else list(seeds)
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts: give one per prompt (None: unseeded)")
    prefixes = [None] * len(prompts) if prefixes is None else list(prefixes)
    if len(prefixes) != len(prompts):
        raise ValueError(f"{len(prefixes)} prefixes for {len(prompts)} prompts: give one per prompt (None: none)")
    for i, (prompt, prefix) in enumerate(zip(prompts, prefixes, strict=True)):
        if prefix is not None and list(prefix.ids) != list(prompt):
            raise ValueError(f"prefix {i} holds {prefix.length} tokens that are not prompt {i}'s {len(prompt)} "
                             "tokens: a prefix must cache exactly its prompt")
    return _Plan([list(p) for p in prompts], n, _limits(max_new_tokens, len(prompts), n), seeds, prefixes)


def _limits(max_new_tokens: int | Sequence[int], n_prompts: int, n: int) -> list[int]:
    """Max new tokens per row from one int, one per prompt, or one per row."""
    if isinstance(max_new_tokens, int):
        limits = [max_new_tokens] * (n_prompts * n)
    else:
        given = [int(m) for m in max_new_tokens]
        if len(given) == n_prompts:
            limits = [m for m in given for _ in range(n)]
        elif len(given) == n_prompts * n:
            limits = given
        else:
            raise ValueError(f"{len(given)} max_new_tokens values for {n_prompts} prompts x {n} sequences: give "
                             "one int, one per prompt or one per row")
    if min(limits) < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {min(limits)}")
    return limits


def _check_prefix(prefix: PrefixCache, index: int, num_layers: int) -> None:
    """A prefix's tensors must have the model's layer count and its prompt's length."""
    if len(prefix.layers) != num_layers:
        raise ValueError(f"prefix {index} has {len(prefix.layers)} layers, the model {num_layers}")
    for k, v in prefix.layers:
        if k.dim() != 4 or k.shape[0] != 1 or k.shape[-2] != prefix.length or v.shape[:-1] != k.shape[:-1]:
            raise ValueError(f"prefix {index}: keys/values must be (1, heads, {prefix.length}, dim), "
                             f"got {tuple(k.shape)} and {tuple(v.shape)}")
    if prefix.next_logits.dim() != 1:
        raise ValueError(f"prefix {index}: next_logits must be (vocab,), got {tuple(prefix.next_logits.shape)}")


# ---- the model ------------------------------------------------------------------------------------------------

def supports(model: Any) -> bool:
    """Whether `decode` can run this model: full attention in every layer (no sliding-window layers)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return set(getattr(config, "layer_types", None) or ["full_attention"]) == {"full_attention"}


@dataclass
class _Model:
    """How to call one model: its device, layer count and the names its forward takes."""

    module: Any
    device: torch.device
    num_layers: int
    cache_kwarg: str  # "cache" (transformers >= 5.2x) or "past_key_values"
    keeps_logits: bool  # forward takes `logits_to_keep`
    attn: str  # config._attn_implementation
    dtype: torch.dtype

    @classmethod
    def of(cls, model: Any) -> _Model:
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        kinds = set(getattr(config, "layer_types", None) or ["full_attention"])
        if kinds != {"full_attention"}:
            raise ValueError(f"decode supports full-attention models only; this one has layers {sorted(kinds)}")
        target = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(target.forward).parameters
        weight = model.get_input_embeddings().weight
        return cls(model, weight.device, config.num_hidden_layers,
                   "cache" if "cache" in params else "past_key_values", "logits_to_keep" in params,
                   getattr(model.config, "_attn_implementation", None) or "eager", weight.dtype)

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor, cache: BufferCache,
                 last_only: bool = False) -> torch.Tensor:
        """Logits (rows, vocab) at the last position, in float32 (what `generate` picks tokens from)."""
        kwargs: dict[str, Any] = {self.cache_kwarg: cache}
        if last_only and self.keeps_logits:
            kwargs["logits_to_keep"] = 1
        out = self.module(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)
        return out.logits[:, -1].float()


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run in eval mode (no dropout), then give every submodule back the mode it had."""
    if not model.training:
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


# ---- token choice ---------------------------------------------------------------------------------------------

def _top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering exactly as transformers' TopPLogitsWarper (min_tokens_to_keep=1): -inf outside the nucleus."""
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p)  # the tail whose mass is at most 1 - top_p (ascending order)
    remove[..., -1:] = 0  # always keep the most likely token
    remove = remove.scatter(1, sorted_indices, remove)
    return scores.masked_fill(remove, -float("inf"))


class _Sampler:
    """Chooses tokens (rows,) from float32 logits (rows, vocab): argmax, or generate's sampling with per-prompt RNG.

    Sampling is temperature, then top-p, softmax, one `torch.multinomial(probs, 1)` per seeded prompt over its rows
    drawn from its own generator (so its samples do not depend on the other prompts in the batch). The unseeded
    prompts are drawn together in one multinomial from the default generator, which is what `generate` does for the
    whole batch: with no seed at all the result equals `HFModel.generate(..., seed=None)`.

    `units`: the groups of original rows that may only leave the batch together (one per generator; every row on
    its own when greedy). `keep(origin)` follows the batch after rows were dropped: `origin[i]` is the original
    index of what is now row i.
    """

    def __init__(self, plan: _Plan, temperature: float, top_p: float, device: torch.device):
        self.temperature, self.top_p, self.device = temperature, top_p, device
        self.groups: list[tuple[list[int], torch.Generator | None]] = []
        if temperature == 0:
            self.units = [[r] for r in range(plan.rows)]
            return
        unseeded = [r for i, s in enumerate(plan.seeds) if s is None for r in range(plan.rows)[plan.rows_of(i)]]
        if unseeded:
            self.groups.append((unseeded, None))
        for i, seed in enumerate(plan.seeds):
            if seed is not None:
                generator = torch.Generator(device=device).manual_seed(int(seed))
                self.groups.append((list(range(plan.rows)[plan.rows_of(i)]), generator))
        self.units = [rows for rows, _ in self.groups]
        self._index(list(range(plan.rows)))

    def keep(self, origin: list[int]) -> None:
        """The batch now holds these original rows (whole units only)."""
        alive = set(origin)
        self.units = [unit for unit in self.units if unit[0] in alive]
        if self.temperature != 0:
            self.groups = [(rows, g) for rows, g in self.groups if rows[0] in alive]
            self._index(origin)

    def _index(self, origin: list[int]) -> None:
        """Each group's rows as positions in the current batch (a slice when contiguous, as they always are)."""
        where = {row: i for i, row in enumerate(origin)}
        self.current: list[tuple[slice | torch.Tensor, torch.Generator | None]] = []
        for rows, generator in self.groups:
            at = [where[r] for r in rows]
            whole = at == list(range(at[0], at[0] + len(at)))
            self.current.append((slice(at[0], at[0] + len(at)) if whole else torch.tensor(at, device=self.device),
                                 generator))
        self.everything = len(self.current) == 1 and len(origin) == len(self.groups[0][0])

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature == 0:
            return torch.argmax(logits, dim=-1)
        scores = logits / self.temperature if self.temperature != 1.0 else logits  # generate skips it at 1.0
        if self.top_p < 1.0:
            scores = _top_p(scores, self.top_p)
        probs = torch.softmax(scores, dim=-1)
        if self.everything:
            return torch.multinomial(probs, 1, generator=self.current[0][1]).squeeze(1)
        tokens = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
        for rows, generator in self.current:
            tokens[rows] = torch.multinomial(probs[rows], 1, generator=generator).squeeze(1)
        return tokens


def _rng_scope(temperature: float, seeds: list[int | None], device: torch.device) -> AbstractContextManager[Any]:
    """Unseeded sampling draws from the default generator: fork it so the caller's RNG state is left as it was."""
    if temperature == 0 or all(s is not None for s in seeds):
        return nullcontext()  # seeded prompts use their own generators and never touch the global one
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


# ---- per-token statistics -------------------------------------------------------------------------------------

STAT_NAMES = ("top1", "margin", "entropy")  # per position: p(most likely token), p(1st) - p(2nd), entropy (nats)


class StepStats:
    """Softmax statistics of every row at every step of one decode, recorded from the logits tokens are chosen from.

    Pass one to `decode(stats=...)` (or `HFModel.generate(stats=...)`, which also sets `tokens`, each row's kept
    token ids); afterwards `rows(lengths)` gives each row's (top1, margin, entropy) per position, cut to the tokens
    the row kept. The softmax is the model's own distribution (temperature 1, no top-p), whatever the sampling
    settings.
    """

    def __init__(self) -> None:
        self.values: torch.Tensor | None = None  # (rows, max_new, 3), on the model's device
        self.tokens: list[list[int]] | None = None  # each row's kept token ids (set by HFModel.generate)

    def start(self, rows: int, steps: int, device: torch.device) -> None:
        self.values = torch.zeros(rows, steps, len(STAT_NAMES), dtype=torch.float32, device=device)

    def record(self, step: int, rows: torch.Tensor | None, logits: torch.Tensor) -> None:
        """The statistics of `logits` (current rows, vocab) at `step`; `rows`: their original indices (None: all)."""
        assert self.values is not None
        logp = torch.log_softmax(logits.float(), dim=-1)
        top = logp.topk(min(2, logp.shape[-1]), dim=-1).values.exp()
        second = top[:, 1] if top.shape[-1] > 1 else torch.zeros_like(top[:, 0])
        entropy = -(logp.exp() * logp).nan_to_num().sum(-1)
        stats = torch.stack([top[:, 0], top[:, 0] - second, entropy], dim=-1)
        if rows is None:
            self.values[:, step] = stats
        else:
            self.values[rows, step] = stats

    def rows(self, lengths: Sequence[int] | None = None) -> list[list[tuple[float, float, float]]]:
        """Each row's statistics for its first `lengths[i]` positions (default: the tokens it kept)."""
        if lengths is None:
            assert self.tokens is not None, "give the lengths, or generate through HFModel.generate"
            lengths = [len(t) for t in self.tokens]
        if self.values is None:
            return [[] for _ in lengths]
        values = self.values.cpu().tolist()
        return [[tuple(v) for v in row[:n]] for row, n in zip(values, lengths, strict=True)]  # type: ignore[misc]


# ---- the decode -----------------------------------------------------------------------------------------------

def decode(model: Any, prompts: list[list[int]], *, max_new_tokens: int | Sequence[int], stop_ids: Sequence[int],
           pad_id: int, temperature: float = 0.0, top_p: float = 1.0, num_return_sequences: int = 1,
           seeds: Sequence[int | None] | None = None,
           prefixes: Sequence[PrefixCache | None] | None = None,
           on_rows: Callable[[list[int]], None] | None = None,
           stats: StepStats | None = None) -> list[list[int]]:
    """New token ids per row (prompt-major, `num_return_sequences` rows per prompt), what `generate` would produce.

    Greedy when `temperature` is 0, else transformers' sampling (temperature, top-p, multinomial) with prompt i's
    rows drawn from a generator seeded with `seeds[i]` (None: the default generator, forked so the caller's RNG is
    untouched). A row ends with the first of `stop_ids` it produces (kept in the row) or after its
    `max_new_tokens` (an int, one per prompt or one per row). `prefixes[i]`, when given, is prompt i's
    precomputed KV cache: the prompt is not run again. `on_rows(origin)` is called whenever finished rows leave the
    batch, with the original indices of the rows the next forwards run. `stats`, when given, records every row's
    softmax statistics at every step (`StepStats`). Token ids in, token ids out: decoding text is the caller's.
    """
    plan = _plan(prompts, max_new_tokens, num_return_sequences, seeds, prefixes, temperature, top_p)
    runner = _Model.of(model)
    for i, prefix in enumerate(plan.prefixes):
        if prefix is not None:
            _check_prefix(prefix, i, runner.num_layers)
    if any(s < 0 for s in stop_ids) or pad_id < 0:
        raise ValueError("stop_ids and pad_id must be non-negative token ids")
    with torch.no_grad(), _eval_mode(model), _rng_scope(temperature, plan.seeds, runner.device):
        cache = BufferCache(runner.num_layers, plan.rows, plan.width + plan.max_new)
        first = _start(runner, cache, plan, pad_id)
        choose = _Sampler(plan, temperature, top_p, runner.device)
        tokens = _loop(runner, cache, plan, first, choose, stop_ids, pad_id, on_rows, stats)
    return _trim(tokens, plan.limits, set(stop_ids))


def _start(runner: _Model, cache: BufferCache, plan: _Plan, pad_id: int) -> torch.Tensor:
    """Fill the buffer with every prompt's keys/values (prefill or prefix copy); logits (rows, vocab) of token 1."""
    width = plan.width
    todo = [i for i, p in enumerate(plan.prefixes) if p is None]
    done = [i for i, p in enumerate(plan.prefixes) if p is not None]
    if done:  # allocate before the prefill, which then writes only its own rows into zeroed prompt columns
        cache.allocate_like(plan.prefixes[done[0]].layers, runner.device)
        cache.zero_columns(width)
    logits = _prefill(runner, cache, plan, todo, pad_id) if todo else None
    if done:
        vocab = plan.prefixes[done[0]].next_logits.shape[0]
        first = torch.empty(plan.rows, vocab, dtype=torch.float32, device=runner.device)
        for i in todo:
            first[plan.rows_of(i)] = logits[plan.rows_of(i)]
        for i in done:
            prefix = plan.prefixes[i]
            cache.copy_prefix(plan.rows_of(i), prefix.layers, width)
            first[plan.rows_of(i)] = prefix.next_logits.to(runner.device, torch.float32)
        logits = first
    cache.end_prefill(width)
    return logits


def _prefill(runner: _Model, cache: BufferCache, plan: _Plan, todo: list[int], pad_id: int) -> torch.Tensor:
    """Run the prompts in `todo` (left-padded, all rows in the batch) into the buffer; last-position logits.

    Rows of prompts that have a prefix ride along as pad tokens (so the batch keeps every row) and are not kept.
    """
    span = max(len(plan.prompts[i]) for i in todo)
    ids = torch.full((plan.rows, span), pad_id, dtype=torch.long)
    mask = torch.ones((plan.rows, span), dtype=torch.long)
    for i in todo:
        prompt, rows = plan.prompts[i], plan.rows_of(i)
        ids[rows, span - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[rows, : span - len(prompt)] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # 0 at the first real token, as HFModel._positions
    keep = None
    if len(todo) < len(plan.prompts):
        keep = torch.tensor([r for i in todo for r in range(plan.rows)[plan.rows_of(i)]], device=runner.device)
    cache.begin_prefill(plan.width - span, keep)
    padded = bool((mask == 0).any())
    device = runner.device
    return runner(ids.to(device), mask.to(device) if padded else None, positions.to(device), cache, last_only=True)


def _decode_mask(runner: _Model, plan: _Plan) -> torch.Tensor | None:
    """The attention mask of every decoding step over all columns (a step attending to `kv` columns takes
    `[..., :kv]`), built once; None without padding.

    With no padding there is none (sdpa then runs its unmasked kernel). With padding, sdpa and eager get the 4-D
    mask their integrations would build (bool keep / additive 0 or min), so transformers does not rebuild it (and
    read it back from the device) every step; other attention implementations get the 2-D mask and build their own.
    """
    lengths = [len(p) for p in plan.prompts for _ in range(plan.n)]
    width, total = plan.width, plan.width + plan.max_new
    if min(lengths) == width:
        return None
    starts = torch.tensor([width - n for n in lengths], device=runner.device)
    keep = torch.arange(total, device=runner.device)[None, :] >= starts[:, None]  # (rows, total)
    if runner.attn == "sdpa":
        return keep[:, None, None, :]
    if runner.attn == "eager":
        zero = torch.zeros((), dtype=runner.dtype, device=runner.device)
        return torch.where(keep, zero, torch.finfo(runner.dtype).min)[:, None, None, :]
    return keep.long()


def _loop(runner: _Model, cache: BufferCache, plan: _Plan, logits: torch.Tensor, choose: _Sampler,
          stop_ids: Sequence[int], pad_id: int, on_rows: Callable[[list[int]], None] | None,
          stats: StepStats | None = None) -> list[list[int]]:
    """Choose a token per row, feed it, repeat until every row is done; the chosen tokens (rows, steps) on the CPU.

    A finished row is fed the pad token and keeps being sampled (its draw discarded), exactly as `generate` does, so
    a seeded prompt consumes its generator the same way, until its whole unit (`_Sampler.units`) is done: then,
    once a quarter of the running rows can go, they leave the batch (`_Batch.drop`).
    """
    device, max_new = runner.device, plan.max_new
    vocab = logits.shape[-1]
    stops = torch.zeros(vocab, dtype=torch.bool, device=device)
    stop_list = [s for s in stop_ids if s < vocab]  # an id the model cannot produce never stops anything
    if stop_list:
        stops[torch.tensor(stop_list, device=device)] = True
    per_row_limits = len(set(plan.limits)) > 1
    tokens = torch.full((plan.rows, max_new), pad_id, dtype=torch.long, device=device)
    batch = _Batch(plan, runner, choose, on_rows)
    if stats is not None:
        stats.start(plan.rows, max_new, device)
    # rows can only end before max_new on a stop token or a shorter limit; a GPU is only asked every few steps
    check_every = (1 if device.type == "cpu" else CUDA_CHECK_EVERY) if stop_list or per_row_limits else max_new
    steps = 0
    for step in range(max_new):
        if stats is not None:
            stats.record(step, batch.origin_index, logits)
        token = choose(logits).masked_fill(batch.finished, pad_id)
        batch.write(tokens, step, token)
        steps = step + 1
        if stop_list:
            batch.finished |= stops[token]
        if per_row_limits:
            batch.finished |= batch.limits <= steps
        if steps == max_new:
            break
        if steps % check_every == 0:
            done = int(batch.finished.sum())
            if done == len(batch.origin):
                break
            keep = batch.droppable(done)
            if keep is not None:
                token = batch.drop(keep, cache, token)
        logits = runner(token[:, None], batch.mask(plan.width + steps), batch.positions, cache)
        batch.positions += 1
    return tokens[:, :steps].tolist()


class _Batch:
    """The rows still decoding: their original indices, positions, limits, finished flags and attention mask."""

    def __init__(self, plan: _Plan, runner: _Model, choose: _Sampler,
                 on_rows: Callable[[list[int]], None] | None):
        device = runner.device
        self.choose, self.on_rows = choose, on_rows
        self.origin: list[int] = list(range(plan.rows))
        self.origin_index: torch.Tensor | None = None  # None while every row is still there
        self.finished = torch.zeros(plan.rows, dtype=torch.bool, device=device)
        self.limits = torch.tensor(plan.limits, device=device)
        self.positions = torch.tensor([len(p) for p in plan.prompts for _ in range(plan.n)], device=device)[:, None]
        self.full_mask = _decode_mask(runner, plan)
        self.last_done = 0  # finished rows at the last look for droppable ones (nothing new: no second look)

    def mask(self, kv: int) -> torch.Tensor | None:
        return None if self.full_mask is None else self.full_mask[..., :kv]

    def write(self, tokens: torch.Tensor, step: int, token: torch.Tensor) -> None:
        if self.origin_index is None:
            tokens[:, step] = token
        else:
            tokens[self.origin_index, step] = token

    def droppable(self, done: int) -> list[int] | None:
        """The rows to keep (current indices), or None when fewer than a quarter of the rows (at least one) could
        go: not worth a copy of the cache. `done`: how many rows are finished (checked first: it is cheap)."""
        if done < max(1, len(self.origin) // 4) or done == self.last_done:
            return None
        self.last_done = done
        finished = self.finished.tolist()
        where = {row: i for i, row in enumerate(self.origin)}
        gone = {where[r] for unit in self.choose.units if all(finished[where[r]] for r in unit) for r in unit}
        if not gone or len(gone) < len(self.origin) // 4:
            return None
        return [i for i in range(len(self.origin)) if i not in gone]

    def drop(self, keep: list[int], cache: BufferCache, token: torch.Tensor) -> torch.Tensor:
        """Keep only these rows (current indices): the cache, every per-row tensor, the sampler and the caller."""
        index = torch.tensor(keep, device=self.finished.device)
        cache.select_rows(index)
        self.origin = [self.origin[i] for i in keep]
        self.origin_index = torch.tensor(self.origin, device=index.device)
        self.finished, self.limits, self.positions = self.finished[index], self.limits[index], self.positions[index]
        if self.full_mask is not None:
            self.full_mask = self.full_mask[index]
        self.last_done = int(self.finished.sum())
        self.choose.keep(self.origin)
        if self.on_rows is not None:
            self.on_rows(self.origin)
        return token[index]


def _trim(tokens: list[list[int]], limits: list[int], stops: set[int]) -> list[list[int]]:
    """Each row up to and including its first stop token, and at most its own limit."""
    out = []
    for row, limit in zip(tokens, limits, strict=True):
        row = row[:limit]
        end = next((j + 1 for j, t in enumerate(row) if t in stops), len(row))
        out.append(row[:end])
    return out


__all__ = ["STAT_NAMES", "BufferCache", "BufferLayer", "StepStats", "decode", "supports"]
