"""Verified synthetic data (`synthesis.verify`): the checks a synthetic pair must pass before the model learns from it.

    schema        the answer's calls fit the task's tools (known function, required arguments, JSON types); a
                  free-form answer has no calls, and passes
    answer-check  a math solution's arithmetic recomputes and its final answer follows (`ttsi.arith`)
    consistency   the model answers the synthetic question M times at temperature T; the pair is kept when a share
                  q of the answers equal its written answer (calls in any order; free-form answers by their
                  normalised final answer, the format's `key`)

`schema` and `answer-check` judge one draft (`draft_problem`); `consistency` answers every candidate pair of every
input in one batched generation (`inconsistent`). An empty list verifies nothing: every draft that parses is kept.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ttsi.arith import check_solution, final_answer, parse_number
from ttsi.config import SynthesisConfig
from ttsi.errors import TaskError
from ttsi.formats import AnswerFormat, AnswerParseError
from ttsi.prompts import answer_prompt
from ttsi.schema import CallError, check_calls
from ttsi.task import Answer, Call, Task

if TYPE_CHECKING:
    from ttsi.model import HFModel

_ANSWER = re.compile(r"\bAnswer:\s*(.*)", re.DOTALL | re.IGNORECASE)


def task_kind(task: Task) -> str:
    """The task's kind as messages name it: "math" or "qa" (free-form answers), else "tool-call"."""
    kind = getattr(task, "kind", None)
    return kind if kind in ("math", "qa") else "tool-call"


def check_task(verify: Sequence[str], task: Task) -> None:
    """TaskError, before any work, when a verifier cannot judge this task's answers."""
    if "answer-check" in verify and task_kind(task) != "math":
        raise TaskError(f"answer-check verifies math solutions; task {task.id!r} is a {task_kind(task)} task "
                        "(verify it with schema or consistency)")


def answer_check(text: str, task: Task) -> str | None:
    """answer-check on one draft (a synthesis reply, or the solution alone): the reason it fails, or None.

    The solution is what follows "Answer:" when the draft has that line (a synthetic pair passes its answer text
    alone: what it trains on). Reasons: those of
    `ttsi.arith.check_solution` (no_annotation, bad_expression, wrong_step, no_final_answer, final_mismatch)."""
    check_task(["answer-check"], task)
    found = _ANSWER.search(text)
    return check_solution(found.group(1) if found else text)[1]


def draft_problem(verify: Sequence[str], text: str, answer: Answer, task: Task, fmt: AnswerFormat) -> str | None:
    """The first per-draft verifier that fails (schema, answer-check, in `verify`'s order): its reason, or None.

    `answer`: the draft's parsed answer, calls (schema checks them against the tools) or a free-form answer's text
    (schema has nothing to check; answer-check reads this text)."""
    for name in verify:
        if name == "schema" and not isinstance(answer, str):
            try:
                check_calls(answer, task.tools, fmt.numbers_as_strings)
            except CallError as e:
                return e.reason
        elif name == "answer-check" and (reason := answer_check(answer if isinstance(answer, str) else text, task)):
            return reason
    return None


def consistency_seed(seed: int, index: int) -> int:
    """The seed candidate pair `index` of an input is answered with: derived from the input's own seed only."""
    return zlib.crc32(f"consistency:{seed}:{index}".encode())


def same_calls(a: list[Call], b: list[Call]) -> bool:
    """Equal as call lists in any order: each call of one pairs off with an equal call of the other (name and
    arguments compared with Python's ==, as the benchmark scorers compare them: 2 equals 2.0, "2" does not)."""
    rest = list(b)
    for call in a:
        match = next((i for i, other in enumerate(rest) if other == call), None)
        if match is None:
            return False
        del rest[match]
    return not rest


def same_final_answer(a: str, b: str) -> bool:
    """Free-form answers agree when their final answers do: numerically when both are numbers (GSM8K's extraction
    rule), else as normalised text (case, punctuation, articles and spacing folded away)."""
    x, y = final_answer(a), final_answer(b)
    nx, ny = (parse_number(x) if x else None), (parse_number(y) if y else None)
    if nx is not None and ny is not None:
        return nx == ny
    return _normal_text(a) == _normal_text(b)


def _normal_text(text: str) -> str:
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(w for w in words if w not in ("a", "an", "the"))


def inconsistent(model: HFModel, cases: Sequence[tuple[Task, AnswerFormat, int, list[tuple[str, Answer]]]],
                 config: SynthesisConfig) -> list[list[str | None]]:
    """For each input's candidate pairs (query, answer): None where the model reproduces the pair's answer in at
    least a share q of M sampled answers, else the rejection reason ("inconsistent", or "context_length" for a
    question the model cannot read).

    `cases`: (task, format, input seed, candidates) per input. Every answer of every pair of every input comes
    from one `model.generate` call; pair j of an input samples from `consistency_seed(input seed, j)`, so what an
    input keeps does not depend on the inputs beside it. The answers are greedy (one per pair) when T is 0.
    """
    prompts, seeds, where = [], [], []
    for i, (task, fmt, seed, pairs) in enumerate(cases):
        for j, (query, _) in enumerate(pairs):
            prompts.append(answer_prompt(model, task.with_query(query), fmt))
            seeds.append(consistency_seed(seed, j))
            where.append((i, j))
    verdicts: list[list[str | None]] = [["context_length"] * len(pairs) for *_, pairs in cases]
    fits = [k for k, problem in enumerate(model.no_room(prompts) if prompts else []) if problem is None]
    if not fits:
        return verdicts
    m = config.consistency_samples if config.consistency_temperature > 0 else 1  # greedy answers are all the same
    answers = model.generate([prompts[k] for k in fits], max_new_tokens=config.max_new_tokens,
                             temperature=config.consistency_temperature, top_p=config.top_p,
                             num_return_sequences=m, seeds=[seeds[k] for k in fits])
    for n, k in enumerate(fits):
        i, j = where[k]
        _, fmt, _, pairs = cases[i]
        agree = sum(_reproduces(text, pairs[j][1], fmt) for text in answers[n * m: (n + 1) * m])
        verdicts[i][j] = None if agree >= config.consistency_agree * m - 1e-9 else "inconsistent"  # 0.3 * 10 > 3
    return verdicts


def _reproduces(text: str, answer: Answer, fmt: AnswerFormat) -> bool:
    """Whether a sampled answer equals the pair's: the same calls, or the same normalised final answer."""
    try:
        parsed = fmt.parse(text)
    except AnswerParseError:
        return False
    if isinstance(answer, str):
        return isinstance(parsed, str) and fmt.key(parsed) == fmt.key(answer)
    return not isinstance(parsed, str) and same_calls(parsed, answer)
