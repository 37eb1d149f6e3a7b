"""BFCL v3: the prompting format (prompt, decoder, candidates) and the official AST checker, rule by rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttsi.benchmarks import get_benchmark
from ttsi.benchmarks.bfcl import BFCL, standardize
from ttsi.benchmarks.bfcl.format import PYTHON_HINT, SYSTEM_PROMPT_HEAD, BFCLFormat
from ttsi.errors import TaskError
from ttsi.formats import get_format, register_format
from ttsi.formats.base import AnswerParseError
from ttsi.task import Call, Task, Tool

FMT = BFCLFormat()
BENCH = BFCL()
FIXTURES = Path(__file__).parent / "fixtures" / "bfcl"


def fn(name: str, props: dict, required: tuple[str, ...] = ()) -> dict:
    return {"name": name, "description": f"{name} does it.",
            "parameters": {"type": "dict", "properties": props, "required": list(required)}}


def make_task(category: str, functions: list[dict], gold: list | None = None, system: str | None = None) -> Task:
    tools = [Tool(f["name"], f["description"], {**f["parameters"], "type": "object"}, raw=f) for f in functions]
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": "Do it."}]
    return Task(id=f"{category}_0", messages=messages, tools=tools, format="bfcl",
                meta={"gold": gold or [], "category": category})


def verdict(task: Task, output: str) -> tuple[bool, str | None]:
    s = BENCH.score(task, output)
    return s.correct, s.reason


INT, FLOAT, STR = {"type": "integer"}, {"type": "float"}, {"type": "string"}
AREA = fn("calc_area", {"base": INT, "height": FLOAT, "unit": STR, "precision": INT}, ("base", "height"))
AREA_GOLD = [{"calc_area": {"base": [10], "height": [5.0, 5.5], "unit": ["units", ""]}}]


# ---- the format ------------------------------------------------------------------------------------------------

def test_render_writes_python_calls_and_parse_reads_them_back():
    calls = [Call("spotify.play", {"artist": "Taylor Swift", "duration": 20}),
             Call("f", {"a": -1.5, "b": None, "c": True, "d": [1, "x"], "e": {"k": [{"n": 0}]}, "g": "it's \"q\"\n"}),
             Call("no_args", {}), Call("big", {"x": float("inf"), "t": (1,)})]
    text = FMT.render(calls)
    assert text.startswith("[spotify.play(artist='Taylor Swift', duration=20), f(a=-1.5, b=None, c=True, d=[1, 'x']")
    assert FMT.render([Call("f", {"a": 1, "b": "x"})]) == "[f(a=1, b='x')]"
    assert FMT.parse(text) == calls
    assert FMT.render([]) == "[]" and FMT.parse("[]") == []


@pytest.mark.parametrize(("output", "calls"), [
    ("f(x=1)", [Call("f", {"x": 1})]),                                   # wrapped in [...] when missing
    ("```\n[f(x=1)]\n```", [Call("f", {"x": 1})]),                       # backticks and newlines stripped
    ("f(x=1), g.h.i(y='a')", [Call("f", {"x": 1}), Call("g.h.i", {"y": "a"})]),
    ("[f(1, x=2)]", [Call("f", {"x": 2})]),                              # positional arguments are dropped
    ("[f(x=abc, y=...)]", [Call("f", {"x": "abc", "y": "..."})]),        # a bare name reads as its text
    ("[f(x=+5, y=-2)]", [Call("f", {"x": -5, "y": -2})]),                # any unary op negates a constant
    ("[f(x=1+2, y=2*3.5, z=[1]+[2])]", [Call("f", {"x": 3, "y": 7.0, "z": [1, 2]})]),
    ("[f(x=g(1), y=g(a=1), z=(1, 2), w=a[0])]",
     [Call("f", {"x": "g(1)", "y": {"g": {"a": 1}}, "z": (1, 2), "w": "a[0]"})]),
    ("", []),                                                             # empty output: no call
])
def test_parse_follows_the_official_decoder(output, calls):
    assert FMT.parse(output) == calls


@pytest.mark.parametrize(("output", "reason"), [
    ("I cannot help with that.", "syntax_error"),
    ("[f(x=1", "syntax_error"),           # a missing final `]` is added, so `[f(x=1)` would parse
    ("[1, 2]", "not_a_call"),
    ("```python\n[f(x=1)]\n```", "syntax_error"),   # upstream keeps the language tag: `[python\n[f(x=1)]`
    ("[f(x=math.pi)]", "unsupported_value"),
    ("[f(x=-y)]", "unsupported_value"),
    ("[f(x={1, 2})]", "unsupported_value"),
    ("[f(x=lambda: 1)]", "unsupported_value"),
    ("[f(x=len('a') + 1)]", "unsupported_value"),   # upstream evals this; only literal arithmetic here
    ("[f(x=9**9**9)]", "unsupported_value"),        # too large to build
    ("[f(x={**d})]", "unsupported_value"),
])
def test_parse_failures_have_reasons(output, reason):
    with pytest.raises(AnswerParseError) as err:
        FMT.parse(output)
    assert err.value.reason == reason


def test_messages_reproduce_the_bfcl_prompting_prompt():
    task = make_task("simple", [AREA])
    system, user = FMT.messages(task)
    expected = [{**AREA, "description": AREA["description"] + PYTHON_HINT}]
    assert system == {"role": "system", "content": f"{SYSTEM_PROMPT_HEAD}{expected!r}\n\n"}
    assert user == {"role": "user", "content": "Do it."}
    assert AREA["description"] == "calc_area does it."  # the tool's raw dict is not touched
    assert SYSTEM_PROMPT_HEAD.startswith("You are an expert in composing functions.")
    assert ("[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]\n"
            in SYSTEM_PROMPT_HEAD)
    assert SYSTEM_PROMPT_HEAD.endswith("\n\nHere is a list of functions in JSON format that you can invoke.\n")
    assert "{'name': 'calc_area'" in system["content"]  # the Python repr of the list, as upstream formats it


def test_messages_append_the_task_system_turn_and_put_demos_before_the_request():
    task = make_task("live_simple", [AREA], system="Be brief.")
    turns = FMT.messages(task, demos=[("Area of 2 by 3?", "[calc_area(base=2, height=3)]")])
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "user"]
    assert turns[0]["content"].endswith("\n\nBe brief.") and turns[0]["content"].startswith(SYSTEM_PROMPT_HEAD)
    sibling = FMT.messages(task.with_query("Area of 4 by 5?"))
    assert [t["role"] for t in sibling] == ["system", "user"] and sibling[1]["content"] == "Area of 4 by 5?"
    assert "Be brief." not in sibling[0]["content"]


def test_first_call_ends_after_the_punctuation_run_of_the_first_call():
    assert FMT.first_call("[f(x='a)b'), g(y=1)]") == "[f(x='a)b'),"
    assert FMT.first_call("[f(x=[1, (2)])]\n") == "[f(x=[1, (2)])]\n"
    assert FMT.first_call("[f(x='a'") is None and FMT.first_call("no call") is None


def test_name_prefix_ends_after_the_name_unless_another_name_extends_it():
    assert FMT.name_prefix("spotify.play", []) == "[spotify.play"
    tools = [fn("get", {"zone": STR, "city": STR}, ("city",)), fn("get_weather", {"city": STR}),
             fn("configs", {}), fn("configs_list", {"_page": INT})]
    shown = make_task("live_multiple", tools).tools
    assert FMT.name_prefix("get", shown) == "[get(city"           # the first required parameter
    assert FMT.name_prefix("get_weather", shown) == "[get_weather"
    assert FMT.name_prefix("configs", shown) == "[configs()]"
    assert FMT.name_prefix("configs_list", shown) == "[configs_list"
    prefixes = [FMT.name_prefix(f["name"], shown) for f in tools]
    assert not [(a, b) for a in prefixes for b in prefixes if a != b and b.startswith(a)]


def _pretoken_ends(tokenizer, text: str) -> set[int]:
    return {end for _, (_, end) in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)}


def assert_on_boundary(tokenizer, candidate: str, text: str) -> None:
    def ids(s):
        return tokenizer(s, add_special_tokens=False)["input_ids"]

    assert text.startswith(candidate), (candidate, text)
    assert len(candidate) in _pretoken_ends(tokenizer, text), (candidate, text)
    assert ids(text)[: len(ids(candidate))] == ids(candidate), (candidate, text)


BOUNDARY_TOOLS = [fn("get", {"city": STR}, ("city",)), fn("get_weather", {"city": STR, "unit": STR}, ("city",)),
                  fn("uber.ride", {"loc": STR, "time": INT}, ("loc",)), fn("uber.ride2", {"loc": STR}, ("loc",)),
                  fn("configs", {}), fn("configs_list", {"_page": INT}),
                  fn("Flights_4_Search", {"originAirport": STR, "n": INT}, ("originAirport",))]
BOUNDARY_ANSWERS = [
    [Call("get_weather", {"city": "Paris", "unit": "celsius"})],
    [Call("get", {"city": "São Paulo"}), Call("get_weather", {"city": "it's"})],
    [Call("uber.ride", {"loc": "Berkeley, CA", "time": -10})],
    [Call("uber.ride2", {"loc": "x"}), Call("configs_list", {"_page": 2})],
    [Call("configs", {})],
    [Call("configs_list", {"_page": 1})],
    [Call("Flights_4_Search", {"originAirport": "SFO", "n": 1}), Call("get", {"city": "a"})],
]


@pytest.mark.parametrize("answer", BOUNDARY_ANSWERS)
def test_candidates_end_on_a_token_boundary_of_the_answer(tokenizer, answer):
    """Qwen2's split makes `[get` and `(city` single pre-tokens: the candidates must not cut through them."""
    shown = make_task("live_multiple", BOUNDARY_TOOLS).tools
    text = FMT.render(answer)
    assert_on_boundary(tokenizer, FMT.name_prefix(answer[0].name, shown), text)
    assert_on_boundary(tokenizer, FMT.first_call(text), text)
    assert len(f"[{answer[0].name}(") not in _pretoken_ends(tokenizer, text)  # why a candidate never ends at `(`


