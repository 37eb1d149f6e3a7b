"""API-Bank: the loader, the official prompt, the answer format, and the scorer in both modes on the data.

The official mode's per-API rules are pinned by hand cases in test_bench_apibank_official.py; here the rules both
modes share, the lenient mode's verdicts (ttsi's reading before issue 21), and every gold answer of the data.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from ttsi.benchmarks.apibank import FILES, FOLDER, APIBank, executor_value, gold_params
from ttsi.benchmarks.apibank.format import (
    PROMPT_HEAD,
    APIBankFormat,
    dialogue,
    official_call,
    system_prompt,
)
from ttsi.errors import TaskError
from ttsi.formats import AnswerParseError, get_format, register_format
from ttsi.formats.pretokens import pretoken_ends
from ttsi.schema import CallError, check_calls
from ttsi.task import Call, Task, Tool

FIXTURE = Path(__file__).parent / "fixtures" / "apibank"
BENCH = APIBank()  # official scoring, the default
LENIENT = BENCH.with_scoring("lenient")
COUNTS = {"level-1": 399, "level-2": 135}  # SCORING.md section 7


def fmt() -> APIBankFormat:
    return APIBankFormat()


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def starts_with_tokens(tokenizer, text: str, candidate: str) -> bool:
    return text.startswith(candidate) and ids(tokenizer, text)[: len(ids(tokenizer, candidate))] == \
        ids(tokenizer, candidate)


def write_split(root: Path, content: str, split: str = "level-1") -> Path:
    path = root / FOLDER / FILES[split]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


def api(name: str, params: dict[str, str], optional=()) -> dict:
    """An API-Bank description; `params` maps each input parameter to its type."""
    inputs = {p: {"type": t, "description": ("[Optional] " if p in optional else "") + p}
              for p, t in params.items()}
    return {"name": name, "description": f"{name} things.", "input_parameters": inputs,
            "output_parameters": {"status": {"type": "str", "description": "success or failed"}}}


def make_task(apis: list[dict], expected: str) -> Task:
    """A hand-made item, read through the loader exactly as the official files are."""
    item = {"file": "Hand-level-1-1.jsonl", "id": 0, "expected_output": expected,
            "instruction": PROMPT_HEAD + "\n".join(json.dumps(a) for a in apis),
            "input": "User: Do it.\nAI: Sure.\nGenerate API Request:\n"}
    with tempfile.TemporaryDirectory() as tmp:
        write_split(Path(tmp), json.dumps([item]))
        return BENCH.load(Path(tmp), "level-1")[0]


@pytest.fixture(scope="module")
def sample() -> dict[str, Task]:
    return {t.id: t for split in BENCH.splits for t in BENCH.load(FIXTURE, split)}


AGENDA = api("AddAgenda", {"token": "str", "content": "str", "time": "str", "location": "str"})
AGENDA_GOLD = ("API-Request: [AddAgenda(token='t1', content='Meeting with John', time='2023-03-20 14:00:00', "
               "location='Beijing')]")


# ---- the answer format -------------------------------------------------------------------------------------

def test_render_writes_the_gold_style():
    gold = ("API-Request: [ModifyRegistration(appointment_id='34567890', new_appointment_date='2023-03-26', "
            "new_appointment_doctor='Dr. Lee')]")
    call = Call("ModifyRegistration", {"appointment_id": "34567890", "new_appointment_date": "2023-03-26",
                                       "new_appointment_doctor": "Dr. Lee"})
    assert fmt().render([call]) == gold and fmt().parse(gold) == [call]
    assert fmt().render([Call("GetToday", {})]) == "API-Request: [GetToday()]"


@pytest.mark.parametrize("calls", [
    [Call("ToolSearcher", {"keywords": "history October 6th"})],
    [Call("GetToday", {})],
    [Call("AddMeeting", {"token": "a9", "attendees": "['John Smith', 'Jane Doe']"})],
    [Call("RecordHealthData", {"time": "9:00", "health_data": "[{'name': 'heart_rate', 'value': '80'}]"})],
    [Call("GetUserToken", {"username": "u", "password": "p"}), Call("QueryBalance", {"token": "t"})],
])
def test_parse_inverts_render(calls):
    assert fmt().parse(fmt().render(calls)) == calls


def test_list_values_are_written_bare_so_the_official_regex_reads_them_whole():
    text = fmt().render([Call("AddMeeting", {"attendees": "['Ann', 'Bo']", "location": "Room 1"})])
    assert text == "API-Request: [AddMeeting(attendees=['Ann', 'Bo'], location='Room 1')]"
    assert official_call(text) == ("AddMeeting", {"attendees": "['Ann', 'Bo']", "location": "Room 1"})
    # the gold's own quoted style is cut after the first quote by the official regex
    assert official_call("[AddMeeting(attendees='['Ann', 'Bo']')]") == ("AddMeeting", {"attendees": "["})


def test_non_string_values_are_written_as_their_str():
    text = fmt().render([Call("BookHotel", {"adult_count": 2, "on": True, "ids": ["a", "b"]})])
    assert text == "API-Request: [BookHotel(adult_count='2', on='True', ids=['a', 'b'])]"
    assert fmt().parse(text) == [Call("BookHotel", {"adult_count": "2", "on": "True", "ids": "['a', 'b']"})]


@pytest.mark.parametrize("arguments", [{"content": "O'Brien"}, {"content": 'say "hi"'}, {"content": ""},
                                       {"a": "[1]", "b": "[2]"}])  # the greedy list form would swallow b
def test_values_the_syntax_cannot_carry_are_refused(arguments):
    with pytest.raises(ValueError, match="cannot be written"):
        fmt().render([Call("AddAgenda", arguments)])


def test_parse_reads_like_the_official_extraction():
    f = fmt()
    assert f.parse('Sure! API-Request: [F(a = "x y", n=5, flag=True)] done') == \
        [Call("F", {"a": "x y", "n": "5", "flag": "True"})]
    assert f.parse("[A(x='1')] [B(y='2')]") == [Call("A", {"x": "1", "y": "2"})]  # greedy to the line's `)]`
    assert f.parse("""[F(name="O'Brien")]""") == [Call("F", {"name": "O"})]  # a value ends at any quote
    assert f.parse("API-Request: [A(x='1')]\nAPI-Request: [B()]") == [Call("A", {"x": "1"}), Call("B", {})]
    assert f.parse("[F('x')]") == [Call("F", {})]  # positional text is no parameter


@pytest.mark.parametrize(("text", "reason"), [
    ("I cannot help with that.", "no_api_call"), ("", "no_api_call"),
    ("API-Request: [F(a='1'", "truncated"),
    ("API-Request: [F(a='1')\n]", "truncated"),  # the official regex does not cross lines
])
def test_parse_failures_carry_a_reason(text, reason):
    with pytest.raises(AnswerParseError) as e:
        fmt().parse(text)
    assert e.value.reason == reason


def test_registered_format_parses_for_the_agent():
    register_format(APIBankFormat())
    assert get_format("apibank").parse("API-Request: [GetToday()]") == [Call("GetToday", {})]
    assert "API-Request: [ApiName(" in get_format("apibank").instruction()


# ---- the prompt --------------------------------------------------------------------------------------------

def test_messages_reproduce_the_official_instruction_and_input():
    for split in BENCH.splits:
        items = json.loads((FIXTURE / FOLDER / FILES[split]).read_text(encoding="utf-8"))
        for item, task in zip(items, BENCH.load(FIXTURE, split), strict=True):
            assert fmt().messages(task) == [{"role": "system", "content": item["instruction"]},
                                            {"role": "user", "content": item["input"]}]


def test_level_2_prompt_lists_toolsearcher_and_leaves_found_apis_in_the_dialogue(sample):
    task = sample["RecordHealthData-level-3-2-2"]
    assert [t.name for t in task.tools] == ["ToolSearcher", "RecordHealthData"]
    system, user = fmt().messages(task)
    assert system["content"].count('"name"') == 1 and '"name": "ToolSearcher"' in system["content"]
    assert "->{'name': 'RecordHealthData'" in user["content"]


def test_a_sibling_task_lists_every_tool_and_its_request_as_a_user_line(sample):
    task = sample["RecordHealthData-level-3-2-2"]
    sibling = task.with_query("Record my heart rate of 72 for user 7 now.")
    messages = fmt().messages(sibling, demos=[("Log blood pressure 120/80.", "API-Request: [GetToday()]")])
    assert messages[0]["content"] == system_prompt(task.tools)
    assert '"name": "RecordHealthData"' in messages[0]["content"]
    assert "desc_for_search" not in messages[0]["content"]  # ToolSearcher's own key, not a description's
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "User: Log blood pressure 120/80.\nGenerate API Request:\n"
    assert messages[3]["content"].startswith("User: Record my heart rate")


@pytest.mark.parametrize(("query", "turn"), [
    ("Book a room", "User: Book a room\nGenerate API Request:\n"),
    ("  Book a room \n", "User: Book a room\nGenerate API Request:\n"),
    ("User: Hi.\nAI: Hello. ", "User: Hi.\nAI: Hello. \nGenerate API Request:\n"),  # trailing space kept
    ("User: Hi.\nGenerate API Request:", "User: Hi.\nGenerate API Request:\n"),  # not doubled
])
def test_dialogue_turn(query, turn):
    assert dialogue(query) == turn


def test_tools_without_an_api_bank_description_are_described_from_their_schema():
    params = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools = [Tool("get_weather", "Weather", params)]
    task = Task("t", [{"role": "user", "content": "Weather in Oslo?"}], tools)
    line = fmt().messages(task)[0]["content"].removeprefix(PROMPT_HEAD)
    assert json.loads(line) == {"name": "get_weather", "description": "Weather", "output_parameters": {},
                                "input_parameters": {"city": {"type": "str", "description": ""}}}


# ---- candidate actions on a token boundary -----------------------------------------------------------------

def realistic_answers(sample) -> list[tuple[Task, str]]:
    """Every gold of the sample, alone and continued the way models continue them."""
    texts = [(t, fmt().render(t.answer, t.tools)) for t in sample.values()]
    return [(t, x + tail) for t, x in texts for tail in ("", "->{'status': 'success'}\nAI: Done.", "\n\n")]


def test_candidates_end_on_a_token_boundary_of_the_answer(tokenizer, sample):
    f = fmt()
    for task, text in realistic_answers(sample):
        for candidate in (f.name_prefix(task.answer[0].name, task.tools), f.first_call(text)):
            assert candidate and starts_with_tokens(tokenizer, text, candidate), (candidate, text)


def test_pretoken_boundaries_follow_the_qwen2_split(tokenizer, sample):
    split = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str
    for _, text in realistic_answers(sample):
        assert pretoken_ends(text) == [end for _, (_, end) in split(text)], text


def test_the_open_parenthesis_merges_with_the_first_parameter(tokenizer):
    """Why candidates never end at `[Name(`: Qwen2's split makes `(key` one pre-token."""
    split = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str
    pieces = [tokenizer.convert_tokens_to_string([p]) for p, _ in split("API-Request: [Name(key='v')]")]
    assert pieces == ["API", "-Request", ":", " [", "Name", "(key", "='", "v", "')]"]
    ends = [end for _, (_, end) in split("API-Request: [ToolSearcher(keywords='weather')]")]
    assert len("API-Request: [ToolSearcher(") not in ends  # BPE may merge `(` with the letters after it
    assert len("API-Request: [ToolSearcher") in ends
    assert fmt().name_prefix("ToolSearcher", []) == "API-Request: [ToolSearcher"


