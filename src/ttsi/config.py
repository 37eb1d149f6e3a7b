"""Typed settings for every stage, with the paper's defaults; serialisable into every run's output."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ttsi.errors import ConfigError

METHODS = ("base", "tt-si", "tt-d", "tt-icl", "no-gate", "confident-only", "oracle")
MEASURES = ("margin", "entropy", "perplexity")
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed


@dataclass
class GateConfig:
    """Self-awareness: Relative Softmax Scoring over the task's candidate actions."""

    tau: float = 0.95  # uncertain iff confidence < tau (paper: 0.95 flags 65% of SealTool)
    measure: str = "margin"  # margin (RSS, the paper) | entropy | perplexity, all confidences in [0, 1]
    candidates: str = "name"  # name: answer prefix naming the function | call: greedy full first call
    normalize: str = "sum"  # sum: summed token log-prob | mean: length-normalised
    call_max_new_tokens: int = 96  # budget for completing each candidate call when candidates == "call"


@dataclass
class SynthesisConfig:
    """Self-augmentation: K new (x', y') pairs similar to x, written without x's label."""

    k: int = 1  # the paper's main setting: a single synthetic example
    oversample: int = 2  # sample k * oversample drafts, keep the first k that validate
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 256


@dataclass
class TeacherConfig:
    """TT-D: a stronger model behind any OpenAI-compatible chat endpoint."""

    url: str | None = None  # base URL, e.g. http://localhost:8000/v1
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never passed on a command line
    timeout_s: float = 60.0
    retries: int = 2


