"""Seal-Tools: the loader, the fine-tune prompt, the answer format and the official scorer's rules."""

from __future__ import annotations

import ast
import json
import tempfile
from pathlib import Path

import pytest

from ttsi.benchmarks.sealtools import FOLDER, SealTools
from ttsi.benchmarks.sealtools.format import PROMPT_HEAD, SealToolsFormat, literal, official_parse, prompt
from ttsi.errors import TaskError
from ttsi.formats import AnswerParseError, get_format, register_format
from ttsi.task import Call, Task, Tool

from .conftest import missing_data

FIXTURE = Path(__file__).parent / "fixtures" / "sealtools" / "dev_sample.json"
BENCH = SealTools()
FMT = SealToolsFormat()
SPLITS = {"dev": (700, 200, 28), "test_in_domain": (700, 200, 30), "test_out_domain": (654, 94, 27)}
COUNT_KEYS = ("format_ok", "pred_api", "gold_api", "correct_api", "pred_param", "gold_param", "correct_param")


def write_split(root: Path, content: str, split: str = "dev") -> Path:
    path = root / FOLDER / "dataset_for_finetune" / f"{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


def load_sample(root: Path) -> list[Task]:
    write_split(root, FIXTURE.read_text(encoding="utf-8"))
    return BENCH.load(root, "dev")


@pytest.fixture
def sample(tmp_path) -> dict[str, Task]:
    return {t.id: t for t in load_sample(tmp_path)}


def raw_tool(name: str, params: dict[str, str], required=(), responses=("result",)) -> dict:
    return {"api_name": name, "api_description": f"{name} things", "field": "Test/Test",
            "parameters": {p: {"type": t, "description": p} for p, t in params.items()},
            "required": list(required),
            "responses": {r: {"type": "str", "description": r} for r in responses}}


def make_task(gold: list[dict], task_id: str = "dev-difficult-0") -> Task:
    """A hand-made item, built through the loader so it is read exactly as the official files are."""
    tools = {g["api"]: raw_tool(g["api"], dict.fromkeys(g["parameters"], "str")) for g in gold}
    human = {"from": "human", "value": prompt(list(tools.values()), "Do it.")}
    item = {"id": task_id, "conversations": [human, {"from": "gpt", "value": repr(gold)}]}
    with tempfile.TemporaryDirectory() as tmp:
        write_split(Path(tmp), json.dumps([item]))
        return BENCH.load(Path(tmp), "dev")[0]


def call(api: str, responses=("API_call_0",), **params) -> dict:
    return {"api": api, "parameters": params, "responses": list(responses)}


def counts(score) -> tuple[int, ...]:
    return tuple(score.counts[k] for k in COUNT_KEYS)


# ---------------------------------------------------------------- loader and prompt


def test_loader_reads_tools_query_gold_and_meta(sample):
    assert list(sample) == ["dev-easy-2", "dev-easy-107", "dev-difficult-646"]
    task = sample["dev-easy-107"]
    assert task.format == "sealtools" and len(task.tools) == 5
    assert task.messages == [{"role": "user", "content": task.query}] and task.query.endswith(".")
    tool = task.tool("getPhilosophyOfPhysics")
    assert tool is not None and tool.raw is not None and tool.raw["api_name"] == tool.name
    assert tool.parameters["type"] == "object" and tool.required == tool.raw["required"]
    assert all(p["type"] in ("str", "int", "float", "bool") for p in tool.properties.values())
    gold_args = {"theory": "Quantum Mechanics", "philosopher": "Niels Bohr", "area": "ontology"}
    assert task.answer == [Call("getPhilosophyOfPhysics", gold_args)]
    assert task.meta["gold"][0]["responses"] == ["API_call_0"]
    assert task.meta["level"] == "easy" and not task.meta["nested"] and task.meta["gold_in_api_list"]
    assert BENCH.subsets(task) == ["easy"]
    assert BENCH.subsets(sample["dev-difficult-646"]) == ["difficult", "nested"]


