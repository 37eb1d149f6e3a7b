"""Free-form tasks beside tool calls: the task kinds, the `math` and `qa` formats, their synthetic pairs and
verifiers, and the agent's refusals (the gate's candidate measures need tools)."""

from __future__ import annotations

import json

import pytest

from ttsi.augment import screen
from ttsi.benchmarks.base import exact_match
from ttsi.config import AgentConfig, SynthesisConfig
from ttsi.errors import TaskError
from ttsi.formats import AnswerParseError, format_names, get_format
from ttsi.formats.free_form import normalize_answer
from ttsi.prompts import parse_pair, render_pair, synthesis_messages
from ttsi.task import Call, Task, load_task
from ttsi.trace import Decision, Response
from ttsi.verify import answer_check, check_task, draft_problem

from .conftest import weather_task

MATH, QA = get_format("math"), get_format("qa")
SOLUTION = "Tom has 3 bags of 4 apples: 3*4 = <<3*4=12>>12 apples.\n#### 12"
TOOL = {"name": "f", "description": "", "parameters": {"type": "object", "properties": {}}}


def math_task(**fields) -> Task:
    return Task.from_dict({"id": "m-1", "query": "Tom has 3 bags of 4 apples. How many apples?", "kind": "math",
                           "answer": SOLUTION} | fields)


def qa_task(**fields) -> Task:
    return Task.from_dict({"id": "q-1", "query": "where is the eiffel tower", "kind": "qa",
                           "answer": ["Paris", "Paris, France"]} | fields)


# ---- the task format ------------------------------------------------------------------------------------------------

def test_free_form_tasks_load_with_their_gold_and_round_trip(tmp_path):
    m, q = math_task(), qa_task()
    assert (m.kind, m.tools, m.answer, m.gold, m.format) == ("math", [], None, [SOLUTION], "math")
    assert (q.kind, q.gold, q.format, q.gold_answer) == ("qa", ["Paris", "Paris, France"], "qa", "Paris")
    assert m.gold_answer == SOLUTION and m.labelled and m.free_form and not weather_task().free_form
    assert Task.from_dict({"id": "q", "query": "x", "kind": "qa", "answer": "Oslo"}).gold == ["Oslo"]
    for task in (m, q, Task.from_dict({"id": "n", "query": "x", "kind": "qa"})):
        assert Task.from_dict(task.to_dict()) == task
        assert Task.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    assert m.to_dict() == {"id": "m-1", "messages": m.messages, "kind": "math", "answer": SOLUTION, "format": "math"}
    sibling = m.with_query("Ann has 2 bags of 5 pears. How many pears?")
    assert (sibling.kind, sibling.format, sibling.gold) == ("math", "math", None)


def test_a_tool_call_task_is_unchanged():
    task = weather_task()
    assert (task.kind, task.gold, task.labelled, task.gold_answer) == ("tools", None, True, task.answer)
    d = task.to_dict()
    assert "kind" not in d and d["answer"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert Task.from_dict(d) == task


@pytest.mark.parametrize(("fields", "message"), [
    ({"kind": "poem"}, "unknown task kind 'poem'; known kinds: tools, math, qa"),
    ({"kind": 3}, "unknown task kind 3; known kinds: tools, math, qa"),
    ({"kind": "math", "tools": [TOOL]}, "a math task answers in free text and has no tools"),
    ({"kind": "qa", "answer": [{"name": "f", "arguments": {}}]},
     "a qa task's 'answer' must be a string or a list of strings"),
    ({"kind": "math", "answer": 12}, "a math task's 'answer' must be a string or a list of strings"),
    ({"kind": "qa", "answer": []}, "a qa task's 'answer' must be a string or a list of strings"),
    ({"kind": "qa", "answer": ["Paris", " "]}, "a qa task's 'answer' must be a string or a list of strings"),
    ({"answer": "Paris"}, "'answer' must be a list of calls"),
    ({"kind": "tools", "answer": "Paris"}, "'answer' must be a list of calls"),
])
def test_bad_free_form_tasks_are_one_clear_error(tmp_path, fields, message):
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"id": "t", "query": "where is the eiffel tower"} | fields))
    with pytest.raises(TaskError, match=message) as e:
        load_task(path)
    assert str(e.value).startswith(f"{path} 't': ")