@dataclass
class LearnConfig:
    """Self-learning: LoRA on the frozen base, a few steps, loss on answer tokens only."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    epochs: int = 5
    lr: float = 1e-4
    warmup_ratio: float = 0.03  # warmup steps = ceil(ratio * total), as in Hugging Face Trainer
    batch_size: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0  # Hugging Face Trainer's default clip


@dataclass
class AgentConfig:
    """Everything one agent run depends on; `to_dict()` goes into every output."""

    method: str = "tt-si"
    gate: GateConfig = field(default_factory=GateConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    learn: LearnConfig = field(default_factory=LearnConfig)
    icl_source: str = "self"  # tt-icl demonstrations come from the model itself or the teacher
    max_new_tokens: int = 256  # answer budget
    temperature: float = 0.0  # the answer's sampling temperature: 0 is greedy (the paper); above, seeded per input
    top_p: float = 1.0  # the answer's nucleus, when sampled
    samples: int = 1  # answers sampled besides the greedy one, for majority vote and pass@k (1: greedy only)
    sample_temperature: float = 0.7
    record_base: bool = False  # also answer adapted inputs with the base model (gate AUROC, tau sweeps, fixed/broken)
    seed: int = 0

    def validate(self, teacher_given: bool = False) -> AgentConfig:
        """Raise ConfigError naming the first setting that cannot work.

        `teacher_given`: the teacher is passed to the agent as a `Synthesizer` object (a local model, as in the demo),
        so the config need not name a teacher endpoint.
        """
        g, s, t, lc = self.gate, self.synthesis, self.teacher, self.learn
        numbers = {"tau": g.tau, "synthesis temperature": s.temperature, "synthesis top_p": s.top_p,
                   "learning rate": lc.lr, "LoRA alpha": lc.alpha, "LoRA dropout": lc.dropout,
                   "warmup ratio": lc.warmup_ratio, "weight decay": lc.weight_decay,
                   "max_grad_norm": 1.0 if lc.max_grad_norm is None else lc.max_grad_norm,
                   "sample temperature": self.sample_temperature, "teacher timeout": t.timeout_s,
                   "temperature": self.temperature, "top_p": self.top_p}
        for name, value in numbers.items():  # NaN passes every comparison below, and inf trains to NaN
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        counts = {"K": s.k, "oversample": s.oversample, "LoRA rank": lc.rank, "epochs": lc.epochs,
                  "batch size": lc.batch_size, "max_new_tokens": self.max_new_tokens,
                  "synthesis max_new_tokens": s.max_new_tokens, "gate call_max_new_tokens": g.call_max_new_tokens,
                  "samples": self.samples, "teacher retries": t.retries}
        for name, value in counts.items():  # 1.5 tokens or "8" epochs fail deep inside, or silently round
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        checks = [
            (isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED,
             f"seed must be an integer in [0, 2^63 - 1], got {self.seed!r}"),
            (self.method in METHODS, f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}"),
            (0.0 <= g.tau <= 1.0, f"tau must be in [0, 1], got {g.tau}"),
            (g.measure in MEASURES, f"unknown gate measure {g.measure!r}; choose one of {', '.join(MEASURES)}"),
            (g.candidates in ("name", "call"), f"gate candidates must be 'name' or 'call', got {g.candidates!r}"),
            (g.normalize in ("sum", "mean"), f"gate normalize must be 'sum' or 'mean', got {g.normalize!r}"),
            (s.k >= 1, f"K (synthetic examples per input) must be at least 1, got {s.k}"),
            (s.oversample >= 1, f"oversample must be at least 1, got {s.oversample}"),
            (s.temperature >= 0, f"synthesis temperature must be >= 0, got {s.temperature}"),
            (0 < s.top_p <= 1, f"synthesis top_p must be in (0, 1], got {s.top_p}"),
            (lc.rank >= 1 and lc.alpha > 0, f"LoRA rank and alpha must be positive, got r={lc.rank} alpha={lc.alpha}"),
            (lc.epochs >= 1 and lc.batch_size >= 1, "epochs and batch size must be at least 1"),
            (lc.lr > 0, f"learning rate must be positive, got {lc.lr}"),
            (0 <= lc.warmup_ratio < 1, f"warmup ratio must be in [0, 1), got {lc.warmup_ratio}"),
            (self.max_new_tokens >= 1, "max_new_tokens must be at least 1"),
            (s.max_new_tokens >= 1, "synthesis max_new_tokens must be at least 1"),
            (g.call_max_new_tokens >= 1, "gate call_max_new_tokens must be at least 1"),
            (lc.max_grad_norm is None or lc.max_grad_norm > 0,
             f"max_grad_norm must be positive, got {lc.max_grad_norm}"),
            (0 <= lc.dropout < 1 and lc.weight_decay >= 0, "LoRA dropout must be in [0, 1) and weight decay >= 0"),
            (self.samples >= 1, f"samples must be at least 1, got {self.samples}"),
            (self.temperature >= 0 and 0 < self.top_p <= 1,
             f"temperature must be >= 0 and top_p in (0, 1], got {self.temperature} and {self.top_p}"),
            (self.samples == 1 or self.sample_temperature > 0, "sampled answers need a temperature above 0"),
            (self.icl_source in ("self", "teacher"),
             f"icl_source must be 'self' or 'teacher', got {self.icl_source!r}"),
            (t.timeout_s > 0 and t.retries >= 0, "teacher timeout must be positive and retries >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.uses_teacher and not teacher_given and not (t.url and t.model):
            raise ConfigError(f"method {self.method} needs a teacher: give --teacher-url and --teacher-model")
        return self

    @property
    def uses_teacher(self) -> bool:
        return self.method == "tt-d" or (self.method == "tt-icl" and self.icl_source == "teacher")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AgentConfig:
        sub = {"gate": GateConfig, "synthesis": SynthesisConfig, "teacher": TeacherConfig, "learn": LearnConfig}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown agent settings: {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key in sub:
                fields = {f.name for f in dataclasses.fields(sub[key])}
                bad = set(value) - fields
                if bad:
                    raise ConfigError(f"unknown {key} settings: {', '.join(sorted(bad))}")
                kwargs[key] = sub[key](**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)
