"""NQ-open: the loader, the official normalisation and exact match against any accepted answer, token F1, the
EfficientQA test's expanded answers, and every accepted answer scoring correct against itself over the real files."""

from __future__ import annotations

import json

import pytest

from ttsi.benchmarks import get_benchmark
from ttsi.benchmarks.nq_open import EXPANDED, FILES, token_f1
from ttsi.errors import TaskError

BENCH = get_benchmark("nq_open")
ROWS = [{"question": "where is the eiffel tower", "answer": ["Paris", "Paris, France"]},
        {"question": "what is the highest grade", "answer": ["A+", "the top mark"]}]


@pytest.fixture
def tasks(tmp_path):
    (tmp_path / "nq_open").mkdir()
    (tmp_path / "nq_open" / FILES["dev"]).write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return BENCH.load(tmp_path, "dev")


def test_items_load_as_qa_tasks(tasks):
    t = tasks[0]
    assert (t.id, t.kind, t.format, t.tools, t.gold, t.meta) == ("dev-0", "qa", "qa", [], ["Paris", "Paris, France"],
                                                                   {})
    assert BENCH.splits == ("dev", "efficientqa_dev", "efficientqa_test") and BENCH.default_split == "dev"
    assert BENCH.license.startswith("CC BY-SA 3.0")


@pytest.mark.parametrize(("output", "correct", "reason", "f1"), [
    ("Paris", True, None, 1.0),
    ("  the PARIS.  \nIt is in France.", True, None, 1.0),  # the first non-empty line, normalised
    ("paris france", True, None, 1.0),  # "Paris, France" without its comma
    ("Paris, Texas", False, "wrong_answer", 2 / 3),  # F1 against "Paris, France": 1 of 2 tokens each way
    ("Lyon", False, "wrong_answer", 0.0),
    ("", False, "parse_error", 0.0),
])
def test_exact_match_against_any_accepted_answer_with_token_f1(tasks, output, correct, reason, f1):
    score = BENCH.score(tasks[0], output)
    assert (score.correct, score.reason) == (correct, reason)
    assert score.counts == {"em": float(correct), "f1": pytest.approx(f1)}


def test_an_answer_of_punctuation_and_articles_normalises_to_nothing(tasks):
    assert BENCH.score(tasks[1], "a+").correct and BENCH.score(tasks[1], "").correct  # "A+" normalises to ""
    assert BENCH.score(tasks[1], "Top mark").correct


def test_token_f1_is_squads():
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(2 * (2 / 2) * (2 / 3) / (2 / 2 + 2 / 3))
    assert token_f1("", "cat") == 0.0 and token_f1("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("---", "the") == 1.0  # both normalise to nothing: they agree, as exact match says


def test_metrics_and_the_efficientqa_tests_expanded_answers(tmp_path):
    (tmp_path / "nq_open").mkdir()
    row = {"question": "q", "answer": ["Nine"], EXPANDED: ["Nine", "9"], "def_correct_predictions": ["9"]}
    (tmp_path / "nq_open" / FILES["efficientqa_test"]).write_text(json.dumps(row) + "\n")
    (task,) = BENCH.load(tmp_path, "efficientqa_test")
    assert task.gold == ["Nine"] and task.meta == {EXPANDED: ["Nine", "9"]}
    scores = [BENCH.score(task, "9"), BENCH.score(task, "nine")]
    assert [s.correct for s in scores] == [False, True]
    assert BENCH.metrics([task, task], scores) == {"accuracy": 0.5, "f1": 0.5, "accuracy_def_correct": 1.0}


def test_a_malformed_file_names_itself(tmp_path):
    (tmp_path / "nq_open").mkdir()
    path = tmp_path / "nq_open" / FILES["dev"]
    path.write_text(json.dumps({"question": "q", "answer": []}) + "\n")
    with pytest.raises(TaskError, match=f"malformed data file {path}: expected row 1 to be one"):
        BENCH.load(tmp_path, "dev")


# The accepted answers that cannot score against themselves: each holds a line break (a table cell's text, e.g.
# "Perry\n\n107"), and an answer is the output's first line. Every such item has another answer that does score.
MULTILINE = {"dev": 0, "efficientqa_dev": 1, "efficientqa_test": 4}


@pytest.mark.parametrize(("split", "count", "answers"), [("dev", 3610, 6490), ("efficientqa_dev", 1800, 3211),
                                                          ("efficientqa_test", 1769, 3185)])
def test_every_accepted_answer_scores_correct_against_itself(data_dir, split, count, answers):
    tasks = BENCH.load(data_dir, split)
    assert len(tasks) == count and sum(len(t.gold) for t in tasks) == answers
    failing = [(t.id, g) for t in tasks for g in t.gold if not BENCH.score(t, g).correct]
    assert len(failing) == MULTILINE[split] and all("\n" in g for _, g in failing)
    assert all(any(BENCH.score(t, g).correct for g in t.gold) for t in tasks)
    assert all(BENCH.score(t, g).counts["f1"] == 1.0 for t in tasks for g in t.gold if "\n" not in g)
    if split == "efficientqa_test":
        assert all(BENCH.score(t, g).counts["em_def_correct"] == 1.0 for t in tasks for g in t.meta[EXPANDED]
                   if "\n" not in g)
