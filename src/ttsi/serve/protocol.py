"""OpenAI chat completions <-> ttsi: request parsing into a Task and an AgentConfig, responses, chunks, errors.

Semantics (see README "ttsi serve"):

- `tools` absent or empty, or `tool_choice: "none"`: answered by the base model (method base), without tools;
  the reply is always `content` text.
- `tool_choice: "auto"` (the default) or `"required"`: every tool is offered; `{"type": "function", "function":
  {"name": F}}`: only F is offered. The answer is `tool_calls` when the output parses as calls in the served
  format, else `content` (with finish_reason `stop`, or `length` when the token budget ran out).
- `temperature` and `top_p`: the answer's sampling (`AgentConfig.temperature` / `top_p`), seeded per request by
  `seed` and the request's content, so a sampled answer is reproducible too. Absent: the server's default, greedy
  (temperature 0), not OpenAI's 1.0.
- `max_tokens` / `max_completion_tokens`: the answer budget (`AgentConfig.max_new_tokens`), at most the server's
  limit; `seed`: `AgentConfig.seed`; `n`: only 1; `stop`: the text is cut at the first stop string.
- Extension `ttsi` object: `method`, `tau`, `k`, `epochs`, `lr` (the agent settings for this request) and `trace`
  (default true: the response carries a `ttsi` trace).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ttsi import jsonio
from ttsi.config import METHODS, AgentConfig
from ttsi.errors import TTSIError
from ttsi.formats import AnswerFormat, AnswerParseError, get_format
from ttsi.serve.settings import MAX_STOP, ServeSettings
from ttsi.task import Call, Task, call_from_dict
from ttsi.trace import Response

EXTENSION_FIELDS = ("method", "tau", "k", "epochs", "lr", "trace")
UNSUPPORTED = ("functions", "function_call", "audio", "modalities", "prediction")
CHUNK_CHARS = 16  # characters per streamed content or arguments delta


class APIError(Exception):
    """An error answered as an OpenAI error object with this HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": jsonio.clean_text(message), "type": type, "param": param, "code": code}}


@dataclass
class ChatRequest:
    """One parsed request: what the agent answers, with which config, and how to present it."""

    task: Task
    config: AgentConfig
    offered: list[str]  # the tool names offered (empty: the reply is text)
    stream: bool = False
    include_usage: bool = False
    stop: list[str] = field(default_factory=list)
    trace: bool = True


# ---- requests ----------------------------------------------------------------------------------------------------


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object (hardened reader); APIError 400 otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise APIError(400, "the request body is not UTF-8 text") from None
    try:
        body = jsonio.loads(text, "the request body")
    except TTSIError as e:
        raise APIError(400, str(e)) from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    return body


def parse_chat(body: dict[str, Any], settings: ServeSettings) -> ChatRequest:
    """Validate a chat completions body and turn it into a ChatRequest; APIError (400 or 404) naming the field."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "'model' is required (a string)", param="model")
    if model != settings.model_name:
        raise APIError(404, f"The model '{model}' does not exist; this server serves '{settings.model_name}'",
                       param="model", code="model_not_found")
    for name in UNSUPPORTED:
        if body.get(name) is not None:
            raise APIError(400, f"'{name}' is not supported by this server", param=name)
    if body.get("logprobs"):
        raise APIError(400, "'logprobs' is not supported by this server", param="logprobs")
    _check_n(body.get("n"))
    _check_sampling(body)
    fmt = get_format(settings.format)
    tools = _list(body.get("tools"), "tools")
    if len(tools) > settings.max_tools:
        raise APIError(400, f"at most {settings.max_tools} tools per request, got {len(tools)}", param="tools")
    messages = _list(body.get("messages"), "messages")
    if not messages:
        raise APIError(400, "'messages' must be a non-empty list", param="messages")
    if len(messages) > settings.max_messages:
        raise APIError(400, f"at most {settings.max_messages} messages per request, got {len(messages)}",
                       param="messages")
    tools = _choose_tools(tools, body.get("tool_choice"))
    rich, plain = _messages(messages, fmt)
    config = _config(body, settings, has_tools=bool(tools))
    task = _task(rich, plain, tools, settings.format)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise APIError(400, "'stream' must be a boolean", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise APIError(400, "'stream_options' must be an object", param="stream_options")
    trace = _extension(body).get("trace", True)
    return ChatRequest(task=task, config=config, offered=[t.name for t in task.tools], stream=stream,
                       include_usage=bool(options.get("include_usage")), stop=_stop(body.get("stop")), trace=trace)


def _list(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise APIError(400, f"'{name}' must be a list", param=name)
    return value


def _number(body: dict[str, Any], name: str, low: float, high: float, low_open: bool = False) -> None:
    value = body.get(name)
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise APIError(400, f"'{name}' must be a number in {bracket}{low}, {high}], got {value!r}", param=name)


def _check_n(n: Any) -> None:
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n != 1):
        raise APIError(400, f"only n=1 is supported, got {n!r}", param="n")


def _check_sampling(body: dict[str, Any]) -> None:
    """Range-checked as OpenAI does (the penalties are accepted and not applied)."""
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1, low_open=True)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)


def _choose_tools(tools: list[Any], choice: Any) -> list[Any]:
    """The tools offered under `tool_choice`: all (auto, required), none, or the one named."""
    if choice is None or choice in ("auto", "required"):
        return tools
    if choice == "none":
        return []
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        chosen = [t for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)
                  and t["function"].get("name") == name]
        if not isinstance(name, str) or not chosen:
            raise APIError(400, f"tool_choice names function {name!r}, which is not in 'tools'", param="tool_choice")
        return chosen[:1]
    raise APIError(400, "'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", "
                        "\"function\": {\"name\": ...}}", param="tool_choice")


def _text(content: Any, i: int, role: str) -> str | None:
    """A message's content as text: a string, a list of text parts joined, or None."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(400, f"messages[{i}]: only text content parts are supported", param=f"messages[{i}]")
            parts.append(part["text"])
        return "".join(parts)
    raise APIError(400, f"messages[{i}] ({role}): 'content' must be a string or a list of text parts",
                   param=f"messages[{i}].content")


