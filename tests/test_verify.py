"""Verified synthetic data (`synthesis.verify`): schema, answer-check and consistency; settings, CLI and errors."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from ttsi.augment import SelfSynthesizer, select_pairs
from ttsi.cli import app
from ttsi.cli_common import VERIFY, verifiers
from ttsi.config import VERIFIERS, AgentConfig, SynthesisConfig, TeacherConfig
from ttsi.errors import ConfigError, TaskError
from ttsi.formats import get_format
from ttsi.prompts import answer_prompt, render_pair
from ttsi.task import Call
from ttsi.teacher import TeacherSynthesizer
from ttsi.toy import SEEN, make_tasks
from ttsi.verify import (
    answer_check,
    consistency_seed,
    draft_problem,
    inconsistent,
    same_calls,
    same_final_answer,
)

from .conftest import weather_task

FMT = get_format("json")
OSLO = [Call("get_weather", {"city": "Oslo"})]
ROME = [Call("get_weather", {"city": "Rome"})]
WRONG = [Call("get_weather", {"city": "Lima"})]


def _fake_generate(model, drafts, answers, calls):
    """A stand-in for `model.generate`: synthesis prompts get `drafts`; an answer prompt gets `answers[city]` for
    the first city of `answers` its question names (cycled to num_return_sequences). Every call is recorded."""

    def generate(prompts, max_new_tokens=256, temperature=0.0, top_p=1.0, num_return_sequences=1, seed=None,
                 seeds=None, prefixes=None, on_rows=None):
        calls.append({"prompts": list(prompts), "temperature": temperature, "n": num_return_sequences,
                      "seeds": list(seeds or []), "max_new_tokens": max_new_tokens})
        out = []
        for prompt in prompts:
            if "You write training data" in prompt:
                out += [drafts[i % len(drafts)] for i in range(num_return_sequences)]
                continue
            city = next(c for c in answers if f"Weather in {c}" in prompt)
            texts = answers[city]
            out += [texts[i % len(texts)] for i in range(num_return_sequences)]
        return out

    return generate


def _pair(city, calls=None):
    return render_pair(f"Weather in {city}?", calls or [Call("get_weather", {"city": city})], FMT)


def test_consistency_keeps_a_reproduced_pair_and_drops_one_the_model_does_not_reproduce(toy, monkeypatch):
    calls = []
    answers = {"Oslo": [FMT.render(OSLO)], "Rome": [FMT.render(WRONG)]}
    monkeypatch.setattr(toy, "generate", _fake_generate(toy, [_pair("Rome"), _pair("Oslo")], answers, calls))
    config = SynthesisConfig(k=2, oversample=1, verify=["schema", "consistency"], consistency_samples=3,
                             consistency_temperature=0.9)
    result = SelfSynthesizer(toy, config).synthesize(weather_task(), FMT, seed=7)
    assert [(p.query, p.answer) for p in result.pairs] == [("Weather in Oslo?", OSLO)]
    assert result.rejected == {"inconsistent": 1} and result.drafts == 2 and result.unused == 0
    _, answering = calls  # one generation for the drafts, one for every answer of every pair
    assert answering["n"] == 3 and answering["temperature"] == 0.9
    assert answering["seeds"] == [consistency_seed(7, 0), consistency_seed(7, 1)]
    assert answering["prompts"] == [answer_prompt(toy, weather_task().with_query(f"Weather in {c}?"), FMT)
                                    for c in ("Rome", "Oslo")]
    assert answering["max_new_tokens"] == config.max_new_tokens


def test_a_kept_pair_needs_a_share_q_of_the_answers(toy, monkeypatch):
    two_of_four = [FMT.render(OSLO), FMT.render(WRONG), "no calls at all", FMT.render(OSLO)]
    for q, kept in [(0.5, True), (0.75, False), (0.25, True), (1.0, False)]:
        calls = []
        monkeypatch.setattr(toy, "generate", _fake_generate(toy, [_pair("Oslo")], {"Oslo": two_of_four}, calls))
        config = SynthesisConfig(k=1, oversample=1, verify=["consistency"], consistency_agree=q)
        result = SelfSynthesizer(toy, config).synthesize(weather_task(), FMT, seed=0)
        assert bool(result.pairs) is kept, q
        assert result.rejected == ({} if kept else {"inconsistent": 1})


def test_greedy_consistency_asks_once_per_pair(toy, monkeypatch):
    calls = []
    monkeypatch.setattr(toy, "generate", _fake_generate(toy, [_pair("Oslo")], {"Oslo": [FMT.render(OSLO)]}, calls))
    config = SynthesisConfig(k=1, oversample=1, verify=["consistency"], consistency_temperature=0.0,
                             consistency_samples=8)
    assert SelfSynthesizer(toy, config).synthesize(weather_task(), FMT, seed=0).pairs
    assert calls[1]["n"] == 1 and calls[1]["temperature"] == 0.0


def test_answers_agree_as_call_lists_in_any_order(toy, monkeypatch):
    both = [Call("get_weather", {"city": "Oslo"}), Call("send_email", {"to": "a@b.c"})]
    calls = []
    answers = {"Oslo": [FMT.render(both[::-1])]}
    monkeypatch.setattr(toy, "generate", _fake_generate(toy, [_pair("Oslo", both)], answers, calls))
    config = SynthesisConfig(k=1, oversample=1, verify=["consistency"])
    assert SelfSynthesizer(toy, config).synthesize(weather_task(), FMT, seed=0).pairs[0].answer == both
    assert same_calls(both, both[::-1]) and not same_calls(both, both[:1]) and not same_calls(both, both + both[:1])
    assert not same_calls([Call("f", {"x": 1})], [Call("f", {"x": "1"})])
    assert same_calls([Call("f", {"x": 2, "y": {"z": [1.0]}})], [Call("f", {"y": {"z": [1]}, "x": 2.0})])


def test_consistency_seeds_make_an_inputs_pairs_independent_of_its_company(toy, monkeypatch):
    """The answers' seeds derive from the input's seed and the pair's place alone: [a] and [a, b] ask the same."""
    calls = []
    answers = {"Oslo": [FMT.render(OSLO)], "Rome": [FMT.render(ROME)]}
    monkeypatch.setattr(toy, "generate", _fake_generate(toy, [_pair("Oslo"), _pair("Rome")], answers, calls))
    synth = SelfSynthesizer(toy, SynthesisConfig(k=1, oversample=2, verify=["schema", "consistency"]))
    a, b = weather_task(), weather_task(id="w-2", messages=[{"role": "user", "content": "Weather in Lima?"}])
    alone = synth.synthesize_many([a], [FMT], [11])
    together = synth.synthesize_many([a, b], [FMT, FMT], [11, 12])
    assert [p.to_dict() for p in alone[0].pairs] == [p.to_dict() for p in together[0].pairs]
    assert alone[0].rejected == together[0].rejected and alone[0].unused == together[0].unused == 1
    assert len(calls) == 4  # two generations per synthesize_many, however many inputs
    assert calls[1]["seeds"] == [consistency_seed(11, 0), consistency_seed(11, 1)]
    assert calls[3]["seeds"] == calls[1]["seeds"] + [consistency_seed(12, 0), consistency_seed(12, 1)]


