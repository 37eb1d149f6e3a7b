"""Typed settings for every stage, with the paper's defaults; serialisable into every run's output."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ttsi.errors import ConfigError

METHODS = ("base", "tt-si", "tt-d", "tt-icl", "no-gate", "confident-only", "oracle")
MEASURES = ("margin", "entropy", "perplexity", "token")
TOKEN_STATS = ("top1", "margin", "entropy")
VERIFIERS = ("schema", "answer-check", "consistency")  # what synthetic pairs may be checked by (ttsi.verify)
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed


@dataclass
class GateConfig:
    """Self-awareness: Relative Softmax Scoring over the task's candidate actions."""

    tau: float = 0.95  # uncertain iff confidence < tau (paper: 0.95 flags 65% of SealTool)
    measure: str = "margin"  # margin (RSS, the paper) | entropy | perplexity, all confidences in [0, 1]
    candidates: str = "name"  # name: answer prefix naming the function | call: greedy full first call
    normalize: str = "sum"  # sum: summed token log-prob | mean: length-normalised
    call_max_new_tokens: int = 96  # budget for completing each candidate call when candidates == "call"
    # measure "token" (ttsi.token_gate): the greedy answer's per-position certainty against a reference profile;
    # uncertain when at least `token_count` positions (or, if set instead, a share `token_share`) are less sure
    # than the profile's `token_percentile`-th percentile of `token_stat`. tau is not used by this measure.
    reference: str | None = None  # the profile file `ttsi calibrate --profile` writes
    token_stat: str = "top1"  # top1 | margin | entropy
    token_percentile: float = 5.0
    token_count: int | None = 2
    token_share: float | None = None


@dataclass
class SynthesisConfig:
    """Self-augmentation: K new (x', y') pairs similar to x, written without x's label."""

    k: int = 1  # the paper's main setting: a single synthetic example
    oversample: int = 2  # sample k * oversample drafts, keep the first k that validate
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 256
    # Checks every draft must pass (ttsi.verify): schema (calls fit the tools), answer-check (a math solution's
    # arithmetic recomputes), consistency (the model reproduces the pair's answer). [] keeps every draft that parses.
    verify: list[str] = field(default_factory=lambda: ["schema"])
    consistency_samples: int = 4  # M: answers sampled per synthetic question
    consistency_temperature: float = 0.7  # T: their temperature (0: one greedy answer)
    consistency_agree: float = 0.5  # q: the share of the M answers that must equal the pair's answer


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
        if g.measure == "token":
            _check_token_gate(g)
        _check_verify(s, self.method if self.uses_teacher and not teacher_given else None)
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


def _check_token_gate(g: GateConfig) -> None:
    """The token gate's settings: a reference profile, a known statistic, a percentile, one of count or share."""
    if not g.reference:
        raise ConfigError("the token gate (measure token) needs a reference profile: build one with "
                          "ttsi calibrate --profile FILE --tasks REFERENCE, then give --reference FILE")
    if g.token_stat not in TOKEN_STATS:
        raise ConfigError(f"unknown token statistic {g.token_stat!r}; choose one of {', '.join(TOKEN_STATS)}")
    p = g.token_percentile
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not math.isfinite(p) or not 0 <= p <= 100:
        raise ConfigError(f"token percentile must be a number in [0, 100], got {p!r}")
    if (g.token_count is None) == (g.token_share is None):
        raise ConfigError("give the token gate exactly one of a position count (token_count) or a share "
                          "(token_share)")
    if g.token_count is not None and (not isinstance(g.token_count, int) or isinstance(g.token_count, bool)
                                      or g.token_count < 1):
        raise ConfigError(f"token count must be an integer of at least 1, got {g.token_count!r}")
    share = g.token_share
    if share is not None and (not isinstance(share, (int, float)) or isinstance(share, bool)
                              or not math.isfinite(share) or not 0 < share <= 1):
        raise ConfigError(f"token share must be a number in (0, 1], got {share!r}")


def _check_verify(s: SynthesisConfig, teacher_method: str | None) -> None:
    """The verifiers' names and the consistency settings. `teacher_method`: set when a teacher endpoint writes the
    pairs (it has no local model to answer them again, so consistency cannot run)."""
    if not isinstance(s.verify, (list, tuple)) or not all(isinstance(v, str) for v in s.verify):
        raise ConfigError(f"synthesis verify must be a list of verifier names, got {s.verify!r}")
    unknown = [v for v in s.verify if v not in VERIFIERS]
    if unknown:
        raise ConfigError(f"unknown verifier {unknown[0]!r}; choose from {', '.join(VERIFIERS)} (or none)")
    m, t, q = s.consistency_samples, s.consistency_temperature, s.consistency_agree
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise ConfigError(f"consistency samples must be an integer of at least 1, got {m!r}")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
        raise ConfigError(f"consistency temperature must be a finite number >= 0, got {t!r}")
    if not isinstance(q, (int, float)) or isinstance(q, bool) or not math.isfinite(q) or not 0 < q <= 1:
        raise ConfigError(f"consistency agree must be a number in (0, 1], got {q!r}")
    if "consistency" in s.verify and teacher_method is not None:
        raise ConfigError(f"the consistency verifier has the model that wrote the pairs answer them again; method "
                          f"{teacher_method} writes them at a teacher endpoint (verify with schema instead)")
