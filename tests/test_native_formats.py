"""Native tool-call formats (hermes, llama3_json, mistral, pythonic): render = the real chat template's assistant
turn, parse inverts render, name prefixes end on token boundaries, template detection, multi-turn histories, and a
full TT-SI run on a tiny random model with the real Qwen2.5 tokenizer and template."""

from __future__ import annotations

import json
import keyword
import os
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ttsi.errors import TaskError
from ttsi.formats import NATIVE_FORMATS, AnswerParseError, detect_tool_parser, get_format, native_format
from ttsi.formats.mistral import call_id
from ttsi.model import HFModel
from ttsi.prompts import answer_prompt, parse_pair, render_pair, synthesis_prompt
from ttsi.task import Call, Task, Tool

from .conftest import missing_data, weather_task

QWEN_TOKENIZER = Path(__file__).resolve().parent / "fixtures" / "qwen2.5-tokenizer"
CHAT_MODELS = Path(os.environ.get("TTSI_CHAT_MODELS") or
                   Path(__file__).resolve().parents[2] / "shared" / "data" / "chat_models")
LLAMA = CHAT_MODELS / "llama-3.2-3b-instruct" / "tokenizer_config.json"
VLLM = CHAT_MODELS / "vllm_tool_templates"

CALL_LISTS = [
    [Call("get_weather", {"city": "Paris"})],
    [Call("get_weather", {"city": "Paris", "unit": "celsius"}), Call("send_email", {"to": "a@b.c"})],
    [Call("get_time", {})],
    [Call("search", {"filters": {"tags": ["a", "b"], "range": {"lo": -1.5, "hi": 2e10}}, "deep": [[1, [2, [3]]]],
                     "flag": True, "off": False, "none": None})],
    [Call("translate", {"text": "東京で会いましょう 🌸 — «ça va?»", "to": "zh"}),
     Call("get_weather", {"city": "Zürich"})],
    [Call("note", {"text": 'quote " backslash \\ newline \n tab \t', "n": 0}), Call("set_alarm", {"hour": 7})],
]


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))