@pytest.mark.slow
def test_on_the_toy_model_consistency_is_seeded_and_independent_of_company(toy):
    """The real toy model: what input a keeps (and why it rejects the rest) is the same alone and beside others.
    Its pairs' answers are mostly wrong for their questions, and consistency drops them."""
    tasks = make_tasks(2, SEEN, seed=3)
    synth = SelfSynthesizer(toy, SynthesisConfig(k=2, oversample=2, verify=["schema", "consistency"]))
    alone = synth.synthesize_many(tasks[:1], [FMT], [11])[0]
    together = synth.synthesize_many(tasks, [FMT] * 2, [11, 12])
    assert [p.to_dict() for p in alone.pairs] == [p.to_dict() for p in together[0].pairs]
    assert alone.rejected == together[0].rejected
    for r in together:
        assert sum(r.rejected.values()) + len(r.pairs) + r.unused == r.drafts == 4
    assert sum(r.rejected.get("inconsistent", 0) for r in together) > 0


def test_inconsistent_on_the_toy_model_keeps_its_own_greedy_answer(toy):
    task = make_tasks(1, SEEN, seed=3)[0]
    query = "How much is 75 USD in INR?"
    greedy = FMT.parse(toy.generate([answer_prompt(toy, task.with_query(query), FMT)], max_new_tokens=64)[0])
    other = [Call(greedy[0].name, {**greedy[0].arguments, "amount": 123456})]
    config = SynthesisConfig(consistency_temperature=0.0, max_new_tokens=64)
    assert inconsistent(toy, [(task, FMT, 5, [(query, greedy), (query, other)])], config) == [[None, "inconsistent"]]
    assert inconsistent(toy, [(task, FMT, 5, [])], config) == [[]]


