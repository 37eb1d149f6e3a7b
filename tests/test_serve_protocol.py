"""`ttsi.serve` pieces without a server: request parsing, task ids, replies, metrics text, the key check."""

from __future__ import annotations

import re

import pytest

from ttsi.agent import Decision, Response
from ttsi.config import AgentConfig
from ttsi.formats import get_format
from ttsi.serve.metrics import Metrics
from ttsi.serve.protocol import APIError, Outcome, make_reply, parse_chat, task_id
from ttsi.serve.security import authorized
from ttsi.serve.settings import ServeSettings
from ttsi.task import Call
from ttsi.toy import UNSEEN, make_tasks

SETTINGS = ServeSettings(model_name="m", agent=AgentConfig(seed=4))
TASK = make_tasks(1, UNSEEN, seed=2)[0].to_dict()


def body(**changes):
    return {"model": "m", "messages": TASK["messages"], "tools": TASK["tools"]} | changes


def test_task_id_follows_the_content_only():
    a = parse_chat(body(), SETTINGS)
    reordered = [{"content": m["content"], "role": m["role"]} for m in TASK["messages"]]
    b = parse_chat(body(messages=reordered, seed=9, ttsi={"tau": 0.5}), SETTINGS)
    assert a.task.id == b.task.id == task_id(TASK["messages"], TASK["tools"], "json")
    assert a.config.seed == 4 and b.config.seed == 9 and b.config.gate.tau == 0.5
    assert parse_chat(body(messages=[{"role": "user", "content": "other"}]), SETTINGS).task.id != a.task.id


def test_tool_choice_semantics():
    name = TASK["tools"][1]["function"]["name"]
    assert parse_chat(body(tool_choice="auto"), SETTINGS).offered == [t["function"]["name"] for t in TASK["tools"]]
    assert parse_chat(body(tool_choice="required"), SETTINGS).config.method == "tt-si"
    none = parse_chat(body(tool_choice="none"), SETTINGS)
    assert none.offered == [] and none.config.method == "base"
    named = parse_chat(body(tool_choice={"type": "function", "function": {"name": name}}), SETTINGS)
    assert named.offered == [name]
    assert parse_chat(body(tools=None), SETTINGS).config.method == "base"


def test_assistant_tool_calls_become_text_the_format_renders():
    messages = [*TASK["messages"],
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]
    task = parse_chat(body(messages=messages), SETTINGS).task
    assistant = next(m for m in task.messages if m["role"] == "assistant")
    assert assistant.get("tool_calls") or get_format("json").parse(assistant["content"]) == [Call("f", {"x": 1})]
    with pytest.raises(APIError) as e:
        parse_chat(body(messages=[*TASK["messages"], {"role": "assistant", "content": None,
                                                     "tool_calls": [{"function": {"arguments": "{"}}]}]), SETTINGS)
    assert e.value.status == 400


@pytest.mark.parametrize(("changes", "status"), [({"model": "x"}, 404), ({"n": 3}, 400), ({"top_p": 0}, 400),
                                                 ({"ttsi": {"k": 0}}, 400), ({"ttsi": "yes"}, 400),
                                                 ({"stream": "yes"}, 400), ({"logprobs": True}, 400),
                                                 ({"max_completion_tokens": 4096}, 400)])
def test_refusals(changes, status):
    with pytest.raises(APIError) as e:
        parse_chat(body(**changes), SETTINGS)
    assert e.value.status == status and e.value.body()["error"]["message"]


def _outcome(raw: str, answer, tokens: int = 5) -> Outcome:
    response = Response(id="r", method="base", uncertainty=None, decision=Decision.SKIP, reason="", raw=raw,
                        answer=answer)
    return Outcome(response, 10, tokens)


def test_reply_calls_text_stop_and_length():
    fmt, request = get_format("json"), parse_chat(body(stop=["#"]), SETTINGS)
    raw = '[{"name": "f", "arguments": {"x": "é"}}]'
    reply = make_reply(_outcome(raw, fmt.parse(raw)), request, fmt, budget=64)
    assert reply.finish_reason == "tool_calls" and reply.content is None
    assert reply.tool_calls[0]["function"] == {"name": "f", "arguments": '{"x": "é"}'}
    cut = make_reply(_outcome("hello # world", None), request, fmt, budget=64)
    assert (cut.content, cut.finish_reason) == ("hello ", "stop")
    long = make_reply(_outcome("[{", None, tokens=64), request, fmt, budget=64)
    assert (long.content, long.finish_reason) == ("[{", "length")
    text_only = make_reply(_outcome(raw, fmt.parse(raw)), parse_chat(body(tool_choice="none"), SETTINGS), fmt, 64)
    assert text_only.content == raw and not text_only.tool_calls


def test_metrics_text():
    metrics = Metrics()
    metrics.request(200)
    metrics.batch(3)
    response = Response(id="r", method="tt-si", uncertainty=None, decision=Decision.ADAPT, reason="", adapted=True)
    response.timings["train_s"] = 0.3
    metrics.response(response)
    text = metrics.render(queue_depth=2)
    assert 'ttsi_stage_seconds_bucket{stage="train",le="0.25"} 0' in text
    assert 'ttsi_stage_seconds_bucket{stage="train",le="0.5"} 1' in text
    assert "ttsi_adapted_share 1.0" in text and "ttsi_queue_depth 2" in text and "ttsi_batch_size_sum 3" in text
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r"^[a-z_]+(\{[^}]*\})? \S+$", line), line


def test_key_check():
    assert authorized(None, None) and authorized("Bearer k", "k")
    assert not authorized(None, "k") and not authorized("Bearer x", "k") and not authorized("k", "k")
