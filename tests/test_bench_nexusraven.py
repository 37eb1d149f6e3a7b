"""NexusRaven: the Python-call answer format, the signature-binding scorer (official and lenient), and the loader.

The data is CC-BY-NC-4.0, so nothing of it is copied here: hand-written cases use invented functions, and the
full-data checks read the shared data directory (skipped when absent).
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from ttsi.benchmarks import ItemScore, get_benchmark
from ttsi.benchmarks.nexusraven import NexusRaven, tool_from_api
from ttsi.benchmarks.nexusraven.format import NexusRavenFormat, stub_signature, whole_output_call
from ttsi.errors import TaskError
from ttsi.formats import register_format
from ttsi.formats.base import AnswerParseError
from ttsi.formats.pretokens import boundary_at_or_after
from ttsi.schema import check_calls
from ttsi.task import Call, Task, Tool

FMT = NexusRavenFormat()
BENCH = NexusRaven()  # official scoring, the default
LENIENT = BENCH.with_scoring("lenient")

# Invented api-list entries, in the shape of nexusraven_api_list.json.
SPECS = [
    {"dataset": "demo", "name": "lookup_host",
     "description": "\n    Look a host up.\n\n    Args:\n    host (str): the host\n",
     "args_dicts": [
         {"name": "limit", "type": "int", "required": False, "default": None, "description": "how many"},
         {"name": "host", "type": "str", "required": True, "default": "None", "description": ": the host"},
         {"name": "api_key", "type": "str", "required": True, "default": "None", "description": ""},
         {"name": "mode", "type": "None", "required": False, "default": "None", "description": ""}]},
    {"dataset": "demo", "name": "lookup", "description": "Search everything.",
     "args_dicts": [{"name": "query", "type": "str", "required": True, "default": "None",
                     "description": ""}]},
    {"dataset": "demo", "name": "list_zones", "description": "All zones.", "args_dicts": []},
]


def task(args: dict | None = None, name: str = "lookup_host") -> Task:
    gold = {"name": name, "arguments": args if args is not None else {"host": "a.example", "api_key": "k1"}}
    return Task(id="demo-0", messages=[{"role": "user", "content": "Look up a.example with key k1."}],
                tools=[tool_from_api(s) for s in SPECS], answer=[Call(gold["name"], gold["arguments"])],
                format="nexusraven", meta={"domain": "virustotal", "gold": gold})


def score(output: str, bench: NexusRaven = BENCH, **kw) -> ItemScore:
    return bench.score(task(**kw), output)


# ---- scoring rules -------------------------------------------------------------------------------

def test_registered_with_the_official_scoring_by_default():
    bench = get_benchmark("nexusraven")
    assert bench.splits == ("all",) and bench.scorings == ("official", "lenient") and bench.scoring == "official"
    assert LENIENT.scoring == "lenient" and bench.scoring == "official"  # a copy; the registered one is unchanged
    assert bench.with_scoring(None) is bench


@pytest.mark.parametrize("bench", [BENCH, LENIENT], ids=["official", "lenient"])
@pytest.mark.parametrize("output", [
    'lookup_host(host="a.example", api_key="k1")',
    "lookup_host(api_key='k1', host='a.example')",          # keyword order does not matter
    'lookup_host(host="a.example", api_key="k1", limit=None, mode=None)',  # explicit defaults bind the same
    'lookup_host("a.example", "k1")',                        # positionals bind to required args, in order
    '\nlookup_host(host="a.example",\n            api_key="k1")\n\n',   # white space around and inside
    'lookup_host(host="a.example", api_key="k1")  # the call\n',           # a comment is Python
])
def test_correct_outputs(bench, output):
    assert score(output, bench).correct, score(output, bench)


# The official evaluator (raven/utils.py::parse_function_call_to_name_and_args) parses the whole output with
# ast.parse and reads body[0].value: anything around the call that is not Python is a syntax error there.
CHATTY = {
    "prose before the call": 'Here is the call: lookup_host(host="a.example", api_key="k1")',
    "a code fence": '```python\nlookup_host(host="a.example", api_key="k1")\n```',
    "prose and a fence": 'Sure (one call):\n```python\nlookup_host(\n    host="a.example",\n    api_key="k1",\n)\n```',
    "Initial Answer / Reflection": 'Initial Answer: lookup_host(host="a.example", api_key="k1")\nReflection: fine.',
    "Initial Answer alone": 'Initial Answer: lookup_host(host="a.example", api_key="k1")',
    "an explanation after the call": 'lookup_host(host="a.example", api_key="k1")\nThis looks the host up.',
    "an indented call": '    lookup_host(host="a.example", api_key="k1")',
}


@pytest.mark.parametrize("kind", CHATTY)
def test_official_rejects_anything_around_the_call_that_is_not_python(kind):
    official, lenient = score(CHATTY[kind]), score(CHATTY[kind], LENIENT)
    assert (official.correct, official.reason, official.counts) == (False, "parse_error", {"function_match": 0.0})
    assert official.detail.startswith("not_python: the whole output is not Python source")
    assert lenient.correct  # the lenient reading finds the call anywhere


@pytest.mark.parametrize(("output", "correct", "reason"), [
    # body[0].value is the call: an assignment (or annotated one) holding it is read, as officially
    ('result = lookup_host(host="a.example", api_key="k1")', True, None),
    ('r: tuple = lookup_host(host="a.example", api_key="k1")', True, None),
    # only the first statement counts; later valid statements are ignored
    ('lookup_host(host="a.example", api_key="k1")\nlookup(query="x")', True, None),
    ('lookup(query="x")\nlookup_host(host="a.example", api_key="k1")', False, "wrong_function"),
    ('"""The call."""\nlookup_host(host="a.example", api_key="k1")', False, "parse_error"),  # body[0] a string
    ('net.lookup_host(host="a.example", api_key="k1")', False, "parse_error"),  # .func is no Name
    ("", False, "parse_error"),                                                   # no statement
    ('lookup_host(host="a.example", api_key="k1", api_key="k2")', False, "wrong_value"),  # the last one wins
])
def test_official_reads_the_first_statement(output, correct, reason):
    result = score(output)
    assert (result.correct, result.reason) == (correct, reason), result


def test_whole_output_call():
    call = whole_output_call('x = f(1, b=2.5, c=[1, "a"])\n')
    assert (call.name, call.args, call.kwargs) == ("f", [1], {"b": 2.5, "c": [1, "a"]})
    with pytest.raises(AnswerParseError) as info:
        whole_output_call("f(a=1)\nReflection: the call is right.")
    assert info.value.reason == "not_python"
    # "Reflection: ok" is Python (an annotated name), so the official parse accepts the call before it
    assert whole_output_call("f(a=1)\nReflection: ok").kwargs == {"a": 1}
    with pytest.raises(AnswerParseError) as info:
        whole_output_call("f(" * 3000)  # too deep for the parser: refused quickly, as a syntax error
    assert info.value.reason == "not_python"


@pytest.mark.parametrize("bench", [BENCH, LENIENT], ids=["official", "lenient"])
def test_float_keyword_values_are_cast_to_int_but_positionals_are_not(bench):
    gold = {"host": "a.example", "api_key": "k1", "limit": 5}
    assert score('lookup_host(host="a.example", api_key="k1", limit=5.0)', bench, args=gold).correct
    assert score('lookup_host(host="a.example", api_key="k1", limit=5.7)', bench, args=gold).correct  # int()
    positional = score('lookup_host("a.example", "k1", 5.5)', bench, args=gold)
    assert not positional.correct and positional.reason == "wrong_value"
    nested = score('lookup_host(host="a.example", api_key="k1", limit=[5.0])', bench, args=gold | {"limit": [5]})
    assert nested.correct  # [5.0] == [5] in Python: only top-level floats are cast, and equality does the rest
    assert score('lookup_host(host="a.example", api_key="k1", limit=True)', bench,
                 args=gold | {"limit": 1}).correct  # True == 1 in Python, as in the official comparison


@pytest.mark.parametrize("bench", [BENCH, LENIENT], ids=["official", "lenient"])
def test_defaults_are_bound_on_both_sides(bench):
    # the stub binds omitted optional arguments to their defaults, for the prediction and the reference alike
    gold = {"host": "a.example", "api_key": "k1", "limit": None}
    assert score('lookup_host(host="a.example", api_key="k1")', bench, args=gold).correct
    assert score('lookup_host(host="a.example", api_key="k1", mode=None)', bench).correct
    extra = score('lookup_host(host="a.example", api_key="k1", mode="fast")', bench)
    assert (extra.correct, extra.reason) == (False, "wrong_value")  # the gold leaves mode at its default


@pytest.mark.parametrize("bench", [BENCH, LENIENT], ids=["official", "lenient"])
@pytest.mark.parametrize(("output", "reason"), [
    ('lookup_host(host="a.example", api_key="k2")', "wrong_value"),
    ('lookup_host(host="a.example", api_key="k1", limit=3)', "wrong_value"),  # gold leaves the default
    ('lookup_host(host="a.example", api_key="k1", limit="3")', "wrong_value"),
    ('lookup(query="a.example")', "wrong_function"),
    ('resolve(host="a.example", api_key="k1")', "wrong_function"),          # not a tool at all
    ('lookup_host(host="a.example", api_key="k1", port=80)', "unexpected_argument"),
    ('lookup_host("a.example", "k1", 1, 2, 3)', "unexpected_argument"),
    ('lookup_host("a.example", host="a.example", api_key="k1")', "unexpected_argument"),
    ('lookup_host(host="a.example")', "missing_argument"),
    ('lookup_host(host=a_example, api_key="k1")', "parse_error"),            # not a literal
    ('net.lookup_host(host="a.example", api_key="k1")', "parse_error"),      # attribute call: no plain name
    ("I would look the host up for you.", "parse_error"),
    ('lookup_host(host="a.example", api_key="k1", limit=1e999)', "parse_error"),  # int(inf) fails
])
def test_wrong_outputs_have_typed_reasons(bench, output, reason):
    result = score(output, bench)
    assert not result.correct and result.reason == reason, result


LENIENT_VERDICTS = [  # the lenient mode keeps the verdicts ttsi gave before issue 21, the chatty ones included
    ('Initial Answer: lookup_host(host="a.example", api_key="k1")\nReflection: fine.', True),
    ('Sure (one call):\n```python\nlookup_host(\n    host="a.example",\n    api_key="k1",\n)\n```', True),
    ('I would call lookup(query="x") first, then lookup_host(host="a.example", api_key="k1")', False),
    ('Call: lookup_host(host="a.example", api_key="k1").', True),
    ('net.lookup_host(host="a.example", api_key="k1")', False),
    ("lookup_host(host=a_example)", False),
]


@pytest.mark.parametrize(("output", "correct"), LENIENT_VERDICTS)
def test_the_lenient_mode_keeps_the_earlier_verdicts(output, correct):
    assert score(output, LENIENT).correct is correct


@pytest.mark.parametrize("bench", [BENCH, LENIENT], ids=["official", "lenient"])
def test_types_matter_as_in_python_equality(bench):
    gold = {"host": "a.example", "api_key": "k1", "limit": 2}
    result = score('lookup_host(host="a.example", api_key="k1", limit="2")', bench, args=gold)
    assert not result.correct and result.reason == "wrong_type"


def test_counts_and_metrics():
    outputs = ('lookup_host(host="a.example", api_key="k1")', 'lookup(query="x")',
               'lookup_host(host="b", api_key="k1")')
    good, wrong_fn, wrong_arg = (score(o) for o in outputs)
    assert [s.counts["function_match"] for s in (good, wrong_fn, wrong_arg)] == [1.0, 0.0, 1.0]
    tasks = [task(), task(), task()]
    tasks[2].meta["domain"] = "emailrep"
    metrics = BENCH.metrics(tasks, [good, wrong_fn, wrong_arg])
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    assert metrics["function_accuracy"] == pytest.approx(2 / 3)
    assert metrics["accuracy_virustotal"] == 0.5 and metrics["accuracy_emailrep"] == 0.0
    assert BENCH.subsets(tasks[2]) == ["emailrep"]


# ---- the stub signature and the prompt -----------------------------------------------------------

def test_stub_signature_puts_required_first_and_prints_like_inspect():
    tool = tool_from_api(SPECS[0])
    assert f"{tool.name}{stub_signature(tool)}" == \
        "lookup_host(host: str, api_key: str, limit: int = None, mode=None)"
    assert str(stub_signature(tool_from_api(SPECS[2]))) == "()"


def test_schema_of_an_api_entry():
    tool = tool_from_api(SPECS[0])
    assert tool.required == ["host", "api_key"]
    assert tool.properties["limit"]["type"] == ["integer", "null"]
    assert "type" not in tool.properties["mode"]
    assert tool.properties["host"]["description"] == "the host"
    check_calls([Call("lookup_host", {"host": "h", "api_key": None, "limit": 3})], [tool])


def test_messages_reproduce_the_raven_prompt():
    messages = FMT.messages(task())
    assert len(messages) == 1 and messages[0]["role"] == "user"
    text = messages[0]["content"]
    assert text.startswith('OPTION:\n<func_start>def lookup_host(host: str, api_key: str, limit: int = None, '
                           'mode=None)<func_end>\n<docstring_start>\n"""\nLook a host up.\n\n    Args:\n')
    assert ('<func_start>def list_zones()<func_end>\n<docstring_start>\n"""\nAll zones.\n"""\n'
            '<docstring_end>\n\nUser Query: Question: Look up a.example with key k1.\n\nPlease pick a '
            'function from the above options that best answers the user query and fill in the appropriate '
            'arguments.') in text
    assert text.endswith("appropriate arguments.") and "<human" not in text