def test_messages_reproduce_the_fine_tune_prompt(sample):
    items = {d["id"]: d for d in json.loads(FIXTURE.read_text(encoding="utf-8"))}
    for task in sample.values():
        expected = items[task.id]["conversations"][0]["value"]
        assert FMT.messages(task) == [{"role": "user", "content": expected}]
    sibling = sample["dev-easy-107"].with_query('Explain "quantum" physics.')
    text = FMT.messages(sibling)[0]["content"]
    assert text.startswith(PROMPT_HEAD + "api_list = [{'api_name': ")
    assert text.endswith('\ntask_instruction = "Explain "quantum" physics."\nOutput:\n')


def test_messages_with_demos_and_tools_from_elsewhere():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    task = Task("t", [{"role": "user", "content": "Rain in Oslo?"}], [Tool("get_weather", "Weather", schema)])
    turns = FMT.messages(task, demos=[("Sun in Rome?", "[{'api': 'get_weather'}]")])
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[0]["content"].endswith('"Sun in Rome?"\nOutput:\n')
    assert turns[1]["content"] == "[{'api': 'get_weather'}]"
    listed = ast.literal_eval(turns[2]["content"].split("api_list = ")[1].split("\ntask_instruction")[0])
    assert listed == [{"api_name": "get_weather", "api_description": "Weather", "required": ["city"],
                       "parameters": {"city": {"type": "string", "description": ""}}, "responses": {}}]


# ---------------------------------------------------------------- format: render, parse, literal


def test_render_reproduces_gold_texts_and_numbers_responses_across_calls(sample):
    for task_id in ("dev-easy-107", "dev-difficult-646"):
        task = sample[task_id]
        assert FMT.render(task.answer, task.tools) == task.meta["gold_text"]
    # A call to a tool not given gets one response; a given tool's calls get one per response field.
    text = FMT.render([Call("neverSeenApi", {}), Call("getDigitalAccessPolicy", {"library_name": "x"})])
    assert text.endswith("'responses': ['API_call_0']}, {'api': 'getDigitalAccessPolicy', 'parameters': "
                         "{'library_name': 'x'}, 'responses': ['API_call_1']}]")


def test_quotes_brackets_and_booleans_are_written_so_the_official_parse_reads_them(sample):
    task = sample["dev-easy-2"]  # the gold value "Don't forget..." is written with Python's double quotes
    assert BENCH.score(task, task.meta["gold_text"]).reason == "parse_error"
    text = FMT.render(task.answer)
    assert "Don\\u0027t" in text and BENCH.score(task, text).correct
    assert ast.literal_eval(text)[0]["parameters"] == task.answer[0].arguments  # still a Python literal
    assert literal('Say "hi"') == "'Say \\\"hi\\\"'" and literal(True) == "true" and literal(None) == "null"
    assert literal("[ok]") == "'[ok]'" and literal("]x[") == "'\\u005dx\\u005b'"  # only unsafe brackets


VALUES = ["Don't", 'Say "hi"', "back\\slash", "line\nbreak\ttab\x01", "naïve ünïcode", "[unbalanced", "]x[",
          "[ok]", "", 0, -3, 2.5, 1e-05, 0.2907590418481535, True, False, None, [1, "a", {"k": "v"}],
          {"nested": {"list": [True, None]}}]


@pytest.mark.parametrize("value", VALUES)
def test_values_round_trip_through_render_and_the_official_parse(value):
    calls = [Call("f", {"x": value}), Call("g", {})]
    assert FMT.parse(FMT.render(calls)) == calls
    if "True" not in str(value) and "None" not in str(value) and "False" not in str(value):
        assert ast.literal_eval(literal(value)) == value  # the gold's Python-literal style, where it can be


def test_parse_follows_the_official_reading():
    text = 'Sure!\n[{"api": "f",\n "parameters": {"a": 1}, "responses": []}] done'
    assert FMT.parse(text) == [Call("f", {"a": 1})]
    assert FMT.parse("[ { 'api': 'f', 'parameters': {}, 'responses': [] } ]") == [Call("f", {})]
    # Only the first list counts.
    assert FMT.parse("[{'api': 'f', 'parameters': {}, 'responses': []}] [{'api': 'g'}]") == [Call("f", {})]
    # "parameters" may be absent from one call when the list mentions it elsewhere.
    both = "[{'api': 'f', 'responses': []}, {'api': 'g', 'parameters': {}, 'responses': []}]"
    assert FMT.parse(both) == [Call("f", {}), Call("g", {})]