def test_a_name_extended_by_another_gets_a_candidate_through_its_first_parameter(tokenizer):
    raws = [api("Get", {"key": "str"}), api("GetUserToken", {"username": "str"}),
            api("get_", {"city": "str"}), api("GetToday", {})]
    tools = [make_task([raw], f"API-Request: [{raw['name']}()]").tools[0] for raw in raws]
    f = fmt()
    candidates = {t.name: f.name_prefix(t.name, tools) for t in tools}
    assert candidates == {"Get": "API-Request: [Get(key", "GetUserToken": "API-Request: [GetUserToken",
                          "get_": "API-Request: [get_(", "GetToday": "API-Request: [GetToday"}
    for a in candidates.values():
        assert not any(b != a and b.startswith(a) for b in candidates.values())
    for call in (Call("Get", {"key": "k"}), Call("GetUserToken", {"username": "u"}),
                 Call("get_", {"city": "Oslo"}), Call("GetToday", {})):
        assert starts_with_tokens(tokenizer, f.render([call]), candidates[call.name])


def test_first_call_stops_after_the_first_call():
    f = fmt()
    assert f.first_call("API-Request: [A(x='1')]\nAPI-Request: [B()]") == "API-Request: [A(x='1')]\n"
    assert f.first_call("API-Request: [A(x='1')]->{'token': 'z9'}") == "API-Request: [A(x='1')]->{'"
    assert f.first_call("API-Request: [A(x='1'") is None