# ---- the AST checker, one rule per case ------------------------------------------------------------------------

@pytest.mark.parametrize(("output", "correct", "reason"), [
    ("[calc_area(base=10, height=5.0)]", True, None),               # an optional gold param ("") may be omitted
    ("calc_area(base=10, height=5)", True, None),                   # an int is accepted for a float
    ("[calc_area(base=10, height=5.5, unit='U-N-I-T-S')]", True, None),  # strings are standardized
    ("[calc_area(base=10.0, height=5)]", False, "wrong_type"),      # a float is not an integer
    ("[calc_area(base=True, height=5)]", False, "wrong_type"),      # nor is a bool
    ("[calc_area(base='10', height=5)]", False, "wrong_type"),
    ("[calc_area(base=11, height=5)]", False, "wrong_value"),
    ("[calc_area(base=10, height=5, unit='meters')]", False, "wrong_value"),
    ("[calc_area(height=5)]", False, "missing_argument"),           # a required param is absent
    ("[calc_area(base=10, height=5, color='red')]", False, "unexpected_argument"),  # not in the doc
    ("[calc_area(base=10, height=5, precision=2)]", False, "unexpected_argument"),  # in the doc, not in the gold
    ("[calc_area(base=10, height=5), calc_area(base=10, height=5)]", False, "wrong_count"),  # simple: exactly 1
    ("[]", False, "wrong_count"),
    ("[area(base=10, height=5)]", False, "wrong_function"),
    ("[calc_area(base=10, height=5", False, "parse_error"),
    ("The area is 25.", False, "parse_error"),
])
def test_simple_rules(output, correct, reason):
    assert verdict(make_task("simple", [AREA], AREA_GOLD), output) == (correct, reason)