def test_messages_for_siblings_and_demos():
    sibling = task().with_query("Find zones.")
    assert "Question: Find zones." in FMT.messages(sibling)[0]["content"]
    demo_answer = FMT.render([Call("lookup", {"query": "q"})])
    turns = FMT.messages(task(), demos=[("Search q.", demo_answer)])
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert "OPTION:" in turns[0]["content"] and "Question: Search q." in turns[0]["content"]
    assert turns[1]["content"] == demo_answer
    assert turns[2]["content"].startswith("User Query: Question: Look up a.example")
    assert "OPTION" not in turns[2]["content"]


def test_tools_without_raw_description_still_render():
    plain = Tool("ping", "Ping a host.", {"type": "object", "properties": {
        "host": {"type": "string"}, "count": {"type": "integer"}}, "required": ["host"]})
    sibling = Task(id="x", messages=[{"role": "user", "content": "ping h"}], tools=[plain])
    assert "def ping(host: str, count: int = None)" in FMT.messages(sibling)[0]["content"]


# ---- the answer format ---------------------------------------------------------------------------

@pytest.mark.parametrize("calls", [
    [Call("lookup_host", {"host": 'a "quoted"\nhost ü', "api_key": "k\\1", "limit": 3})],
    [Call("list_zones", {})],
    [Call("f", {"x": 1.5, "flag": True, "none": None, "items": [1, "two", [3]], "obj": {"k": {"n": False}}})],
    [Call("lookup", {"query": "a"}), Call("list_zones", {})],
])
def test_render_parse_round_trip(calls):
    text = FMT.render(calls)
    assert FMT.parse(text) == calls
    assert FMT.parse(f"Here it is:\n```python\n{text}\n```\nDone.") == calls