@pytest.mark.parametrize(("text", "reason"), [
    ("I cannot help with that.", "no_calls"),
    ("[{'name': 'f', 'arguments': {}}]", "no_calls"),
    ("[{'api': 'f', 'parameters': {'a': 1}, 'responses': ['API_call_0']}", "truncated"),
    ("[{'api': 'f', 'parameters': {'a': '[x'}, 'responses': []}]", "truncated"),  # brackets count in strings
    ("[{'api': 'f', 'parameters': {'a': 1}}]", "missing_keys"),
    ("[{'api': 'f', 'parameters': {'a': True}, 'responses': []}]", "invalid_json"),
    ("[{'api': 'f', 'parameters': {'a': \"Don't\"}, 'responses': []}]", "invalid_json"),
    ("[{'api': 'f', 'parameters': {}, 'responses': []}, 3]", "malformed_call"),
    ("[{'api': 'f', 'parameters': [1], 'responses': []}]", "malformed_call"),
])
def test_parse_failures_have_typed_reasons(text, reason):
    with pytest.raises(AnswerParseError) as err:
        FMT.parse(text)
    assert err.value.reason == reason


def test_official_parse_keeps_what_the_scorer_counts():
    assert official_parse("[{'api': 'f', 'parameters': {}, 'responses': []}, 3, {'x': 1}]") == [
        {"api": "f", "parameters": {}, "responses": []}, 3, {"x": 1}]


# ---------------------------------------------------------------- format: gate candidates


def test_name_prefix_and_first_call_shapes():
    assert FMT.name_prefix("getFilmDetails", []) == "[{'api': 'getFilmDetails', 'parameters':"
    assert not FMT.name_prefix("get_weather", []).startswith(FMT.name_prefix("get", []))
    assert not FMT.name_prefix("get", []).startswith(FMT.name_prefix("get_weather", []))
    text = FMT.render([Call("a", {"q": "{[}'\""}), Call("b", {})])
    first = FMT.first_call(text)
    assert first is not None and first.endswith("},")
    assert FMT.parse(first[:-1] + "]") == [Call("a", {"q": "{[}'\""})]
    gold_style = "[{'api': 'a', 'parameters': {'q': \"it's {\"}, 'responses': []}]\n"
    assert FMT.first_call(gold_style) == gold_style
    assert FMT.first_call("[{'api': 'a', 'parameters': {") is None


@pytest.fixture(scope="module")
def seal_tokenizer(tmp_path_factory):
    """A byte-level BPE tokenizer with Qwen2's pre-tokenizer, trained on Seal-Tools-style answers."""
    from ttsi.tiny_models import train_tokenizer

    tasks = load_sample(tmp_path_factory.mktemp("seal"))
    corpus = [FMT.render(t.answer, t.tools) for t in tasks] * 20 + [FMT.messages(t)[0]["content"] for t in tasks]
    return train_tokenizer(corpus, vocab_size=600)


def test_candidates_end_on_a_token_boundary_of_the_answer(tokenizer, seal_tokenizer, sample):
    """A candidate's tokens are the first tokens of any answer that starts with it (Qwen2 pre-tokenizer)."""
    answers = [t.answer for t in sample.values()]
    for name in ("setAlarm", "removeItem", "doIt", "get", "get_weather", "sendEmail", "tell'em"):
        for args in ({}, {"text": "it's"}, {"n": 3, "ok": True}):
            answers += [[Call(name, args)], [Call(name, args), Call("getFilmDetails", {"title": "Up"})]]
    for tok in (tokenizer, seal_tokenizer):
        def ids(text, tok=tok):
            return tok(text, add_special_tokens=False)["input_ids"]

        for answer in answers:
            for text in (FMT.render(answer) + tail for tail in ("", "\n", "</s>")):
                for candidate in (FMT.name_prefix(answer[0].name, []), FMT.first_call(text)):
                    assert candidate is not None and text.startswith(candidate)
                    assert ids(text)[: len(ids(candidate))] == ids(candidate), (candidate, text)