# ---- the loader --------------------------------------------------------------------------------------------

def test_load_sample(sample):
    assert len(sample) == 9
    task = sample["ModifyRegistration-QueryHealthData-CancelRegistration-level-2-2-0"]
    assert task.format == "apibank" and task.meta["split"] == "level-1"
    assert [t.name for t in task.tools] == ["QueryHealthData", "CancelRegistration", "ModifyRegistration"]
    assert task.answer == [Call("ModifyRegistration", {"appointment_id": "34567890", "new_appointment_date":
                                                       "2023-03-26", "new_appointment_doctor": "Dr. Lee"})]
    assert task.query.startswith("User: Can you please modify") and not task.query.endswith("Request:\n")
    tool = task.tool("ModifyRegistration")
    assert tool.raw["input_parameters"]["appointment_id"] == {"type": "str",
                                                              "description": "The ID of appointment."}
    assert tool.parameters == {"type": "object", "required": list(tool.raw["input_parameters"]),
                               "properties": {p: {"type": "string", "description": d["description"]}
                                              for p, d in tool.raw["input_parameters"].items()}}
    assert task.meta["file"] == "ModifyRegistration-QueryHealthData-CancelRegistration-level-2-2.jsonl"
    assert task.meta["source_id"] == 0 and task.meta["dialogue_level"] == "level-2"