def test_render_style():
    assert FMT.render([Call("lookup", {"query": "a", "n": 2})]) == 'lookup(query="a", n=2)'
    assert FMT.render([Call("list_zones", {}), Call("lookup", {"query": None})]) == \
        "list_zones()\nlookup(query=None)"


def test_parse_accepts_one_line_calls_and_skips_prose():
    assert FMT.parse("Call: lookup(query='x', n=2)") == [Call("lookup", {"query": "x", "n": 2})]
    assert FMT.parse("Hmm (thinking) then lookup(query='x')") == [Call("lookup", {"query": "x"})]
    assert FMT.parse("It's done: lookup(query='x')") == [Call("lookup", {"query": "x"})]


def test_parse_reads_parentheses_in_strings_and_comments():
    text = 'lookup(\n    query="a)b",  # (note\n    n=\'\'\'c)\nd\'\'\',\n)'
    assert FMT.parse(text) == [Call("lookup", {"query": "a)b", "n": "c)\nd"})]


def test_degenerate_output_is_read_quickly():
    import time

    start = time.perf_counter()
    with pytest.raises(AnswerParseError) as info:
        FMT.parse("f(" * 3000)
    assert info.value.reason == "no_call"
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize(("text", "reason"), [
    ("no call here", "no_call"),
    ("lookup('x')", "positional_argument"),
    ("lookup(query=x)", "non_literal"),
    ("lookup(query=str(1))", "non_literal"),
    ("lookup(**{'query': 'x'})", "malformed_call"),
    ("lookup(query='x'", "no_call"),  # never closes
])
def test_parse_failures(text, reason):
    with pytest.raises(AnswerParseError) as info:
        FMT.parse(text)
    assert info.value.reason == reason


