"""`ttsi score`: outputs produced by any other system, scored with the same parsers and scorers as `ttsi eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ttsi import jsonio
from ttsi.benchmarks import Benchmark
from ttsi.errors import TaskError
from ttsi.evaluation.records import RunDir, read_records, write_summary
from ttsi.evaluation.summary import summarize, to_json
from ttsi.formats import AnswerParseError, get_format
from ttsi.task import Task, answer_json
from ttsi.trace import STAGES


def read_predictions(path: Path) -> dict[str, str]:
    """{id: output} from a JSON Lines file; every malformed line, duplicate or non-string is a clear error."""
    out: dict[str, str] = {}
    for n, line in jsonio.lines(jsonio.read_text(path, "predictions file", TaskError)):
        row = jsonio.loads(line, f"{path}:{n}", TaskError)
        if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("output"), str):
            raise TaskError(f"{path}:{n} needs an \"id\" and an \"output\" string")
        key = str(row["id"])
        if key in out:
            raise TaskError(f"{path}:{n} repeats id {key!r}")
        out[key] = row["output"]
    return out


def score_predictions(bench: Benchmark, split: str, tasks: list[Task], predictions: Path, out: Path,
                      allow_missing: bool = False) -> dict[str, Any]:
    outputs = read_predictions(predictions)
    known = {t.id for t in tasks}
    unknown = [k for k in outputs if k not in known]
    if unknown:
        raise TaskError(f"{len(unknown)} prediction ids are not in {bench.name}:{split} (first: {unknown[0]!r})")
    missing = [t.id for t in tasks if t.id not in outputs]
    if missing and not allow_missing:
        raise TaskError(f"{len(missing)} of {len(tasks)} items have no prediction (first: {missing[0]!r}); pass "
                        "--allow-missing to score them as wrong")
    settings = {"benchmark": bench.name, "split": split, "predictions": str(predictions), "n": len(tasks)}
    if bench.scoring is not None:
        settings["scoring"] = bench.scoring
    plan = [(t.id, 0) for t in tasks]
    with RunDir(out, settings, resume=False, plan=plan, method="external", resumable=False) as run:
        for task in tasks:
            run.append(external_record(bench, split, task, outputs.get(task.id)))
        summary = summarize(read_records(run.results), bench, split, [0.0], tasks) | {"settings": settings}
        write_summary(Path(out), to_json(summary))
    return summary


def external_record(bench: Benchmark, split: str, task: Task, output: str | None) -> dict[str, Any]:
    """A results.jsonl record with the same fields as ttsi eval's; the agent's fields are empty."""
    if output is None:
        correct, error, detail, counts = False, "missing_prediction", "no output was given for this item", {}
    else:
        s = bench.score(task, output)
        correct, error, detail, counts = s.correct, s.reason, s.detail, s.counts
    try:
        prediction = answer_json(get_format(task.format).parse(output or ""))
    except AnswerParseError:
        prediction = None
    return {"id": task.id, "seed": 0, "benchmark": bench.name, "split": split, "method": "external",
            "subsets": bench.subsets(task), "prediction": prediction, "raw": output, "correct": correct,
            "error": error, "error_detail": detail, "counts": counts, "base_raw": None, "base_correct": None,
            "base_error": None, "samples": [], "samples_correct": [], "majority_correct": None,
            "pass_correct": None, "gate": None, "decision": "skip", "adapted": False, "reason": "scored from a file",
            "synthetic": [], "rejected": {}, "train": {"steps": 0, "losses": [], "lrs": []},
            "timings": dict.fromkeys(STAGES, 0.0)}