# ---- the formats ----------------------------------------------------------------------------------------------------

def test_the_free_form_formats_are_registered_beside_the_others():
    assert {"math", "qa"} <= set(format_names())
    assert (MATH.kind, QA.kind, get_format("json").kind) == ("math", "qa", "tools")


@pytest.mark.parametrize(("text", "answer"), [
    (SOLUTION, "12"),
    ("3*4 = 12.\n#### 1,000.", "1000"),
    ("So the total is 7. The answer is $1,250.", "1250"),
    ("2 + 3 = 5, then 5 * 2 = 10 apples", "10"),
    ("#### 4\nthen #### 5", "5"),  # the last `####`
])
def test_math_answers_are_extracted_by_the_gsm8k_rule(text, answer):
    assert MATH.parse(text) == answer
    assert MATH.render(text) == text


def test_math_and_qa_parse_errors_are_typed():
    with pytest.raises(AnswerParseError) as e:
        MATH.parse("I do not know.")
    assert e.value.reason == "no_final_answer"
    with pytest.raises(AnswerParseError) as e:
        QA.parse(" \n \n")
    assert e.value.reason == "empty_answer"
    with pytest.raises(ValueError, match="a math answer is text"):
        MATH.render([Call("f", {})])
    with pytest.raises(ValueError, match="names no function"):
        QA.name_prefix("f", [])


def test_qa_answers_are_the_first_non_empty_line():
    assert QA.parse("\n  The Eiffel Tower \nIt is in Paris.") == "The Eiffel Tower"


def test_keys_fold_what_the_scorers_fold():
    assert MATH.key("#### 12") == MATH.key("12.0") == MATH.key("The answer is $12.") == "12"
    assert MATH.key("#### 0.5") == "1/2" and MATH.key("no number") == "no number"
    assert QA.key("The Eiffel Tower!") == QA.key("eiffel  tower") == "eiffel tower"
    assert QA.key("Eiffel-Tower") == "eiffeltower"  # punctuation is deleted, not spaced, as the official does
    assert normalize_answer("An  Évian, the   café") == "e\u0301vian cafe\u0301"  # Unicode NFD first
    assert normalize_answer("A+") == ""
    # NFD splits "ç" into "c" and a combining cedilla, which is no word character: the "a" after it reads as an
    # article and goes, as in the official script
    assert normalize_answer("Ça va") == "c\u0327 va"


def test_free_form_exact_match_against_any_accepted_answer():
    assert exact_match(math_task(), "so 3*4 = 12\n#### 12.0").correct
    assert exact_match(math_task(), "#### 13").reason == "wrong_answer"
    assert exact_match(math_task(), "no idea").reason == "parse_error"
    assert exact_match(qa_task(), "paris, france").correct and exact_match(qa_task(), "The Paris").correct
    assert not exact_match(qa_task(), "Lyon").correct


# ---- synthesis and verification ---------------------------------------------------------------------------------

def test_the_synthesis_prompt_asks_for_a_similar_question_and_its_answer():
    (turn,) = synthesis_messages(math_task(), MATH)
    text = turn["content"]
    assert "Tom has 3 bags of 4 apples" in text and SOLUTION not in text  # the label is never shown
    assert "<<48/2=24>>" in text and "'#### N'" in text and text.endswith("Request: <the new question>\n"
                                                                          "Answer: <the answer>")
    assert "function" not in text
    (qa_turn,) = synthesis_messages(qa_task(), QA)
    assert "short answer" in qa_turn["content"] and "Paris" not in qa_turn["content"]


def test_pairs_parse_into_a_question_and_the_answer_text():
    draft = render_pair("Ann has 2 bags of 5 pears. How many?", "2*5 = <<2*5=10>>10\n#### 10", MATH)
    assert parse_pair(draft + "\nRequest: more text the model ran on with", MATH) == (
        "Ann has 2 bags of 5 pears. How many?", "2*5 = <<2*5=10>>10\n#### 10")  # cut after the `####` line
    with pytest.raises(AnswerParseError, match="no_final_answer"):
        parse_pair("Request: q\nAnswer: 2*5 = <<2*5=10>>10 pears", MATH)  # a pair must end on `#### N`
    assert parse_pair("Request: capital of france\nAnswer: Paris\nRequest: x", QA) == ("capital of france", "Paris")


