"""The model backend: a Hugging Face causal LM with the two primitives the stages need, `score` and `generate`."""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ttsi.engine.cache import PrefixCache
from ttsi.engine.scoring import Scored, score_candidates
from ttsi.errors import ConfigError, ContextLengthError, ModelLoadError

if TYPE_CHECKING:
    from ttsi.engine.decode import StepStats

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str | None = None) -> torch.device:
    """The device to load on (default: cuda when present, else cpu); ModelLoadError for one this machine lacks."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, ValueError):
        raise ModelLoadError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if target.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelLoadError(f"device {device!r} asked for, but this machine has no CUDA GPU; use --device cpu")
        if target.index is not None and target.index >= count:
            raise ModelLoadError(f"device {device!r} does not exist: this machine has {count} CUDA GPU(s)")
    elif target.type != "cpu":
        raise ModelLoadError(f"device {device!r} is not supported; use cpu, cuda or cuda:N")
    return target


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":  # bf16 where the hardware has it; CPU bf16 matmuls are slow and lossy
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


# Config fields that hold the longest sequence a model reads: Qwen2 / Llama / Mistral, GPT-2, others.
WINDOW_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
SANE_WINDOW = 10**8  # a tokenizer's model_max_length above this is transformers' "unknown" placeholder (1e30)


def context_window(model: Any, tokenizer: Any) -> int | None:
    """The most tokens the model reads at once: its config's position limit, else the tokenizer's
    `model_max_length` when that is a real number; None when neither says."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in WINDOW_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < SANE_WINDOW else None


