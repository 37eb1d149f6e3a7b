"""Shared pieces of the speed benchmarks: models, synthetic inputs, timing, results and the record's metadata.

Models are built from a config (never downloaded) with a tokenizer trained here on a generated tool-calling
corpus, and cached under `.cache/ttsi/bench/`. Every benchmark gets a *fresh* `HFModel` per measurement group
(`ModelSpec.load`), because LoRA wrapping and MultiLoRA installation change the module tree in place.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from ttsi.model import HFModel
from ttsi.tiny_models import build_tiny_model, tiny_config, train_tokenizer

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "ttsi" / "bench"
T = TypeVar("T")

# name -> (tokenizer vocabulary, model sizes for `build_tiny_model`); parameter counts include the tied embedding
CPU_MODELS: dict[str, tuple[int, dict[str, int]]] = {
    "10M": (8192, {"hidden": 256, "layers": 10, "heads": 4, "kv_heads": 2, "intermediate": 768}),
    "50M": (16384, {"hidden": 512, "layers": 14, "heads": 8, "kv_heads": 2, "intermediate": 1536}),
}
# Qwen2.5-1.5B's shape (random weights, bf16, GPU only): the paper's model size without its weights
QWEN25_15B = {"vocab_size": 151936, "hidden": 1536, "layers": 28, "heads": 12, "kv_heads": 2, "intermediate": 8960}

TOOLS: dict[str, list[str]] = {
    "get_weather": ["city", "unit"], "send_email": ["to", "subject", "body"], "set_alarm": ["hour", "minute"],
    "convert_currency": ["amount", "source", "target"], "search_flights": ["origin", "destination", "date"],
    "book_hotel": ["city", "check_in", "nights"], "play_song": ["title", "artist"], "find_recipe": ["dish"],
    "translate_text": ["text", "language"], "get_stock_price": ["symbol"], "create_event": ["title", "date"],
    "order_taxi": ["pickup", "dropoff", "time"], "check_traffic": ["route"], "add_todo": ["task", "due"],
    "get_news": ["topic", "count"], "reserve_table": ["restaurant", "people", "time"],
    "track_package": ["tracking_id"], "set_thermostat": ["temperature", "room"], "find_pharmacy": ["near"],
    "call_contact": ["name"], "pay_bill": ["payee", "amount"], "get_directions": ["origin", "destination"],
}
VALUES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Denver", "Seoul", "Rome", "Nairobi", "Quito", "ana@mail.com",
          "EUR", "USD", "tomorrow", "Friday", "celsius", "7", "30", "Imagine", "lasagna", "AAPL", "kitchen", "Kim"]
SYLLABLES = ["ka", "lo", "mi", "ren", "tu", "sha", "pel", "dor", "vi", "nex", "qua", "bri", "zo", "fen", "gal",
             "hu", "jor", "ix", "ul", "ome", "tra", "sen", "wy", "cel"]


# ---- settings and results -------------------------------------------------------------------------------------

@dataclass
class Settings:
    """Sizes and repeat counts of one suite run (`quick()` / `full()` are the two presets `run.py` uses)."""

    quick: bool = False
    repeats: int = 5  # timed repeats per measurement; the median is reported
    warmup: int = 1  # untimed runs before each (the first measurement on a fresh model always gets at least one)
    prompt_tokens: int = 512
    example_tokens: int = 100  # the synthetic (x', y') training example, prompt and answer together
    answer_tokens: int = 20
    gate_ns: tuple[int, ...] = (5, 20)
    cycle_ks: tuple[int, ...] = (1, 5)
    batch_sizes: tuple[int, ...] = (1, 4, 16)
    decode_tokens: tuple[int, ...] = (20, 64)  # new tokens per decoding measurement (perf/decode.py)
    efficiency_tokens: tuple[int, ...] = (100, 512)
    eval_items: int = 48  # sealshift:ood items for the end-to-end comparison (perf/eval_throughput.py)
    matmul_size: int = 2048  # square matmul for the machine's dense FLOP/s (8192 on GPU)
    reset_repeats: int = 20  # resets are microseconds to milliseconds: more repeats for a stable median

    @classmethod
    def preset(cls, quick: bool) -> Settings:
        if quick:
            return cls(quick=True, repeats=1, warmup=0, reset_repeats=10, eval_items=32)
        return cls()


@dataclass
class Check:
    """A target for one figure of a row, e.g. ratio >= 3."""

    metric: str
    op: str  # ">=" or "<"
    value: float
    actual: float
    passed: bool

    @classmethod
    def of(cls, row: dict[str, Any], metric: str, op: str, value: float) -> Check:
        actual = float(row[metric])
        passed = actual >= value if op == ">=" else actual < value
        return cls(metric, op, value, actual, passed)

    def label(self) -> str:
        status = "PASS" if self.passed else "MISS"
        return f"{self.metric} {self.op} {self.value:g}: {status}"


@dataclass
class Column:
    """How one row field is shown in the table (`scale` multiplies numbers first, e.g. 1e3 for ms)."""

    key: str
    header: str
    fmt: str = "{:.4f}"  # a format for numbers; other values are shown with str()
    scale: float = 1.0

    def render(self, value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, dict):  # e.g. per-phase seconds: "a/b/c"
            return "/".join(self.render(v) for v in value.values())
        if isinstance(value, float):
            return self.fmt.format(value * self.scale)
        return str(value)


@dataclass
class Section:
    """One benchmark's results: rows of figures, how to show them, and what each row is checked against."""

    name: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: dict[str, Any], checks: Sequence[Check] = ()) -> None:
        row["checks"] = [asdict(c) for c in checks]
        self.rows.append(row)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "rows": self.rows, "notes": self.notes}