def test_a_gold_param_without_an_empty_option_must_be_given():
    gold = [{"calc_area": {"base": [10], "height": [5.0], "unit": ["units"]}}]
    assert verdict(make_task("simple", [AREA], gold), "[calc_area(base=10, height=5)]") == (False, "missing_argument")


def test_standardize_string():
    assert standardize("New York, NY") == standardize("new-york ny") == "newyorkny"
    assert standardize("It's 5.5*2^3/_") == 'it"s5523'


@pytest.mark.parametrize(("props", "gold", "output", "correct", "reason"), [
    ({"tags": {"type": "array", "items": STR}}, [["Red Wine", "cheese"]], "tags=['red wine', 'CHEESE']", True, None),
    ({"tags": {"type": "array", "items": STR}}, [["Red Wine", "cheese"]], "tags=['cheese', 'red wine']", False,
     "wrong_value"),                                                    # lists keep their order
    ({"tags": {"type": "array", "items": STR}}, [["a"]], "tags=[1]", False, "wrong_type"),  # element type checked
    ({"tags": {"type": "array", "items": STR}}, [["a"]], "tags=('a',)", False, "wrong_type"),  # a tuple is no list
    ({"pt": {"type": "tuple", "items": INT}}, [[1, 2]], "pt=(1, 2)", True, None),       # tuples read as lists
    ({"xs": {"type": "array", "items": FLOAT}}, [[1.0, 2.0]], "xs=[1, 2]", False, "wrong_type"),  # no int->float inside
    ({"v": {"type": "any"}}, ["5"], "v='5'", True, None),               # 'any' is checked as a string
    ({"v": {"type": "any"}}, ["5"], "v=5", False, "wrong_type"),
    ({"n": INT}, ["count"], "n='count'", True, None),                   # a 'variable' gold: its type is accepted ...
    ({"n": INT}, ["count"], "n='Count'", False, "wrong_value"),         # ... and compared exactly
    ({"on": {"type": "boolean"}}, [True], "on=True", True, None),
    ({"on": {"type": "boolean"}}, [True], "on=1", False, "wrong_type"),
])
def test_type_and_value_rules(props, gold, output, correct, reason):
    name = next(iter(props))
    task = make_task("simple", [fn("f", props, (name,))], [{"f": {name: gold}}])
    assert verdict(task, f"[f({output})]") == (correct, reason)