def test_level_2_tasks_offer_toolsearcher(sample):
    first, found = sample["QueryHistoryToday-level-3-3-0"], sample["QueryHistoryToday-level-3-3-1"]
    assert [t.name for t in first.tools] == ["ToolSearcher"]
    assert first.tool("ToolSearcher").required == ["keywords"]
    assert first.answer == [Call("ToolSearcher", {"keywords": "history October 6th"})]
    assert [t.name for t in found.tools] == ["ToolSearcher", "QueryHistoryToday"]
    assert BENCH.subsets(first) == ["toolsearcher"] and BENCH.subsets(found) == ["found_api"]


def test_optional_parameters_are_not_required(sample):
    task = next(t for t in sample.values() if t.answer[0].name == "Translate")
    assert task.tool("Translate").required == ["src"]
    check_calls(task.answer, task.tools)  # the gold omits src_lang


def test_gold_list_values_are_read_whole(sample):
    task = next(t for t in sample.values() if t.answer[0].name == "AddMeeting")
    assert task.answer[0].arguments["attendees"] == "['John']"
    assert task.meta["gold"]["types"]["attendees"] == "list"  # AddMeeting is described nowhere in the sample
    assert not task.meta["gold_api_shown"] and "gold_api_not_shown" in BENCH.subsets(task)
    assert BENCH.score(task, fmt().render(task.answer).replace("['John']", '["John"]')).correct
    assert gold_params("a='x', b='[1, 2]'") == {"a": "x", "b": "[1, 2]"}
    assert gold_params("a='it's'") == {"a": "it's"}