def test_counts_by_reason_add_up_with_every_verifier(toy, monkeypatch):
    calls = []
    copy = render_pair("what is the WEATHER in paris", [Call("get_weather", {"city": "Paris"})], FMT)
    drafts = ["gibberish", _pair("Oslo", [Call("get_time", {})]), copy, _pair("Oslo"), _pair("oslo"), _pair("Rome"),
              _pair("Lima")]
    answers = {"Oslo": [FMT.render(OSLO)], "Rome": [FMT.render(WRONG)], "Lima": [FMT.render(ROME)]}
    monkeypatch.setattr(toy, "generate", _fake_generate(toy, drafts, answers, calls))
    config = SynthesisConfig(k=1, oversample=7, verify=["schema", "consistency"])
    r = SelfSynthesizer(toy, config).synthesize(weather_task(), FMT, seed=0)
    assert r.rejected == {"no_pair": 1, "unknown_function": 1, "copy_of_seed": 1, "duplicate": 1, "inconsistent": 2}
    assert [p.query for p in r.pairs] == ["Weather in Oslo?"] and r.unused == 0
    assert sum(r.rejected.values()) + len(r.pairs) + r.unused == r.drafts == 7


def test_no_verifier_keeps_every_draft_that_parses():
    drafts = ["gibberish", _pair("Oslo", [Call("get_time", {})]), _pair("Rome", [Call("get_weather", {})])]
    checked = select_pairs(drafts, weather_task(), FMT, k=3, source="self")
    unchecked = select_pairs(drafts, weather_task(), FMT, k=3, source="self", verify=[])
    assert checked.pairs == [] and checked.rejected == {"no_pair": 1, "unknown_function": 1, "missing_argument": 1}
    assert [p.answer for p in unchecked.pairs] == [[Call("get_time", {})], [Call("get_weather", {})]]
    assert unchecked.rejected == {"no_pair": 1}


def test_schema_is_a_named_verifier():
    task = weather_task()
    assert draft_problem(["schema"], "", OSLO, task, FMT) is None
    assert draft_problem(["schema"], "", [Call("get_weather", {})], task, FMT) == "missing_argument"
    assert draft_problem([], "", [Call("get_time", {})], task, FMT) is None


# ---- answer-check ---------------------------------------------------------------------------------------------------

MATH = SimpleNamespace(id="m-1", kind="math")  # math tasks come later; answer-check reads only id and kind


@pytest.mark.parametrize(("text", "reason"), [
    ("Request: Tom has 3 bags of 4 apples. How many?\nAnswer: 3*4 = <<3*4=12>>12 apples.\n#### 12", None),
    ("3*4 = <<3*4=12>>12 apples.\n#### 12", None),  # the solution alone
    ("Request: Tom has 3 bags of 4 apples.\nAnswer: 3*4 = <<3*4=13>>13 apples.\n#### 13", "wrong_step"),
    ("Request: q\nAnswer: 3*4 = <<3*4=12>>12 apples.\n#### 13", "final_mismatch"),
    ("Request: q\nAnswer: twelve apples.\n#### 12", "no_annotation"),
    ("Request: q\nAnswer: <<open('x')=1>>1\n#### 1", "bad_expression"),
    ("Request: q\nAnswer: 3*4 = <<3*4=12>>12 apples.\n#### lots", "no_final_answer"),
])
def test_answer_check_on_solution_texts(text, reason):
    assert answer_check(text, MATH) == reason


def test_answer_check_on_a_tool_call_task_is_one_clear_error_before_any_work(toy, monkeypatch):
    message = "answer-check verifies math solutions; task 'w-1' is a tool-call task"
    with pytest.raises(TaskError, match=message):
        answer_check("3*4 = <<3*4=12>>12\n#### 12", weather_task())

    def no_work(*args, **kwargs):
        raise AssertionError("generated before the check")

    monkeypatch.setattr(toy, "generate", no_work)
    synth = SelfSynthesizer(toy, SynthesisConfig(verify=["schema", "answer-check"]))
    with pytest.raises(TaskError, match=message):
        synth.synthesize_many([weather_task()], [FMT], [0])
    with pytest.raises(TaskError, match=message):
        select_pairs([_pair("Oslo")], weather_task(), FMT, 1, "self", verify=["answer-check"])


def test_the_agent_refuses_answer_check_on_a_tool_call_task_before_the_gate(toy, monkeypatch):
    from ttsi.agent import SelfImprovingAgent

    config = AgentConfig(method="tt-si", synthesis=SynthesisConfig(verify=["answer-check"]))
    agent = SelfImprovingAgent(toy, config)

    def no_work(*args, **kwargs):
        raise AssertionError("the model ran before the check")

    monkeypatch.setattr(toy, "generate", no_work)
    monkeypatch.setattr(toy, "count_tokens", no_work)
    with pytest.raises(TaskError, match="answer-check verifies math solutions; task 'w-1' is a tool-call task"):
        agent.respond(weather_task())
    base = SelfImprovingAgent(toy, AgentConfig(method="base", synthesis=SynthesisConfig(verify=["answer-check"])))
    base._check(weather_task())  # base never synthesizes: nothing to verify