def _calls(tool_calls: Any, i: int) -> list[Call]:
    if not isinstance(tool_calls, list):
        raise APIError(400, f"messages[{i}]: 'tool_calls' must be a list", param=f"messages[{i}].tool_calls")
    calls = []
    for j, tc in enumerate(tool_calls):
        fn = tc.get("function") if isinstance(tc, dict) else None
        try:
            calls.append(call_from_dict(fn, f"messages[{i}].tool_calls[{j}].function"))
        except TTSIError as e:
            raise APIError(400, str(e), param=f"messages[{i}].tool_calls") from None
    return calls


def _messages(messages: list[Any], fmt: AnswerFormat) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(rich, plain): the messages with text content and OpenAI's extra fields kept (assistant `tool_calls`, tool
    `tool_call_id`), and the same as plain role/content turns with tool calls rendered in the answer format."""
    rich: list[dict[str, Any]] = []
    plain: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise APIError(400, f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = "system" if m.get("role") == "developer" else m.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise APIError(400, f"messages[{i}]: 'role' must be system, developer, user, assistant or tool, got "
                                f"{m.get('role')!r}", param=f"messages[{i}].role")
        content = _text(m.get("content"), i, role)
        one: dict[str, Any] = {"role": role, "content": content}
        text = content or ""
        if role == "assistant" and m.get("tool_calls"):
            calls = _calls(m["tool_calls"], i)
            one["tool_calls"] = m["tool_calls"]
            text = f"{text}\n{fmt.render(calls)}".strip() if text else fmt.render(calls)
        elif content is None:
            raise APIError(400, f"messages[{i}] ({role}) needs a 'content' string", param=f"messages[{i}].content")
        if role == "tool" and isinstance(m.get("tool_call_id"), str):
            one["tool_call_id"] = m["tool_call_id"]
        rich.append(one)
        plain.append({"role": role, "content": text})
    return rich, plain


def task_id(messages: list[dict[str, Any]], tools: list[Any], fmt: str) -> str:
    """A deterministic id from the request content: the per-input seed, and so the answer, follows from it."""
    text = jsonio.dumps({"messages": messages, "tools": tools, "format": fmt}, sort_keys=True, ensure_ascii=False)
    return "req-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _task(rich: list[dict[str, Any]], plain: list[dict[str, str]], tools: list[Any], fmt: str) -> Task:
    """Task.from_dict on the messages as sent; if it refuses OpenAI's tool-call fields, on the plain turns."""
    tid = task_id(rich, tools, fmt)
    try:
        return Task.from_dict({"id": tid, "messages": rich, "tools": tools, "format": fmt}, where="request")
    except TTSIError:
        try:
            return Task.from_dict({"id": tid, "messages": plain, "tools": tools, "format": fmt}, where="request")
        except TTSIError as e:
            raise APIError(400, str(e)) from None


def _extension(body: dict[str, Any]) -> dict[str, Any]:
    ext = body.get("ttsi")
    if ext is None:
        return {}
    if not isinstance(ext, dict):
        raise APIError(400, "'ttsi' must be an object", param="ttsi")
    unknown = sorted(set(ext) - set(EXTENSION_FIELDS))
    if unknown:
        raise APIError(400, f"unknown ttsi settings: {', '.join(unknown)}; known: {', '.join(EXTENSION_FIELDS)}",
                       param="ttsi")
    if "trace" in ext and not isinstance(ext["trace"], bool):
        raise APIError(400, "ttsi.trace must be a boolean", param="ttsi.trace")
    if "method" in ext and ext["method"] not in METHODS:
        raise APIError(400, f"unknown method {ext['method']!r}; choose one of {', '.join(METHODS)}",
                       param="ttsi.method")
    return ext


