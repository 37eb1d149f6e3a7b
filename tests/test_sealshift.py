"""SealShift: the derivation (deterministic, no out-of-domain leak into training), loading and scoring."""

import json
import random
import re
import subprocess
import sys

import pytest

from ttsi.benchmarks import get_benchmark
from ttsi.benchmarks.sealshift import SPLITS_DIR, load_split, tally, tool_names
from ttsi.sealshift.derive import derive, eligible, examples_in, make_query, words, write
from ttsi.sealshift.recipe import training_examples
from ttsi.task import Call

from .conftest import SCRIPTS, load_script, weather_task


@pytest.fixture(scope="module")
def shipped():
    return {name: load_split(name) for name in ("train", "test_id", "test_ood", "ood_train")}


@pytest.fixture(scope="module")
def provenance():
    return json.loads((SPLITS_DIR / "PROVENANCE.json").read_text())


def _top(task):
    return task.meta["field"].split("/")[0]


def test_no_out_of_domain_tool_or_field_reaches_training(shipped, provenance):
    ood_fields = set(provenance["ood_fields"])
    assert ood_fields and all(_top(t) not in ood_fields for t in shipped["train"])
    assert all(_top(t) in ood_fields for t in shipped["test_ood"] + shipped["ood_train"])
    shown_ood = tool_names(shipped["test_ood"]) | tool_names(shipped["ood_train"])
    assert not shown_ood & tool_names(shipped["train"])  # neither gold tools nor distractors
    assert not shown_ood & tool_names(shipped["test_id"])


def test_base_training_examples_mention_no_out_of_domain_tool(shipped):
    ood = tool_names(shipped["test_ood"]) | tool_names(shipped["ood_train"])
    sample = random.Random(0).sample(shipped["train"], 400)
    text = " ".join(m["content"] + reply for msgs, reply in training_examples(sample, 0, 0.5, 0.5) for m in msgs)
    assert not [name for name in ood if f'"{name}"' in text]


def test_test_queries_are_new(shipped):
    train = {t.query for t in shipped["train"]}
    assert not train & {t.query for t in shipped["test_id"]}
    assert not {t.query for t in shipped["ood_train"]} & {t.query for t in shipped["test_ood"]}
    for split in ("test_id", "test_ood"):
        ids = [t.id for t in shipped[split]]
        assert len(ids) == len(set(ids))


def test_every_item_offers_its_gold_tool_and_required_arguments(shipped):
    for task in shipped["test_ood"] + shipped["test_id"] + shipped["train"][:500]:
        gold = task.answer[0]
        tool = task.tool(gold.name)
        assert tool is not None and len(task.tools) == 2
        assert set(tool.required) <= set(gold.arguments) <= set(tool.properties)


def test_rederiving_reproduces_the_shipped_files(data_dir, tmp_path):
    write(derive(data_dir), data_dir, tmp_path)
    for path in sorted(SPLITS_DIR.iterdir()):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_both_subsets_present(shipped, provenance):
    subsets = {t.meta["subset"] for t in shipped["test_ood"]}
    assert subsets == {"templated", "real"}
    assert provenance["counts"]["test_ood"]["tasks"] == len(shipped["test_ood"])
    assert provenance["license"].startswith("Apache-2.0")


def test_words_and_examples():
    assert words("patient_id") == "patient id"
    assert words("releaseYear") == "release year"
    assert examples_in("The type of scan (e.g., MRI, CT scan)") == ["MRI", "CT scan"]
    assert examples_in("An expression (e.g., (P OR Q) AND R)") == []  # nested brackets: no clean value
    assert examples_in("The name of the city") == []


def test_query_contains_every_value_as_written():
    tool = {"api_name": "bookRoom", "api_description": "Book a hotel room.", "field": "Travel/Hotels",
            "parameters": {"hotel": {"type": "str"}, "nights": {"type": "int"}, "vip": {"type": "bool"}},
            "required": ["hotel", "nights", "vip"]}
    assert eligible(tool)
    for seed in range(20):
        q = make_query(tool, {"hotel": "Blue Harbor", "nights": 3, "vip": False}, random.Random(seed))
        assert "Blue Harbor" in q and "3" in q and "false" in q and "nights" in q


def test_ineligible_tools():
    params = {"a": {"type": "list"}}
    assert not eligible({"parameters": params, "required": ["a"]})
    assert not eligible({"parameters": {"a": {"type": "str"}}, "required": []})


def test_benchmark_scores_values_as_text(shipped):
    bench = get_benchmark("sealshift")
    task = next(t for t in bench.load(None, "ood") if any(isinstance(v, int) for v in t.answer[0].arguments.values()))
    gold = task.answer[0]
    as_text = {k: str(v) for k, v in gold.arguments.items()}
    assert bench.score(task, json.dumps([{"name": gold.name, "arguments": gold.arguments}])).correct
    assert bench.score(task, json.dumps([{"name": gold.name, "arguments": as_text}])).correct
    assert bench.score(task, "no json here").reason == "parse_error"
    assert bench.score(task, json.dumps([{"name": "nope", "arguments": {}}])).reason == "wrong_function"
    assert bench.subsets(task) == ["templated"]
    assert set(bench.splits) == {"ood", "id", "ood_train", "train"}


def test_tally_counts_hits_per_subset():
    real = weather_task(meta={"subset": "real"})
    tasks = [weather_task(), weather_task(id="b"), real]
    assert tally(tasks, lambda t: t.id == "b" or t is real) == {"real": (1, 1), "templated": (1, 2)}
    assert tally([], bool) == {}


def test_lexical_tool_choice_picks_the_tool_whose_words_the_request_uses():
    module = load_script("tool_choice_baseline")
    task = weather_task()
    assert module.lexical_choice(task).name == "get_weather"
    assert module.lexical_choice(weather_task(messages=[{"role": "user", "content": "Send an email to Bo"}])).name \
        == "send_email"


@pytest.mark.subprocess
def test_the_tool_choice_baseline_script_prints_each_split():
    out = subprocess.run([sys.executable, str(SCRIPTS / "tool_choice_baseline.py"), "--splits", "ood_train"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"ood_train: \d+/300 \(\d+\.\d%\) right tool; templated \d+/300\n", out.stdout)


def test_a_request_is_copyable_only_when_it_states_every_gold_value():
    module = load_script("sealshift_ceiling")
    assert module.copyable(weather_task())  # "Paris" is in "What is the weather in Paris?"
    assert module.copyable(weather_task(answer=[Call("get_weather", {"city": "paris"})]))  # as text, any case
    assert not module.copyable(weather_task(answer=[Call("get_weather", {"city": "Paris", "unit": "celsius"})]))
    assert module.copyable(weather_task(messages=[{"role": "user", "content": "Alarm at 7, true?"}],
                                        answer=[Call("set_alarm", {"hour": 7, "on": True})]))


@pytest.mark.subprocess
def test_the_ceiling_script_prints_each_split():
    out = subprocess.run([sys.executable, str(SCRIPTS / "sealshift_ceiling.py"), "--splits", "id,ood_train"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert re.fullmatch(r"id: \d+/319 \(\d+\.\d%\) copyable; real \d+/169 \(53% of the split\), "
                        r"templated 150/150 \(47% of the split\)", lines[0])
    assert lines[1] == "ood_train: 300/300 (100.0%) copyable; templated 300/300 (100% of the split)"
