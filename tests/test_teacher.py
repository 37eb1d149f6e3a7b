"""TT-D: the teacher path against a real OpenAI-compatible HTTP server on loopback serving a tiny model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from ttsi.agent import SelfImprovingAgent
from ttsi.config import AgentConfig, GateConfig, SynthesisConfig, TeacherConfig
from ttsi.errors import TeacherError
from ttsi.formats import get_format
from ttsi.schema import check_calls
from ttsi.teacher import TeacherSynthesizer
from ttsi.toy import SEEN, make_tasks

from .openai_server import ChatServer, free_port


@pytest.fixture
def server(toy):
    with ChatServer(toy) as s:
        yield s


def _teacher(url: str, model: str = "tiny-teacher", **synth) -> TeacherSynthesizer:
    return TeacherSynthesizer(TeacherConfig(url=url, model=model, timeout_s=30, retries=0),
                              SynthesisConfig(**{"k": 1, "oversample": 4, **synth}))


@pytest.mark.slow
def test_teacher_writes_validated_pairs_over_http(server):
    teacher = _teacher(server.url)
    teacher.check()
    tasks = make_tasks(4, SEEN, seed=7)
    results = [teacher.synthesize(t, get_format("json"), seed=i) for i, t in enumerate(tasks)]
    assert all(r.error is None and r.drafts == 4 for r in results)
    kept = [p for r in results for p in r.pairs]
    assert kept, [r.rejected for r in results]  # the toy model writes usable pairs for some of its tools
    for task, r in zip(tasks, results, strict=True):
        assert sum(r.rejected.values()) + len(r.pairs) + r.unused == r.drafts
        for pair in r.pairs:
            assert pair.source == "teacher" and pair.answer
            check_calls(pair.answer, task.tools)  # names, required arguments and types all valid
    body = server.requests[0]
    assert body["model"] == "tiny-teacher" and body["n"] == 4 and body["seed"] == 0
    gold = get_format("json").render(tasks[0].answer)
    assert gold not in body["messages"][0]["content"]  # the label never reaches the teacher


def test_unreachable_teacher_fails_the_check_with_one_clear_message():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(TeacherError, match=f"cannot reach the teacher at {url}"):
        _teacher(url).check()


def test_teacher_not_serving_the_model_is_named(server):
    with pytest.raises(TeacherError, match="does not serve model 'gpt-x'; it serves: tiny-teacher"):
        _teacher(server.url, model="gpt-x").check()


def test_server_error_yields_no_pairs_and_a_reason(server):
    server.fail_status = 500
    result = _teacher(server.url).synthesize(make_tasks(1, SEEN, seed=1)[0], get_format("json"), seed=0)
    assert result.pairs == [] and result.drafts == 0
    assert result.error.startswith("teacher failed: InternalServerError: Error code: 500")
    assert "injected failure" in result.error and "\n" not in result.error
    assert len(server.requests) == 1  # retries=0: asked once


@pytest.mark.slow
def test_refused_sampling_parameters_are_dropped_and_retried(server):
    server.refuse = {"temperature", "top_p"}  # as reasoning models do
    teacher = _teacher(server.url)
    result = teacher.synthesize(make_tasks(1, SEEN, seed=1)[0], get_format("json"), seed=0)
    assert result.error is None and result.drafts == 4
    assert teacher._refused == {"temperature", "top_p"}
    assert "temperature" not in server.requests[-1] and "top_p" not in server.requests[-1]


@pytest.mark.slow
def test_max_completion_tokens_falls_back_to_max_tokens(server):
    server.refuse = {"max_completion_tokens"}
    result = _teacher(server.url, max_new_tokens=64).synthesize(make_tasks(1, SEEN, seed=2)[0],
                                                               get_format("json"), seed=0)
    assert result.error is None
    assert server.requests[-1]["max_tokens"] == 64


# 200 replies that are not chat completions: each must end as `Synthesis([], error=...)`, never as an exception.
BAD_REPLIES = {
    "plain text": b"Service temporarily unavailable",
    "broken JSON": b'{"choices": [{"message": ',
    "empty object": b"{}",
    "choices not a list": b'{"choices": 5}',
    "no choices": b'{"choices": []}',
    "choice without message": b'{"choices": [{}]}',
    "content not a string": b'{"choices": [{"message": {"content": 7}}]}',
    "content a lone surrogate": b'{"choices": [{"message": {"content": "\\ud800"}}]}',
    "array": b"[]",
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "huge integer": b"7" * 5000,
}


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
@pytest.mark.parametrize("body", BAD_REPLIES.values(), ids=BAD_REPLIES.keys())
def test_a_reply_that_is_not_a_chat_completion_yields_no_pairs_and_a_reason(server, body, content_type):
    server.raw_reply, server.raw_type = body, content_type
    result = _teacher(server.url).synthesize(make_tasks(1, SEEN, seed=1)[0], get_format("json"), seed=0)
    assert result.pairs == [] and result.drafts == 0
    assert result.error and result.error.startswith("teacher's reply is not a chat completion: ")
    assert "\n" not in result.error and len(result.error) < 300
    assert len(server.requests) == 1  # a 200 reply is not retried


@pytest.mark.slow
def test_the_agent_answers_unadapted_when_the_teacher_replies_garbage(server, toy):
    task = make_tasks(1, SEEN, seed=2)[0]  # the toy model is unsure of it: margin 0.95 < tau 1.0
    config = AgentConfig(method="tt-d", gate=GateConfig(tau=1.0), max_new_tokens=16,
                         teacher=TeacherConfig(url=server.url, model="tiny-teacher", timeout_s=30, retries=0))
    base = SelfImprovingAgent(toy, AgentConfig(method="base", max_new_tokens=16)).respond(task)
    with SelfImprovingAgent(toy, config) as agent:
        for name in ("plain text", "deep nesting"):
            server.raw_reply = BAD_REPLIES[name]
            r = agent.respond(task)
            assert r.decision == "adapt" and not r.adapted and r.train is None and r.synthetic == [], name
            assert r.reason.startswith("teacher's reply is not a chat completion: "), name
            assert r.raw == base.raw and r.answer == base.answer, name


def test_null_content_is_an_empty_draft_and_extra_choices_are_ignored(server):
    server.raw_reply = json.dumps({"choices": [{"message": {"content": None}}] * 50}).encode()
    result = _teacher(server.url).synthesize(make_tasks(1, SEEN, seed=1)[0], get_format("json"), seed=0)
    assert result.error is None and result.pairs == [] and result.drafts == 4  # k * oversample were asked for
    assert result.rejected == {"no_pair": 4}  # an empty draft holds no request/answer pair


BAD_MODEL_LISTS = {
    "plain text": b"<html>welcome</html>",
    "broken JSON": b'{"data": [',
    "empty object": b"{}",
    "data a number": b'{"data": 5}',
    "data a string": b'{"data": "tiny-teacher"}',
    "item not an object": b'{"data": [5]}',
    "item without id": b'{"data": [{"object": "model"}]}',
    "id not a string": b'{"data": [{"id": 7}]}',
    "array": b"[]",
    "null": b"null",
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "huge integer": b"7" * 5000,
}


@pytest.mark.parametrize("body", BAD_MODEL_LISTS.values(), ids=BAD_MODEL_LISTS.keys())
def test_an_unreadable_model_list_passes_the_check_like_no_list(server, body):
    server.raw_models, server.raw_type = body, "text/plain" if body.startswith(b"<") else "application/json"
    assert _teacher(server.url, model="gpt-x").check() is None  # the first request will tell


def test_a_long_model_list_is_cut_in_the_message(server):
    server.raw_models = json.dumps({"data": [{"id": f"m{i}"} for i in range(30)]}).encode()
    with pytest.raises(TeacherError, match=r"it serves: m0, m1, .*, m19 and 10 more$"):
        _teacher(server.url, model="gpt-x").check()


def _raising_client(error: BaseException) -> SimpleNamespace:
    """A client whose every request raises `error`, as the SDK does while parsing some broken bodies."""
    def fail(*args, **kwargs):
        raise error

    raw = SimpleNamespace(create=fail, list=fail)
    client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(with_raw_response=raw)),
                             models=SimpleNamespace(with_raw_response=raw))
    client.with_options = lambda **kw: client
    return client


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth exceeded"), ValueError("bad digits")])
def test_whatever_the_sdk_raises_on_a_reply_is_a_reason_or_a_teacher_error(error):
    teacher = TeacherSynthesizer(TeacherConfig(url="http://unused/v1", model="m"), SynthesisConfig(k=1),
                                 client=_raising_client(error))
    result = teacher.synthesize(make_tasks(1, SEEN, seed=1)[0], get_format("json"), seed=0)
    assert result.pairs == [] and result.error == f"teacher failed: {type(error).__name__}: {error}"
    with pytest.raises(TeacherError, match=f"failed its check: {type(error).__name__}"):
        teacher.check()


def test_an_interrupt_is_not_swallowed():
    teacher = TeacherSynthesizer(TeacherConfig(url="http://unused/v1", model="m"), SynthesisConfig(k=1),
                                 client=_raising_client(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        teacher.synthesize(make_tasks(1, SEEN, seed=1)[0], get_format("json"), seed=0)



def test_a_local_teacher_is_passed_as_an_object_and_needs_no_endpoint(toy):
    """The demo's TT-D: the teacher is a `Synthesizer` object (there a local model), not a URL in the config."""
    from ttsi.augment import OneByOne, Synthesis, SyntheticPair
    from ttsi.errors import ConfigError

    class Local(OneByOne):
        source = "teacher"

        def __init__(self):
            self.asked: list[str] = []

        def synthesize(self, task, fmt, seed):
            self.asked.append(task.id)
            return Synthesis([SyntheticPair(f"Please: {task.query}", list(task.answer), self.source)])

    config = AgentConfig(method="tt-d", gate=GateConfig(tau=1.0), max_new_tokens=16)
    with pytest.raises(ConfigError, match="needs a teacher"):
        SelfImprovingAgent(toy, config)
    task, teacher = make_tasks(1, SEEN, seed=2)[0], Local()
    with SelfImprovingAgent(toy, config, teacher=teacher) as agent:
        r = agent.respond(task)  # unsure of it: margin 0.95 < tau 1.0
    assert teacher.asked == [task.id] and r.adapted and [p.source for p in r.synthetic] == ["teacher"]
