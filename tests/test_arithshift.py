"""ArithShift: its derivation (deterministic, shipped, a real shift), its benchmark, and its model's recipe."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from ttsi.arith import check_solution, evaluate
from ttsi.arithshift import derive as gen
from ttsi.arithshift.recipe import ArithRecipe, check_arith_recipe, kind_of, math_examples, train_arith
from ttsi.benchmarks import get_benchmark
from ttsi.benchmarks.arithshift import FILES, SPLITS_DIR, load_split
from ttsi.errors import ConfigError
from ttsi.prompts import parse_pair


@pytest.fixture(scope="module")
def derived():
    return gen.derive()


def test_shipped_splits_are_exactly_what_the_script_derives(derived, tmp_path):
    provenance = gen.write(derived, tmp_path)
    for name in [f"{s}.jsonl" for s in gen.COUNTS] + ["PROVENANCE.json"]:
        assert (tmp_path / name).read_bytes() == (SPLITS_DIR / name).read_bytes(), name
    assert provenance["counts"]["test_ood"]["tasks"] == gen.COUNTS["test_ood"]


def test_derivation_is_deterministic_and_depends_on_its_seed():
    small = {"train": 50, "test_ood": 20}
    assert gen.derive(3, small) == gen.derive(3, small)
    assert gen.derive(3, small) != gen.derive(4, small)


def test_no_question_is_in_two_splits_or_twice_in_one(derived):
    questions = [r["question"] for rows in derived.values() for r in rows]
    assert len(questions) == len(set(questions))


def _words(texts):
    return {w.lower() for t in texts for w in re.findall(r"[A-Za-z]+", t)}


def test_the_held_out_test_acts_with_verbs_never_seen_in_training(derived):
    held_out = {w for add, sub, mul, div in gen.HELD_OUT_ACTIONS.values() for phrase in (*add, *sub, *mul, div)
                for w in phrase.split()} - {"in", "off"}
    inside = {w for s in gen.IN_DOMAIN for phrase in (*s.add_verbs, *s.sub_verbs, *s.mul_verbs, s.div_verb)
              for w in phrase.split()}
    assert held_out and not held_out & inside
    train_words = _words(r["question"] + r["answer"] for r in derived["train"] + derived["test_id"])
    assert not train_words & held_out  # not one held-out verb in any training or in-domain test problem
    ood = derived["test_ood"]
    assert held_out <= _words(r["question"] for r in ood)
    for r in ood:  # every operation sentence of a held-out problem uses a held-out verb
        verbs = [v for world, actions in gen.HELD_OUT_ACTIONS.items() if r["scenario"].startswith(world)
                 for v in (*actions[0], *actions[1], *actions[2], actions[3])]
        operations = [op for op in r["ops"] if op not in ("start", "groups")]
        assert sum(r["question"].count(f" {v} ") for v in verbs) == len(operations), r["question"]
    assert {r["scenario"] for r in ood} == {s.name for s in gen.HELD_OUT}
    assert {r["scenario"] for r in derived["train"]} == {s.name for s in gen.IN_DOMAIN}


def test_every_solution_recomputes_and_ends_with_its_number(derived):
    for rows in derived.values():
        for r in rows:
            assert check_solution(r["answer"], str(r["number"])) == (True, None), r["id"]
            steps = re.findall(r"<<([^=]+)=([^>]+)>>", r["answer"])
            assert len(steps) == len([op for op in r["ops"] if op != "start"])
            assert evaluate(steps[-1][0]) == int(steps[-1][1]) == r["number"]
            assert r["answer"].endswith(f"#### {r['number']}")


def test_every_operation_occurs_in_both_domains(derived):
    for split in ("train", "test_ood"):
        ops = Counter(op for r in derived[split] for op in r["ops"])
        assert set(ops) == {"start", "groups", "add", "sub", "mul", "div"}, split


def test_benchmark_loads_every_split_and_every_gold_scores_correct():
    bench = get_benchmark("arithshift")
    assert set(bench.splits) == set(FILES) and bench.default_split == "ood" and not bench.needs_data
    for split in bench.splits:
        tasks = bench.load(None, split)
        assert tasks and all(t.kind == "math" and t.format == "math" and not t.tools for t in tasks)
        assert all(bench.score(t, t.gold_answer).correct for t in tasks)
    task = bench.load(None, "ood")[0]
    assert not bench.score(task, f"#### {int(task.meta['gold_number']) + 1}").correct
    assert bench.subsets(task) == [task.meta["scenario"]]


def test_a_missing_split_file_names_the_script(tmp_path):
    from ttsi.errors import TaskError

    with pytest.raises(TaskError, match=r"derive_arithshift\.py"):
        load_split("test_ood", tmp_path)


def test_math_examples_teach_answers_synthesis_and_demonstrations_of_the_same_kind():
    tasks = load_split("train")[:400]
    by_query = {t.query: t for t in tasks}
    pairs = math_examples(tasks, seed=0, synthesis_fraction=0.5, demo_fraction=0.2)
    synthesis = [(m, r) for m, r in pairs if "Example question" in m[-1]["content"]]
    answers = [(m, r) for m, r in pairs if "Example question" not in m[-1]["content"]]
    assert len(answers) == len(tasks)
    assert 0.35 * len(tasks) < len(synthesis) < 0.65 * len(tasks)
    from ttsi.formats import get_format

    fmt = get_format("math")
    for messages, reply in synthesis:
        asked = messages[-1]["content"].split("Example question:\n")[1].split("\n")[0]
        query, solution = parse_pair(reply, fmt)
        assert kind_of(by_query[query]) == kind_of(by_query[asked]) and query != asked
        assert solution == by_query[query].gold_answer
    with_demo = [m for m, _ in answers if len(m) > 3]
    assert 0.1 * len(tasks) < len(with_demo) < 0.3 * len(tasks)
    for messages, reply in answers:
        assert reply == by_query[messages[-1]["content"]].gold_answer


def test_recipe_checks_name_the_bad_field():
    check_arith_recipe(ArithRecipe())
    for bad, word in ((dict(hidden=100), "hidden"), (dict(lr=0.0), "lr"), (dict(demo_fraction=2.0), "demo_fraction"),
                      (dict(vocab_size=100), "vocab_size")):
        with pytest.raises(ConfigError, match=word):
            check_arith_recipe(ArithRecipe(**bad))


@pytest.mark.slow
def test_train_arith_writes_a_model_that_answers_and_its_info(tmp_path):
    from ttsi.model import HFModel

    data = tmp_path / "data"
    gen.write(gen.derive(5, {"train": 120}), data)
    recipe = ArithRecipe(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, vocab_size=300, steps=3,
                         batch_size=4, copy_steps=2, copy_batch_size=4)
    info = train_arith(tmp_path / "model", recipe, data=data)
    saved = json.loads((tmp_path / "model" / "train_info.json").read_text())
    assert saved["recipe"]["hidden"] == 32 and saved["tasks"] == 120 and info["parameters"] == saved["parameters"]
    assert not list((tmp_path / "model").glob("resume-*.pt"))  # a finished run leaves no resumable state
    model = HFModel.from_pretrained(str(tmp_path / "model"), dtype="float32")
    assert isinstance(model.generate([model.chat_prompt([{"role": "user", "content": "Leo has 3 pens."}])],
                                     max_new_tokens=4)[0], str)


def test_cli_train_base_refuses_an_unknown_setting_and_an_arithshift_teacher(tmp_path):
    from typer.testing import CliRunner

    from ttsi.cli import app

    for args, message in ((["--setting", "arith"], "--setting must be sealshift or arithshift"),
                          (["--setting", "arithshift", "--teacher"], "no teacher model"),
                          (["--setting", "arithshift", "--checkpoints"], "no intermediate checkpoints"),
                          (["--setting", "arithshift", "--set", "rename_fraction=0"], "rename_fraction")):
        result = CliRunner().invoke(app, ["train-base", "--out", str(tmp_path / "m"), *args])
        assert result.exit_code == 2, result.output
        assert message in result.output
    assert not Path(tmp_path / "m").exists()