# ---- the scorer --------------------------------------------------------------------------------------------

def agenda(**changes: str) -> str:
    args = {"token": "'t1'", "content": "'Meeting with John'", "time": "'2023-03-20 14:00:00'",
            "location": "'Beijing'"} | changes
    return f"API-Request: [AddAgenda({', '.join(f'{k}={v}' for k, v in args.items() if v)})]"


@pytest.mark.parametrize(("output", "official", "lenient"), [
    (AGENDA_GOLD, None, None),
    ("[AddAgenda(location='Beijing', time='2023-03-20 14:00:00', content='Meeting with John', token='t1')]",
     None, None),
    ('Sure.\nAPI-Request: [AddAgenda(token="t1", content="Meeting with John", time = "2023-03-20 14:00:00", '
     'location="Beijing")]\nAI: ok', None, None),
    ("I will add it.", "parse_error", "parse_error"),
    (agenda()[:-2], "parse_error", "parse_error"),
    (agenda().replace("AddAgenda", "AddMeeting"), "wrong_function", "wrong_function"),
    (agenda(location=""), "missing_argument", "missing_argument"),
    (agenda(note="'x'"), "unexpected_argument", "unexpected_argument"),
    # AddAgenda's official rule: content words overlap with Jaccard above 0.5 (case-sensitive); lenient: exact
    (agenda(content="'Meeting with John Smith'"), None, "wrong_value"),   # 3 / 4
    (agenda(content="'Meeting with John '"), None, "wrong_value"),        # 3 / 4: '' is a word of split(" ")
    (agenda(content="'meeting with John'"), "wrong_value", "wrong_value"),  # 2 / 4, not above 0.5
    (agenda(location="'beijing'"), "wrong_value", "wrong_value"),          # the location compares exactly
    # the first call counts, as in the official reading; one line is read greedily to its last `)]`
    (f"{AGENDA_GOLD}\nAPI-Request: [GetToday()]", None, None),
    (f"API-Request: [GetToday()]\n{AGENDA_GOLD}", "wrong_function", "wrong_function"),
    (f"{AGENDA_GOLD} [GetToday(x='1')]", "unexpected_argument", "unexpected_argument"),
])
def test_scoring_rules(output, official, lenient):
    for bench, reason in ((BENCH, official), (LENIENT, lenient)):
        score = bench.score(make_task([AGENDA], AGENDA_GOLD), output)
        assert (score.correct, score.reason) == (reason is None, reason), (bench.scoring, score.detail)
        assert score.counts["calls"] == 1 and score.counts["correct"] == int(reason is None)


@pytest.mark.parametrize(("value", "reason"), [
    ("'2'", None), ("2", None), ("'02'", None),  # int(): the executor compares the converted value
    ("'two'", "wrong_type"), ("'-2'", "wrong_type"),  # not isdigit(): the executor's assertion fails
    ("'3'", "wrong_value"),
])
def test_int_parameters_compare_as_integers(value, reason):
    task = make_task([api("BookHotel", {"hotel": "str", "adults": "int"})],
                     "API-Request: [BookHotel(hotel='Hilton', adults='2')]")
    for bench in (BENCH, LENIENT):
        score = bench.score(task, f"API-Request: [BookHotel(hotel='Hilton', adults={value})]")
        assert (score.correct, score.reason) == (reason is None, reason)