def test_ending_after_the_name_would_split_a_token(seal_tokenizer, sample):
    """The boundary test has teeth: a prefix ending at the name's closing quote breaks the `',` token."""
    text = FMT.render(sample["dev-easy-107"].answer, sample["dev-easy-107"].tools)
    naive = "[{'api': 'getPhilosophyOfPhysics'"
    ids = seal_tokenizer(text, add_special_tokens=False)["input_ids"]
    naive_ids = seal_tokenizer(naive, add_special_tokens=False)["input_ids"]
    assert ids[: len(naive_ids)] != naive_ids


def test_registered_format_is_found_by_name():
    register_format(SealToolsFormat())
    assert get_format("sealtools").name == "sealtools"


# ---------------------------------------------------------------- scorer: one case per official rule


GOLD = [call("createPlaylist", playlist_name="Hits"),
        call("addTrack", ("API_call_1",), playlist_id="API_call_0", track_id=81)]


def test_gold_answer_scores_correct_with_full_counts():
    task = make_task(GOLD)
    score = BENCH.score(task, FMT.render(task.answer))
    assert score.correct and score.reason is None and counts(score) == (1, 2, 2, 2, 3, 3, 3)
    assert BENCH.score(task, task.meta["gold_text"]).correct
    assert task.meta["nested"] and BENCH.subsets(task) == ["difficult", "nested"]


def test_format_failure_counts_only_the_gold():
    score = BENCH.score(make_task(GOLD), "createPlaylist(playlist_name='Hits')")
    assert not score.correct and score.reason == "parse_error" and counts(score) == (0, 0, 2, 0, 0, 3, 0)


def test_order_of_calls_does_not_matter():
    score = BENCH.score(make_task(GOLD), repr(GOLD[::-1]))
    assert score.correct and counts(score) == (1, 2, 2, 2, 3, 3, 3)


def test_wrong_function():
    score = BENCH.score(make_task(GOLD), repr([GOLD[0], call("removeTrack", playlist_id="API_call_0")]))
    assert score.reason == "wrong_function" and counts(score) == (1, 2, 2, 1, 2, 3, 1)


def test_extra_or_missing_call_is_a_wrong_count():
    score = BENCH.score(make_task(GOLD), repr([*GOLD, call("shuffle")]))
    assert score.reason == "wrong_count" and counts(score) == (1, 3, 2, 2, 3, 3, 3)
    score = BENCH.score(make_task(GOLD), repr(GOLD[:1]))
    assert score.reason == "wrong_count" and counts(score) == (1, 1, 2, 1, 1, 3, 1)


def test_gold_calls_are_not_consumed():
    """Predicting one gold API twice counts both as correct calls (the official match is not one-to-one)."""
    score = BENCH.score(make_task(GOLD), repr([GOLD[0], GOLD[0]]))
    assert score.reason == "wrong_function" and counts(score) == (1, 2, 2, 2, 2, 3, 2)


def test_parameters_are_matched_against_the_first_gold_call_of_that_api():
    gold = [call("send", to="ann"), call("send", ("API_call_1",), to="bob")]
    score = BENCH.score(make_task(gold), repr(gold))
    assert score.correct and counts(score) == (1, 2, 2, 2, 2, 2, 1)


def test_values_are_compared_as_str():
    task = make_task([call("addTrack", track_id=81, ratio=0.5, live=True)])
    same = BENCH.score(task, "[{'api': 'addTrack', 'parameters': {'track_id': '81', 'ratio': 0.50, "
                             "'live': 'True'}, 'responses': []}]")
    assert same.correct and counts(same) == (1, 1, 1, 1, 3, 3, 3)
    other = BENCH.score(task, FMT.render([Call("addTrack", {"track_id": 81.0, "ratio": 0.5, "live": True})]))
    assert other.reason == "wrong_value" and "track_id" in other.detail
    assert counts(other) == (1, 1, 1, 1, 3, 3, 2)
    wrong = FMT.render([Call("addTrack", {"track_id": 81, "ratio": 0.5, "live": False})])
    assert BENCH.score(task, wrong).reason == "wrong_value"


