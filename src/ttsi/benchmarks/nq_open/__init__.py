"""NQ-open (Lee et al., 2019; EfficientQA, Min et al., 2021): open-domain questions with short answers, scored by the
official exact match after normalisation, with token F1 beside it.

Data: `<data-dir>/nq_open/NQ-open.dev.jsonl` and the EfficientQA dev and test files (google-research-datasets/
natural-questions, folder nq_open/, commit fb26a307), one `{"question", "answer": [accepted answers]}` per line.
Official scorer: google-research/language, `language/orqa/evaluation/evaluate_predictions.py` with
`orqa/utils/eval_utils.py` (restated in SCORING.md; `ttsi.formats.free_form.normalize_answer`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ttsi.benchmarks.base import Benchmark, ItemScore, read_jsonl, register, require
from ttsi.formats import AnswerParseError, get_format
from ttsi.formats.free_form import normalize_answer
from ttsi.task import Task

FOLDER = "nq_open"
FILES = {"dev": "NQ-open.dev.jsonl", "efficientqa_dev": "NQ-open.efficientqa.dev.1.1.jsonl",
         "efficientqa_test": "NQ-open.efficientqa.test.1.1.jsonl"}
EXPANDED = "answer_and_def_correct_predictions"  # EfficientQA test: the answers plus those judged definitely correct
_ROW = 'one {"question": str, "answer": [str, ...]} object per line'


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD's token F1 over the normalised texts: the harmonic mean of the shared tokens' precision and recall; 1 when
    both normalise to nothing (as SQuAD 2.0's script, and as exact match does)."""
    pred, want = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not want:
        return float(pred == want)
    same = sum((Counter(pred) & Counter(want)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(want)
    return 2 * precision * recall / (precision + recall)


def exact(prediction: str, golds: list[str]) -> bool:
    """The official verdict: the normalised prediction equals some normalised accepted answer."""
    return normalize_answer(prediction) in {normalize_answer(g) for g in golds}


@register
class NQOpen(Benchmark):
    """NQ-open dev (3,610, what papers before EfficientQA report), EfficientQA dev (1,800) and test (1,769)."""

    name = "nq_open"
    splits = tuple(FILES)
    default_split = "dev"
    license = "CC BY-SA 3.0 (the Natural Questions data; the repository's code is Apache-2.0)"
    note = ("Official exact match (NFD, lower case, punctuation and the articles a/an/the removed, whitespace "
            "collapsed; correct when equal to any accepted answer), on the output's first non-empty line (the qa "
            "format's answer; the official script takes the prediction string whole). `f1`: SQuAD-style token F1, "
            "max over the accepted answers. EfficientQA test adds `accuracy_def_correct`, against "
            "answer_and_def_correct_predictions.")

    def load(self, data_dir: Path, split: str) -> list[Task]:
        path = Path(data_dir) / FOLDER / FILES[split]
        rows = read_jsonl(path, _ROW)
        require(bool(rows), path, _ROW)
        return [_task(row, split, i, path) for i, row in enumerate(rows)]

    def score(self, task: Task, output: str) -> ItemScore:
        try:
            prediction = get_format("qa").parse(output)
        except AnswerParseError:
            prediction = ""  # the official compares it all the same (a gold of only punctuation normalises to "")
        golds = task.gold or []
        counts = {"em": float(exact(prediction, golds)), "f1": max((token_f1(prediction, g) for g in golds),
                                                                    default=0.0)}
        if EXPANDED in task.meta:
            counts["em_def_correct"] = float(exact(prediction, task.meta[EXPANDED]))
        if counts["em"]:
            return ItemScore(True, counts=counts)
        reason = "parse_error" if not prediction else "wrong_answer"
        return ItemScore(False, reason, f"{prediction!r} is none of {golds[:5]!r}", counts)

    def metrics(self, tasks: list[Task], scores: list[ItemScore]) -> dict[str, float]:
        if not scores:
            return {}
        out = {"accuracy": sum(s.correct for s in scores) / len(scores),
               "f1": sum(s.counts.get("f1", 0.0) for s in scores) / len(scores)}
        if scores and all("em_def_correct" in s.counts for s in scores):
            out["accuracy_def_correct"] = sum(s.counts["em_def_correct"] for s in scores) / len(scores)
        return out


def _task(row: Any, split: str, i: int, path: Path) -> Task:
    ok = (isinstance(row, dict) and isinstance(row.get("question"), str) and row["question"].strip()
          and isinstance(row.get("answer"), list) and bool(row["answer"])
          and all(isinstance(a, str) for a in row["answer"]))
    require(bool(ok), path, f"row {i + 1} to be {_ROW}")
    meta: dict[str, Any] = {}
    if EXPANDED in row:
        require(isinstance(row[EXPANDED], list) and all(isinstance(a, str) for a in row[EXPANDED]), path,
                f"row {i + 1}'s {EXPANDED} to be a list of strings")
        meta[EXPANDED] = row[EXPANDED]
    return Task(id=f"{split}-{i}", messages=[{"role": "user", "content": row["question"]}], tools=[], kind="qa",
                gold=list(row["answer"]), format="qa", meta=meta)
