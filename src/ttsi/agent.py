"""The self-improving agent: the paper's Algorithm 1, one input at a time.

    H  self-awareness    u = margin of softmax over candidate log-probs;  uncertain iff u < tau
    G  self-augmentation  if uncertain: K new (x', y') pairs similar to x (model itself: TT-SI; teacher: TT-D)
    T  self-learning      LoRA steps on the pairs, answer x, reset to the base parameters
    else                  answer x with the base model
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ttsi.augment import SelfSynthesizer, Synthesis, Synthesizer, SyntheticPair
from ttsi.awareness import Uncertainty, assess
from ttsi.config import AgentConfig
from ttsi.errors import TaskError
from ttsi.formats import AnswerFormat, AnswerParseError, get_format
from ttsi.learn import Learner, TrainLog
from ttsi.model import HFModel
from ttsi.prompts import answer_messages
from ttsi.task import Call, Task

STAGES = ("gate_s", "synthesize_s", "train_s", "answer_s", "reset_s")


@dataclass
class Response:
    """The answer to one input and the trace of how it was reached."""

    id: str
    method: str
    uncertainty: Uncertainty | None  # None for a task without tools
    decision: str  # adapt | skip: what the gate and the method decided
    reason: str  # why, and why not adapted when a decision to adapt fell back
    adapted: bool = False  # whether an adapted model wrote the answer
    answer: list[Call] | None = None  # None when the output does not parse
    raw: str = ""  # the greedy answer
    parse_error: str | None = None
    samples: list[str] = field(default_factory=list)  # sampled answers (config.samples > 1), same model state
    base_raw: str | None = None  # the base model's answer to an input decided for adaptation (config.record_base)
    synthetic: list[SyntheticPair] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    train: TrainLog | None = None
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    scoring_prompt: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "method": self.method,
            "answer": None if self.answer is None else [c.to_dict() for c in self.answer],
            "raw": self.raw, "parse_error": self.parse_error, "samples": self.samples, "base_raw": self.base_raw,
            "uncertainty": None if self.uncertainty is None else self.uncertainty.to_dict(),
            "decision": self.decision, "adapted": self.adapted, "reason": self.reason,
            "synthetic": [p.to_dict() for p in self.synthetic], "rejected": self.rejected,
            "train": {"steps": 0, "losses": [], "lrs": []} if self.train is None else self.train.to_dict(),
            "timings": self.timings, "scoring_prompt": self.scoring_prompt,
        }


@contextmanager
def stage(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] += time.perf_counter() - start


def input_seed(seed: int, task_id: str) -> int:
    """A per-input seed that does not depend on the order inputs arrive in."""
    return zlib.crc32(f"{seed}:{task_id}".encode())


class SelfImprovingAgent:
    """Answers tasks with test-time self-improvement; the base model is unchanged after every `respond`."""

    def __init__(self, model: HFModel, config: AgentConfig | None = None, teacher: Synthesizer | None = None):
        self.config = (config or AgentConfig()).validate()
        self.model = model
        self.learner = Learner.attach(model, self.config.learn, seed=self.config.seed)
        self.synthesizer: Synthesizer = SelfSynthesizer(model, self.config.synthesis)
        if self.config.uses_teacher:
            if teacher is None:
                from ttsi.teacher import TeacherSynthesizer

                teacher = TeacherSynthesizer(self.config.teacher, self.config.synthesis)
            self.synthesizer = teacher

    def respond(self, task: Task) -> Response:
        method, fmt = self.config.method, get_format(task.format)
        self._check(task)
        timings = dict.fromkeys(STAGES, 0.0)
        prompt = self.model.chat_prompt(answer_messages(task, fmt))
        seed = input_seed(self.config.seed, task.id)

        with stage(timings, "gate_s"):  # H: self-awareness
            u = assess(self.model, prompt, task.tools, fmt, self.config.gate) if task.tools else None
        adapt, reason = self._decide(u)
        trace = Response(id=task.id, method=method, uncertainty=u, decision="adapt" if adapt else "skip",
                         reason=reason, timings=timings, scoring_prompt=prompt)
        if not adapt:
            return self._answer(trace, prompt, fmt, seed)
        if self.config.record_base:  # measurement only: what the base model would have answered
            trace.base_raw = self.model.generate([prompt], max_new_tokens=self.config.max_new_tokens)[0]

        with stage(timings, "synthesize_s"):  # G: self-augmentation
            data = self._synthesize(task, fmt, seed)
        trace.synthetic, trace.rejected = data.pairs, data.rejected
        if not data.pairs:
            trace.reason = data.error or f"no valid synthetic pair ({_counts(data.rejected)}): answered unadapted"
            return self._answer(trace, prompt, fmt, seed)

        if method == "tt-icl":  # training-free variant: the pairs become demonstrations
            demos = [(p.query, fmt.render(p.answer, task.tools)) for p in data.pairs]
            trace.reason += "; synthetic pairs used as in-context demonstrations"
            return self._answer(trace, self.model.chat_prompt(answer_messages(task, fmt, demos)), fmt, seed)

        examples = [(self._example_prompt(task, p, fmt), fmt.render(p.answer, task.tools)) for p in data.pairs]
        try:  # T: self-learning, answer, reset
            with stage(timings, "train_s"):
                trace.train = self.learner.adapt(examples, seed)
            trace.adapted = True
            return self._answer(trace, prompt, fmt, seed)
        finally:
            with stage(timings, "reset_s"):
                self.learner.reset()

    # ---- the pieces of the loop ------------------------------------------------------------------------------

    def _check(self, task: Task) -> None:
        if self.config.method == "oracle" and not task.answer:
            raise TaskError(f"task {task.id!r} has no gold answer: the oracle ablation trains on it")
        if not task.tools and self.config.method != "base":
            raise TaskError(f"task {task.id!r} has no tools: the gate has no candidate actions to score "
                            "(use method base to answer it without test-time learning)")

    def _decide(self, u: Uncertainty | None) -> tuple[bool, str]:
        method = self.config.method
        if method == "base" or u is None:
            return False, "method base: answered by the base model"
        verdict = f"{u.measure} {u.confidence:.4f} {'<' if u.uncertain else '>='} tau {u.tau}"
        if method == "no-gate":
            return True, f"no-gate: adapted regardless ({verdict})"
        if method == "confident-only":
            return not u.uncertain, f"confident-only: {verdict}"
        return u.uncertain, f"{'uncertain' if u.uncertain else 'confident'}: {verdict}"

    def _synthesize(self, task: Task, fmt: AnswerFormat, seed: int) -> Synthesis:
        if self.config.method == "oracle":  # upper bound: the input's own gold label
            return Synthesis([SyntheticPair(task.query, list(task.answer or []), "gold")])
        return self.synthesizer.synthesize(task, fmt, seed)

    def _example_prompt(self, task: Task, pair: SyntheticPair, fmt: AnswerFormat) -> str:
        source = task if pair.source == "gold" else task.with_query(pair.query)
        return self.model.chat_prompt(answer_messages(source, fmt))

    def _answer(self, trace: Response, prompt: str, fmt: AnswerFormat, seed: int) -> Response:
        c = self.config
        with stage(trace.timings, "answer_s"):
            trace.raw = self.model.generate([prompt], max_new_tokens=c.max_new_tokens)[0]
            if c.samples > 1:
                trace.samples = self.model.generate([prompt], max_new_tokens=c.max_new_tokens,
                                                    temperature=c.sample_temperature, num_return_sequences=c.samples,
                                                    seed=seed)
        try:
            trace.answer = fmt.parse(trace.raw)
        except AnswerParseError as e:
            trace.parse_error = str(e)
        return trace


def _counts(rejected: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(rejected.items())) or "no drafts"