def _spec(name: str, params: list[str]) -> dict:
    return {"name": name, "description": f"{name} something.",
            "args_dicts": [{"name": p, "type": "str", "required": True, "default": "None"} for p in params]}


# Names that extend one another (lookup / lookup_host, get / get_weather, ping / ping_all), one ending in "_".
SHOWN = Task(id="shown", messages=[{"role": "user", "content": "q"}], tools=[tool_from_api(s) for s in [
    *SPECS, _spec("get", ["city"]), _spec("get_weather", ["city", "days"]), _spec("ping", []),
    _spec("ping_all", ["n"]), _spec("zone_", ["zone_id"])]])


def test_name_prefixes():
    assert FMT.name_prefix("lookup_host", SHOWN.tools) == "lookup_host"
    assert FMT.name_prefix("get_weather", SHOWN.tools) == "get_weather"
    # extended by lookup_host: the candidate goes on through the "(" pre-token
    assert FMT.name_prefix("lookup", SHOWN.tools) == "lookup(query"
    assert FMT.name_prefix("get", SHOWN.tools) == "get(city"
    assert FMT.name_prefix("ping", SHOWN.tools) == "ping()"
    assert FMT.name_prefix("zone_", SHOWN.tools) == "zone_("         # "_(" is one pre-token
    names = [t.name for t in SHOWN.tools]
    for a in names:
        for b in names:
            shorter, longer = FMT.name_prefix(a, SHOWN.tools), FMT.name_prefix(b, SHOWN.tools)
            assert a == b or not longer.startswith(shorter), (a, b)