def test_free_form_answers_agree_on_their_normalised_final_answer():
    assert same_final_answer("3*4 = 12 apples.\n#### 12", "#### 12.0")
    assert same_final_answer("The answer is $1,000.", "so 1000")
    assert not same_final_answer("#### 12", "#### 13")
    assert same_final_answer("The Eiffel Tower!", "eiffel tower")
    assert not same_final_answer("Paris", "Lyon")


# ---- settings -------------------------------------------------------------------------------------------------------


def test_the_default_verifies_the_schema_only():
    assert SynthesisConfig().verify == ["schema"] and SynthesisConfig().verify is not SynthesisConfig().verify
    assert (SynthesisConfig.consistency_samples, SynthesisConfig.consistency_temperature,
            SynthesisConfig.consistency_agree) == (4, 0.7, 0.5)
    assert AgentConfig.from_dict(AgentConfig().to_dict()) == AgentConfig()
    config = AgentConfig(synthesis=SynthesisConfig(verify=["consistency"], consistency_agree=1.0))
    assert AgentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config.validate()


@pytest.mark.parametrize(("synthesis", "message"), [
    ({"verify": ["schema", "majority"]},
     "unknown verifier 'majority'; choose from schema, answer-check, consistency"),
    ({"verify": "schema"}, "synthesis verify must be a list of verifier names"),
    ({"verify": [1]}, "synthesis verify must be a list of verifier names"),
    ({"consistency_samples": 0}, "consistency samples must be"),
    ({"consistency_samples": 2.0}, "consistency samples must be"),
    ({"consistency_samples": True}, "consistency samples must be"),
    ({"consistency_agree": 0.0}, r"consistency agree must be .* \(0, 1\]"),
    ({"consistency_agree": 1.5}, r"consistency agree must be .* \(0, 1\]"),
    ({"consistency_agree": math.nan}, "consistency agree must be"),
    ({"consistency_temperature": -0.1}, "consistency temperature must be"),
    ({"consistency_temperature": math.inf}, "consistency temperature must be"),
])
def test_bad_verify_settings_are_config_errors(synthesis, message):
    with pytest.raises(ConfigError, match=message):
        AgentConfig(synthesis=SynthesisConfig(**synthesis)).validate()


def test_every_verifier_and_none_validate():
    for verify in ([], *([v] for v in VERIFIERS), list(VERIFIERS)):
        AgentConfig(synthesis=SynthesisConfig(verify=verify)).validate()


def test_consistency_with_a_teacher_endpoint_is_refused():
    teacher = TeacherConfig(url="http://localhost:1/v1", model="m")
    synthesis = SynthesisConfig(verify=["schema", "consistency"])
    with pytest.raises(ConfigError, match=r"consistency verifier .* method tt-d"):
        AgentConfig(method="tt-d", teacher=teacher, synthesis=synthesis).validate()
    AgentConfig(method="tt-d", synthesis=synthesis).validate(teacher_given=True)  # a local model as the teacher
    with pytest.raises(ConfigError, match="consistency verifier"):
        TeacherSynthesizer(teacher, synthesis)


# ---- command line ---------------------------------------------------------------------------------------------------


def test_the_verify_option_defaults_to_the_config_and_parses_lists():
    assert VERIFY.default == ",".join(SynthesisConfig().verify) == "schema"
    assert verifiers(VERIFY.default) == SynthesisConfig().verify
    assert verifiers("schema, consistency") == ["schema", "consistency"]
    assert verifiers("none") == verifiers("") == []


@pytest.mark.parametrize("command", ["respond", "eval"])
@pytest.mark.parametrize(("given", "expected"), [
    (None, ["schema"]), ("schema,consistency", ["schema", "consistency"]), ("none", []),
])
def test_the_verify_option_reaches_the_agent_config(command, given, expected, monkeypatch, tmp_path):
    seen = []

    def capture(self, teacher_given=False):
        seen.append(self.synthesis.verify)
        raise ConfigError("captured")

    monkeypatch.setattr(AgentConfig, "validate", capture)
    args = [command, "--model", "m", *(["--task", str(tmp_path / "t.json")] if command == "respond" else
                                       ["--benchmark", "toy:seen"])]
    result = CliRunner().invoke(app, args + (["--verify", given] if given is not None else []))
    assert result.exit_code == 2 and "captured" in result.output
    assert seen == [expected]


@pytest.mark.parametrize("command", ["respond", "eval"])
def test_an_unknown_verifier_on_the_command_line_is_one_clear_error(command, tmp_path):
    args = [command, "--model", "m", "--verify", "schema,oracle",
            *(["--task", str(tmp_path / "t.json")] if command == "respond" else ["--benchmark", "toy:seen"])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "unknown verifier 'oracle'; choose from schema, answer-check, consistency" in result.output