Log = Callable[[str], None]


# ---- models ---------------------------------------------------------------------------------------------------

@dataclass
class ModelSpec:
    """A benchmark model: `load()` gives a fresh HFModel each call (LoRA wrapping mutates the module tree)."""

    name: str
    load: Callable[[], HFModel]
    info: dict[str, Any]

    @property
    def on_gpu(self) -> bool:
        return self.info.get("device") == "cuda"


def count_params(model: torch.nn.Module) -> int:
    """Distinct parameters (a tied embedding/head counts once)."""
    return sum(p.numel() for p in model.parameters())


def corpus(n_lines: int = 20000, seed: int = 0) -> list[str]:
    """Generated tool-calling text: schemas, requests, JSON calls and made-up words (for a realistic vocabulary)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        kind = rng.randrange(4)
        if kind == 0:
            lines.append(tool_schema(rng))
        elif kind == 1:
            lines.append(user_request(rng))
        elif kind == 2:
            lines.append(tool_call(rng))
        else:
            lines.append(" ".join(pseudo_word(rng) for _ in range(rng.randint(5, 15))))
    return lines


def pseudo_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4)))


def tool_schema(rng: random.Random) -> str:
    name = rng.choice(list(TOOLS))
    props = {arg: {"type": rng.choice(["string", "integer", "number"]),
                   "description": " ".join(pseudo_word(rng) for _ in range(rng.randint(2, 5)))} for arg in TOOLS[name]}
    schema = {"name": name, "description": f"{name.replace('_', ' ')} {pseudo_word(rng)} {pseudo_word(rng)}",
              "parameters": {"type": "object", "properties": props, "required": TOOLS[name][:1]}}
    return json.dumps(schema)


def user_request(rng: random.Random) -> str:
    name = rng.choice(list(TOOLS))
    args = ", ".join(f"{a} {rng.choice(VALUES)}" for a in TOOLS[name])
    return f"Please {name.replace('_', ' ')} with {args}, {pseudo_word(rng)} {pseudo_word(rng)}."


def tool_call(rng: random.Random, name: str | None = None) -> str:
    name = name or rng.choice(list(TOOLS))
    return json.dumps([{"name": name, "arguments": {a: rng.choice(VALUES) for a in TOOLS[name]}}])


def bench_tokenizer(vocab_size: int) -> Any:
    """The benchmark tokenizer of this vocabulary size, trained once and cached."""
    from transformers import AutoTokenizer

    path = CACHE / f"tokenizer-{vocab_size}"
    if not (path / "tokenizer.json").exists():
        tokenizer = train_tokenizer(corpus(), vocab_size=vocab_size)
        tokenizer.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def cached_model_dir(name: str, vocab_size: int, sizes: dict[str, int], root: Path = CACHE) -> Path:
    """Build (once) and cache a Qwen2-architecture model; rebuilt when its recorded sizes differ."""
    out = root / f"model-{name}"
    recipe = {"vocab_size": vocab_size, **sizes, "seed": 0}
    marker = out / "bench_recipe.json"
    if marker.exists() and json.loads(marker.read_text()) == recipe:
        return out
    build_tiny_model(out, bench_tokenizer(vocab_size), arch="qwen2", seed=0, **sizes)
    marker.write_text(json.dumps(recipe))
    return out


def local_spec(name: str, path: Path) -> ModelSpec:
    """A saved model loaded in float32 on the CPU (fresh per `load()`)."""
    def load() -> HFModel:
        return HFModel.from_pretrained(str(path), dtype="float32", device="cpu")

    probe = load()
    cfg = probe.model.config
    info = {"params": count_params(probe.model), "hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers,
            "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads,
            "intermediate": cfg.intermediate_size, "vocab": cfg.vocab_size, "dtype": "float32", "device": "cpu",
            "path": str(path)}
    return ModelSpec(name, load, info)


def config_model_spec(name: str, tokenizer: Any, shape: dict[str, int], device: str = "cuda",
                      dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> ModelSpec:
    """A randomly initialised model of `shape` built straight on `device` (never saved, never downloaded).

    The embedding has `shape["vocab_size"]` rows even when the tokenizer uses fewer ids, so the LM head costs
    what the real model's does while the text still goes through an ordinary tokenizer.
    """
    from transformers import AutoModelForCausalLM

    sizes = {k: v for k, v in shape.items() if k != "vocab_size"}
    config = tiny_config("qwen2", shape["vocab_size"], max_positions=32768, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, **sizes)

    def load() -> HFModel:
        torch.manual_seed(seed)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        return HFModel(model, tokenizer, name=name)

    info = {"params": _shape_params(shape), **sizes, "vocab": shape["vocab_size"],
            "dtype": str(dtype).removeprefix("torch."), "device": device, "path": None}
    return ModelSpec(name, load, info)


def _shape_params(shape: dict[str, int]) -> int:
    """Parameter count of a Qwen2 model with tied embeddings (q/k/v biases, RMSNorm weights), without building it."""
    h, inter, layers = shape["hidden"], shape["intermediate"], shape["layers"]
    kv = h // shape["heads"] * shape["kv_heads"]
    attention = h * h + h + 2 * (h * kv + kv) + h * h
    per_layer = attention + 3 * h * inter + 2 * h
    return shape["vocab_size"] * h + layers * per_layer + h


def default_models(quick: bool) -> list[ModelSpec]:
    """~10M (and ~50M unless quick) CPU models, plus Qwen2.5-1.5B's shape in bf16 when a CUDA GPU is present."""
    names = ["10M"] if quick else list(CPU_MODELS)
    specs = [local_spec(name, cached_model_dir(name, *CPU_MODELS[name])) for name in names]
    if torch.cuda.is_available():
        specs.append(config_model_spec("1.5B-shape", bench_tokenizer(16384), QWEN25_15B))
    return specs


