"""Self-augmentation: write K new (x', y') pairs similar to the input, then keep only those that validate.

Every draft is parsed in the task's answer format and checked against the tool schemas (known function, required
arguments present, JSON types match); duplicates and copies of the seed input are dropped; each rejection is
counted under its reason. Drafts come from the model itself (`SelfSynthesizer`, TT-SI) or from a teacher
(`ttsi.teacher.TeacherSynthesizer`, TT-D); both implement `Synthesizer`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from ttsi.config import SynthesisConfig
from ttsi.formats import AnswerFormat, AnswerParseError
from ttsi.model import HFModel
from ttsi.prompts import parse_pair, synthesis_prompt
from ttsi.schema import CallError, check_calls
from ttsi.task import Call, Task


@dataclass
class SyntheticPair:
    """One training example for the input: a new request and its answer."""

    query: str
    answer: list[Call]
    source: str  # self | teacher | gold (the oracle ablation)

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "answer": [c.to_dict() for c in self.answer], "source": self.source}


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


def select_pairs(drafts: list[str], task: Task, fmt: AnswerFormat, k: int, source: str) -> Synthesis:
    """Validate drafts in order and keep the first k that pass."""
    seed_query = normalize_query(task.query)
    kept: list[SyntheticPair] = []
    seen: set[str] = set()
    rejected: Counter[str] = Counter()
    unused = 0
    for text in drafts:
        try:
            query, calls = parse_pair(text, fmt)
            check_calls(calls, task.tools, fmt.numbers_as_strings)
        except (AnswerParseError, CallError) as e:
            rejected[e.reason] += 1
            continue
        key = normalize_query(query)
        if key == seed_query:
            rejected["copy_of_seed"] += 1
        elif key in seen:
            rejected["duplicate"] += 1
        elif len(kept) < k:
            seen.add(key)
            kept.append(SyntheticPair(query, calls, source))
        else:
            unused += 1
    return Synthesis(kept, dict(rejected), drafts=len(drafts), unused=unused)


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
        the same whichever inputs share the batch."""
        c = self.config
        if not tasks:
            return []
        prompts = [synthesis_prompt(self.model, t, f) for t, f in zip(tasks, fmts, strict=True)]
        problems = self.model.no_room(prompts)  # a prompt that fills the context window leaves nothing to write
        todo = [i for i, problem in enumerate(problems) if problem is None]
        n = c.k * c.oversample if c.temperature > 0 else 1  # greedy drafts would all be the same
        drafts = self.model.generate([prompts[i] for i in todo], max_new_tokens=c.max_new_tokens,
                                     temperature=c.temperature, top_p=c.top_p, num_return_sequences=n,
                                     seeds=[seeds[i] for i in todo]) if todo else []
        picked = {i: select_pairs(drafts[j * n: (j + 1) * n], tasks[i], fmts[i], c.k, self.source)
                  for j, i in enumerate(todo)}
        return [picked[i] if problem is None else Synthesis([], error=f"the synthesis prompt is {problem}: answered "
                                                                      "unadapted")
                for i, problem in enumerate(problems)]
