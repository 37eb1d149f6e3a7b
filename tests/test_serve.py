"""`ttsi serve` on loopback: the real OpenAI SDK against the app run by uvicorn in a background thread."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import openai

from ttsi.config import AgentConfig, LearnConfig
from ttsi.model import HFModel
from ttsi.serve.background import BackgroundServer
from ttsi.serve.settings import ServeSettings
from ttsi.toy import UNSEEN, make_tasks

KEY = "test-key-123"
NAME = "toy-model"

LiveServer = BackgroundServer  # the name these tests (and test_serve_models) use


def http(method: str, url: str, body: bytes | dict | None = None, key: str | None = KEY,
         headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one raw HTTP request (no SDK: for malformed bodies and odd routes)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def error_of(body: bytes) -> dict[str, Any]:
    """The OpenAI error object of an error body (asserting its shape)."""
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    return error


# ---- fixtures ------------------------------------------------------------------------------------------------------

TASKS = make_tasks(40, UNSEEN, seed=11)


def serve_settings(**changes: Any) -> ServeSettings:
    fields: dict[str, Any] = {"model_name": NAME, "format": "json", "api_key": KEY, "max_body_bytes": 256 * 1024,
                              "batch_wait_ms": 20.0,
                              "agent": AgentConfig(method="tt-si", learn=LearnConfig(epochs=2), max_new_tokens=64)}
    return ServeSettings(**(fields | changes))


@pytest.fixture(scope="module")
def server(toy_dir):
    model = HFModel.from_pretrained(str(toy_dir), dtype="float32", device="cpu")
    with LiveServer(model, serve_settings()) as s:
        yield s


@pytest.fixture(scope="module")
def tight(toy_dir):
    """One request at a time, one waiting, a short deadline: for 429, 504 and dropped clients."""
    model = HFModel.from_pretrained(str(toy_dir), dtype="float32", device="cpu")
    with LiveServer(model, serve_settings(max_queue=1, max_batch=1, timeout_s=1.5, api_key=None)) as s:
        yield s


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=120) as c:
        yield c


def chat_args(i: int = 0, seed: int = 3, **ttsi: Any) -> dict[str, Any]:
    """SDK keyword arguments for toy task i (method base unless `ttsi` says otherwise)."""
    d = TASKS[i].to_dict()
    return {"model": NAME, "messages": d["messages"], "tools": d["tools"], "seed": seed,
            "extra_body": {"ttsi": {"method": "base"} | ttsi}}


def answer_of(completion: Any) -> tuple[str | None, list[tuple[str, dict]]]:
    message = completion.choices[0].message
    calls = [(tc.function.name, json.loads(tc.function.arguments)) for tc in message.tool_calls or []]
    return message.content, calls


def body_of(i: int = 0, **fields: Any) -> dict[str, Any]:
    d = TASKS[i].to_dict()
    return {"model": NAME, "messages": d["messages"], "tools": d["tools"], "ttsi": {"method": "base"}} | fields


# ---- the happy paths -----------------------------------------------------------------------------------------------


def test_chat_returns_tool_calls(client):
    completion = client.chat.completions.create(**chat_args(0))
    assert completion.object == "chat.completion" and completion.model == NAME and completion.id.startswith("chatcmpl")
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.role == "assistant"
    assert choice.message.content is None
    assert choice.message.tool_calls
    for tc in choice.message.tool_calls:
        assert tc.type == "function" and tc.id.startswith("call_") and tc.function.name
        assert isinstance(tc.function.arguments, str) and isinstance(json.loads(tc.function.arguments), dict)
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    trace = completion.model_extra["ttsi"]
    assert trace["method"] == "base" and trace["decision"] == "skip" and not trace["adapted"]
    assert trace["uncertainty"]["candidates"] and set(trace["timings"]) >= {"gate_s", "answer_s"}
    assert "scoring_prompt" not in trace


def test_temperature_samples_reproducibly_by_seed(client):
    def raw(**changes: Any) -> str:
        return json.dumps(answer_of(client.chat.completions.create(**(chat_args(2) | changes))))

    hot = [raw(temperature=1.8, seed=s) for s in (1, 2, 3, 4)]
    assert hot[0] == raw(temperature=1.8, seed=1)  # the same seed draws the same answer
    assert len(set(hot)) > 1 or hot[0] != raw()  # a draw, not the greedy answer every time


def test_trace_can_be_left_out(client):
    completion = client.chat.completions.create(**chat_args(1, trace=False))
    assert "ttsi" not in (completion.model_extra or {})


def test_without_tools_the_base_model_answers_in_text(client):
    completion = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hello there"}],
                                                max_tokens=8)
    choice = completion.choices[0]
    assert isinstance(choice.message.content, str) and not choice.message.tool_calls
    assert choice.finish_reason in ("stop", "length")
    trace = completion.model_extra["ttsi"]
    assert trace["method"] == "base" and trace["uncertainty"] is None


def test_tool_choice_none_and_named(client):
    args = chat_args(2)
    none = client.chat.completions.create(**args, tool_choice="none", max_tokens=16)
    assert not none.choices[0].message.tool_calls and none.model_extra["ttsi"]["uncertainty"] is None
    name = args["tools"][1]["function"]["name"]
    named = client.chat.completions.create(**args, tool_choice={"type": "function", "function": {"name": name}})
    assert named.model_extra["ttsi"]["uncertainty"]["candidates"] == [name]


def test_tool_result_turn(client):
    first = client.chat.completions.create(**chat_args(3))
    call = first.choices[0].message.tool_calls[0]
    args = chat_args(3)
    args["messages"] = [*args["messages"],
                        {"role": "assistant", "content": None,
                         "tool_calls": [{"id": call.id, "type": "function",
                                         "function": {"name": call.function.name,
                                                      "arguments": call.function.arguments}}]},
                        {"role": "tool", "tool_call_id": call.id, "content": '{"status": "done"}'},
                        {"role": "user", "content": [{"type": "text", "text": TASKS[4].messages[-1]["content"]}]}]
    follow = client.chat.completions.create(**args)
    assert follow.choices[0].finish_reason in ("tool_calls", "stop", "length")


def test_stream_reassembles_to_the_same_answer(client, server):
    whole = client.chat.completions.create(**chat_args(5))
    calls: dict[int, dict[str, str]] = {}
    finish, content, roles, usage = None, "", [], None
    with client.chat.completions.create(**chat_args(5), stream=True, stream_options={"include_usage": True}) as st:
        for chunk in st:
            assert chunk.object == "chat.completion.chunk" and chunk.model == NAME
            if chunk.usage:
                usage = chunk.usage
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            roles += [delta.role] if delta.role else []
            content += delta.content or ""
            for tc in delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += tc.id or ""
                slot["name"] += (tc.function.name or "") if tc.function else ""
                slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
            finish = chunk.choices[0].finish_reason or finish
    assert roles == ["assistant"] and finish == "tool_calls" and content == ""
    assert usage is not None and usage.total_tokens == whole.usage.total_tokens
    streamed = [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]
    assert streamed == answer_of(whole)[1] and all(c["id"].startswith("call_") for c in calls.values())
    status, headers, raw = http("POST", f"{server.url}/chat/completions", body_of(5, stream=True))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.decode().split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_models_health_and_metrics(client, server):
    assert [m.id for m in client.models.list()] == [NAME]
    assert client.models.retrieve(NAME).id == NAME
    status, _, raw = http("GET", f"{server.root}/health", key=None)
    assert status == 200 and json.loads(raw)["status"] == "ok"
    client.chat.completions.create(**chat_args(6))
    status, headers, raw = http("GET", f"{server.root}/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = raw.decode()
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? [-+0-9.eE]+(inf|Inf)?$')
    for line in text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or sample.match(line), line
    assert 'ttsi_requests_total{code="200"}' in text and "ttsi_queue_depth " in text
    assert 'ttsi_stage_seconds_bucket{stage="gate",le="+Inf"}' in text and "ttsi_batch_size_count" in text
    assert "ttsi_adapted_share " in text


# ---- errors --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"not json", b"[1, 2]", b"\xff\xfe{}", b"",
    b'{"model": "toy-model", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"model": "toy-model", "seed": ' + b"7" * 5000 + b"}",
    b'{"model": "toy-model", "temperature": NaN}',
    b'{"model": "toy-model", "messages": [{"role": "user", "content": "\\ud800"}]}',
], ids=["text", "list", "not-utf8", "empty", "deep", "huge-int", "nan", "surrogate"])
def test_malformed_bodies_are_400(server, raw):
    status, _, body = http("POST", f"{server.url}/chat/completions", raw)
    assert status == 400
    assert error_of(body)["type"] == "invalid_request_error"


@pytest.mark.parametrize("changes", [
    {"ttsi": {"tau": 2}}, {"ttsi": {"method": "nope"}}, {"ttsi": {"bogus": 1}}, {"ttsi": {"method": "oracle"}},
    {"n": 2}, {"max_tokens": 10**6}, {"max_tokens": 0}, {"temperature": 5}, {"messages": []},
    {"tool_choice": {"type": "function", "function": {"name": "nope"}}}, {"stop": ["a", "b", "c", "d", "e"]},
    {"messages": [{"role": "robot", "content": "hi"}]}, {"tools": [{"type": "function", "function": {"name": "f"}}]},
    {"seed": -1},
], ids=lambda c: json.dumps(c)[:40])
def test_bad_settings_are_400(server, changes):
    status, _, body = http("POST", f"{server.url}/chat/completions", body_of(0, **changes))
    assert status == 400, body
    error_of(body)


def test_bad_settings_through_the_sdk(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**chat_args(0, tau=-1))
    assert "tau" in e.value.message


def test_auth_is_401_except_health(server):
    with openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0) as bad, \
            pytest.raises(openai.AuthenticationError):
        bad.models.list()
    for key in (None, "wrong", KEY + "x"):
        status, _, body = http("POST", f"{server.url}/chat/completions", body_of(0), key=key)
        assert status == 401 and error_of(body)["code"] == "invalid_api_key"
    assert http("GET", f"{server.root}/metrics", key=None)[0] == 401
    assert http("GET", f"{server.root}/health", key=None)[0] == 200


def test_unknown_model_and_route_are_404(client, server):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(**(chat_args(0) | {"model": "/etc/passwd"}))
    status, _, body = http("GET", f"{server.url}/nope")
    assert status == 404 and error_of(body)["code"] == "not_found"
    assert http("POST", f"{server.root}/v1/completions", body_of(0))[0] == 404


def test_large_body_is_413(server):
    big = body_of(0, messages=[{"role": "user", "content": "x" * (300 * 1024)}])
    status, _, body = http("POST", f"{server.url}/chat/completions", big)
    assert status == 413 and error_of(body)["code"] == "request_too_large"


def test_too_many_messages_and_tools_are_400(server):
    settings = server.app.state.settings
    many = body_of(0, messages=[{"role": "user", "content": "hi"}] * (settings.max_messages + 1))
    assert http("POST", f"{server.url}/chat/completions", many)[0] == 400
    tool = TASKS[0].to_dict()["tools"][0]
    tools = [{"type": "function", "function": tool["function"] | {"name": f"f{i}"}}
             for i in range(settings.max_tools + 1)]
    assert http("POST", f"{server.url}/chat/completions", body_of(0, tools=tools))[0] == 400


def _wait_depth(batcher, depth: int) -> None:
    deadline = time.monotonic() + 10
    while batcher.depth != depth:
        assert time.monotonic() < deadline, f"queue depth {batcher.depth}, expected {depth}"
        time.sleep(0.01)


def test_full_queue_is_429(tight, monkeypatch):
    monkeypatch.setattr(tight.app.state.settings, "timeout_s", 60.0)  # the first request must not time out
    url = f"{tight.url}/chat/completions"
    _wait_depth(tight.batcher, 0)
    with ThreadPoolExecutor(1) as pool:
        with tight.batcher.hold():
            first = pool.submit(http, "POST", url, body_of(0))
            _wait_depth(tight.batcher, 1)
            status, headers, body = http("POST", url, body_of(1))
        assert status == 429 and headers["retry-after"] == "1"
        assert error_of(body)["code"] == "queue_full"
        assert first.result()[0] == 200


def test_deadline_is_504_and_the_job_is_dropped(tight):
    _wait_depth(tight.batcher, 0)
    with tight.batcher.hold():
        start = time.monotonic()
        status, _, body = http("POST", f"{tight.url}/chat/completions", body_of(0))
        assert status == 504 and error_of(body)["type"] == "timeout_error"
        assert 1.4 <= time.monotonic() - start < 10
    _wait_depth(tight.batcher, 0)
    assert tight.app.state.metrics.dropped_jobs >= 1


def test_disconnected_client_is_dropped(tight):
    _wait_depth(tight.batcher, 0)
    metrics = tight.app.state.metrics
    dropped, answered = metrics.dropped_jobs, metrics.answered
    with tight.batcher.hold():
        data = json.dumps(body_of(0)).encode()
        with socket.create_connection(("127.0.0.1", tight.port)) as sock:  # send the request, then hang up
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
            _wait_depth(tight.batcher, 1)
        time.sleep(0.3)  # the server notices the disconnect and cancels the queued job
    _wait_depth(tight.batcher, 0)
    deadline = time.monotonic() + 5
    while metrics.dropped_jobs == dropped and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metrics.dropped_jobs == dropped + 1 and metrics.answered == answered


def test_unexpected_error_is_a_generic_500(tight, monkeypatch):
    def boom(self, tasks):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr("ttsi.agent.SelfImprovingAgent.respond_batch", boom)
    status, _, body = http("POST", f"{tight.url}/chat/completions", body_of(0))
    error = error_of(body)
    assert status == 500 and error["type"] == "server_error" and "secret" not in error["message"]


# ---- isolation -----------------------------------------------------------------------------------------------------


async def _concurrent(url: str, args: list[dict[str, Any]]) -> list[Any]:
    async with openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=300) as client:
        return await asyncio.gather(*(client.chat.completions.create(**a) for a in args))


def test_same_answer_alone_and_among_concurrent_requests(client, server):
    alone = [answer_of(client.chat.completions.create(**chat_args(i, seed=7))) for i in (0, 1)]
    args = [chat_args(i % len(TASKS), seed=7 + i % 3) for i in range(24)] + [chat_args(0, seed=7)]  # a duplicate
    together = asyncio.run(_concurrent(server.url, args))
    assert answer_of(together[0]) == alone[0] and answer_of(together[1]) == alone[1]
    assert answer_of(together[-1]) == alone[0]
    assert max(c.model_extra["ttsi"]["batch"] for c in together) > 1  # they were batched


def test_adapting_leaves_no_trace_on_later_answers(client, toy_dir):
    fresh = answer_of(client.chat.completions.create(**chat_args(8)))
    adapted = client.chat.completions.create(**chat_args(8, method="tt-si", tau=1.0, epochs=1))
    trace = adapted.model_extra["ttsi"]
    assert trace["adapted"] and trace["decision"] == "adapt" and trace["train"]["losses"]
    assert answer_of(client.chat.completions.create(**chat_args(8))) == fresh
    # and both equal the base model's answer computed without the server, on a freshly loaded model
    from ttsi.agent import SelfImprovingAgent
    from ttsi.serve.protocol import task_id
    from ttsi.task import Task

    d = TASKS[8].to_dict()
    task = Task.from_dict({"id": task_id(d["messages"], d["tools"], "json"), "messages": d["messages"],
                           "tools": d["tools"], "format": "json"})
    model = HFModel.from_pretrained(str(toy_dir), dtype="float32", device="cpu")
    with SelfImprovingAgent(model, AgentConfig(method="base", seed=3, max_new_tokens=64)) as agent:
        direct = agent.respond(task)
    assert [(c.name, c.arguments) for c in direct.answer] == fresh[1]


@pytest.mark.slow
def test_mixed_methods_concurrently_match_one_at_a_time(client, server):
    """40 requests, half deciding to adapt (tt-si, tau 1), each equal to its answer one at a time."""
    args = [chat_args(i, seed=5, **({"method": "tt-si", "tau": 1.0, "epochs": 1} if i % 2 else {}))
            for i in range(40)]
    together = asyncio.run(_concurrent(server.url, args))
    alone = [client.chat.completions.create(**a) for a in args]
    assert [answer_of(c) for c in together] == [answer_of(c) for c in alone]
    traces = [c.model_extra["ttsi"] for c in together]
    assert [t["decision"] for t in traces[1::2]] == ["adapt"] * 20 and any(t["adapted"] for t in traces)
    assert not any(t["adapted"] for t in traces[::2])


# ---- stop, length, context window ----------------------------------------------------------------------------------


def test_stop_cuts_the_text(client):
    completion = client.chat.completions.create(**chat_args(9), stop=['"arguments"'])
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert choice.message.content.startswith("[{") and '"arguments"' not in choice.message.content


def test_short_budget_is_length(client):
    completion = client.chat.completions.create(**chat_args(9), max_tokens=3)
    choice = completion.choices[0]
    assert choice.finish_reason == "length" and isinstance(choice.message.content, str)
    assert completion.usage.completion_tokens <= 3


def test_prompt_past_the_context_window_is_400(server):
    long = body_of(0, messages=[{"role": "user", "content": "weather " * 3000}])
    status, _, body = http("POST", f"{server.url}/chat/completions", long)
    assert status == 400 and error_of(body)["code"] == "context_length_exceeded"


# ---- the command ---------------------------------------------------------------------------------------------------


def test_serve_command_checks_settings_before_loading(monkeypatch):
    from typer.testing import CliRunner

    from ttsi import cli_serve
    from ttsi.cli import app

    runner = CliRunner()
    loads = []
    monkeypatch.setattr("ttsi.model.HFModel.from_pretrained", lambda *a, **k: loads.append(a))
    for args, message in [(["--tau", "2"], "tau must be in [0, 1]"), (["--max-batch", "0"], "--max-batch"),
                          (["--format", "nope"], "unknown answer format"),
                          (["--api-key-env", "TTSI_TEST_UNSET_KEY"], "TTSI_TEST_UNSET_KEY"),
                          (["--method", "tt-d"], "needs a teacher")]:
        result = runner.invoke(app, ["serve", *args])
        assert result.exit_code == 2 and message in result.stderr, (args, result.stderr)
    monkeypatch.setattr(cli_serve.importlib.util, "find_spec", lambda name: None)
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2 and "pip install 'ttsi[serve]'" in result.stderr
    assert result.stderr.count("\n") == 1 and not loads


@pytest.mark.slow
@pytest.mark.subprocess
def test_serve_command_end_to_end(toy_dir, tmp_path):
    """The real console script serving the toy model; the SDK gets tool calls back; Ctrl-C stops it."""
    import os
    import signal
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = os.path.join(os.path.dirname(sys.executable), "ttsi")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TTSI_TEST_SERVE_KEY": KEY}
    proc = subprocess.Popen([exe, "serve", "--model", str(toy_dir), "--port", str(port), "--method", "base",
                             "--api-key-env", "TTSI_TEST_SERVE_KEY", "--max-new-tokens", "48"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if http("GET", f"http://127.0.0.1:{port}/health", key=None, timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0) as c:
            args = chat_args(0)
            args.pop("extra_body")
            completion = c.chat.completions.create(**args)
        assert completion.model == NAME and completion.choices[0].finish_reason in ("tool_calls", "stop")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