def test_first_call():
    assert FMT.first_call('lookup(query="a")\nReflection: ok') == 'lookup(query="a")\n'
    assert FMT.first_call('Initial Answer: lookup(query="a").') == 'Initial Answer: lookup(query="a").'
    assert FMT.first_call("lookup(query=") is None


def test_boundary_at_or_after():
    text = 'f(a=1)\nNext'
    assert boundary_at_or_after(text, 1) == 1      # "f" | "(a"
    assert boundary_at_or_after(text, 2) == 3      # "(a" is one piece
    assert boundary_at_or_after(text, len("f(a=1)")) == len("f(a=1)\n")
    assert boundary_at_or_after(text, 0) == 0


def test_candidates_end_on_a_token_boundary_of_the_answer(tokenizer):
    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    tails = ("", "\nReflection: the call is right.", ".", " ")
    answers = [
        ([Call("lookup_host", {"host": "a.example", "api_key": "k1", "limit": 10})], tails),
        ([Call("list_zones", {})], tails),
        ([Call("get", {"city": "Lima"})], tails),
        ([Call("get_weather", {"city": "Lima", "days": 7})], tails),
        ([Call("lookup", {"query": "(x)"}), Call("lookup_host", {"host": "h", "api_key": "k"})], tails),
        ([Call("zone_", {"zone_id": "z1"})], tails),
        ([Call("ping_all", {"n": ["a", "b"]}), Call("ping", {})], tails),
        # A no-argument function that another name extends: its candidate "ping()" is followed by the end of
        # the answer (what follows a lone call is the end of the turn), not by punctuation.
        ([Call("ping", {})], ("", " ")),
    ]
    for answer, endings in answers:
        for tail in endings:
            text = FMT.render(answer) + tail
            for candidate in (FMT.name_prefix(answer[0].name, SHOWN.tools), FMT.first_call(text)):
                assert candidate is not None and text.startswith(candidate)
                assert ids(text)[: len(ids(candidate))] == ids(candidate), (candidate, text)


def test_agent_lookup_finds_the_format():
    from ttsi.formats import get_format

    register_format(NexusRavenFormat())
    assert get_format("nexusraven").name_prefix("f", []) == "f"


# ---- the loader on the shared data (never copied) ------------------------------------------------

@pytest.fixture(scope="module")
def tasks(data_dir):
    return BENCH.load(data_dir, "all")


def test_counts(tasks):
    assert len(tasks) == 318
    assert Counter(t.meta["domain"] for t in tasks) == {"cve_cpe": 78, "emailrep": 38, "virustotal": 151,
                                                        "toolalpaca": 51}
    assert len({t.id for t in tasks}) == 318
    assert Counter(len(t.tools) for t in tasks if t.meta["domain"] == "virustotal") == {12: 151}
    assert all(t.format == "nexusraven" and t.tool(t.answer[0].name) for t in tasks)


