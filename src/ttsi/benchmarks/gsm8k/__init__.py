"""GSM8K (Cobbe et al., 2021): grade-school math word problems with worked solutions, scored by the final number.

Data: `<data-dir>/gsm8k/{test,train}.jsonl`, one `{"question", "answer"}` per line (openai/grade-school-math,
commit 3101c7d5, MIT); the answer is a worked solution with calculator annotations ending in `#### <number>`.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

from ttsi.arith import final_answer, parse_number
from ttsi.benchmarks.base import Benchmark, ItemScore, read_jsonl, register, require
from ttsi.task import Task

FOLDER = "gsm8k"
_ROW = 'one {"question": str, "answer": worked solution ending in "#### <number>"} object per line'
_OFFICIAL = re.compile(r"#### (\-?[0-9\.\,]+)")  # the repository's dataset.py


def number(text: str | None) -> Fraction | None:
    """A final answer's value: commas, `$` and a trailing period removed ("1,000." = 1000, "18.0" = 18)."""
    return None if text is None else parse_number(text.replace(",", ""))


def official_answer(text: str) -> str | None:
    """The official extraction: the first `#### <number>` match, stripped, commas removed (None: `[invalid]`)."""
    found = _OFFICIAL.search(text)
    return found.group(1).strip().replace(",", "") if found else None


@register
class GSM8K(Benchmark):
    """1,319 test and 7,473 training problems; the gold is the number after the solution's `####`."""

    name = "gsm8k"
    splits = ("test", "train")
    default_split = "test"
    license = "MIT (openai/grade-school-math, Copyright (c) 2021 OpenAI)"
    note = ("A model's answer is the number after its last '####', else after 'The answer is', else its last number "
            "(ttsi.arith.final_answer), correct when it equals the gold number as a number after removing commas, "
            "'$' and a trailing period (18.0 = 18). The official rule (the repository's dataset.py) compares the "
            "first '#### <number>' as a string, commas removed: reported as `official_accuracy`.")

    def load(self, data_dir: Path, split: str) -> list[Task]:
        path = Path(data_dir) / FOLDER / f"{split}.jsonl"
        rows = read_jsonl(path, _ROW)
        require(bool(rows), path, _ROW)
        tasks = []
        for i, row in enumerate(rows):
            ok = (isinstance(row, dict) and isinstance(row.get("question"), str) and row["question"].strip()
                  and isinstance(row.get("answer"), str) and number(official_answer(row["answer"])) is not None)
            require(bool(ok), path, f"row {i + 1} to be {_ROW}")
            tasks.append(Task(id=f"{split}-{i}", messages=[{"role": "user", "content": row["question"]}], tools=[],
                              kind="math", gold=[row["answer"]], format="math",
                              meta={"gold_number": official_answer(row["answer"])}))
        return tasks

    def score(self, task: Task, output: str) -> ItemScore:
        gold = task.meta["gold_number"]
        official = {"official": float(official_answer(output) == gold)}
        predicted = final_answer(output)
        if number(predicted) is None:
            return ItemScore(False, "parse_error", "no final number in the output", official)
        if number(predicted) != number(gold):
            return ItemScore(False, "wrong_answer", f"{predicted}, gold {gold}", official)
        return ItemScore(True, counts=official)

    def metrics(self, tasks: list[Task], scores: list[ItemScore]) -> dict[str, float]:
        if not scores:
            return {}
        return {"accuracy": sum(s.correct for s in scores) / len(scores),
                "official_accuracy": sum(s.counts.get("official", 0.0) for s in scores) / len(scores)}
