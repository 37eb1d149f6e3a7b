"""The self-improving agent: the paper's Algorithm 1, one input at a time (`respond`) or a batch at once.

    H  self-awareness    u = margin of softmax over candidate log-probs;  uncertain iff u < tau
    G  self-augmentation  if uncertain: K new (x', y') pairs similar to x (model itself: TT-SI; teacher: TT-D)
    T  self-learning      LoRA steps on the pairs, answer x, reset to the base parameters
    else                  answer x with the base model

`respond_batch` makes the same decisions for several inputs but trains the adapted ones together, each in its own
LoRA slot, and answers all of them in one batched generation.
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
from ttsi.multilora import NO_ADAPTER
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
    batch: int = 1  # inputs answered (and, if adapted, trained) together in one batch with this one

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "method": self.method,
            "answer": None if self.answer is None else [c.to_dict() for c in self.answer],
            "raw": self.raw, "parse_error": self.parse_error, "samples": self.samples, "base_raw": self.base_raw,
            "uncertainty": None if self.uncertainty is None else self.uncertainty.to_dict(),
            "decision": self.decision, "adapted": self.adapted, "reason": self.reason,
            "synthetic": [p.to_dict() for p in self.synthetic], "rejected": self.rejected,
            "train": {"steps": 0, "losses": [], "lrs": []} if self.train is None else self.train.to_dict(),
            "timings": self.timings, "scoring_prompt": self.scoring_prompt, "batch": self.batch,
        }


@contextmanager
def stage(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] += time.perf_counter() - start


@contextmanager
def shared_stage(traces: list[Response], name: str) -> Iterator[None]:
    """Time one stage shared by several inputs and charge each an equal share."""
    start = time.perf_counter()
    try:
        yield
    finally:
        share = (time.perf_counter() - start) / max(1, len(traces))
        for trace in traces:
            trace.timings[name] += share


def input_seed(seed: int, task_id: str) -> int:
    """A per-input seed that does not depend on the order inputs arrive in."""
    return zlib.crc32(f"{seed}:{task_id}".encode())


@dataclass
class _Input:
    """One input on its way through the loop: what the stages before training produced for it."""

    task: Task
    fmt: AnswerFormat
    prompt: str  # the prompt the answer is generated from (with demonstrations for tt-icl)
    seed: int
    trace: Response
    examples: list[tuple[str, str]] = field(default_factory=list)  # training pairs; empty: answered unadapted
    slot: int = NO_ADAPTER  # the adapter slot it is answered with


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
        self._check(task)
        item = self._assess(task)  # H: self-awareness
        if item.trace.decision == "adapt":
            self._record_base([item])
            self._augment(item)  # G: self-augmentation (pairs to train on, or demonstrations for tt-icl)
        if not item.examples:
            return self._answer([item])[0]
        try:  # T: self-learning, answer, reset
            with stage(item.trace.timings, "train_s"):
                item.trace.train = self.learner.adapt(item.examples, item.seed)
            item.trace.adapted, item.slot = True, 0
            return self._answer([item])[0]
        finally:
            with stage(item.trace.timings, "reset_s"):
                self.learner.reset()

    def respond_batch(self, tasks: list[Task]) -> list[Response]:
        """`respond` on each task, with the inputs that adapt trained together and all answered together.

        Every input gets the same gate, decision, synthetic pairs (its own seed), training and greedy answer as
        `respond` would give it, up to floating-point rounding of batched arithmetic: the adapted inputs train in
        one multi-slot LoRA training (slot i for the i-th of them, see `Learner.adapt_many`), then every input is
        answered in one batched generation, each row with its own slot (no adapter for the inputs that did not
        adapt), and the slots are reset. Shared stages are timed once and split evenly: each input's `train_s`
        and `reset_s` is the batch time over the number of adapted inputs, `answer_s` the batch time over all
        inputs; `Response.batch` is the number of inputs in the batch. With sampled answers (`samples` > 1) the
        samples would draw from one RNG shared by the batch, so each input is answered by `respond` instead.
        """
        if len(tasks) <= 1 or self.config.samples > 1:
            return [self.respond(task) for task in tasks]
        for task in tasks:
            self._check(task)
        items = [self._assess(task) for task in tasks]
        decided = [item for item in items if item.trace.decision == "adapt"]
        self._record_base(decided)
        for item in decided:
            self._augment(item)
        learners = [item for item in items if item.examples]
        for item in items:
            item.trace.batch = len(items)
        if not learners:
            return self._answer(items)
        try:
            with shared_stage([item.trace for item in learners], "train_s"):
                logs = self.learner.adapt_many([item.examples for item in learners],
                                               [item.seed for item in learners])
            for slot, (item, log) in enumerate(zip(learners, logs, strict=True)):
                item.trace.train, item.trace.adapted, item.slot = log, True, slot
            return self._answer(items)
        finally:
            with shared_stage([item.trace for item in learners], "reset_s"):
                self.learner.reset()

    # ---- the pieces of the loop ------------------------------------------------------------------------------

    def _check(self, task: Task) -> None:
        if self.config.method == "oracle" and not task.answer:
            raise TaskError(f"task {task.id!r} has no gold answer: the oracle ablation trains on it")
        if not task.tools and self.config.method != "base":
            raise TaskError(f"task {task.id!r} has no tools: the gate has no candidate actions to score "
                            "(use method base to answer it without test-time learning)")

    def _assess(self, task: Task) -> _Input:
        """H: score the candidate actions and decide whether this input adapts."""
        fmt = get_format(task.format)
        timings = dict.fromkeys(STAGES, 0.0)
        prompt = self.model.chat_prompt(answer_messages(task, fmt))
        with stage(timings, "gate_s"):
            u = assess(self.model, prompt, task.tools, fmt, self.config.gate) if task.tools else None
        adapt, reason = self._decide(u)
        trace = Response(id=task.id, method=self.config.method, uncertainty=u, decision="adapt" if adapt else "skip",
                         reason=reason, timings=timings, scoring_prompt=prompt)
        return _Input(task, fmt, prompt, input_seed(self.config.seed, task.id), trace)

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

    def _record_base(self, items: list[_Input]) -> None:
        """Measurement only (config.record_base): what the base model answers to inputs decided for adaptation."""
        if self.config.record_base and items:
            answers = self._generate([item.prompt for item in items], [NO_ADAPTER] * len(items),
                                     max_new_tokens=self.config.max_new_tokens)
            for item, answer in zip(items, answers, strict=True):
                item.trace.base_raw = answer

    def _augment(self, item: _Input) -> None:
        """G: synthesize pairs; they become training examples, or demonstrations in the prompt for tt-icl."""
        task, fmt, trace = item.task, item.fmt, item.trace
        with stage(trace.timings, "synthesize_s"):
            data = self._synthesize(task, fmt, item.seed)
        trace.synthetic, trace.rejected = data.pairs, data.rejected
        if not data.pairs:
            trace.reason = data.error or f"no valid synthetic pair ({_counts(data.rejected)}): answered unadapted"
        elif self.config.method == "tt-icl":  # training-free variant: the pairs become demonstrations
            demos = [(p.query, fmt.render(p.answer, task.tools)) for p in data.pairs]
            trace.reason += "; synthetic pairs used as in-context demonstrations"
            item.prompt = self.model.chat_prompt(answer_messages(task, fmt, demos))
        else:
            item.examples = [(self._example_prompt(task, p, fmt), fmt.render(p.answer, task.tools))
                             for p in data.pairs]

    def _synthesize(self, task: Task, fmt: AnswerFormat, seed: int) -> Synthesis:
        if self.config.method == "oracle":  # upper bound: the input's own gold label
            return Synthesis([SyntheticPair(task.query, list(task.answer or []), "gold")])
        return self.synthesizer.synthesize(task, fmt, seed)

    def _example_prompt(self, task: Task, pair: SyntheticPair, fmt: AnswerFormat) -> str:
        source = task if pair.source == "gold" else task.with_query(pair.query)
        return self.model.chat_prompt(answer_messages(source, fmt))

    def _answer(self, items: list[_Input]) -> list[Response]:
        """Greedy answers to every input in one generation, each with its slot (and samples, if configured)."""
        c = self.config
        with shared_stage([item.trace for item in items], "answer_s"):
            raws = self._generate([item.prompt for item in items], [item.slot for item in items],
                                  max_new_tokens=c.max_new_tokens)
            if c.samples > 1:  # seeded per input: one generation each (respond_batch never gets here)
                for item in items:
                    item.trace.samples = self._generate([item.prompt], [item.slot], max_new_tokens=c.max_new_tokens,
                                                        temperature=c.sample_temperature,
                                                        num_return_sequences=c.samples, seed=item.seed)
        for item, raw in zip(items, raws, strict=True):
            item.trace.raw = raw
            try:
                item.trace.answer = item.fmt.parse(raw)
            except AnswerParseError as e:
                item.trace.parse_error = str(e)
        return [item.trace for item in items]

    def _generate(self, prompts: list[str], slots: list[int], **kwargs: Any) -> list[str]:
        """The model's completions, prompt i with adapter slot slots[i] (NO_ADAPTER: the base model)."""
        engine = self.learner.engine
        if engine is None:  # no adapter installed: every row is the base model
            return self.model.generate(prompts, **kwargs)
        return engine.generate(prompts, slots, **kwargs)


def _counts(rejected: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(rejected.items())) or "no drafts"
