"""Self-augmentation: parsing answers and synthesis replies, schema validation, and the selection of pairs."""

from __future__ import annotations

import pytest

from ttsi.augment import SelfSynthesizer, normalize_query, select_pairs
from ttsi.config import SynthesisConfig
from ttsi.formats import AnswerParseError, get_format
from ttsi.prompts import parse_pair, render_pair, synthesis_messages
from ttsi.schema import CallError, check_calls, value_problem
from ttsi.task import Call
from ttsi.toy import SEEN, make_tasks

from .conftest import weather_task

FMT = get_format("json")


def test_json_format_round_trips_and_names_the_first_function():
    calls = [Call("get_weather", {"city": "Zürich"}), Call("send_email", {"to": "a@b.c"})]
    text = FMT.render(calls)
    assert FMT.parse(text) == calls
    assert text.startswith(FMT.name_prefix("get_weather", weather_task().tools))
    assert FMT.first_call(text) == text[: text.index("}}") + 3]  # through the comma: a token boundary
    assert FMT.first_call('[{"name": "f", "arguments": {"s": "a}b"') is None  # never closes


@pytest.mark.parametrize(("text", "expected"), [
    ('Sure! [{"name": "f", "arguments": {"x": 1}}] done', [Call("f", {"x": 1})]),
    ('```json\n[{"name": "f", "arguments": {}}]\n```', [Call("f", {})]),
    ('{"name": "f", "arguments": "{\\"x\\": 2}"}', [Call("f", {"x": 2})]),  # a single call, string arguments
    ("[]", []),
])
def test_parse_accepts_common_answer_shapes(text, expected):
    assert FMT.parse(text) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("I cannot help with that.", "no_json"),
    ('[{"name": "f", "arguments": {"x": 1}', "truncated"),
    ('[{"name": "f", "arguments": {}}, {"name": "g", "argu', "truncated"),  # never half an answer
    ('{"x": 1}', "no_json"),
    ('[{"function": "f"}]', "malformed_call"),
    ('[{"name": "f", "arguments": [1, 2]}]', "malformed_call"),
    ('[{"name": "f", "arguments": "not json"}]', "malformed_call"),
])
def test_parse_rejects_malformed_outputs_with_a_reason(text, reason):
    with pytest.raises(AnswerParseError) as e:
        FMT.parse(text)
    assert e.value.reason == reason


def test_synthesis_pair_round_trip_and_malformed_replies():
    calls = [Call("get_weather", {"city": "Oslo"})]
    assert parse_pair(render_pair("Weather in Oslo?", calls, FMT), FMT) == ("Weather in Oslo?", calls)
    multiline = 'Request: "Weather in Oslo?"\nAnswer:\n[{"name": "get_weather",\n "arguments": {"city": "Oslo"}}]'
    assert parse_pair(multiline, FMT) == ("Weather in Oslo?", calls)
    for text, reason in [("Weather in Oslo? [..]", "no_pair"), ("Request: \nAnswer: []", "empty_query"),
                         ("Request: hi\nAnswer: nothing", "no_json")]:
        with pytest.raises(AnswerParseError) as e:
            parse_pair(text, FMT)
        assert e.value.reason == reason


@pytest.mark.parametrize(("value", "schema", "problem"), [
    ("x", {"type": "string"}, None),
    (3, {"type": "integer"}, None),
    (True, {"type": "integer"}, "wrong_type"),  # JSON booleans are not integers
    (3.5, {"type": "integer"}, "wrong_type"),
    (3, {"type": "number"}, None),
    ("3", {"type": "number"}, "wrong_type"),
    (2.0, {"type": "float"}, None),  # Python type names, as benchmarks write them
    ({"a": 1}, {"type": "dict"}, None),
    ([1, "b"], {"type": "array", "items": {"type": "integer"}}, "wrong_type"),
    ({"a": "x"}, {"type": "object", "properties": {"a": {"type": "integer"}}}, "wrong_type"),
    ("kelvin", {"type": "string", "enum": ["celsius", "fahrenheit"]}, "not_in_enum"),
    (None, {"type": ["string", "null"]}, None),
    ("anything", {"type": "any"}, None),
])
def test_value_types_follow_the_json_schema(value, schema, problem):
    result = value_problem(value, schema)
    assert (result[0] if result else None) == problem