def test_missing_and_unexpected_arguments():
    task = make_task([GOLD[0], call("addTrack", ("API_call_1",), playlist_id=1, track_id=81)])
    missing = BENCH.score(task, repr([GOLD[0], call("addTrack", playlist_id=1)]))
    assert missing.reason == "missing_argument" and "track_id" in missing.detail
    assert counts(missing) == (1, 2, 2, 2, 2, 3, 2)
    extra = BENCH.score(task, repr([GOLD[0], call("addTrack", playlist_id=1, track_id=81, position=2)]))
    assert extra.reason == "unexpected_argument" and "position" in extra.detail
    assert counts(extra) == (1, 2, 2, 2, 4, 3, 3)


def test_items_without_api_are_skipped_and_malformed_calls_are_counted():
    task = make_task(GOLD[:1])
    skipped = BENCH.score(task, "[{'api': 'createPlaylist', 'parameters': {'playlist_name': 'Hits'}, "
                                "'responses': []}, {'x': 1}, 'api']")
    assert skipped.reason == "malformed_call" and counts(skipped) == (1, 1, 1, 1, 1, 1, 1)
    no_dict = BENCH.score(task, "[{'api': 'createPlaylist', 'parameters': ['Hits'], 'responses': []}]")
    assert no_dict.reason == "malformed_call" and counts(no_dict) == (1, 1, 1, 1, 0, 1, 0)


def test_metrics_are_micro_averaged():
    task = make_task(GOLD)
    scores = [BENCH.score(task, FMT.render(task.answer)), BENCH.score(task, "no answer"),
              BENCH.score(task, repr([*GOLD, call("shuffle")]))]
    m = BENCH.metrics([task] * 3, scores)
    assert m["accuracy"] == pytest.approx(1 / 3) and m["format_acc"] == pytest.approx(2 / 3)
    assert m["tool_precision"] == pytest.approx(4 / 5) and m["tool_recall"] == pytest.approx(4 / 6)
    assert m["tool_f1"] == pytest.approx(2 * 0.8 * (4 / 6) / (0.8 + 4 / 6))
    assert m["param_precision"] == pytest.approx(6 / 6) and m["param_recall"] == pytest.approx(6 / 9)
    zero = BENCH.metrics([task], [BENCH.score(task, "")])
    assert zero == dict.fromkeys(("accuracy", "format_acc", "tool_precision", "tool_recall", "tool_f1",
                                  "param_precision", "param_recall", "param_f1"), 0.0)
    assert BENCH.metrics([], []) == {}


# ---------------------------------------------------------------- malformed data


def test_missing_file_and_unknown_split(tmp_path):
    with pytest.raises(TaskError, match=r"data file .*dataset_for_finetune.dev\.json does not exist"):
        BENCH.load(tmp_path, "dev")
    with pytest.raises(TaskError, match="no split 'train'"):
        BENCH.load(tmp_path, "train")


HUMAN = {"from": "human", "value": prompt([raw_tool("f", {"a": "str"})], "q")}
GPT = {"from": "gpt", "value": "[{'api': 'f', 'parameters': {'a': 'x'}, 'responses': ['API_call_0']}]"}
GOOD = {"id": "dev-easy-0", "conversations": [HUMAN, GPT]}