def test_every_gold_scores_correct_against_itself(tasks):
    for t in tasks:
        rendered = FMT.render(t.answer)
        assert FMT.parse(rendered) == t.answer, t.id
        for bench in (BENCH, LENIENT):
            assert bench.score(t, rendered).correct, t.id
            # The dataset's own reference call too (its spacing and quoting vary by domain).
            assert bench.score(t, t.meta["gold"]["reference_call"]).correct, t.id
        check_calls(t.answer, t.tools)


def test_chatty_golds_are_wrong_officially_and_right_leniently(tasks):
    """Every gold wrapped the ways chatty models write it: official and lenient disagree on exactly these."""
    wrappers = [lambda c: f"Sure! {c}", lambda c: f"```python\n{c}\n```",
                lambda c: f"Initial Answer: {c}\nReflection: the call answers the query.",
                lambda c: f"{c}\nThis call answers the question."]
    verdicts = Counter()
    for t in tasks:
        rendered = FMT.render(t.answer)
        for wrap in wrappers:
            verdicts[(BENCH.score(t, wrap(rendered)).correct, LENIENT.score(t, wrap(rendered)).correct)] += 1
    assert verdicts == {(False, True): 4 * 318}


def test_prompts_build_for_every_item(tasks):
    for t in tasks:
        text = FMT.messages(t)[0]["content"]
        assert text.count("OPTION:\n<func_start>def ") == len(t.tools)
        assert text.endswith("fill in the appropriate arguments.")


def test_real_answers_end_on_token_boundaries(tasks, tokenizer):
    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    for t in tasks[::5]:
        text = FMT.render(t.answer, t.tools) + "\nReflection: done"
        for candidate in (FMT.name_prefix(t.answer[0].name, t.tools), FMT.first_call(text)):
            assert ids(text)[: len(ids(candidate))] == ids(candidate), (t.id, candidate)


# ---- malformed data ------------------------------------------------------------------------------

def _write(tmp_path, api: str | None, queries: str | None):
    folder = tmp_path / "nexusraven"
    folder.mkdir()
    if api is not None:
        (folder / "nexusraven_api_list.json").write_text(api)
    if queries is not None:
        (folder / "nexusraven_standardized_queries.jsonl").write_text(queries)
    return tmp_path


GOOD_ROW = json.dumps({"dataset": "demo", "prompt": "Find q.", "python_function_name": "lookup",
                       "python_args_dict": {"query": "q"}, "reference_call": "lookup(query='q')",
                       "context_functions": ["lookup"]})


def test_invented_files_load(tmp_path):
    loaded = BENCH.load(_write(tmp_path, json.dumps(SPECS), GOOD_ROW + "\n"), "all")
    assert [t.id for t in loaded] == ["demo-0"] and loaded[0].answer == [Call("lookup", {"query": "q"})]


@pytest.mark.parametrize(("api", "queries", "culprit"), [
    (None, GOOD_ROW, "nexusraven_api_list.json"),
    (json.dumps(SPECS), None, "nexusraven_standardized_queries.jsonl"),
    ("[{", GOOD_ROW, "nexusraven_api_list.json"),
    (json.dumps({"name": "x"}), GOOD_ROW, "nexusraven_api_list.json"),
    (json.dumps([{"name": "lookup"}]), GOOD_ROW, "nexusraven_api_list.json"),
    (json.dumps(SPECS), "{not json\n", "nexusraven_standardized_queries.jsonl"),
    (json.dumps(SPECS), "", "nexusraven_standardized_queries.jsonl"),
    (json.dumps(SPECS), GOOD_ROW.replace('"context_functions": ["lookup"]', '"context_functions": ["nope"]'),
     "nexusraven_standardized_queries.jsonl"),
    (json.dumps(SPECS), GOOD_ROW.replace('"prompt"', '"question"'), "nexusraven_standardized_queries.jsonl"),
])
def test_malformed_files_name_themselves(tmp_path, api, queries, culprit):
    with pytest.raises(TaskError, match=re.escape(culprit)):
        BENCH.load(_write(tmp_path, api, queries), "all")
