"""The self-improving agent: the paper's Algorithm 1 over a batch of inputs (`respond` is it on one input).

    H  self-awareness     u = margin of softmax over candidate log-probs;  uncertain iff u < tau
                          (or the token gate: the greedy answer's positions against a reference profile)
    G  self-augmentation  if uncertain: K new (x', y') pairs similar to x (the model itself: TT-SI; a teacher: TT-D),
                          kept when they pass the verifiers (schema, answer-check, consistency)
    T  self-learning      LoRA steps on the pairs, answer x, reset to the base parameters
    else                  answer x with the base model

Each stage runs once for the whole batch: the gate scores every prompt's candidates together, synthesis is one
batched generation, the adapted inputs train together (each in its own LoRA slot), and every input is answered
in one batched generation with its own slot. What an input gets does not depend on the batch it is in (each
has its own seed for sampling and its own adapter), up to floating-point rounding of batched arithmetic.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ttsi.augment import SelfSynthesizer, Synthesis, Synthesizer, SyntheticPair
from ttsi.awareness import Uncertainty, assess_many, assess_tokens, name_prefixes
from ttsi.config import AgentConfig
from ttsi.engine.cache import PrefixCache
from ttsi.errors import TaskError
from ttsi.formats import AnswerFormat, AnswerParseError, get_format
from ttsi.learn import NO_ADAPTER, Learner
from ttsi.model import HFModel
from ttsi.prompts import answer_prompt
from ttsi.task import Task
from ttsi.token_gate import TokenProfile
from ttsi.trace import STAGES, Decision, Response  # noqa: F401 (STAGES: still importable from here)
from ttsi.verify import check_task, task_kind

_WRITES = {"tools": "tool calls", "math": "math solutions", "qa": "short answers"}  # what a format of each kind writes


def input_seed(seed: int, task_id: str) -> int:
    """A per-input seed that does not depend on the order inputs arrive in."""
    return zlib.crc32(f"{seed}:{task_id}".encode())


def answer_seed(seed: int) -> int:
    """The seed a sampled answer (temperature > 0) draws from: the input's, apart from the extra samples' own."""
    return zlib.crc32(f"answer:{seed}".encode())


@dataclass
class _Input:
    """One input on its way through the loop: what the stages so far produced for it."""

    task: Task
    fmt: AnswerFormat
    prompt: str  # the prompt the answer is generated from (with demonstrations for tt-icl)
    seed: int
    trace: Response
    cache: PrefixCache | None = None  # the gate's KV cache of `prompt`, reused to answer it unadapted
    examples: list[tuple[str, str]] = field(default_factory=list)  # training pairs (prompt text, answer text)
    slot: int = NO_ADAPTER  # the adapter slot it is answered with
    greedy: str | None = None  # the token gate's greedy answer to `prompt`: the answer if it is not adapted


class SelfImprovingAgent:
    """Answers tasks with test-time self-improvement; the base model is unchanged after every `respond`.

    The agent owns its LoRA adapters on the model (installed on the first adaptation). One model carries one
    agent's adapters at a time: `close()` the agent (or use it as a context manager) before another one adapts
    on the same model; a second one that tries is refused with a ConfigError.
    """

    def __init__(self, model: HFModel, config: AgentConfig | None = None, teacher: Synthesizer | None = None):
        self.config = (config or AgentConfig()).validate(teacher_given=teacher is not None)
        self.model = model
        self.learner = Learner(model, self.config.learn, seed=self.config.seed)
        self.profile: TokenProfile | None = None
        if self.config.gate.measure == "token":  # the reference the token gate compares with, checked now
            assert self.config.gate.reference is not None
            self.profile = TokenProfile.load(self.config.gate.reference)
            self.profile.check_model(model.name, len(model.tokenizer), self.config.gate.reference)
        self.synthesizer: Synthesizer = SelfSynthesizer(model, self.config.synthesis)
        if self.config.uses_teacher:
            if teacher is None:
                from ttsi.teacher import TeacherSynthesizer

                teacher = TeacherSynthesizer(self.config.teacher, self.config.synthesis)
            self.synthesizer = teacher

    def __enter__(self) -> SelfImprovingAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Take this agent's adapter layers out of the model (it can adapt again later; they go back in)."""
        self.learner.close()

    def respond(self, task: Task) -> Response:
        """Algorithm 1 on one input."""
        return self.respond_batch([task])[0]

    def respond_batch(self, tasks: list[Task],
                      on_answer: Callable[[int, Response], None] | None = None) -> list[Response]:
        """Algorithm 1 on a batch of inputs: H, G and T each run once for all of them; then answer and reset.

        An input the model cannot read whole is refused (its response's `error` is "context_length"); the others
        go on as they would without it. `on_answer(i, response)`: called as soon as input i's response is final;
        given it, the inputs that will not adapt are answered right after the gate, without waiting for the
        others' synthesis and training (a second, smaller answer pass; the answers are the same).
        """
        for task in tasks:
            self._check(task)
        if not tasks:
            return []
        everything = [self._input(task, len(tasks)) for task in tasks]
        self._refuse_too_long(everything)
        inputs = [x for x in everything if x.trace.error is None]
        self._gate(inputs)  # H: self-awareness, every prompt at once
        chosen = [x for x in inputs if x.trace.decision is Decision.ADAPT]
        if on_answer is not None:  # the confident (and the refused) need no adaptation: final now
            self._answer([x for x in inputs if x.trace.decision is not Decision.ADAPT])
            for i, x in enumerate(everything):
                if x.trace.decision is not Decision.ADAPT or x.trace.error is not None:
                    on_answer(i, x.trace)
            inputs = chosen
        self._augment(chosen)  # G: self-augmentation (pairs to learn from, or demonstrations for tt-icl)
        learners = [x for x in chosen if x.examples]
        start = time.perf_counter()
        with self.learner.adapted([x.examples for x in learners], [x.seed for x in learners]) as logs:  # T
            _charge(learners, "train_s", time.perf_counter() - start)
            for slot, (x, log) in enumerate(zip(learners, logs, strict=True)):
                x.slot, x.trace.train, x.trace.adapted = slot, log, True
            self._answer(inputs)  # each input with its own slot, or the base model
            start = time.perf_counter()
        _charge(learners, "reset_s", time.perf_counter() - start)  # the block's exit reset every slot
        if on_answer is not None:
            for i, x in enumerate(everything):
                if x.trace.decision is Decision.ADAPT and x.trace.error is None:
                    on_answer(i, x.trace)
        return [x.trace for x in everything]

    # ---- the stages ------------------------------------------------------------------------------------------

    def _check(self, task: Task) -> None:
        fmt = get_format(task.format)
        if fmt.kind != task.kind:
            raise TaskError(f"format {fmt.name!r} writes {_WRITES[fmt.kind]}, but task {task.id!r} is a "
                            f"{task_kind(task)} task (give it a {task_kind(task)} format)")
        if self.config.method == "oracle" and not task.labelled:
            raise TaskError(f"task {task.id!r} has no gold answer: the oracle ablation trains on it")
        if not task.tools and self.config.method != "base" and self.profile is None:
            what = (f"is a {task.kind} task: its answer is free text, so" if task.free_form
                    else "has no tools:")
            raise TaskError(f"task {task.id!r} {what} the gate has no candidate actions to score (use the token "
                            "gate, --measure token with --reference PROFILE, or method base to answer it without "
                            "test-time learning)")
        if self.config.method not in ("base", "oracle"):  # a verifier that cannot judge the task: before any work
            check_task(self.config.synthesis.verify, task)

    def _input(self, task: Task, batch: int) -> _Input:
        fmt = get_format(task.format)
        prompt = answer_prompt(self.model, task, fmt)
        trace = Response(id=task.id, method=self.config.method, uncertainty=None, decision=Decision.SKIP,
                         reason="method base: answered by the base model", scoring_prompt=prompt, batch=batch)
        return _Input(task, fmt, prompt, input_seed(self.config.seed, task.id), trace)

    def _refuse_too_long(self, inputs: list[_Input]) -> None:
        """Refuse every input whose prompt and longest candidate action (without tools: one answer token) do not
        fit in the model's context window: it would be scored and answered past what the model reads."""
        window = self.model.context_window
        if window is None:
            return
        prefixes = [name_prefixes(x.task.tools, x.fmt) for x in inputs]
        counts = iter(self.model.count_tokens([text for x, ps in zip(inputs, prefixes, strict=True)
                                               for text in (x.prompt, *ps)]))
        completed = int(self.config.gate.candidates == "call")  # a call candidate needs a token generated
        for x, ps in zip(inputs, prefixes, strict=True):
            prompt = next(counts)
            candidate = max((next(counts) for _ in ps), default=0)
            if prompt + (candidate + completed if ps else 1) <= window:
                continue
            rest = f" and its longest candidate action {candidate:,} more" if ps and prompt < window else ""
            x.trace.error = "context_length"
            x.trace.reason = f"the prompt is {prompt:,} tokens{rest}; the model reads at most {window:,}"

    def _gate(self, inputs: list[_Input]) -> None:
        """H: score every input's candidate actions in one batch (or, the token gate, answer every input once and
        read its per-token certainty) and decide which inputs adapt."""
        if self.profile is not None:
            self._token_gate(inputs)
            return
        gated = [x for x in inputs if x.task.tools]
        with _stage(gated, "gate_s"):
            verdicts, caches = assess_many(self.model, [x.prompt for x in gated], [x.task.tools for x in gated],
                                           [x.fmt for x in gated], self.config.gate, keep_cache=True)
        for i, (x, u) in enumerate(zip(gated, verdicts, strict=True)):
            x.trace.uncertainty, x.cache = u, caches[i] if caches else None
            adapt, x.trace.reason = self._decide(u)
            x.trace.decision = Decision.ADAPT if adapt else Decision.SKIP

    def _token_gate(self, inputs: list[_Input]) -> None:
        """H with the token gate: every input's greedy answer, generated once, and its positions against the
        reference profile; an input that does not adapt keeps that answer."""
        assert self.profile is not None
        if not inputs:
            return
        with _stage(inputs, "gate_s"):
            verdicts, answers = assess_tokens(self.model, [x.prompt for x in inputs], self.profile,
                                              self.config.gate, self.config.max_new_tokens)
        for x, u, answer in zip(inputs, verdicts, answers, strict=True):
            x.trace.uncertainty, x.greedy = u, answer
            adapt, x.trace.reason = self._decide(u)
            x.trace.decision = Decision.ADAPT if adapt else Decision.SKIP

    def _decide(self, u: Uncertainty) -> tuple[bool, str]:
        method = self.config.method
        if method == "base":
            return False, "method base: answered by the base model"
        if u.tokens is not None:
            rule = self.config.gate
            need = (f"{rule.token_count} positions" if rule.token_count is not None
                    else f"a share of {rule.token_share:g}")
            verdict = (f"token gate: {u.tokens['flagged']} of {u.tokens['positions']} positions below the reference's "
                       f"{rule.token_percentile:g}th percentile of {u.tokens['stat']} (uncertain at {need})")
        else:
            verdict = f"{u.measure} {u.confidence:.4f} {'<' if u.uncertain else '>='} tau {u.tau}"
        if method == "no-gate":
            return True, f"no-gate: adapted regardless ({verdict})"
        if method == "confident-only":
            return not u.uncertain, f"confident-only: {verdict}"
        return u.uncertain, f"{'uncertain' if u.uncertain else 'confident'}: {verdict}"

    def _augment(self, inputs: list[_Input]) -> None:
        """G: synthesize pairs for every chosen input; they become training examples, or demonstrations (tt-icl)."""
        with _stage(inputs, "synthesize_s"):
            results = self._synthesize(inputs)
        for x, data in zip(inputs, results, strict=True):
            task, fmt, trace = x.task, x.fmt, x.trace
            pairs, rejected = data.pairs, data.rejected
            if pairs and self.config.method != "tt-icl":
                examples = [(self._example_prompt(task, p, fmt), fmt.render(p.answer, task.tools)) for p in pairs]
                fits = self.learner.fits(examples)
                if not all(fits):  # too long to train on: rejected like an invalid draft
                    rejected = rejected | {"context_length": rejected.get("context_length", 0) + fits.count(False)}
                    pairs = [p for p, ok in zip(pairs, fits, strict=True) if ok]
                x.examples = [e for e, ok in zip(examples, fits, strict=True) if ok]
            trace.synthetic, trace.rejected = pairs, rejected
            if not pairs:
                trace.reason = data.error or f"no valid synthetic pair ({_counts(rejected)}): answered unadapted"
            elif self.config.method == "tt-icl":  # the training-free variant: the pairs become demonstrations
                demos = [(p.query, fmt.render(p.answer, task.tools)) for p in pairs]
                prompt = answer_prompt(self.model, task, fmt, demos)
                if self.model.no_room([prompt])[0] is None:
                    trace.reason += "; synthetic pairs used as in-context demonstrations"
                    x.prompt, x.cache, x.greedy = prompt, None, None
                else:
                    trace.reason += "; the demonstrations do not fit in the context window: answered without them"

    def _synthesize(self, inputs: list[_Input]) -> list[Synthesis]:
        if self.config.method == "oracle":  # upper bound: the input's own gold label
            return [Synthesis([SyntheticPair(x.task.query, x.task.gold_answer or [], "gold")]) for x in inputs]
        return self.synthesizer.synthesize_many([x.task for x in inputs], [x.fmt for x in inputs],
                                                [x.seed for x in inputs])

    def _example_prompt(self, task: Task, pair: SyntheticPair, fmt: AnswerFormat) -> str:
        source = task if pair.source == "gold" else task.with_query(pair.query)
        return answer_prompt(self.model, source, fmt)

    def _answer(self, inputs: list[_Input]) -> None:
        """Greedy answers to every input in one generation, each with its slot (and samples, if configured).

        An input answered by the base model on the prompt the gate scored starts from the gate's KV cache.
        """
        c = self.config
        if not inputs:
            return
        prompts, slots = [x.prompt for x in inputs], [x.slot for x in inputs]
        prefixes = [x.cache if x.slot == NO_ADAPTER else None for x in inputs]
        # the token gate already generated the greedy answer of an input answered unadapted on the same prompt
        known = [x.greedy if x.slot == NO_ADAPTER and c.temperature == 0 else None for x in inputs]
        todo = [i for i, k in enumerate(known) if k is None]
        with _stage(inputs, "answer_s"):
            fresh = iter(self.learner.generate([prompts[i] for i in todo], [slots[i] for i in todo],
                                               max_new_tokens=c.max_new_tokens, prefixes=[prefixes[i] for i in todo],
                                               temperature=c.temperature, top_p=c.top_p,
                                               seeds=[answer_seed(inputs[i].seed) for i in todo]) if todo else [])
            raws = [k if k is not None else next(fresh) for k in known]
            if c.samples > 1:  # each input samples from its own seed, whatever else is in the batch
                drawn = self.learner.generate(prompts, slots, max_new_tokens=c.max_new_tokens,
                                              temperature=c.sample_temperature, num_return_sequences=c.samples,
                                              seeds=[x.seed for x in inputs], prefixes=prefixes)
                for i, x in enumerate(inputs):
                    x.trace.samples = drawn[i * c.samples: (i + 1) * c.samples]
        for x, raw in zip(inputs, raws, strict=True):
            x.trace.raw, x.cache, x.greedy = raw, None, None
            try:
                x.trace.answer = x.fmt.parse(raw)
            except AnswerParseError as e:
                x.trace.parse_error = str(e)


@contextmanager
def _stage(inputs: list[_Input], name: str) -> Iterator[None]:
    """Time one stage shared by these inputs and charge each an equal share."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _charge(inputs, name, time.perf_counter() - start)


def _charge(inputs: list[_Input], name: str, seconds: float) -> None:
    for x in inputs:
        x.trace.timings[name] += seconds / len(inputs)


def _counts(rejected: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(rejected.items())) or "no drafts"