@pytest.mark.parametrize(("calls", "reason"), [
    ([], "no_calls"),
    ([Call("get_time", {})], "unknown_function"),
    ([Call("get_weather", {})], "missing_argument"),
    ([Call("get_weather", {"city": "Oslo", "country": "NO"})], "unknown_argument"),
    ([Call("set_alarm", {"hour": "seven"})], "wrong_type"),
    ([Call("get_weather", {"city": "Oslo", "unit": "kelvin"})], "not_in_enum"),
])
def test_check_calls_names_the_reason(calls, reason):
    with pytest.raises(CallError) as e:
        check_calls(calls, weather_task().tools)
    assert e.value.reason == reason


def test_select_pairs_validates_deduplicates_and_counts_rejections():
    task = weather_task()
    ok = 'Request: Weather in Oslo?\nAnswer: [{"name": "get_weather", "arguments": {"city": "Oslo"}}]'
    drafts = [
        "gibberish",                                                                             # no_pair
        'Request: Weather in Rome?\nAnswer: [{"name": "get_time", "arguments": {}}]',            # unknown_function
        'Request: Weather in Rome?\nAnswer: [{"name": "get_weather", "arguments": {}}]',          # missing_argument
        'Request: what is the WEATHER in paris\nAnswer: [{"name": "get_weather", "arguments": {"city": "P"}}]',
        ok,
        ok.replace("Oslo?", "oslo"),                                                             # duplicate
        'Request: Wake me at 7\nAnswer: [{"name": "set_alarm", "arguments": {"hour": 7}}]',     # valid, beyond k
    ]
    result = select_pairs(drafts, task, FMT, k=1, source="self")
    assert [p.query for p in result.pairs] == ["Weather in Oslo?"]
    assert result.pairs[0].answer == [Call("get_weather", {"city": "Oslo"})]
    assert result.rejected == {"no_pair": 1, "unknown_function": 1, "missing_argument": 1, "copy_of_seed": 1,
                               "duplicate": 1}
    assert result.unused == 1 and result.drafts == len(drafts)
    assert len(select_pairs(drafts, task, FMT, k=2, source="self").pairs) == 2


def test_normalize_query_folds_case_punctuation_and_spacing():
    assert normalize_query("  What is the Weather in Paris?!") == normalize_query("what is the weather in paris")


def test_synthesis_prompt_never_shows_the_label():
    task = weather_task(answer=[Call("get_weather", {"city": "Secret-Label-City"})])
    text = " ".join(m["content"] for m in synthesis_messages(task, FMT))
    assert "Secret-Label-City" not in text and task.query in text


@pytest.mark.slow
def test_self_synthesizer_on_the_toy_model_keeps_only_valid_pairs(toy):
    synth = SelfSynthesizer(toy, SynthesisConfig(k=2, oversample=3))
    tasks = make_tasks(4, SEEN, seed=3)
    results = [synth.synthesize(t, FMT, seed=i) for i, t in enumerate(tasks)]
    assert all(r.drafts == 6 for r in results)
    assert any(r.pairs for r in results), [r.rejected for r in results]
    for task, r in zip(tasks, results, strict=True):
        assert len(r.pairs) == 2 if r.unused else len(r.pairs) <= 2  # k pairs kept whenever more were valid
        assert sum(r.rejected.values()) + len(r.pairs) + r.unused == r.drafts
        queries = [normalize_query(p.query) for p in r.pairs]
        assert len(set(queries)) == len(queries) and normalize_query(task.query) not in queries  # no copies
        for pair in r.pairs:  # each kept pair passes the schema check against the task's own tools
            assert pair.source == "self" and pair.answer
            check_calls(pair.answer, task.tools)
    again = synth.synthesize(make_tasks(4, SEEN, seed=3)[0], FMT, seed=0)
    assert [p.to_dict() for p in again.pairs] == [p.to_dict() for p in results[0].pairs]  # seeded


def test_numbers_written_as_strings_pass_only_where_the_format_allows_them():
    tool = weather_task().tools[2]  # set_alarm(hour: integer)
    check_calls([Call("set_alarm", {"hour": "7"})], [tool], numbers_as_strings=True)
    for value in ("7", "7.5", "seven"):
        with pytest.raises(CallError, match="wrong_type"):
            check_calls([Call("set_alarm", {"hour": value})], [tool], numbers_as_strings=value != "7")
    assert get_format("sealtools").numbers_as_strings and not get_format("json").numbers_as_strings