# ---- synthetic inputs -----------------------------------------------------------------------------------------

def chat_prompt_of_length(model: HFModel, n_tokens: int, seed: int = 0) -> str:
    """A chat prompt (tool catalogue as system turn, one request) of exactly `n_tokens` tokens.

    The catalogue is cut to k of its tokens, k found by bisection; re-encoding can merge differently at the cut,
    hence a search and a check of the exact length rather than one subtraction.
    """
    rng = random.Random(seed)
    request = user_request(rng)
    source: list[int] = []
    while len(source) < n_tokens + 64:
        source += model.encode(tool_schema(rng) + "\n")

    def render(k: int) -> str:
        system = "You can call these functions:\n" + model.decode(source[:k])
        return model.chat_prompt([{"role": "system", "content": system}, {"role": "user", "content": request}])

    def length(k: int) -> int:
        return len(model.encode(render(k)))

    if length(0) > n_tokens:
        raise ValueError(f"a prompt needs at least {length(0)} tokens, asked for {n_tokens}")
    lo, hi = 0, len(source)  # the smallest cut whose prompt is at least n_tokens long (length grows with k)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if length(mid) < n_tokens else (lo, mid)
    for k in sorted(range(max(0, lo - 4), lo + 5), key=lambda k: abs(k - lo)):
        if length(k) == n_tokens:
            return render(k)
    raise ValueError(f"could not make a prompt of exactly {n_tokens} tokens")