DICT_FN = fn("order", {"prefs": {"type": "dict", "properties": {}}}, ("prefs",))
DICT_GOLD = [{"order": {"prefs": [{"sweetness": ["none", "low"], "temp": ["hot", ""]}]}}]


@pytest.mark.parametrize(("value", "correct"), [
    ("{'sweetness': 'None'}", True),                  # standardized values; an optional key may be left out
    ("{'sweetness': 'low', 'temp': 'HOT'}", True),
    ("{'sweetness': 'none', 'size': 'L'}", False),    # a key the gold does not allow
    ("{'temp': 'hot'}", False),                       # a required key is missing
    ("{'sweetness': 'high'}", False),
])
def test_dict_rules(value, correct):
    assert verdict(make_task("simple", [DICT_FN], DICT_GOLD), f"[order(prefs={value})]") == (
        correct, None if correct else "wrong_value")


LIST_DICT_FN = fn("buy", {"items": {"type": "array", "items": {"type": "dict"}}}, ("items",))
LIST_DICT_GOLD = [{"buy": {"items": [[{"name": ["apple"], "qty": [2]}, {"name": ["pear"], "qty": [1, ""]}]]}}]


@pytest.mark.parametrize(("value", "correct"), [
    ("[{'name': 'Apple', 'qty': 2}, {'name': 'pear'}]", True),
    ("[{'name': 'pear'}, {'name': 'Apple', 'qty': 2}]", False),   # dicts are matched in order
    ("[{'name': 'apple', 'qty': 2}]", False),                      # same length as the gold list
])
def test_list_of_dicts_rules(value, correct):
    assert verdict(make_task("simple", [LIST_DICT_FN], LIST_DICT_GOLD), f"[buy(items={value})]") == (
        correct, None if correct else "wrong_value")


def test_multiple_checks_the_count_and_the_gold_function():
    other = fn("calc_perimeter", {"base": INT}, ("base",))
    task = make_task("multiple", [other, AREA], AREA_GOLD)
    assert verdict(task, "[calc_area(base=10, height=5)]") == (True, None)
    assert verdict(task, "[calc_perimeter(base=10)]") == (False, "wrong_function")
    assert verdict(task, "[calc_area(base=10, height=5), calc_perimeter(base=10)]") == (False, "wrong_count")


