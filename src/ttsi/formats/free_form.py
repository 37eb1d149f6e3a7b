"""Free-form answer formats: a math solution (`math`) and a short answer (`qa`), for tasks with no tools.

A free-form answer is text. `render` writes it as given (the text a model trains on: a worked solution, a short
answer); `parse` reads what a scorer compares out of a model's output: the final number of a solution (GSM8K's
extraction rule, `ttsi.arith.final_answer`), or the first non-empty line of a short answer. `key` is the normal
form two answers are compared by (consistency, majority votes, exact match): the exact value of the final number,
or the answer text under NQ-open's official normalisation (`normalize_answer`).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from typing import Any

from ttsi.arith import final_answer, parse_number
from ttsi.formats.base import AnswerFormat, AnswerParseError, Messages, json_calls_text, with_system
from ttsi.task import Task, Tool

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_FINAL_LINE = re.compile(r"^.*?####[^\n]*", re.DOTALL)  # a solution through its first `####` line


def normalize_answer(text: str) -> str:
    """NQ-open's official normalisation (google-research/language, orqa eval_utils): Unicode NFD, lower case,
    every character of `string.punctuation` deleted, the words a / an / the replaced by a space, whitespace
    collapsed."""
    text = unicodedata.normalize("NFD", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


class FreeForm(AnswerFormat):
    """The interface of a free-form format: its answers are text, and its tasks have no tools."""

    purpose = ""  # what the assistant does, for the synthesis prompt ("solves math word problems")

    def messages(self, task: Task, demos: Sequence[tuple[str, str]] = ()) -> Messages:
        """One system turn with the format's instruction (merged with the task's own), the demonstrations, the
        task's turns."""
        return with_system(self.instruction(), task, demos, task_system_first=True, fmt=self)

    def history(self, task: Task) -> Messages:
        return task.text_messages(json_calls_text)  # a free-form format writes no calls: past ones as JSON

    def pair_instruction(self) -> str:
        """How the synthesis prompt asks for a pair's answer."""
        raise NotImplementedError

    def render(self, answer: Any, tools: Sequence[Tool] = ()) -> str:
        if not isinstance(answer, str):
            raise ValueError(f"a {self.name} answer is text, not {type(answer).__name__}")
        return answer

    def parse(self, text: str) -> str:
        raise NotImplementedError

    def pair_answer(self, text: str) -> str:
        """The answer text of a synthetic pair (what it trains on); AnswerParseError when it has none."""
        raise NotImplementedError

    def key(self, answer: Any) -> str:
        raise NotImplementedError

    def name_prefix(self, name: str, tools: Sequence[Tool]) -> str:
        raise ValueError(f"a {self.name} answer names no function: there are no candidate actions")

    def first_call(self, text: str) -> str | None:
        return None


class MathSolution(FreeForm):
    """A worked solution ending with `#### <number>` (GSM8K's form); its answer is the final number."""

    name = "math"
    kind = "math"
    purpose = "solves math word problems step by step"

    def instruction(self) -> str:
        return ("Solve the math problem step by step. Then write the final answer, a number alone, on a last line "
                "that starts with '#### ' (for example: #### 42).")

    def pair_instruction(self) -> str:
        return ("The answer is a worked solution: write every calculation with a calculator annotation, like "
                "48/2 = <<48/2=24>>24, and end with a last line '#### N', N the final number.")

    def parse(self, text: str) -> str:
        """The final answer: after the last `####`, else after "The answer is", else the last number."""
        found = final_answer(text)
        if found is None or parse_number(found) is None:
            raise AnswerParseError("no_final_answer", "no final number in the output")
        return found

    def pair_answer(self, text: str) -> str:
        """The solution through its first `#### N` line: a pair must say its final answer the way it asks for it."""
        solution = _FINAL_LINE.match(text.strip())
        if solution is None:
            raise AnswerParseError("no_final_answer", "the solution has no '#### N' line")
        self.parse(solution.group())
        return solution.group().strip()

    def key(self, answer: Any) -> str:
        """The final number's exact value (`18`, `18.0` and `$18` are one key), else the normalised text."""
        found = final_answer(answer)
        value = parse_number(found) if found is not None else None
        return str(value) if value is not None else normalize_answer(answer)


class ShortAnswer(FreeForm):
    """A short answer of a few words (NQ-open's form): the output's first non-empty line."""

    name = "qa"
    kind = "qa"
    purpose = "answers questions with a short answer"

    def instruction(self) -> str:
        return ("Answer the question with a short answer only: a few words (a name, a date, a number), on one "
                "line, without explanation.")

    def pair_instruction(self) -> str:
        return "The answer is a short answer of a few words, on one line."

    def parse(self, text: str) -> str:
        line = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if not line:
            raise AnswerParseError("empty_answer", "the output is empty")
        return line

    def pair_answer(self, text: str) -> str:
        return self.parse(text)

    def key(self, answer: Any) -> str:
        return normalize_answer(answer)