@pytest.mark.parametrize(("gold", "value", "reason"), [
    ("True", "'True'", None), ("True", "True", None),
    ("True", "'true'", "wrong_value"),  # the executor's bool is value == 'True'
    ("False", "'no'", None),  # ... so anything else reads as False, as officially
    ("False", "'True'", "wrong_value"),
])
def test_bool_parameters_compare_as_the_executor_reads_them(gold, value, reason):
    task = make_task([api("SetLamp", {"name": "str", "on": "bool"})],
                     f"API-Request: [SetLamp(name='lamp', on='{gold}')]")
    for bench in (BENCH, LENIENT):
        score = bench.score(task, f"API-Request: [SetLamp(name='lamp', on={value})]")
        assert (score.correct, score.reason) == (reason is None, reason)


@pytest.mark.parametrize(("value", "reason"), [
    ("['Ann', 'Bo']", None),
    ('["Ann","Bo"]', None),  # json.loads after ' -> ": the same list
    ("['Bo', 'Ann']", "wrong_value"),
    ("'['Ann', 'Bo']'", "wrong_type"),  # the gold's own quoted style reads as '[', which json.loads rejects
    ("'Ann, Bo'", "wrong_type"),
])
def test_list_parameters_compare_as_lists(value, reason):
    task = make_task([api("Invite", {"topic": "str", "attendees": "list(str)"})],
                     "API-Request: [Invite(topic='Sync', attendees='['Ann', 'Bo']')]")
    for bench in (BENCH, LENIENT):
        score = bench.score(task, f"API-Request: [Invite(topic='Sync', attendees={value})]")
        assert (score.correct, score.reason) == (reason is None, reason), score.detail


def test_an_optional_parameter_written_with_its_default_is_an_extra_argument():
    translate = api("Translate", {"src": "str", "src_lang": "str", "tgt_lang": "str"},
                    optional=("src_lang", "tgt_lang"))
    task = make_task([translate], "API-Request: [Translate(src='hello', tgt_lang='fr')]")
    for bench in (BENCH, LENIENT):
        assert bench.score(task, "[Translate(src='hello', tgt_lang='fr')]").correct
    # officially Translate's `call` takes the languages through **kwargs and records only those given: 'auto'
    # is no language it knows (it raises 'Language not supported.'), so the output differs from the gold's
    pred = "[Translate(src='hello', src_lang='auto', tgt_lang='fr')]"
    assert BENCH.score(task, pred).reason == "wrong_value"
    assert LENIENT.score(task, pred).reason == "unexpected_argument"


def test_executor_conversion():
    assert executor_value("12", "int") == 12 and executor_value("1.5", "float") == 1.5
    assert executor_value("['a']", "list") == ["a"] and executor_value("x", "Union[str]") == "x"
    with pytest.raises(ValueError, match="not an integer"):
        executor_value("1.5", "int")


def test_metrics_and_counts():
    task = make_task([AGENDA], AGENDA_GOLD)
    outputs = (AGENDA_GOLD, agenda(location="'Paris'"), "no call", "[GetToday()]")
    for bench in (BENCH, LENIENT):
        scores = [bench.score(task, o) for o in outputs]
        assert [s.reason for s in scores] == [None, "wrong_value", "parse_error", "wrong_function"]
        assert bench.metrics([task] * 4, scores) == {"accuracy": 0.25, "api_name_accuracy": 0.5, "gold_fails": 0,
                                                     "accuracy_where_gold_passes": 0.25}
        assert bench.metrics([], []) == {}


# ---- malformed data ----------------------------------------------------------------------------------------