def tiny_qwen(tokenizer) -> HFModel:
    """A random one-layer Qwen2 (hidden size 16) on the real Qwen2.5 tokenizer and chat template."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    return HFModel(Qwen2ForCausalLM(config), tokenizer, name="tiny-qwen2.5")


def _template(path: Path) -> str:
    if not path.is_file():
        missing_data(f"{path} not found (the shared chat-model files are not in this checkout)")
    text = path.read_text(encoding="utf-8")
    return json.loads(text)["chat_template"] if path.suffix == ".json" else text


def _render(template: str, messages: list[dict], generation: bool, **kw) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    out = render_jinja_template([messages], tools=[t.to_openai() for t in weather_task().tools],
                                chat_template=template, add_generation_prompt=generation, **kw)
    return out[0][0]


def _call_turn(calls: list[Call], ids: bool = False) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        | ({"id": call_id(c, i)} if ids else {}) for i, c in enumerate(calls)]}


def _assert_turn_matches(template: str, fmt_name: str, calls: list[Call], end: str, opener: str = "",
                         **kw) -> None:
    """The template's assistant turn for `calls` is the generation prompt, then exactly `render(calls)`, then `end`.

    `opener`: for a template whose generation prompt differs from the history before the answer (vLLM's
    mistral_parallel adds its system text to the last user turn only), the text the answer must follow instead.
    """
    user = [{"role": "user", "content": "What is the weather in Paris?"}]
    prompt = _render(template, user, True, **kw)
    full = _render(template, [*user, _call_turn(calls, ids=fmt_name == "mistral")], False, **kw)
    answer = get_format(fmt_name).render(calls) + end
    if opener:
        assert full.endswith(opener + answer) and prompt.endswith(opener)
    else:
        assert full == prompt + answer


# ---- render / parse ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NATIVE_FORMATS)
@pytest.mark.parametrize("calls", CALL_LISTS, ids=range(len(CALL_LISTS)))
def test_parse_inverts_render(name, calls):
    fmt = get_format(name)
    text = fmt.render(calls)
    assert fmt.parse(text) == calls
    assert fmt.parse(f"  {text}  ") == calls


@pytest.mark.parametrize("name", NATIVE_FORMATS)
def test_first_call_ends_after_the_first_call(name):
    fmt = get_format(name)
    calls = CALL_LISTS[1]
    text = fmt.render(calls)
    first = fmt.first_call(text)
    assert first is not None and text.startswith(first) and first != text
    assert '"celsius"' in first and "send_email" not in first  # the whole first call, none of the second
    assert fmt.first_call(fmt.render(calls[:1])) == fmt.render(calls[:1])  # a lone call is its own first call
    assert fmt.first_call(fmt.name_prefix("get_weather", weather_task().tools)) is None


@pytest.mark.parametrize(("name", "text", "reason"), [
    ("hermes", "I cannot help with that.", "no_call"),
    ("hermes", '<tool_call>\n{"name": "f", "arguments": {"a": 1', "truncated"),
    ("hermes", '<tool_call>\n{"arguments": {}}\n</tool_call>', "malformed_call"),
    ("hermes", '<tool_call>\n{"name": "f", "arguments": [1]}\n</tool_call>', "malformed_call"),
    ("hermes", '<tool_call>\n{"name": "f", "arguments": ' + "[" * 5000 + "\n</tool_call>", "too_deep"),
    ("hermes", "<tool_call>\nf(x)\n</tool_call>", "malformed_call"),
    ("llama3_json", "no call here", "no_json"),
    ("llama3_json", '{"name": "f", "parameters": {"a": 1', "truncated"),
    ("llama3_json", '{"name": "", "parameters": {}}', "malformed_call"),
    ("mistral", "[TOOL_CALLS] nothing", "no_json"),
    ("mistral", '[TOOL_CALLS] [{"name": "f", "arguments": {}', "truncated"),
    ("pythonic", "no list", "no_call"),
    ("pythonic", '[f(a="x")', "truncated"),
    ("pythonic", '[f("positional")]', "malformed_call"),
    ("pythonic", '[f(a=__import__("os").system("true"))]', "malformed_call"),
    ("pythonic", "[f(a=1+2)]", "malformed_call"),
    ("pythonic", "[f(a={1: 2})]", "malformed_call"),
    ("pythonic", "[f(**kw)]", "malformed_call"),
    ("pythonic", "[1, 2]", "malformed_call"),
    ("pythonic", "[f(a=]", "truncated"),
    ("pythonic", "[f(a=)]", "syntax_error"),
    ("pythonic", "[" * 3000 + "]" * 3000, "syntax_error"),
])
def test_parse_refuses_what_is_not_a_call(name, text, reason):
    with pytest.raises(AnswerParseError) as e:
        get_format(name).parse(text)
    assert e.value.reason == reason


def test_parsers_accept_what_models_write_around_the_calls():
    assert get_format("hermes").parse('Sure.\n<tool_call>\n{"name": "f", "arguments": "{\\"a\\": 1}"}\n</tool_call>'
                                      '\n<tool_call>\n{"name": "g", "arguments": {}}') == [Call("f", {"a": 1}),
                                                                                         Call("g", {})]
    llama = get_format("llama3_json")
    assert llama.parse('<|python_tag|>{"name": "f", "arguments": {"a": 1}}; {"name": "g", "parameters": {}}') \
        == [Call("f", {"a": 1}), Call("g", {})]
    assert llama.parse('[{"name": "f", "parameters": {}}, {"name": "g", "parameters": {"b": [2]}}]') \
        == [Call("f", {}), Call("g", {"b": [2]})]
    mistral = get_format("mistral")
    assert mistral.parse('[{"name": "f", "arguments": {"a": 1}, "id": "abcdefghi"}]') == [Call("f", {"a": 1})]
    assert mistral.parse('[TOOL_CALLS]f[ARGS]{"a": 1}[TOOL_CALLS]g[ARGS]{}') == [Call("f", {"a": 1}), Call("g", {})]
    pythonic = get_format("pythonic")
    assert pythonic.parse('<|python_start|>[f(a=true, b=null, c=(1, -2), d=+3), m.g()]<|python_end|>') \
        == [Call("f", {"a": True, "b": None, "c": [1, -2], "d": 3}), Call("m.g", {})]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**15, 10**15) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12)
# Keyword-argument names: the pythonic format can only write Python identifiers that are not keywords.
IDENTIFIERS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(lambda n: not keyword.iskeyword(n))
CALLS = st.lists(st.builds(Call, IDENTIFIERS, st.dictionaries(IDENTIFIERS, JSON_VALUES, max_size=4)),
                 min_size=1, max_size=3)


@pytest.mark.fuzz
@given(calls=CALLS, name=st.sampled_from(NATIVE_FORMATS))
def test_parse_inverts_render_on_any_json_arguments(calls, name):
    fmt = get_format(name)
    assert fmt.parse(fmt.render(calls)) == calls


@pytest.mark.fuzz
@given(text=st.lists(st.sampled_from([*'[]{}()"\':,=; \nabf1.-', "<tool_call>", "</tool_call>", "[TOOL_CALLS]",
                                      "[ARGS]", '"name": ', '"arguments": ', "true"]), max_size=40).map("".join)
       | st.text(max_size=60), name=st.sampled_from(NATIVE_FORMATS))
def test_parse_of_any_text_is_calls_or_an_answer_parse_error(text, name):
    fmt = get_format(name)
    try:
        calls = fmt.parse(text)
    except AnswerParseError:
        return
    assert all(isinstance(c, Call) and isinstance(c.arguments, dict) for c in calls)
    fmt.first_call(text)


# ---- render = the real templates --------------------------------------------------------------------------------

@pytest.mark.parametrize("calls", CALL_LISTS, ids=range(len(CALL_LISTS)))
def test_hermes_render_is_the_qwen_template_turn(qwen_tokenizer, calls):
    user = [{"role": "user", "content": "What is the weather in Paris?"}]
    tools = [t.to_openai() for t in weather_task().tools]
    prompt = qwen_tokenizer.apply_chat_template(user, tools=tools, tokenize=False, add_generation_prompt=True)
    full = qwen_tokenizer.apply_chat_template([*user, _call_turn(calls)], tools=tools, tokenize=False)
    assert full == prompt + get_format("hermes").render(calls) + "<|im_end|>\n"


@pytest.mark.parametrize("calls", [c for c in CALL_LISTS if len(c) == 1], ids=lambda c: c[0].name)
def test_llama3_json_render_is_the_llama_template_turn(calls):
    # The official Llama 3.2 template (one call per turn), and vLLM's Llama 3.1 / 3.2 JSON templates.
    for template in (_template(LLAMA), _template(VLLM / "tool_chat_template_llama3.1_json.jinja"),
                     _template(VLLM / "tool_chat_template_llama3.2_json.jinja")):
        _assert_turn_matches(template, "llama3_json", calls, "<|eot_id|>", bos_token="<|begin_of_text|>",
                             date_string="26 Jul 2024")


@pytest.mark.parametrize("calls", CALL_LISTS, ids=range(len(CALL_LISTS)))
def test_mistral_render_is_the_vllm_mistral_template_turn(calls):
    for name in ("mistral", "mistral_parallel"):
        _assert_turn_matches(_template(VLLM / f"tool_chat_template_{name}.jinja"), "mistral", calls, "</s>",
                             opener="[/INST]" if name == "mistral_parallel" else "", bos_token="<s>",
                             eos_token="</s>")


def test_pythonic_render_is_the_llama4_template_turn():
    # Llama 4's template quotes every value with "%s", so it matches for plain string arguments only.
    calls = [Call("get_weather", {"city": "Boston, MA", "unit": "fahrenheit"}), Call("get_time", {})]
    _assert_turn_matches(_template(VLLM / "tool_chat_template_llama4_pythonic.jinja"), "pythonic", calls,
                         "<|eot|>", bos_token="<|begin_of_text|>")


# ---- name prefixes on token boundaries --------------------------------------------------------------------------

@pytest.mark.parametrize("name", NATIVE_FORMATS)
@pytest.mark.parametrize("tool", ["get_weather", "send_email", "set_alarm", "get", "get_", "f2"])
def test_name_prefix_is_a_token_prefix_of_the_answer(qwen_tokenizer, name, tool):
    fmt = get_format(name)
    base = weather_task().tools
    tools = [*base, *(Tool(n, "", {"type": "object", "properties": {"q": {"type": "string"}}})
                      for n in ("get", "get_", "f2"))]
    call = Call(tool, {"city": "Paris"} if tool == "get_weather" else {"q": "x"} if tool in ("get", "get_", "f2")
                else {"to": "a@b.c"} if tool == "send_email" else {"hour": 7})
    answer = fmt.render([call, Call("get_weather", {"city": "Oslo"})])
    prefix = fmt.name_prefix(tool, tools)
    assert answer.startswith(prefix)
    encode = lambda text: qwen_tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    ids = encode(prefix)
    assert encode(answer)[: len(ids)] == ids, (prefix, qwen_tokenizer.convert_ids_to_tokens(ids))
    others = [fmt.name_prefix(t.name, tools) for t in tools if t.name != tool]
    assert not any(o.startswith(prefix) or prefix.startswith(o) for o in others)  # one candidate per function


# ---- detection --------------------------------------------------------------------------------------------------

def test_detect_on_the_qwen_template(qwen_tokenizer):
    assert detect_tool_parser(qwen_tokenizer.chat_template) == "hermes"
    assert native_format(tiny_qwen(qwen_tokenizer)) == "hermes"
    assert detect_tool_parser(None) is None and detect_tool_parser("") is None
    assert detect_tool_parser("{% for m in messages %}{{ m['content'] }}{% endfor %}") is None


def test_a_template_without_tools_has_no_native_format(qwen):
    assert native_format(qwen) is None


@pytest.mark.parametrize(("file", "expected"), [
    ("hermes", "hermes"), ("llama3.1_json", "llama3_json"), ("llama3.2_json", "llama3_json"),
    ("llama3.2_pythonic", "pythonic"), ("llama4_pythonic", "pythonic"), ("toolace", "pythonic"),
    ("mistral", "mistral"), ("mistral_parallel", "mistral"), ("mistral3", "mistral"),
    ("granite", None), ("phi4_mini", None), ("xlam_qwen", None), ("internlm2_tool", None), ("deepseekv3", None),
])
def test_detect_on_the_vllm_templates(file, expected):
    assert detect_tool_parser(_template(VLLM / f"tool_chat_template_{file}.jinja")) == expected


def test_detect_on_the_official_llama_template():
    assert detect_tool_parser(_template(LLAMA)) == "llama3_json"


# ---- multi-turn histories ---------------------------------------------------------------------------------------

HISTORY = {"id": "h-1", "format": "hermes", "tools": [t.to_openai() for t in weather_task().tools], "messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris and Oslo?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temp": 21}'},
    {"role": "tool", "tool_call_id": "call_2", "content": '{"temp": 9}'},
    {"role": "assistant", "content": "Paris 21, Oslo 9."},
    {"role": "user", "content": "Email it to bob@example.com"}]}


def test_history_loads_openai_shaped_turns():
    task = Task.from_dict(HISTORY)
    assert task.query == "Email it to bob@example.com"
    calls = task.messages[2]
    assert calls["content"] == "" and [c["function"]["arguments"] for c in calls["tool_calls"]] == [
        {"city": "Paris"}, {"city": "Oslo"}]  # objects: the Qwen template dumps them with tojson
    assert task.messages[3] == {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_1",
                                "name": "get_weather"}
    assert Task.from_dict(json.loads(json.dumps(task.to_dict()))).messages == task.messages


def test_history_renders_through_the_qwen_template(qwen_tokenizer):
    model = tiny_qwen(qwen_tokenizer)
    task = Task.from_dict(HISTORY)
    prompt = answer_prompt(model, task, get_format("hermes"))
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert '{"type": "function", "function": {"name": "get_weather"' in prompt
    calls = get_format("hermes").render([Call("get_weather", {"city": "Paris"}), Call("get_weather", {"city": "Oslo"})])
    assert f"<|im_start|>assistant\n{calls}<|im_end|>\n" in prompt
    assert ("<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response>\n<tool_response>\n{\"temp\": 9}\n"
            "</tool_response><|im_end|>\n") in prompt
    assert prompt.endswith("<|im_start|>user\nEmail it to bob@example.com<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize(("name", "file", "kw"), [
    ("mistral", "tool_chat_template_mistral.jinja", {"bos_token": "<s>", "eos_token": "</s>"}),
    ("pythonic", "tool_chat_template_llama4_pythonic.jinja", {"bos_token": "<|begin_of_text|>"}),
    ("llama3_json", "tool_chat_template_llama3.2_json.jinja", {"bos_token": "<|begin_of_text|>"}),
])
def test_history_renders_through_the_other_templates(name, file, kw):
    fmt = get_format(name)
    history = json.loads(json.dumps(HISTORY))
    if name == "llama3_json":  # Llama 3's templates take one call per assistant turn
        del history["messages"][2]["tool_calls"][1], history["messages"][4]
    task = Task.from_dict(history)
    from transformers.utils.chat_template_utils import render_jinja_template

    text = render_jinja_template([fmt.messages(task)], tools=fmt.chat_tools(task), chat_template=_template(VLLM / file),
                                 add_generation_prompt=True, **kw)[0][0]
    calls = [Call(c["function"]["name"], c["function"]["arguments"]) for c in task.messages[2]["tool_calls"]]
    if name != "mistral":  # Mistral's ids are the history's own (made 9 characters long), not made-up ones
        assert fmt.render(calls) in text
    else:
        assert '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "' in text
        ids = [c["id"] for c in fmt.history(task)[2]["tool_calls"]]
        assert all(f'"call_id": "{i}"' in text for i in ids) and len(set(ids)) == 2
    assert text.count("Email it to bob@example.com") == 1


@pytest.mark.parametrize("name", ["json", "bfcl", "apibank", "sealtools", "nexusraven", "toolalpaca"])
def test_history_works_with_the_text_formats(qwen_tokenizer, name):
    fmt = get_format(name)
    task = Task.from_dict(HISTORY | {"format": name})
    messages = fmt.messages(task)
    assert all(isinstance(m["content"], str) and set(m) == {"role", "content"} for m in messages)
    prompt = answer_prompt(tiny_qwen(qwen_tokenizer), task, fmt)
    assert "# Tools" not in prompt  # a text format lists the tools itself
    if name in ("json", "bfcl", "apibank"):  # formats that show the whole conversation
        calls = [Call("get_weather", {"city": "Paris"}), Call("get_weather", {"city": "Oslo"})]
        assert fmt.render(calls, task.tools) in prompt


@pytest.mark.parametrize(("change", "message"), [
    ({"role": "user", "content": "x", "tool_calls": []}, "only an assistant turn"),
    ({"role": "assistant", "tool_calls": "f"}, "'tool_calls' must be a list"),
    ({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}, "not valid JSON"),
    ({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}, "must be an object"),
    ({"role": "assistant", "tool_calls": [{"type": "code", "function": {"name": "f"}}]}, "'type'"),
    ({"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}, "'name'"),
    ({"role": "assistant", "tool_calls": ["f"]}, "'function' object"),
    ({"role": "assistant", "content": 3, "tool_calls": [{"function": {"name": "f"}}]}, "string or null"),
    ({"role": "assistant", "content": None}, "'content' string"),
    ({"role": "tool", "content": "x", "tool_call_id": 7}, "'tool_call_id'"),
    ({"role": "tool", "content": {"temp": 1}}, "'content' string"),
])
def test_history_problems_are_task_errors(change, message):
    bad = json.loads(json.dumps(HISTORY))
    bad["messages"][2] = change
    with pytest.raises(TaskError, match=message):
        Task.from_dict(bad)


ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=8), inner,
                                                                                    max_size=2), max_leaves=6)


@pytest.mark.fuzz
@given(turn=st.sampled_from([2, 3, 4]), path=st.sampled_from([
    ("tool_calls",), ("content",), ("role",), ("tool_call_id",), ("name",), ("tool_calls", 0),
    ("tool_calls", 0, "function"), ("tool_calls", 0, "function", "arguments"), ("tool_calls", 0, "function", "name"),
    ("tool_calls", 0, "id"), ("tool_calls", 0, "type")]), value=ANY_JSON)
def test_mutated_histories_load_or_name_the_problem(qwen_tokenizer, turn, path, value):
    task_dict = json.loads(json.dumps(HISTORY))
    target = task_dict["messages"][turn]
    try:
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        return
    try:
        task = Task.from_dict(task_dict)
    except TaskError as e:
        assert str(e).strip() and "\n" not in str(e)
        return
    for name in ("hermes", "pythonic", "json", "bfcl", "apibank", "sealtools"):
        messages = get_format(name).messages(task)
        assert messages[-1]["role"] == "user" and task.query.strip() in messages[-1]["content"], name
    qwen_tokenizer.apply_chat_template(task.messages, tools=[t.to_openai() for t in task.tools], tokenize=False)
    json.dumps(task.to_dict(), ensure_ascii=False)


# ---- prompts and the agent --------------------------------------------------------------------------------------

def test_native_prompts_give_the_tools_to_the_template(qwen_tokenizer):
    model = tiny_qwen(qwen_tokenizer)
    task = weather_task(format="hermes")
    prompt = answer_prompt(model, task, get_format("hermes"))
    tools = [t.to_openai() for t in task.tools]
    assert prompt == qwen_tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the weather in Paris?"}], tools=tools, tokenize=False,
        add_generation_prompt=True)
    synthesis = synthesis_prompt(model, task, get_format("hermes"))
    assert "# Tools" not in synthesis and "<tool_call>" in synthesis and "Request:" in synthesis
    demo = answer_prompt(model, task, get_format("hermes"), [("Weather in Oslo?", "<tool_call>\nx\n</tool_call>")])
    assert "<|im_start|>user\nWeather in Oslo?<|im_end|>\n<|im_start|>assistant\n<tool_call>\nx\n</tool_call>" in demo


def test_a_template_without_tools_lists_them_in_the_system_turn(qwen):
    task = weather_task(format="hermes")
    prompt = answer_prompt(qwen, task, get_format("hermes"))
    assert "You can call these functions:" in prompt and '"name": "send_email"' in prompt


@pytest.mark.parametrize("name", NATIVE_FORMATS)
def test_synthesis_pairs_in_native_syntax(name):
    fmt = get_format(name)
    calls = CALL_LISTS[1]
    assert parse_pair(render_pair("Weather in Rome, then mail me", calls, fmt), fmt) == (
        "Weather in Rome, then mail me", calls)


@pytest.mark.slow
def test_tt_si_respond_with_hermes_on_the_real_tokenizer(qwen_tokenizer, monkeypatch):
    from ttsi.agent import SelfImprovingAgent
    from ttsi.config import AgentConfig, GateConfig, LearnConfig, SynthesisConfig

    model = tiny_qwen(qwen_tokenizer)
    fmt = get_format("hermes")
    real_generate = model.generate
    pair = render_pair("What is the weather in Oslo?", [Call("get_weather", {"city": "Oslo"})], fmt)

    def generate(prompts, *args, **kwargs):  # the random model writes noise; its synthesizer writes a good pair
        if all("Request:" in p for p in prompts):
            return [pair] * (len(prompts) * kwargs.get("num_return_sequences", 1))
        return real_generate(prompts, *args, **kwargs)

    monkeypatch.setattr(model, "generate", generate)
    config = AgentConfig(method="tt-si", gate=GateConfig(tau=1.0), synthesis=SynthesisConfig(k=1),
                         learn=LearnConfig(epochs=1), max_new_tokens=4)
    response = SelfImprovingAgent(model, config).respond(weather_task(format="hermes"))
    assert response.decision == "adapt" and response.adapted, response.reason
    assert response.uncertainty.candidates == ["get_weather", "send_email", "set_alarm"]
    assert response.synthetic[0].answer == [Call("get_weather", {"city": "Oslo"})]
    assert response.train is not None and response.train.steps == 1
    assert "# Tools" in response.scoring_prompt and "<tool_call>" in response.scoring_prompt


# ---- the CLI ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_qwen_dir(tmp_path_factory, qwen_tokenizer):
    path = tmp_path_factory.mktemp("tiny-qwen2.5")
    model = tiny_qwen(qwen_tokenizer)
    model.model.save_pretrained(path)
    qwen_tokenizer.save_pretrained(path)
    return path


def _respond(model_dir, tmp_path, *args: str):
    from typer.testing import CliRunner

    from ttsi.cli import app

    task = tmp_path / "task.json"
    task.write_text(json.dumps(weather_task().to_dict()), encoding="utf-8")
    return CliRunner().invoke(app, ["respond", "--model", str(model_dir), "--task", str(task), "--method", "base",
                                    "--max-new-tokens", "2", "--device", "cpu", "--json", *args])


@pytest.mark.slow
@pytest.mark.parametrize("parser", ["auto", "hermes"])
def test_respond_tool_parser_answers_in_the_native_format(tiny_qwen_dir, tmp_path, parser):
    result = _respond(tiny_qwen_dir, tmp_path, "--tool-parser", parser)
    assert result.exit_code == 0, result.output
    trace = json.loads(result.stdout)
    assert "<tool_call>" in trace["scoring_prompt"] and "# Tools" in trace["scoring_prompt"]


def test_respond_tool_parser_refuses_what_it_cannot_use(tiny_qwen_dir, qwen_dir, tmp_path):
    result = _respond(tiny_qwen_dir, tmp_path, "--tool-parser", "nope")
    assert result.exit_code == 2 and "unknown answer format 'nope'" in result.output
    result = _respond(qwen_dir, tmp_path, "--tool-parser", "auto")  # its template takes no tools
    assert result.exit_code == 2 and "writes no known tool-call format" in result.output