def candidates(n: int, seed: int = 0) -> list[str]:
    """N gate candidates: distinct tool-call answer prefixes such as `[{"name": "get_weather", "arguments": {...`."""
    rng = random.Random(seed)
    names = list(TOOLS)
    out = []
    for i in range(n):
        name = names[i % len(names)]
        arg = TOOLS[name][i // len(names) % len(TOOLS[name])]
        out.append(f'[{{"name": "{name}", "arguments": {{"{arg}": "{rng.choice(VALUES)}"')
    return out


def example_pair(model: HFModel, n_tokens: int, seed: int = 0) -> tuple[str, str]:
    """A synthetic (prompt, answer) training example of about `n_tokens` tokens (answer: one JSON tool call)."""
    answer = tool_call(random.Random(seed))
    answer_len = len(model.encode(answer)) + 1  # + the end-of-turn token the learner appends
    return chat_prompt_of_length(model, max(n_tokens - answer_len, 24), seed=seed + 1), answer


# ---- timing ---------------------------------------------------------------------------------------------------

def synchronize() -> None:
    """Wait for queued GPU work, so a timer stops when the work is done (no-op on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """(wall seconds, result) of one call, GPU work included."""
    synchronize()
    start = time.perf_counter()
    result = fn()
    synchronize()
    return time.perf_counter() - start, result


def measure(fn: Callable[[], T], repeats: int, warmup: int = 1) -> tuple[float, T]:
    """(median wall seconds of `repeats` calls after `warmup` untimed ones, the last call's result)."""
    for _ in range(warmup):
        fn()
    runs = [timed(fn) for _ in range(max(1, repeats))]
    return statistics.median(seconds for seconds, _ in runs), runs[-1][1]


class Phases:
    """Per-phase wall times of repeated multi-phase runs: `with phases("train"): ...`, then medians."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self._name = ""
        self._start = 0.0

    def __call__(self, name: str) -> Phases:
        self._name = name
        return self

    def __enter__(self) -> None:
        synchronize()
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        synchronize()
        self.samples.setdefault(self._name, []).append(time.perf_counter() - self._start)

    def medians(self) -> dict[str, float]:
        return {name: statistics.median(values) for name, values in self.samples.items()}

    def clear(self) -> None:
        self.samples = {}


def matmul_flops(size: int, device: str, dtype: torch.dtype, repeats: int = 3) -> float:
    """The machine's dense matmul FLOP/s: a `size` x `size` product (2 n^3 FLOPs), median of `repeats`."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds, _ = measure(lambda: a @ b, repeats=repeats, warmup=1)
    return 2 * size**3 / seconds


def release() -> None:
    """Return GPU memory held by models the caller has dropped (on the CPU, reference counting already did)."""
    if torch.cuda.is_available():
        import gc

        gc.collect()
        torch.cuda.empty_cache()


# ---- metadata -------------------------------------------------------------------------------------------------

def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads, load average and GPU name: what the timings depend on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_average": load, "gpu": gpu,
            "platform": platform.platform(), "python": platform.python_version()}


def machine_line() -> str:
    """One line for a benchmark's header and footer: the machine, torch's threads and the load average."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
            f"load average {load}")


def git_dirty(repo: Path = REPO) -> bool | None:
    """Whether tracked files differ from HEAD (the timings then belong to a working tree, not the commit)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip())
