"""ToolAlpaca: the ReAct `Action:` / `Action Input:` format, the first-action scorer, and the loader."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ttsi.benchmarks import ItemScore, get_benchmark
from ttsi.benchmarks.toolalpaca import ToolAlpaca, parameters_schema
from ttsi.benchmarks.toolalpaca.format import ToolAlpacaFormat
from ttsi.errors import TaskError
from ttsi.formats import register_format
from ttsi.formats.base import AnswerParseError
from ttsi.task import Call, Task, Tool

FIXTURES = Path(__file__).parent / "fixtures"
FMT = ToolAlpacaFormat()
BENCH = ToolAlpaca()

FORECAST = ('Get the weather forecast for a city.\nParameters: {"city": "Required. string. The city.", '
            '"days": "integer. How many days."}\nOutput: A forecast.\n - Format: application/json\n'
            ' - Structure: Object{days}')
ALERTS = 'List weather alerts.\nParameters: {}\nOutput: Alerts.'


def tools() -> list[Tool]:
    path = Path("invented.json")
    alerts_raw = {"name": "getForecastAlerts", "description": ALERTS, "components": "#Alert: Object{text}"}
    forecast_raw = {"name": "getForecast", "description": FORECAST}
    return [Tool("getForecast", "Get the weather forecast for a city.",
                 parameters_schema(FORECAST, "f", path), raw=forecast_raw),
            Tool("getForecastAlerts", "List weather alerts.", parameters_schema(ALERTS, "a", path),
                 raw=alerts_raw)]


def task(gold_input: str = '{"city": "Oslo", "days": 3}', action: str = "getForecast") -> Task:
    gold = {"Action": action, "Action_Input": gold_input}
    return Task(id="simulated-0-0", messages=[{"role": "user", "content": "Weather in Oslo for 3 days?"}],
                tools=tools(), answer=None, format="toolalpaca", meta={"api": "Weather", "gold": gold})


def score(output: str, **kw) -> ItemScore:
    return BENCH.score(task(**kw), output)


# ---- scoring rules -------------------------------------------------------------------------------

def test_registered():
    assert get_benchmark("toolalpaca").splits == ("simulated", "real")
    assert get_benchmark("toolalpaca").default_split == "simulated"


@pytest.mark.parametrize("output", [
    'Action: getForecast\nAction Input: {"city": "Oslo", "days": 3}',
    'Action: getForecast\nAction Input: {"days": 3, "city": "Oslo"}',                 # key order is free
    ' I should get the forecast.\nAction: getForecast\nAction Input: {"city": "Oslo", "days": 3}',
    'Thought: f.\nAction: getForecast\nAction Input: {"city": "Oslo", "days": 3.0}',  # 3.0 == 3
    'Action: getForecast\nAction Input: "{"city": "Oslo", "days": 3}"',  # the parser strips quotes
    'Action: getForecast\nAction Input:\n```json\n{"city": "Oslo", "days": 3}\n```',
    'Action: getForecast\nAction Input: {"city": "Oslo", "days": 3}\nObservation: {"x": 1}\nFinal Answer: ok',
    'Action 1: getForecast\nAction 1 Input: {"city": "Oslo", "days": 3}',
])
def test_correct_outputs(output):
    assert score(output).correct, score(output)


@pytest.mark.parametrize(("output", "reason"), [
    ('Action: getForecast\nAction Input: {"city": "Oslo", "days": 4}', "wrong_value"),
    ('Action: getForecast\nAction Input: {"city": "Oslo", "days": "3"}', "wrong_type"),
    ('Action: getForecast\nAction Input: {"city": "Oslo"}', "missing_argument"),
    ('Action: getForecast\nAction Input: {"city": "Oslo", "days": 3, "units": "C"}', "unexpected_argument"),
    ('Action: getForecastAlerts\nAction Input: {"city": "Oslo", "days": 3}', "wrong_function"),
    ('Action: `getForecast`\nAction Input: {"city": "Oslo", "days": 3}', "wrong_function"),  # read verbatim
    ("Thought: I know it.\nFinal Answer: sunny", "no_call"),
    ('Action: getForecast\nAction Input: {"city": "Oslo", "days": 3}\nFinal Answer: sunny', "no_call"),
    ("Action: getForecast", "parse_error"),
    ("Action: getForecast\nAction Input: city=Oslo", "parse_error"),
    ('Action: getForecast\nAction Input: {"city": "Oslo", days: 3}', "parse_error"),
    ('Action: getForecast\nAction Input: [{"city": "Oslo", "days": 3}]', "parse_error"),
])
def test_wrong_outputs_have_typed_reasons(output, reason):
    result = score(output)
    assert not result.correct and result.reason == reason, result


def test_malformed_gold_is_never_matched():
    result = score('Action: getForecast\nAction Input: {"city": "Oslo"}', gold_input='{"city": ${city}}')
    assert not result.correct and result.reason == "gold_malformed"


def test_counts_metrics_subsets():
    scores = [score(o) for o in ('Action: getForecast\nAction Input: {"city": "Oslo", "days": 3}',
                                 'Action: getForecast\nAction Input: {"city": "Rome", "days": 3}',
                                 'Action: getForecastAlerts\nAction Input: {}')]
    assert [s.counts["action_match"] for s in scores] == [1.0, 1.0, 0.0]
    metrics = BENCH.metrics([task()] * 3, scores)
    assert metrics["accuracy"] == pytest.approx(1 / 3) and metrics["action_accuracy"] == pytest.approx(2 / 3)
    assert BENCH.subsets(task()) == ["Weather"]


# ---- schemas and the prompt ----------------------------------------------------------------------

def test_parameters_schema():
    schema = parameters_schema(
        'x\nParameters: {"a": "Required. string. One of: [p, q]. A.", "b": "integer. B.", '
        '"c": "Array[string]. C.", "d": "Required. Object{k}. D.", "e": "Optional. boolean. E.", '
        '"f": "number.", "g": "whatever"}', "x", Path("p.json"))
    assert schema["required"] == ["a", "d"]
    assert {k: v.get("type") for k, v in schema["properties"].items()} == {
        "a": "string", "b": "integer", "c": "array", "d": "object", "e": "boolean", "f": "number", "g": None}
    assert schema["properties"]["a"]["description"] == "Required. string. One of: [p, q]. A."


def test_messages_reproduce_the_agent_prompt():
    messages = FMT.messages(task())
    assert len(messages) == 1 and messages[0]["role"] == "user"
    assert messages[0]["content"] == (
        "Answer the following questions as best you can. You have access to the following tools:\n\n"
        f"getForecast: {FORECAST}\ngetForecastAlerts: {ALERTS}#Alert: Object{{text}}\n\n"
        "Use the following format:\n\n"
        "Question: the input question you must answer\n"
        "Thought: you should always think about what to do\n"
        "Action: the action to take, should be one of [getForecast, getForecastAlerts]\n"
        "Action Input: the input to the action, in JSON format.\n"
        "Observation: the result of the action\n"
        "... (this Thought/Action/Action Input/Observation can repeat N times)\n"
        "Thought: I now know the final answer\n"
        "Final Answer: the final answer to the original input question\n\n"
        "Begin!\n\nQuestion: Weather in Oslo for 3 days?\nThought:")


def test_messages_for_siblings_and_demos():
    assert FMT.messages(task().with_query("Alerts?"))[0]["content"].endswith("Question: Alerts?\nThought:")
    demo = FMT.render([Call("getForecastAlerts", {})])
    turns = FMT.messages(task(), demos=[("Alerts?", demo)])
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[0]["content"].endswith("Begin!\n\nQuestion: Alerts?\nThought:")
    assert turns[1]["content"] == demo
    assert turns[2]["content"] == "Question: Weather in Oslo for 3 days?\nThought:"


def test_tools_without_raw_description_still_render():
    plain = Tool("ping", "Ping a host.", {"type": "object", "properties": {"host": {"type": "string"}},
                                           "required": ["host"]})
    sibling = Task(id="x", messages=[{"role": "user", "content": "ping h"}], tools=[plain])
    text = FMT.messages(sibling)[0]["content"]
    assert 'ping: Ping a host.\nParameters: {"host": "string"}' in text


# ---- the answer format ---------------------------------------------------------------------------

@pytest.mark.parametrize("calls", [
    [Call("getForecast", {"city": 'O "s"\nlo ü', "days": 3, "exact": 1.5, "f": True, "n": None,
                          "tags": ["a", {"b": []}]})],
    [Call("getForecastAlerts", {})],
    [Call("getForecast", {"city": "Oslo"}), Call("getForecastAlerts", {})],
])
def test_render_parse_round_trip(calls):
    text = FMT.render(calls)
    assert FMT.parse(text) == calls
    assert FMT.parse("Thought: let me see.\n" + text + "\nObservation: ...") == calls


def test_parse_reads_what_the_scorer_reads():
    text = 'Action: getForecast\nAction Input:\n```json\n{"city": "Oslo"}\n```'
    assert FMT.parse(text) == [Call("getForecast", {"city": "Oslo"})]
    assert FMT.parse('Action: getForecast\nAction Input: "{"city": "Oslo"}"') == [
        Call("getForecast", {"city": "Oslo"})]


def test_render_style():
    text = FMT.render([Call("getForecast", {"city": "Oslo"})])
    assert text == 'Action: getForecast\nAction Input: {"city": "Oslo"}'


@pytest.mark.parametrize(("text", "reason"), [
    ("Final Answer: nothing to do", "final_answer"),
    ("I will call getForecast.", "no_action"),
    ('Action: getForecast\nAction Input: {"city": Oslo}', "malformed_input"),
    ("Action: getForecast\nAction Input: none", "malformed_input"),
])
def test_parse_failures(text, reason):
    with pytest.raises(AnswerParseError) as info:
        FMT.parse(text)
    assert info.value.reason == reason


def test_name_prefixes_of_prefix_names_are_not_prefixes_of_each_other():
    short, long = FMT.name_prefix("getForecast", []), FMT.name_prefix("getForecastAlerts", [])
    assert not long.startswith(short) and not short.startswith(long)


def test_first_call():
    text = 'Thought: ok\nAction: getForecast\nAction Input: {"city": "Oslo"}\nObservation: x'
    assert FMT.first_call(text) == 'Thought: ok\nAction: getForecast\nAction Input: {"city": "Oslo"}\n'
    assert FMT.first_call('Action: getForecast\nAction Input: {"city": "Os') is None


def test_candidates_end_on_a_token_boundary_of_the_answer(tokenizer):
    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    answers = [[Call("getForecast", {"city": "Lima", "days": 7})], [Call("getForecastAlerts", {})],
               [Call("get", {"q": "x"})], [Call("get_weather", {"city": "Lima"}), Call("get", {"q": "(y)"})],
               [Call("preferred-routes_get", {"origin": "ACK", "tags": ["a"], "deep": {"k": True}})]]
    for answer in answers:
        for tail in ("", "\nObservation:", "}", " and more"):
            text = FMT.render(answer) + tail
            for candidate in (FMT.name_prefix(answer[0].name, []), FMT.first_call(text)):
                assert candidate is not None and text.startswith(candidate)
                assert ids(text)[: len(ids(candidate))] == ids(candidate), (candidate, text)


def test_agent_lookup_finds_the_format():
    from ttsi.formats import get_format

    register_format(ToolAlpacaFormat())
    assert get_format("toolalpaca").name_prefix("f", []) == "Action: f\nAction Input:"


# ---- the loader on the fixtures (Apache-2.0 excerpts) --------------------------------------------

def test_fixture_simulated():
    loaded = BENCH.load(FIXTURES, "simulated")
    assert len(loaded) == 21 and loaded[0].id == "simulated-0-0" and loaded[-1].id == "simulated-1-10"
    first = loaded[0]
    names = ["getRandomAxolotlImage", "searchAxolotlImages", "getAxolotlFacts"]
    assert [t.name for t in first.tools] == names
    assert first.answer == [Call("getRandomAxolotlImage", {})] and first.format == "toolalpaca"
    assert first.meta["api"] == "Axolotl" and first.meta["n_steps"] == 1
    search = first.tool("searchAxolotlImages")
    assert search.properties["page"]["type"] == "integer" and search.required == []
    defects = {t.id: t.meta["gold_defect"] for t in loaded if "gold_defect" in t.meta}
    assert sorted(defects) == [f"simulated-1-{i}" for i in (0, 3, 4, 5, 7)]
    assert "getDetails" in defects["simulated-1-0"] and "not JSON" in defects["simulated-1-3"]
    assert all(t.answer is None for t in loaded if t.id in defects)


def test_fixture_real_repairs_and_components():
    loaded = BENCH.load(FIXTURES, "real")
    airports = [t for t in loaded if t.meta["api"] == "airportsapi"]
    assert airports[0].tools[-1].raw["components"].startswith("The detailed output format")
    assert "The detailed output format" in FMT.messages(airports[0])[0]["content"]
    doubled = [t for t in loaded if '"symbols": "symbols"' in t.meta["golden_answers"][0]["Action_Input"]]
    assert len(doubled) == 4
    for t in doubled:  # read as the gold means it: the doubled key once, with the value that follows it
        written = t.meta["golden_answers"][0]["Action_Input"]
        value = json.loads(written.split('"symbols": "symbols": ', 1)[1].rstrip("}").strip())
        assert t.answer[0].arguments["symbols"] == value and "symbols" not in json.dumps(value)


@pytest.mark.parametrize("split", ["simulated", "real"])
def test_fixture_golds_score_correct(split):
    for t in BENCH.load(FIXTURES, split):
        gold = t.meta["gold"]
        result = BENCH.score(t, f"Action: {gold['Action']}\nAction Input: {gold['Action_Input']}")
        assert result.correct == ("${" not in gold["Action_Input"]), (t.id, result)
        if t.answer is not None:
            rendered = FMT.render(t.answer)
            assert BENCH.score(t, rendered).correct and FMT.parse(rendered) == t.answer


# ---- the full data -------------------------------------------------------------------------------

@pytest.mark.parametrize(("split", "apis", "items", "self_correct"),
                         [("simulated", 10, 100, 93), ("real", 11, 114, 114)])
def test_full_data(data_dir, split, apis, items, self_correct):
    loaded = BENCH.load(data_dir, split)
    assert len(loaded) == items and len({t.id for t in loaded}) == items
    assert len({t.meta["api"] for t in loaded}) == apis
    correct = 0
    for t in loaded:
        gold = t.meta["gold"]
        correct += BENCH.score(t, f"Action: {gold['Action']}\nAction Input: {gold['Action_Input']}").correct
        if t.answer is not None:
            assert BENCH.score(t, FMT.render(t.answer)).correct, t.id
    # simulated: 7 golden first actions hold unfilled placeholders such as `"startDate": ${start date}`
    # (not JSON, so nothing can equal them); every other gold self-scores, including the 8 whose first action
    # is getDetails (not offered by the evaluation prompt) and the 6 of AviationAPI (real) that name
    # functions its documentation lacks.
    assert correct == self_correct
    steps = Counter(t.meta["n_steps"] for t in loaded)
    assert steps == ({1: 57, 2: 35, 3: 6, 4: 1, 5: 1} if split == "simulated" else {1: 94, 2: 13, 3: 6, 5: 1})


def test_full_data_defects(data_dir):
    simulated, real = BENCH.load(data_dir, "simulated"), BENCH.load(data_dir, "real")
    assert sum(t.answer is None for t in simulated) == 15 and sum(t.answer is None for t in real) == 6


# ---- malformed data ------------------------------------------------------------------------------

def _api(**changes) -> dict:
    api = {"Name": "Weather", "Category": "Weather", "Function_Description": {"getForecast": FORECAST,
                                                                               "components": ""},
           "Function_Projection": {"getForecast": ["/forecast", "get"]}, "Instructions": ["Oslo?"],
           "Golden_Answers": [[{"Action": "getForecast", "Action_Input": '{"city": "Oslo"}'}]]}
    api.update(changes)
    return api


def test_invented_file_loads(tmp_path):
    (tmp_path / "toolalpaca").mkdir()
    (tmp_path / "toolalpaca" / "eval_real.json").write_text(json.dumps([_api()]))
    loaded = BENCH.load(tmp_path, "real")
    assert [t.id for t in loaded] == ["real-0-0"]
    assert loaded[0].answer == [Call("getForecast", {"city": "Oslo"})]


@pytest.mark.parametrize("content", [
    None, "[{", json.dumps({"Name": "x"}), json.dumps([]), json.dumps([_api(Instructions=["a", "b"])]),
    json.dumps([_api(Golden_Answers=[[]])]), json.dumps([_api(Golden_Answers=[[{"Action": "getForecast"}]])]),
    json.dumps([_api(Function_Description={"components": ""})]),
    json.dumps([_api(Function_Description={"getForecast": "No parameters line."})]),
    json.dumps([_api(Function_Description={"getForecast": "x\nParameters: {bad"})]),
])
def test_malformed_files_name_themselves(tmp_path, content):
    (tmp_path / "toolalpaca").mkdir()
    if content is not None:
        (tmp_path / "toolalpaca" / "eval_simulated.json").write_text(content)
    with pytest.raises(TaskError, match=r"eval_simulated\.json"):
        BENCH.load(tmp_path, "simulated")
