"""GSM8K: the loader, the scorer's extraction and numeric comparison, the official strict figure beside it, and
every gold solution scoring correct against itself over the real files."""

from __future__ import annotations

import json

import pytest

from ttsi.benchmarks import get_benchmark
from ttsi.benchmarks.gsm8k import official_answer
from ttsi.errors import TaskError

BENCH = get_benchmark("gsm8k")
ROWS = [{"question": "Tom has 3 bags of 4 apples. How many apples?", "answer": "3*4 = <<3*4=12>>12\n#### 12"},
        {"question": "A car costs $1,000 and a bike $250. Both?", "answer": "1000+250 = <<1000+250=1250>>1250\n"
                                                                         "#### 1,250"}]


@pytest.fixture
def tasks(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return BENCH.load(tmp_path, "test")


def test_items_load_as_math_tasks(tasks):
    t = tasks[1]
    assert (t.id, t.kind, t.format, t.tools, t.answer) == ("test-1", "math", "math", [], None)
    assert t.query == ROWS[1]["question"] and t.gold == [ROWS[1]["answer"]] and t.meta == {"gold_number": "1250"}
    assert BENCH.splits == ("test", "train") and BENCH.default_split == "test" and BENCH.license.startswith("MIT")


@pytest.mark.parametrize(("output", "correct", "reason", "official"), [
    ("3*4 = 12\n#### 12", True, None, 1.0),
    ("#### 12.0", True, None, 0.0),  # equal as numbers; the official compares strings
    ("The answer is $12.", True, None, 0.0),  # no `####`: after "The answer is"
    ("3 bags of 4 make 12 apples", True, None, 0.0),  # else the last number
    ("#### 11\nwait: #### 12", True, None, 0.0),  # the last `####`; the official takes the first
    ("#### 13", False, "wrong_answer", 0.0),
    ("I cannot tell.", False, "parse_error", 0.0),
    ("", False, "parse_error", 0.0),
])
def test_the_final_number_is_compared_as_a_number(tasks, output, correct, reason, official):
    score = BENCH.score(tasks[0], output)
    assert (score.correct, score.reason, score.counts) == (correct, reason, {"official": official})


def test_commas_dollars_and_a_trailing_period_are_removed(tasks):
    for output in ("#### 1,250", "#### $1,250.", "#### 1250", "The answer is 1,250.00"):
        assert BENCH.score(tasks[1], output).correct, output
    assert official_answer("#### 1,250") == "1250" and official_answer("####1250") is None  # "#### " then digits


def test_metrics_report_accuracy_and_the_official_figure(tasks):
    scores = [BENCH.score(tasks[0], "#### 12"), BENCH.score(tasks[0], "#### 12.0"), BENCH.score(tasks[1], "#### 5")]
    assert BENCH.metrics(tasks, scores) == {"accuracy": 2 / 3, "official_accuracy": 1 / 3}
    assert BENCH.metrics(tasks, []) == {}


def test_a_malformed_file_names_itself(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    path = tmp_path / "gsm8k" / "test.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "no final line"}) + "\n")
    with pytest.raises(TaskError, match=f"malformed data file {path}: expected row 1 to be one"):
        BENCH.load(tmp_path, "test")
    with pytest.raises(TaskError, match="does not exist"):
        BENCH.load(tmp_path, "train")


@pytest.mark.parametrize(("split", "count"), [("test", 1319), ("train", 7473)])
def test_every_gold_solution_scores_correct_against_itself(data_dir, split, count):
    tasks = BENCH.load(data_dir, split)
    assert len(tasks) == count and len({t.id for t in tasks}) == count
    wrong = [t.id for t in tasks if not BENCH.score(t, t.gold[0]).correct]
    strict = [t.id for t in tasks if BENCH.score(t, t.gold[0]).counts["official"] != 1.0]
    assert (wrong, strict) == ([], [])
