"""TT-D: the teacher path against a real OpenAI-compatible HTTP server on loopback serving a tiny model."""

from __future__ import annotations

import pytest

from ttsi.config import SynthesisConfig, TeacherConfig
from ttsi.errors import TeacherError
from ttsi.formats import get_format
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
            assert pair.source == "teacher"
            assert {c.name for c in pair.answer} <= {t.name for t in task.tools}
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
    assert result.pairs == [] and result.error and "teacher failed" in result.error


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