def test_math_pairs_are_screened_by_answer_check_and_schema_is_a_no_op():
    task = math_task()
    check_task(["schema", "answer-check", "consistency"], task)  # every verifier can judge a math task
    drafts = [
        "Request: Ann has 2 bags of 5 pears. How many pears?\nAnswer: 2*5 = <<2*5=10>>10 pears.\n#### 10",
        "Request: Bo has 3 boxes of 7 pens. How many pens?\nAnswer: 3*7 = <<3*7=22>>22 pens.\n#### 22",
        "Request: Cy has 4 cups of 2 teas. How many?\nAnswer: 4*2 = <<4*2=8>>8 teas.\n#### 9",
        "Request: Tom has 3 bags of 4 apples. How many apples?\nAnswer: 3*4 = <<3*4=12>>12\n#### 12",
        "Request: Di has 6 rows of 6 trees.\nAnswer: thirty-six trees",
    ]
    kept, rejected = screen(drafts, task, MATH, ["schema", "answer-check"])
    assert kept == [("Ann has 2 bags of 5 pears. How many pears?", "2*5 = <<2*5=10>>10 pears.\n#### 10")]
    assert rejected == {"wrong_step": 1, "final_mismatch": 1, "copy_of_seed": 1, "no_final_answer": 1}
    assert draft_problem(["schema"], "", "Paris", qa_task(), QA) is None
    assert answer_check("Answer: " + SOLUTION, task) is None
    with pytest.raises(TaskError, match="answer-check verifies math solutions; task 'q-1' is a qa task"):
        check_task(["answer-check"], qa_task())


def test_consistency_compares_normalised_final_answers(toy, monkeypatch):
    from ttsi.verify import inconsistent

    answers = iter([["#### 10.0", "2*5 is 10", "#### 11", "I cannot say"]])
    monkeypatch.setattr(toy, "generate", lambda prompts, **kw: next(answers))
    config = SynthesisConfig(consistency_samples=4, consistency_agree=0.5)
    pair = ("Ann has 2 bags of 5 pears. How many?", "2*5 = <<2*5=10>>10\n#### 10")
    assert inconsistent(toy, [(math_task(), MATH, 0, [pair])], config) == [[None]]  # 2 of 4 agree
    answers = iter([["The Paris.", "Lyon", "lyon", "Nice"]])
    assert inconsistent(toy, [(qa_task(), QA, 0, [("capital of france", "Paris")])], config) == [["inconsistent"]]


# ---- the agent ------------------------------------------------------------------------------------------------------

def test_the_agent_needs_the_token_gate_or_method_base_for_free_form_tasks(toy):
    from ttsi.agent import SelfImprovingAgent

    with SelfImprovingAgent(toy, AgentConfig(method="tt-si")) as agent, pytest.raises(TaskError) as e:
        agent.respond(math_task())
    assert str(e.value) == ("task 'm-1' is a math task: its answer is free text, so the gate has no candidate "
                            "actions to score (use the token gate, --measure token with --reference PROFILE, or "
                            "method base to answer it without test-time learning)")
    with SelfImprovingAgent(toy, AgentConfig(method="base", max_new_tokens=8)) as agent:
        response = agent.respond(qa_task())
    assert response.uncertainty is None and response.decision is Decision.SKIP
    assert response.answer == (QA.parse(response.raw) if response.raw.strip() else None)
    assert isinstance(response.to_dict()["answer"], (str, type(None)))


def test_a_format_of_another_kind_is_refused(toy):
    from ttsi.agent import SelfImprovingAgent

    with SelfImprovingAgent(toy, AgentConfig(method="base")) as agent:
        with pytest.raises(TaskError, match="format 'json' writes tool calls, but task 'm-1' is a math task"):
            agent.respond(math_task(format="json"))
        with pytest.raises(TaskError, match="format 'qa' writes short answers, but task 'w-1' is a tool-call task"):
            agent.respond(weather_task(format="qa"))