def test_parallel_matches_calls_in_any_order():
    play = fn("spotify.play", {"artist": STR, "duration": INT}, ("artist", "duration"))
    gold = [{"spotify.play": {"artist": ["Taylor Swift"], "duration": [20]}},
            {"spotify.play": {"artist": ["Maroon 5"], "duration": [15]}}]
    for category in ("parallel", "parallel_multiple", "live_parallel"):
        task = make_task(category, [play, AREA], gold)
        ok = "[spotify.play(artist='Maroon 5', duration=15), spotify.play(artist='Taylor Swift', duration=20)]"
        assert verdict(task, ok) == (True, None)
        twice = "[spotify.play(artist='Maroon 5', duration=15), spotify.play(artist='Maroon 5', duration=15)]"
        assert verdict(task, twice) == (False, "wrong_value")   # a call matches one gold call only
        assert verdict(task, "[spotify.play(artist='Maroon 5', duration=15)]") == (False, "wrong_count")
        other = "[calc_area(base=1, height=2), spotify.play(artist='Taylor Swift', duration=20)]"
        assert verdict(task, other) == (False, "wrong_function")


@pytest.mark.parametrize("category", ["irrelevance", "live_irrelevance"])
def test_irrelevance_is_correct_iff_no_call_decodes(category):
    task = make_task(category, [AREA])
    for output in ("[]", "", "None of the functions can be used.", "[calc_area(base=1"):
        assert verdict(task, output) == (True, None)
    assert verdict(task, "[calc_area(base=1, height=2)]") == (False, "should_abstain")


def test_live_relevance_is_correct_iff_some_call_decodes():
    task = make_task("live_relevance", [AREA])
    assert verdict(task, "[calc_area(base=1)]") == (True, None)  # any call, even one with wrong arguments
    assert verdict(task, "[]") == (False, "no_call")
    assert verdict(task, "I need more details.") == (False, "no_call")


def test_an_output_the_official_checker_crashes_on_is_wrong():
    task = make_task("simple", [fn("f", {"xs": {"type": "array"}}, ("xs",))], [{"f": {"xs": [[1]]}}])
    assert verdict(task, "[f(xs=[1])]") == (False, "checker_error")  # upstream reads items.type, absent here


def test_metrics_and_subsets():
    tasks = [make_task("simple", [AREA], AREA_GOLD), make_task("live_irrelevance", [AREA])]
    scores = [BENCH.score(t, "[calc_area(base=10, height=5)]") for t in tasks]
    assert BENCH.metrics(tasks[:1], scores[:1]) == {"accuracy": 1.0}
    assert BENCH.metrics(tasks, scores) == {"accuracy": 0.5, "accuracy_live_irrelevance": 0.0,
                                            "accuracy_simple": 1.0}
    tasks[1].meta["live"] = True
    assert BENCH.subsets(tasks[0]) == ["simple", "non_live"] and BENCH.subsets(tasks[1]) == ["live_irrelevance", "live"]


def test_registered():
    assert isinstance(get_benchmark("bfcl"), BFCL)
    register_format(BFCLFormat())
    assert get_format("bfcl").name == "bfcl"


# ---- loading: fixtures (Apache-2.0 lines of the real files) and broken files -----------------------------------