def check_max_new_tokens(max_new_tokens: Any) -> int:
    """A generation budget must be a positive int (ConfigError otherwise)."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be an integer of at least 1, got {max_new_tokens!r}")
    return max_new_tokens


def _looks_local(name: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else is meant as a directory."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


class HFModel:
    """A causal LM and its tokenizer; prompts are rendered with the tokenizer's chat template when it has one.

    `context_window`: the most tokens the model reads (None: unknown); generation stops there, and scoring or
    generating after a prompt that leaves no room raises ContextLengthError. Set it to override the config.
    """

    def __init__(self, model: Any, tokenizer: Any, name: str = ""):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "")
        eos = [tokenizer.eos_token_id, *_as_list(getattr(model.generation_config, "eos_token_id", None))]
        self.eos_ids = [i for i in dict.fromkeys(eos) if i is not None]
        self.pad_id = next(i for i in (tokenizer.pad_token_id, *self.eos_ids, 0) if i is not None)
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.context_window: int | None = context_window(model, tokenizer)

    @classmethod
    def from_pretrained(cls, name_or_path: str, dtype: str | torch.dtype = "auto", device: str | None = None,
                        trust_remote_code: bool = False, adapter: str | None = None) -> HFModel:
        """Load a model id or local directory (the same path users take for Qwen2.5 and for the tests' tiny models).

        `adapter`: a PEFT adapter directory (e.g. from `ttsi sft`) merged into the weights, so the result is a
        plain model again (TT-SI's own LoRA then goes on top of it).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(name_or_path).expanduser()
        if not path.exists() and _looks_local(name_or_path):
            raise ModelLoadError(f"model path {name_or_path} does not exist")
        if path.exists() and not (path / "config.json").exists():
            raise ModelLoadError(f"model directory {name_or_path} has no config.json (not a Hugging Face model)")
        target = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, target)
        source = str(path) if path.exists() else name_or_path
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype,
                                                         trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError) as e:
            hint = " (hub downloads are off: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
            raise ModelLoadError(f"could not load model {name_or_path!r}{hint}: {str(e).splitlines()[0]}") from None
        if adapter is not None:
            model = _merge_adapter(model, adapter)
        return cls(model.to(target), tokenizer, name=name_or_path)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---- text <-> tokens -------------------------------------------------------------------------------------

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """The exact prompt text for these messages, ending where the assistant's reply begins.

        `tools`: OpenAI function schemas for the chat template's own tool support. A model whose template takes no
        tools (or that has no template) gets them listed in the system turn instead, and any `tool_calls` in the
        history written as JSON.
        """
        template = _template_text(self.tokenizer)
        if template and "tools" in template:
            return self.tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                                      add_generation_prompt=True)
        messages = _plain_turns(messages, tools)
        if template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        bos = self.tokenizer.bos_token or ""  # no template: a plain transcript, still with the model's BOS
        turns = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages)
        return f"{bos}{turns}Assistant: "

    @property
    def chat_template(self) -> str | None:
        """The tokenizer's chat template text (of several named ones, `tool_use`, else `default`), or None."""
        return _template_text(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` as is: prompts already carry their special tokens."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens `encode` makes of each text, in one tokenizer call."""
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def no_room(self, prompts: Sequence[str]) -> list[str | None]:
        """For each prompt that leaves no room to write a token, its length against the window (else None)."""
        window = self.context_window
        if window is None:
            return [None] * len(prompts)
        return [f"{n:,} tokens; the model reads at most {window:,}" if n >= window else None
                for n in self.count_tokens(prompts)]

    def room(self, prompt_ids: Sequence[list[int]], max_new_tokens: int) -> list[int]:
        """Each prompt's generation budget: `max_new_tokens`, cut to what the context window leaves after it.

        ContextLengthError when a prompt leaves no room for a single token.
        """
        window = self.context_window
        if window is None:
            return [max_new_tokens] * len(prompt_ids)
        for i, ids in enumerate(prompt_ids):
            if len(ids) >= window:
                raise ContextLengthError(f"prompt {i} is {len(ids):,} tokens; the model reads at most {window:,}, "
                                         "so nothing can be generated after it")
        return [min(max_new_tokens, window - len(ids)) for ids in prompt_ids]

    # ---- primitives ------------------------------------------------------------------------------------------

    def score_many(self, prompts: list[str], continuations: list[list[str]], keep_cache: bool = False
                   ) -> tuple[list[list[Scored]], list[PrefixCache] | None]:
        """Summed log P(continuation | prompt) for every prompt's continuations, all prompts in one batch.

        Each continuation is encoded on its own and appended to its prompt's ids, which is exactly how the model
        would produce it when generating after the prompt. The candidates' common token prefix is computed once
        per prompt, and candidates attend to their prompt's keys and values without copies
        (`ttsi.engine.scoring`). Equal to `score_naive` up to floating-point rounding. With `keep_cache`, each
        prompt's KV cache comes back too (None when the model had to be scored the plain way), for `generate`.
        """
        if len(continuations) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} candidate lists")
        ids = [self.encode(p) for p in prompts]
        conts = [[self.encode(c) for c in cs] for cs in continuations]
        if any(not c for cs in conts for c in cs):
            raise ValueError("cannot score an empty continuation")
        if any(not p for p in ids):
            raise ValueError("cannot score after an empty prompt (nothing predicts the first token)")
        window = self.context_window
        for i, (p, cs) in enumerate(zip(ids, conts, strict=True)):
            if window is not None and cs and len(p) + max(map(len, cs)) > window:
                raise ContextLengthError(f"prompt {i} is {len(p):,} tokens and its longest continuation "
                                         f"{max(map(len, cs)):,} more; the model reads at most {window:,}")
        return score_candidates(self.model, ids, conts, pad_id=self.pad_id, keep_prompt_cache=keep_cache)

    def score(self, prompt: str, continuations: list[str]) -> list[Scored]:
        """`score_many` for one prompt."""
        if not continuations:
            return []
        return self.score_many([prompt], [continuations])[0][0]

    @torch.no_grad()
    def score_naive(self, prompt: str, continuations: list[str], batch_size: int = 16) -> list[Scored]:
        """The reference for `score`: every continuation is scored as its own full prompt + continuation row.

        Chunks of `batch_size` rows are left-padded and run in one forward each, so the prompt is recomputed
        once per continuation (only the LM-head logits of continuation positions are computed when the model
        supports `logits_to_keep`).
        """
        return self._score_naive_ids(self.encode(prompt), [self.encode(c) for c in continuations], batch_size)

    @torch.no_grad()
    def _score_naive_ids(self, prompt_ids: list[int], conts: list[list[int]], batch_size: int) -> list[Scored]:
        if not prompt_ids:
            raise ValueError("cannot score after an empty prompt (nothing predicts the first token)")
        results: list[Scored] = []
        for i in range(0, len(conts), batch_size):
            results += self._score_batch(prompt_ids, conts[i: i + batch_size])
        return results

    def _score_batch(self, prompt_ids: list[int], conts: list[list[int]]) -> list[Scored]:
        if any(not c for c in conts):
            raise ValueError("cannot score an empty continuation")
        seqs = [prompt_ids + c for c in conts]
        input_ids, mask = self._left_pad(seqs)
        keep = max(len(c) for c in conts) + 1  # only the positions that predict continuation tokens
        kwargs: dict[str, Any] = {"logits_to_keep": keep} if self._keeps_logits else {}
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=_positions(mask), use_cache=False,
                         **kwargs)
        logprobs = torch.log_softmax(out.logits[:, -keep:].float(), dim=-1)
        scored = []
        for row, cont in enumerate(conts):
            m = len(cont)
            target = torch.tensor(cont, device=logprobs.device)
            token_lp = logprobs[row, keep - m - 1: keep - 1].gather(-1, target[:, None])[:, 0]
            scored.append(Scored(float(token_lp.sum()), m, token_lp.tolist()))
        return scored

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 num_return_sequences: int = 1, seed: int | None = None, seeds: Sequence[int | None] | None = None,
                 prefixes: Sequence[PrefixCache | None] | None = None,
                 on_rows: Callable[[list[int]], None] | None = None, stats: StepStats | None = None) -> list[str]:
        """Completions for each prompt (num_return_sequences each, prompt-major); greedy when temperature is 0.

        Sampling: prompt i draws from its own generator seeded with seeds[i] (or `seed` for every prompt), so its
        samples do not depend on the other prompts in the batch; a single prompt's samples are Hugging Face's
        `generate` ones for the same seed. `prefixes[i]`: prompt i's KV cache already computed (the gate's), so
        the prompt is not run again. `on_rows(origin)`: told the original indices of the rows still decoding each
        time finished rows leave the batch (`ttsi.engine.decode`); never called by Hugging Face's loop. `stats`: a
        `StepStats` that records every row's softmax statistics per generated token (the lean decoder only: a model
        it does not support gets a ConfigError).

        A prompt gets at most what the context window leaves after it (`room`); ContextLengthError for a prompt
        that leaves nothing, ConfigError for a budget that is not a positive int.
        """
        check_max_new_tokens(max_new_tokens)
        if seeds is None:
            seeds = [seed] * len(prompts)
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return []
        from ttsi.engine.decode import decode, supports

        ids = [self.encode(p) for p in prompts]
        limits = self.room(ids, max_new_tokens)
        if not supports(self.model):  # e.g. sliding-window layers: Hugging Face's loop, one budget for a batch
            if stats is not None:
                raise ConfigError("per-token statistics (the token gate) need full-attention layers in every layer; "
                                  "this model has sliding-window layers")
            if temperature == 0:
                rows = self.hf_generate_ids(ids, min(limits), temperature, top_p, num_return_sequences)
            else:  # one prompt per seed
                rows = [row for one, limit, s in zip(ids, limits, seeds, strict=True)
                        for row in self.hf_generate_ids([one], limit, temperature, top_p, num_return_sequences, s)]
            return [self.decode(row) for row in rows]
        rows = decode(self.model, ids, max_new_tokens=limits, stop_ids=self.eos_ids, pad_id=self.pad_id,
                      temperature=temperature, top_p=top_p, num_return_sequences=num_return_sequences, seeds=seeds,
                      prefixes=prefixes, on_rows=on_rows, stats=stats)
        if stats is not None:
            stats.tokens = rows
        return [self.decode(row) for row in rows]

    def hf_generate(self, prompts: list[str], max_new_tokens: int = 256, temperature: float = 0.0,
                    top_p: float = 1.0, num_return_sequences: int = 1, seed: int | None = None) -> list[str]:
        """The reference for `generate`: Hugging Face's `generate` with every decoding field pinned.

        One RNG for the whole batch (seeded with `seed`), so a prompt's samples depend on the batch.
        """
        rows = self.hf_generate_ids([self.encode(p) for p in prompts], max_new_tokens, temperature, top_p,
                                    num_return_sequences, seed)
        return [self.decode(row) for row in rows]

    @torch.no_grad()
    def hf_generate_ids(self, prompts: list[list[int]], max_new_tokens: int = 256, temperature: float = 0.0,
                        top_p: float = 1.0, num_return_sequences: int = 1, seed: int | None = None,
                        stop_ids: Sequence[int] | None = None) -> list[list[int]]:
        """`hf_generate` on token ids: each row's new ids as `generate` returns them (padding after a stop included).

        `stop_ids`: the tokens that end a row (None: the model's end-of-turn tokens; empty: none, so every row gets
        exactly `max_new_tokens`).
        """
        from transformers import GenerationConfig

        input_ids, mask = self._left_pad(prompts)
        sample = temperature > 0
        # Every decoding field is pinned: fields left unset would be filled from the model's own generation
        # defaults (Qwen2.5 ships top_k=20 and repetition_penalty=1.05), so "greedy" would not be argmax.
        decoding = ({"temperature": temperature, "top_p": top_p, "top_k": 0} if sample  # top_k 0: no cut
                    else {"temperature": 1.0, "top_p": 1.0, "top_k": 50})  # library defaults: inert when greedy
        stops = self.eos_ids if stop_ids is None else list(stop_ids)
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample, **decoding,
                                  repetition_penalty=1.0, no_repeat_ngram_size=0,
                                  num_return_sequences=num_return_sequences,
                                  pad_token_id=self.pad_id, eos_token_id=stops or None)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # seeded sampling without disturbing the caller's RNG
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config)
        return [row[input_ids.shape[1]:].tolist() for row in out]

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)


def _merge_adapter(model: Any, adapter: str) -> Any:
    if not (Path(adapter) / "adapter_config.json").exists():
        raise ModelLoadError(f"adapter directory {adapter} has no adapter_config.json (not a PEFT adapter)")
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter).merge_and_unload()


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 after left padding."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _template_text(tokenizer: Any) -> str | None:
    """The tokenizer's chat template; of several named ones, `tool_use` (else `default`)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("tool_use") or template.get("default")
    elif isinstance(template, list):  # [{"name", "template"}, ...] as saved by some tokenizers
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("tool_use") or named.get("default")
    return template if isinstance(template, str) and template else None


def _plain_turns(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Role/content turns for a template without tool support: tools listed in the system turn, calls as JSON."""
    turns = []
    for m in messages:
        content = m.get("content") or ""
        if m.get("tool_calls"):
            calls = json.dumps([c.get("function", c) for c in m["tool_calls"]], ensure_ascii=False)
            content = f"{content}\n{calls}" if content else calls
        turns.append({"role": m["role"], "content": content})
    if tools:
        listing = "You can call these functions:\n" + "\n".join(
            json.dumps(t.get("function", t), ensure_ascii=False) for t in tools)
        if turns and turns[0]["role"] == "system":
            turns[0] = {"role": "system", "content": f"{turns[0]['content']}\n\n{listing}"}
        else:
            turns.insert(0, {"role": "system", "content": listing})
    return turns


def _as_list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]