def _config(body: dict[str, Any], settings: ServeSettings, has_tools: bool) -> AgentConfig:
    """The request's effective agent config: the server's default with the request's changes, validated."""
    config = settings.agent
    ext = _extension(body)
    budget = body.get("max_completion_tokens", body.get("max_tokens"))
    changes: dict[str, Any] = {}
    if budget is not None:
        if not isinstance(budget, int) or isinstance(budget, bool) or not 1 <= budget <= settings.max_tokens:
            raise APIError(400, f"'max_tokens' must be an integer in [1, {settings.max_tokens}], got {budget!r}",
                           param="max_tokens")
        changes["max_new_tokens"] = budget
    if body.get("seed") is not None:
        changes["seed"] = body["seed"]
    for name in ("temperature", "top_p"):  # absent: the server's default (greedy), not OpenAI's 1.0
        if body.get(name) is not None:
            changes[name] = float(body[name])
    if "method" in ext:
        changes["method"] = ext["method"]
    if not has_tools:  # nothing for the gate to score: the base model answers
        changes["method"] = "base"
    if "tau" in ext:
        changes["gate"] = dataclasses.replace(config.gate, tau=ext["tau"])
    if "k" in ext:
        changes["synthesis"] = dataclasses.replace(config.synthesis, k=ext["k"])
    learn = {name: ext[name] for name in ("epochs", "lr") if name in ext}
    if learn:
        changes["learn"] = dataclasses.replace(config.learn, **learn)
    new = dataclasses.replace(config, **changes)
    if new.method == "oracle":
        raise APIError(400, "method oracle trains on the gold answer, which requests do not carry",
                       param="ttsi.method")
    try:
        return new.validate()
    except TTSIError as e:
        raise APIError(400, str(e), param="ttsi" if ext else None) from None


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOP or not all(isinstance(s, str) and s for s in stops):
        raise APIError(400, f"'stop' must be a non-empty string or a list of at most {MAX_STOP} of them",
                       param="stop")
    return stops


# ---- responses ---------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What the worker hands back for one request: the agent's response and the token counts."""

    response: Response
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Reply:
    """The assistant message a request gets, in OpenAI's terms."""

    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str


def make_reply(outcome: Outcome, request: ChatRequest, fmt: AnswerFormat, budget: int) -> Reply:
    """Cut at the first stop string, then tool calls when the text parses as calls (and tools were offered)."""
    text, stopped = outcome.response.raw, False
    cuts = [i for i in (text.find(s) for s in request.stop) if i >= 0]
    if cuts:
        text, stopped = text[: min(cuts)], True
    calls: list[Call] | None = None
    if request.offered:  # a free-form answer (text, not calls) is the message content
        answer = outcome.response.answer
        if stopped:
            try:
                answer = fmt.parse(text)
            except AnswerParseError:
                answer = None
        calls = answer if isinstance(answer, list) else None
    if calls:
        tool_calls = [{"id": f"call_{secrets.token_hex(12)}", "type": "function",
                       "function": {"name": c.name, "arguments": jsonio.dumps(c.arguments, ensure_ascii=False)}}
                      for c in calls]
        return Reply(None, tool_calls, "tool_calls")
    length = not stopped and outcome.completion_tokens >= budget
    return Reply(text, [], "length" if length else "stop")


def trace(response: Response) -> dict[str, Any]:
    """The response's `ttsi` field: the agent's trace without the prompt, the raw text and the parsed answer."""
    d = response.to_dict()
    for bulky in ("id", "raw", "answer", "scoring_prompt", "samples"):
        d.pop(bulky, None)
    return d


def usage(outcome: Outcome) -> dict[str, int]:
    return {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
            "total_tokens": outcome.prompt_tokens + outcome.completion_tokens}


def completion(outcome: Outcome, request: ChatRequest, reply: Reply, model: str) -> dict[str, Any]:
    """The `chat.completion` object."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = reply.tool_calls
    body: dict[str, Any] = {
        "id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion", "created": int(time.time()),
        "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}],
        "usage": usage(outcome),
    }
    if request.trace:
        body["ttsi"] = trace(outcome.response)
    return body


def chunks(outcome: Outcome, request: ChatRequest, reply: Reply, model: str) -> list[dict[str, Any]]:
    """The `chat.completion.chunk` objects of a streamed reply (computed whole, then cut into deltas)."""
    base = {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "system_fingerprint": None}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return base | {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": "" if reply.content is not None else None})]
    for piece in _pieces(reply.content or ""):
        out.append(chunk({"content": piece}))
    for i, tc in enumerate(reply.tool_calls):
        out.append(chunk({"tool_calls": [{"index": i, "id": tc["id"], "type": "function",
                                          "function": {"name": tc["function"]["name"], "arguments": ""}}]}))
        for piece in _pieces(tc["function"]["arguments"]):
            out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    last = chunk({}, reply.finish_reason)
    if request.trace:
        last["ttsi"] = trace(outcome.response)
    out.append(last)
    if request.include_usage:
        out.append(base | {"choices": [], "usage": usage(outcome)})
    return out


def _pieces(text: str) -> list[str]:
    return [text[i: i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)]