def test_a_free_form_answer_is_text_in_the_trace_and_content_for_the_server():
    from ttsi.serve.protocol import ChatRequest, Outcome, make_reply

    r = Response(id="m", method="base", uncertainty=None, decision=Decision.SKIP, reason="", answer="12",
                 raw="3*4 = 12\n#### 12")
    assert r.to_dict()["answer"] == "12"
    request = ChatRequest(task=math_task(), config=AgentConfig(method="base"), offered=["f"])
    reply = make_reply(Outcome(r, 10, 5), request, MATH, budget=64)
    assert (reply.content, reply.tool_calls, reply.finish_reason) == ("3*4 = 12\n#### 12", [], "stop")


def test_the_server_refuses_a_free_form_format():
    from ttsi.errors import ConfigError
    from ttsi.serve.settings import ServeSettings

    with pytest.raises(ConfigError, match="'math' is a free-form answer format"):
        ServeSettings(model_name="m", format="math").validate()


def test_a_free_form_task_adapts_on_its_verified_pairs_behind_the_token_gate(toy, tmp_path):
    from ttsi.agent import SelfImprovingAgent
    from ttsi.augment import select_pairs
    from ttsi.calibrate import calibrate_profile
    from ttsi.config import GateConfig
    from ttsi.prompts import answer_prompt

    task = math_task()
    built = calibrate_profile(toy, [task, qa_task()], None, max_new_tokens=16)["profile"]
    query, solution = "Ann has 2 bags of 5 pears. How many pears?", "2*5 = <<2*5=10>>10 pears.\n#### 10"
    drafts = [f"Request: {query}\nAnswer: 2*5 = <<2*5=11>>11\n#### 11", f"Request: {query}\nAnswer: {solution}"]

    class Fixed:  # writes these drafts; they go through the real parsing and verifiers
        source = "self"

        def synthesize_many(self, tasks, fmts, seeds):
            return [select_pairs(drafts, t, f, 1, self.source, ["schema", "answer-check"])
                    for t, f in zip(tasks, fmts, strict=True)]

    gate = GateConfig(measure="token", reference=str(built.save(tmp_path / "ref.json")), token_count=1)
    with SelfImprovingAgent(toy, AgentConfig(method="no-gate", gate=gate, max_new_tokens=16)) as agent:
        agent.synthesizer = Fixed()
        trained, adapted = [], agent.learner.adapted

        def spy(examples, seeds, *args, **kwargs):
            trained.append(examples)
            return adapted(examples, seeds, *args, **kwargs)

        agent.learner.adapted = spy
        r = agent.respond(task)
    assert r.uncertainty is not None and r.uncertainty.tokens is not None
    assert r.adapted and r.train is not None and r.train.steps == 5 and r.rejected == {"wrong_step": 1}
    assert [p.to_dict() for p in r.synthetic] == [{"query": query, "answer": solution, "source": "self"}]
    assert trained == [[[(answer_prompt(toy, task.with_query(query), MATH), solution)]]]


def test_respond_answers_a_math_task_file(toy_dir, tmp_path):
    from typer.testing import CliRunner

    from ttsi.cli import app

    path = tmp_path / "math.json"
    path.write_text(json.dumps(math_task().to_dict()))
    args = ["respond", "--model", str(toy_dir), "--task", str(path), "--method", "base", "--max-new-tokens", "8"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    trace = json.loads(result.stdout)
    assert trace["uncertainty"] is None and trace["answer"] == (MATH.parse(trace["raw"]) if trace["parse_error"]
                                                                is None else None)
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0 and "answer" in shown.output
    refused = CliRunner().invoke(app, [*args[:-4], "--method", "tt-si"])
    assert refused.exit_code == 2 and "is a math task: its answer is free text" in refused.output


def test_a_majority_vote_counts_free_form_answers_by_their_normal_form():
    from ttsi.evaluation.runner import majority_correct

    texts = ["#### 13", "so 12 apples\n#### 12", "The answer is 12.0", "no idea"]
    assert majority_correct(math_task(), texts, [False, True, True, False])  # 12 twice, 13 once, one unparsable
    assert not majority_correct(qa_task(), ["Lyon", "the lyon", "Paris"], [False, False, True])


def test_calibrating_tau_refuses_a_free_form_task(toy):
    from ttsi.calibrate import gate_confidences
    from ttsi.config import GateConfig

    with pytest.raises(TaskError, match="task 'q-1' is a qa task \\(a free-form answer\\): the gate has no candidate "
                                        "actions to score"):
        gate_confidences(toy, [qa_task()], GateConfig())