def test_fixture_items_load_with_canonical_answers_that_score_correct():
    simple = {t.id: t for t in BENCH.load(FIXTURES, "simple")}
    assert simple["simple_0"].answer == [Call("calculate_triangle_area", {"base": 10, "height": 5, "unit": "units"})]
    assert simple["simple_0"].tools[0].parameters["type"] == "object"
    assert simple["simple_0"].tools[0].raw["parameters"]["type"] == "dict"
    assert simple["simple_0"].meta["gold"][0]["calculate_triangle_area"]["unit"] == ["units", ""]
    # the checker holds the call to the item's function, whatever name the gold writes
    assert simple["simple_363"].answer[0].name == "restaurant_search.find_closest"
    # a required parameter whose first acceptable value is "" takes the next one
    assert simple["simple_200"].answer[0].arguments["fuel_efficiency"] == 25.0
    (pm,) = BENCH.load(FIXTURES, "parallel_multiple")
    assert "type" not in pm.answer[1].arguments  # the gold names a parameter the function lacks; "" allows leaving it
    (live,) = BENCH.load(FIXTURES, "live_multiple")
    assert live.answer == [Call("ChaDri.change_drink", {"drink_id": "1234", "new_preferences": {
        "sweetness_level": "none", "temperature": "hot"}})]
    assert live.messages[0]["role"] == "system"
    assert FMT.messages(live)[0]["content"].endswith(live.messages[0]["content"])
    (irrelevant,) = BENCH.load(FIXTURES, "irrelevance")
    (relevant,) = BENCH.load(FIXTURES, "live_relevance")
    assert irrelevant.answer == [] and relevant.answer is None and relevant.meta["gold"] == []
    for split in ("simple", "parallel", "parallel_multiple", "live_simple", "live_multiple", "irrelevance"):
        for task in BENCH.load(FIXTURES, split):
            assert task.format == "bfcl" and BENCH.score(task, FMT.render(task.answer)).correct, task.id


def _write(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows), encoding="utf-8")


ROW = {"id": "simple_0", "question": [[{"role": "user", "content": "Area?"}]], "function": [AREA]}


@pytest.mark.parametrize(("rows", "answers", "expected"), [
    (None, [], "BFCL_v3_simple.json"),                                  # no question file
    ([ROW, "{not json"], [], "BFCL_v3_simple.json:2"),
    ([ROW], None, "possible_answer/BFCL_v3_simple.json"),               # no answer file
    ([ROW], [{"id": "simple_9", "ground_truth": AREA_GOLD}], "possible_answer/BFCL_v3_simple.json"),
    ([ROW], [{"id": "simple_0", "ground_truth": {"calc_area": {}}}], "possible_answer/BFCL_v3_simple.json"),
    ([{**ROW, "function": None}], [{"id": "simple_0", "ground_truth": AREA_GOLD}], "BFCL_v3_simple.json"),
    ([{**ROW, "function": [{"name": "f"}]}], [{"id": "simple_0", "ground_truth": AREA_GOLD}], "BFCL_v3_simple.json"),
    ([{**ROW, "question": "Area?"}], [{"id": "simple_0", "ground_truth": AREA_GOLD}], "BFCL_v3_simple.json"),
])
def test_missing_or_malformed_files_name_themselves(tmp_path, rows, answers, expected):
    if rows is not None:
        _write(tmp_path / "bfcl_v3" / "BFCL_v3_simple.json", rows)
    if answers is not None:
        _write(tmp_path / "bfcl_v3" / "possible_answer" / "BFCL_v3_simple.json", answers)
    with pytest.raises(TaskError, match=expected.replace(".", r"\.")):
        BENCH.load(tmp_path, "simple")


def test_a_gold_call_to_a_missing_function_names_the_item(tmp_path):
    _write(tmp_path / "bfcl_v3" / "BFCL_v3_multiple.json", [{**ROW, "id": "multiple_0"}])
    _write(tmp_path / "bfcl_v3" / "possible_answer" / "BFCL_v3_multiple.json",
           [{"id": "multiple_0", "ground_truth": [{"nowhere": {}}]}])
    with pytest.raises(TaskError, match=r"BFCL_v3_multiple\.json: item multiple_0 .*'nowhere'"):
        BENCH.load(tmp_path, "multiple")


@pytest.mark.parametrize(("rows", "expected"), [
    ([ROW, {**ROW, "id": ["simple_1"]}], r"BFCL_v3_simple\.json: expected line 2 to be an object with an 'id'"),
    ([ROW, {**ROW, "id": "simple_1", "function": []}],
     r"BFCL_v3_simple\.json: expected item simple_1 \(line 2\): at least one function"),
    ([ROW, [1, 2]], r"BFCL_v3_simple\.json: expected line 2 to be an object"),
])
def test_rows_of_the_wrong_shape_name_the_file_and_line(tmp_path, rows, expected):
    _write(tmp_path / "bfcl_v3" / "BFCL_v3_simple.json", rows)
    _write(tmp_path / "bfcl_v3" / "possible_answer" / "BFCL_v3_simple.json",
           [{"id": "simple_0", "ground_truth": AREA_GOLD}, {"id": "simple_1", "ground_truth": AREA_GOLD}])
    with pytest.raises(TaskError, match=expected):
        BENCH.load(tmp_path, "simple")