GOOD = {"file": "F-level-1-1.jsonl", "id": 0, "instruction": PROMPT_HEAD + json.dumps(AGENDA),
        "input": "User: Add it.\nGenerate API Request:\n", "expected_output": AGENDA_GOLD}


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "is not valid JSON"),
    ("{}", "expected a JSON list"),
    ("[]", "expected a JSON list"),
    (json.dumps([{k: v for k, v in GOOD.items() if k != "input"}]), "item 0 to be an object"),
    (json.dumps([GOOD | {"instruction": "Call an API.\n" + json.dumps(AGENDA)}]), "prompt head"),
    (json.dumps([GOOD | {"instruction": PROMPT_HEAD + "{name: AddAgenda}"}]), "not JSON lines"),
    (json.dumps([GOOD | {"instruction": PROMPT_HEAD + '{"name": "AddAgenda"}'}]), "'input_parameters'"),
    (json.dumps([GOOD | {"input": "User: Add it."}]), "to end with 'Generate API Request:'"),
    (json.dumps([GOOD | {"expected_output": "AddAgenda(token='t1')"}]), "expected_output"),
    (json.dumps([GOOD | {"input": "User: x\nAPI-Request: [ToolSearcher(keywords='a')]->{'name': \n"
                                  "Generate API Request:\n"}]), "ToolSearcher result"),
    (json.dumps([GOOD, GOOD]), "unique (file, id) pairs"),
])
def test_malformed_files_name_the_file(tmp_path, content, message):
    path = write_split(tmp_path, content)
    with pytest.raises(TaskError) as e:
        BENCH.load(tmp_path, "level-1")
    assert str(path) in str(e.value) and message in str(e.value)


def test_missing_file_and_unknown_split(tmp_path):
    with pytest.raises(TaskError, match=r"data file .*level-2-api\.json does not exist"):
        BENCH.load(tmp_path, "level-2")
    with pytest.raises(TaskError, match="no split 'level-3'"):
        BENCH.load(tmp_path, "level-3")


# ---- the full data -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full(data_dir) -> dict[str, tuple[list[dict], list[Task]]]:
    return {split: (json.loads((data_dir / FOLDER / FILES[split]).read_text(encoding="utf-8")),
                    BENCH.load(data_dir, split)) for split in BENCH.splits}


def test_full_counts_ids_and_prompts(full):
    for split, (items, tasks) in full.items():
        assert len(tasks) == COUNTS[split] and len({t.id for t in tasks}) == len(tasks)
        for item, task in zip(items, tasks, strict=True):
            assert task.id == f"{item['file'].removesuffix('.jsonl')}-{item['id']}"
            assert fmt().messages(task) == [{"role": "system", "content": item["instruction"]},
                                            {"role": "user", "content": item["input"]}]
    level_2 = full["level-2"][1]
    assert all(t.tools[0].name == "ToolSearcher" for t in level_2)
    assert Counter(tuple(BENCH.subsets(t)) for t in level_2) == {
        ("toolsearcher",): 45, ("found_api",): 75, ("found_api", "gold_api_not_shown"): 13,
        ("found_api", "official_gold_fails"): 1, ("found_api", "gold_api_not_shown", "official_gold_fails"): 1}


# The gold calls the official evaluator itself rejects (so no prediction can pass there), by cause: 24 of 399
# level-1 items and 2 of 135 level-2 items. Issue 21 counted 21 (QueryScene's case, TimedSwitch's device_id and
# dialogue state); reading every API's source adds DeleteMeeting's KeyError and two dialogue-state items.
GOLD_FAILURES = {
    "level-1": {"executor: device_id (TimedSwitch 3, CancelTimedSwitch 5)": 8,
                "QueryScene's case (issue 21, unverified)": 5,
                "DeleteMeeting's KeyError": 1,
                "state: ForgotPassword's second call": 4,
                "state: a password the dialogue set": 2,
                "state: a user the dialogue deleted": 1,
                "state: a record the dialogue created": 3},
    "level-2": {"DeleteMeeting's KeyError": 2},
}


def _cause(failure: str) -> str:
    for key, needle in (("executor: device_id (TimedSwitch 3, CancelTimedSwitch 5)", "device_id"),
                        ("QueryScene's case (issue 21, unverified)", "issue 21"),
                        ("DeleteMeeting's KeyError", "input['time']"),
                        ("state: ForgotPassword's second call", "ForgotPassword's second call"),
                        ("state: a password the dialogue set", "the password"),
                        ("state: a user the dialogue deleted", "deleted it first"),
                        ("state: a record the dialogue created", "reads the record")):
        if needle in failure:
            return key
    return failure


