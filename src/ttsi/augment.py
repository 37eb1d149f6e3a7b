"""Self-augmentation: write K new (x', y') pairs similar to the input, then keep only those that validate.

Every draft is parsed in the task's answer format (calls, or a free-form task's answer text) and verified by the
checks `synthesis.verify` names (`ttsi.verify`: by default the tool schemas, i.e. known function, required
arguments present, JSON types match; nothing to check for a free-form answer);
duplicates and copies of the seed input are dropped; each rejection is counted under its reason. Drafts come from
the model itself (`SelfSynthesizer`, TT-SI) or from a teacher (`ttsi.teacher.TeacherSynthesizer`, TT-D); both
implement `Synthesizer`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ttsi.config import SynthesisConfig
from ttsi.formats import AnswerFormat, AnswerParseError
from ttsi.model import HFModel
from ttsi.prompts import parse_pair, synthesis_prompt
from ttsi.task import Answer, Task, answer_json
from ttsi.verify import check_task, draft_problem, inconsistent


@dataclass
class SyntheticPair:
    """One training example for the input: a new request and its answer."""

    query: str
    answer: Answer  # the calls, or a free-form task's answer text (a worked solution, a short answer)
    source: str  # self | teacher | gold (the oracle ablation)

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "answer": answer_json(self.answer), "source": self.source}


@dataclass
class Synthesis:
    """The pairs kept for one input, and what happened to the other drafts."""

    pairs: list[SyntheticPair]
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count
    drafts: int = 0
    unused: int = 0  # valid drafts beyond K
    error: str | None = None  # why no drafts came back at all (teacher failure)


class Synthesizer(Protocol):
    """Writes the pairs for uncertain inputs: the model itself (TT-SI) or a teacher (TT-D)."""

    source: str

    def synthesize(self, task: Task, fmt: AnswerFormat, seed: int) -> Synthesis: ...

    def synthesize_many(self, tasks: list[Task], fmts: list[AnswerFormat], seeds: list[int]) -> list[Synthesis]: ...


class OneByOne:
    """A `Synthesizer` mixin whose `synthesize_many` asks `synthesize` for each input in turn."""

    def synthesize(self, task: Task, fmt: AnswerFormat, seed: int) -> Synthesis:
        raise NotImplementedError

    def synthesize_many(self, tasks: list[Task], fmts: list[AnswerFormat], seeds: list[int]) -> list[Synthesis]:
        return [self.synthesize(t, f, s) for t, f, s in zip(tasks, fmts, seeds, strict=True)]


def normalize_query(text: str) -> str:
    """Case, punctuation and spacing folded away: what makes two requests 'the same'."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def select_pairs(drafts: list[str], task: Task, fmt: AnswerFormat, k: int, source: str,
                 verify: Sequence[str] = ("schema",)) -> Synthesis:
    """Validate drafts in order and keep the first k that pass (the per-draft verifiers only: no consistency)."""
    candidates, rejected = screen(drafts, task, fmt, verify)
    return take(candidates, rejected, k, source, len(drafts))


def screen(drafts: list[str], task: Task, fmt: AnswerFormat,
           verify: Sequence[str] = ("schema",)) -> tuple[list[tuple[str, Answer]], Counter[str]]:
    """Every draft that parses, passes the per-draft verifiers and is new, in order; and the others' reasons."""
    check_task(verify, task)
    seed_query = normalize_query(task.query)
    candidates: list[tuple[str, Answer]] = []
    seen: set[str] = set()
    rejected: Counter[str] = Counter()
    for text in drafts:
        try:
            query, answer = parse_pair(text, fmt)
        except AnswerParseError as e:
            rejected[e.reason] += 1
            continue
        key = normalize_query(query)
        problem = draft_problem(verify, text, answer, task, fmt) or ("copy_of_seed" if key == seed_query else
                                                                    "duplicate" if key in seen else None)
        if problem:
            rejected[problem] += 1
        else:
            seen.add(key)
            candidates.append((query, answer))
    return candidates, rejected


def take(candidates: list[tuple[str, Answer]], rejected: Counter[str], k: int, source: str,
         drafts: int) -> Synthesis:
    """The first k candidates as pairs; the rest are counted as unused."""
    pairs = [SyntheticPair(query, answer, source) for query, answer in candidates[:k]]
    return Synthesis(pairs, dict(rejected), drafts=drafts, unused=max(len(candidates) - k, 0))


class SelfSynthesizer:
    """TT-SI: the model being adapted writes its own training pairs."""

    def __init__(self, model: HFModel, config: SynthesisConfig, source: str = "self"):
        self.model = model
        self.config = config
        self.source = source  # "teacher" when a local model writes for another (the demo's TT-D)

    def synthesize(self, task: Task, fmt: AnswerFormat, seed: int) -> Synthesis:
        return self.synthesize_many([task], [fmt], [seed])[0]

    def synthesize_many(self, tasks: list[Task], fmts: list[AnswerFormat], seeds: list[int]) -> list[Synthesis]:
        """Every input's drafts in one batched generation; input i samples from its own seed, so its drafts are
        the same whichever inputs share the batch. With `consistency`, every candidate pair of every input is then
        answered in one more batched generation (`ttsi.verify.inconsistent`), and the first k it keeps are kept."""
        c = self.config
        for task in tasks:  # before any generation
            check_task(c.verify, task)
        if not tasks:
            return []
        prompts = [synthesis_prompt(self.model, t, f) for t, f in zip(tasks, fmts, strict=True)]
        problems = self.model.no_room(prompts)  # a prompt that fills the context window leaves nothing to write
        todo = [i for i, problem in enumerate(problems) if problem is None]
        n = c.k * c.oversample if c.temperature > 0 else 1  # greedy drafts would all be the same
        drafts = self.model.generate([prompts[i] for i in todo], max_new_tokens=c.max_new_tokens,
                                     temperature=c.temperature, top_p=c.top_p, num_return_sequences=n,
                                     seeds=[seeds[i] for i in todo]) if todo else []
        screened = {i: screen(drafts[j * n: (j + 1) * n], tasks[i], fmts[i], c.verify) for j, i in enumerate(todo)}
        if "consistency" in c.verify:
            verdicts = inconsistent(self.model, [(tasks[i], fmts[i], seeds[i], screened[i][0]) for i in todo], c)
            for i, verdict in zip(todo, verdicts, strict=True):
                candidates, rejected = screened[i]
                rejected.update(reason for reason in verdict if reason)
                screened[i] = ([p for p, reason in zip(candidates, verdict, strict=True) if not reason], rejected)
        picked = {i: take(*screened[i], c.k, self.source, n) for i in todo}
        return [picked[i] if problem is None else Synthesis([], error=f"the synthesis prompt is {problem}: answered "
                                                                      "unadapted")
                for i, problem in enumerate(problems)]