def with_turns(*turns: dict) -> str:
    return json.dumps([GOOD | {"conversations": list(turns)}])


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "is not valid JSON"),
    ("{}", "expected a JSON list"),
    ("[]", "expected a JSON list"),
    (json.dumps([{"conversations": []}]), "item 0 to be an object with an 'id'"),
    (json.dumps([GOOD, GOOD]), "unique ids"),
    (with_turns(HUMAN), "a human turn then a gpt turn"),
    (with_turns(GPT, HUMAN), "a human turn then a gpt turn"),
    (with_turns({"from": "human", "value": "Hi"}, GPT), "the Seal-Tools prompt"),
    (with_turns({"from": "human", "value": PROMPT_HEAD + 'api_list = [{\ntask_instruction = "q"\nOutput:\n'},
                GPT), "api_list is not a Python literal"),
    (with_turns({"from": "human", "value": prompt([{"name": "f"}], "q")}, GPT),
     "tools to be dicts with 'api_name'"),
    (with_turns(HUMAN, {"from": "gpt", "value": "f(a='x')"}), "gpt turn is not a Python literal"),
    (with_turns(HUMAN, {"from": "gpt", "value": "[{'api': 'f'}]"}), "gpt turn to be a list of"),
])
def test_malformed_file_names_itself(tmp_path, content, message):
    path = write_split(tmp_path, content)
    with pytest.raises(TaskError, match=message) as err:
        BENCH.load(tmp_path, "dev")
    assert str(path) in str(err.value)


def test_minimal_file_loads(tmp_path):
    write_split(tmp_path, json.dumps([GOOD]))
    (task,) = BENCH.load(tmp_path, "dev")
    assert task.answer == [Call("f", {"a": "x"})] and FMT.messages(task)[0]["content"] == HUMAN["value"]


# ---------------------------------------------------------------- the full data


@pytest.mark.parametrize("split", list(SPLITS))
def test_full_split(data_dir, split):
    """Counts as in SCORING.md; every prompt reproduced exactly; every gold answer, rendered, is correct."""
    if not (data_dir / FOLDER).is_dir():
        missing_data(f"no Seal-Tools data in {data_dir}")
    tasks = BENCH.load(data_dir, split)
    path = data_dir / FOLDER / "dataset_for_finetune" / f"{split}.json"
    prompts = {d["id"]: d["conversations"][0]["value"] for d in json.loads(path.read_text(encoding="utf-8"))}
    size, easy, nested = SPLITS[split]
    assert len(tasks) == size and sum(t.meta["level"] == "easy" for t in tasks) == easy
    assert sum("nested" in BENCH.subsets(t) for t in tasks) == nested
    for task in tasks:
        assert FMT.messages(task) == [{"role": "user", "content": prompts[task.id]}], task.id
        assert FMT.messages(task.with_query(task.query)) == FMT.messages(task)
    scores = [BENCH.score(t, FMT.render(t.answer, t.tools)) for t in tasks]
    assert all(s.correct for s in scores)
    assert all(FMT.parse(FMT.render(t.answer, t.tools)) == t.answer for t in tasks)
    # The gold texts themselves: all but a few are reproduced exactly, and exactly those fail the official
    # parse, whose ' -> " swap breaks values holding an apostrophe or a double quote, and JSON has no `True`
    # (dev: "Don't...", 'Prisoner"s'; in-domain: True, 'Alzheimer"s', '+50° 30" 20""'; out-of-domain:
    # "') UNION", "Bridget Jones's", '+50° 30" 20""'). A data defect: those gold texts score as format errors.
    # Besides those, a gold calling an API missing from the 5 retrieved tools has a response count the
    # rendering cannot know (one per response field of a tool it was not given); responses are not scored.
    differ = {t.id for t in tasks if FMT.render(t.answer, t.tools) != t.meta["gold_text"]}
    unparsable = {t.id for t in tasks if BENCH.score(t, t.meta["gold_text"]).reason == "parse_error"}
    not_listed = {t.id for t in tasks if not t.meta["gold_in_api_list"]}
    assert unparsable <= differ <= unparsable | not_listed
    assert len(unparsable) == {"dev": 2, "test_in_domain": 3, "test_out_domain": 3}[split]
    assert len(differ - unparsable) == {"dev": 1, "test_in_domain": 1, "test_out_domain": 0}[split]
    # Official figures of the gold against itself: below 1 only where a gold answer repeats an API with other
    # parameters (the official matcher compares each call with the first gold call of its API).
    m = BENCH.metrics(tasks, scores)
    assert m["accuracy"] == m["format_acc"] == m["tool_f1"] == 1.0
    repeats = sum(len({g["api"] for g in t.meta["gold"]}) < len(t.meta["gold"]) for t in tasks)
    assert (m["param_f1"] == 1.0) == (repeats == 0)