def test_the_golds_the_official_evaluator_rejects(full):
    found = {split: Counter(_cause(t.meta["official_gold_failure"]) for t in tasks
                            if t.meta["official_gold_failure"]) for split, (_, tasks) in full.items()}
    assert found == GOLD_FAILURES
    assert sum(sum(c.values()) for c in found.values()) == 26
    for _, tasks in full.values():
        for task in tasks:
            fails = task.meta["official_gold_failure"] is not None
            assert ("official_gold_fails" in BENCH.subsets(task)) is fails
            assert BENCH.score(task, fmt().render(task.answer)).counts["gold_fails"] == int(fails)


def test_every_gold_answer_scores_as_the_official_evaluator_would(full):
    """Rendered as ttsi writes them (list values bare): officially correct but where the gold itself fails;
    leniently all correct, as before."""
    for split, (_, tasks) in full.items():
        verdicts = Counter()
        for task in tasks:
            text = fmt().render(task.answer)
            assert fmt().parse(text) == task.answer
            assert LENIENT.score(task, text).correct, (task.id, text)
            official = BENCH.score(task, text)
            assert official.correct is (task.meta["official_gold_failure"] is None), (task.id, official)
            verdicts[official.reason] += 1
        assert verdicts == {None: len(tasks) - sum(GOLD_FAILURES[split].values()),
                            "gold_fails_officially": sum(GOLD_FAILURES[split].values())}
    # Over both splits the two modes agree on 508 of the 534 golds (95.1%): they differ on the 26 above.
    metrics = BENCH.metrics(full["level-1"][1], [BENCH.score(t, fmt().render(t.answer)) for t in full["level-1"][1]])
    assert metrics == {"accuracy": 375 / 399, "api_name_accuracy": 1.0, "gold_fails": 24,
                       "accuracy_where_gold_passes": 1.0}


def test_gold_texts_as_written(full):
    """The `expected_output` strings themselves: all correct but those with a list value (and, officially, the
    golds that fail).

    The gold writes list values quoted (`attendees='['Ann', 'Bo']'`), which the official regex reads as '[';
    the official executor's json.loads then fails on it, so those texts would not pass the official check
    either (31 level-1 and 10 level-2 items: the meeting APIs' attendees, RecordHealthData's health_data; the
    level-1 DeleteMeeting gold and both level-2 ones are among them).
    """
    wrong = {bench.scoring: {split: Counter(s.reason for s in (bench.score(t, t.meta["gold"]["text"]) for t in tasks)
                                            if not s.correct) for split, (_, tasks) in full.items()}
             for bench in (BENCH, LENIENT)}
    assert wrong == {"lenient": {"level-1": {"wrong_type": 31}, "level-2": {"wrong_type": 10}},
                     "official": {"level-1": {"wrong_type": 31, "gold_fails_officially": 23},
                                  "level-2": {"wrong_type": 10}}}


def test_gold_calls_against_the_tool_schemas(full):
    """Gold calls that do not fit the offered tools: data defects, counted exactly.

    level-1: 8 TimedSwitch / CancelTimedSwitch golds pass `device_id` where the description (and the official
    API code) names the parameter `name`. level-2: 14 golds call an API the prompt never describes
    (GetUserToken right after a ToolSearcher call whose result is not in the dialogue, or an API found in an
    earlier turn).
    """
    failures = {}
    for split, (_, tasks) in full.items():
        failures[split] = Counter()
        for task in tasks:
            try:
                check_calls(task.answer, task.tools)
            except CallError as e:
                failures[split][e.reason] += 1
    assert failures == {"level-1": {"missing_argument": 8}, "level-2": {"unknown_function": 14}}


def test_full_candidates_end_on_a_token_boundary(tokenizer, full):
    f = fmt()
    for _, tasks in full.values():
        for task in tasks:
            text = f.render(task.answer, task.tools)
            for candidate in (f.name_prefix(task.answer[0].name, task.tools), f.first_call(text)):
                assert candidate and starts_with_tokens(tokenizer, text, candidate), text