def test_answers_of_the_wrong_shape_name_their_line(tmp_path):
    _write(tmp_path / "bfcl_v3" / "BFCL_v3_simple.json", [ROW])
    _write(tmp_path / "bfcl_v3" / "possible_answer" / "BFCL_v3_simple.json",
           [{"id": "simple_0", "ground_truth": AREA_GOLD}, {"id": ["x"], "ground_truth": AREA_GOLD}])
    with pytest.raises(TaskError, match=r"possible_answer/BFCL_v3_simple\.json: expected line 2 "):
        BENCH.load(tmp_path, "simple")


def test_a_relevance_item_may_offer_no_function(tmp_path):
    """4 live_irrelevance items of the real data have `"function": []`: a model answers them with no call."""
    _write(tmp_path / "bfcl_v3" / "BFCL_v3_live_irrelevance.json", [{**ROW, "id": "live_irrelevance_0",
                                                                      "function": []}])
    (task,) = BENCH.load(tmp_path, "live_irrelevance")
    assert task.tools == [] and task.answer == [] and BENCH.score(task, "").correct


def test_unknown_split(tmp_path):
    with pytest.raises(TaskError, match="unknown BFCL split"):
        BENCH.load(tmp_path, "java")


# ---- the full data ---------------------------------------------------------------------------------------------

COUNTS = {"simple": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200, "live_simple": 258,
          "live_multiple": 1053, "live_parallel": 16, "live_parallel_multiple": 24, "irrelevance": 240,
          "live_irrelevance": 882, "live_relevance": 18}
# Gold items no output can satisfy under the official checker (data defects of the v3 files):
UNSATISFIABLE = {
    "live_simple_106-63-0",    # 'auto_loan_payment_start' (required) has an empty list of acceptable values
    "live_simple_112-68-0",    # likewise 'acc_routing_start'
    "live_multiple_862-181-3",  # gold requires 'journey_start_time', which the function does not document
    "live_multiple_964-207-0",  # gold gives 'question' where the function requires 'statement'
}


@pytest.fixture(scope="module")
def full(data_dir):
    return {split: BENCH.load(data_dir, split) for split in BFCL.splits}


def test_split_counts_match_scoring_md(full):
    assert {split: len(tasks) for split, tasks in full.items()} == COUNTS
    ids = [t.id for tasks in full.values() for t in tasks]
    assert len(set(ids)) == len(ids)


def test_every_gold_answer_scores_correct_against_itself(full):
    wrong = set()
    for split, tasks in full.items():
        for task in tasks:
            answer = task.answer if task.answer is not None else [Call(task.tools[0].name, {})]  # live_relevance
            text = FMT.render(answer)
            assert FMT.parse(text) == answer, task.id
            if not BENCH.score(task, text).correct:
                wrong.add(task.id)
        assert BENCH.metrics(tasks, [BENCH.score(t, "I cannot help.") for t in tasks])["accuracy"] == (
            1.0 if "irrelevance" in split else 0.0)
    assert wrong == UNSATISFIABLE


def test_candidates_on_the_real_tools_are_boundary_safe_and_distinct(full, tokenizer):
    for split in BFCL.splits:
        for task in full[split]:
            prefixes = [FMT.name_prefix(t.name, task.tools) for t in task.tools]
            assert not [(a, b) for a in prefixes for b in prefixes if a != b and b.startswith(a)], task.id
            if task.answer:
                text = FMT.render(task.answer)
                assert_on_boundary(tokenizer, FMT.first_call(text), text)
                candidate = FMT.name_prefix(task.answer[0].name, task.tools)
                if text.startswith(candidate):
                    assert_on_boundary(tokenizer, candidate, text)
