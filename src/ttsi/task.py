"""The task format: one test input with its tools (OpenAI function schemas) and an optional gold answer.

JSON shape::

    {"id": "weather-1",
     "messages": [{"role": "user", "content": "..."}],      # or "query": "..."
     "tools": [{"type": "function", "function": {"name", "description", "parameters"}}, ...],
     "answer": [{"name": "get_weather", "arguments": {"city": "Paris"}}],   # optional gold
     "format": "json"}                                        # optional answer format

A task's `kind` says what its answer is: "tools" (the default: tool calls, as above) or a free-form kind, "math" (a
worked solution ending in `#### <number>`) or "qa" (a short answer). A free-form task has no tools, and its
optional `answer` is a string or a list of accepted strings (`Task.gold`); its format defaults to its kind::

    {"id": "gsm8k-0", "query": "...", "kind": "math", "answer": "... <<16-3-4=9>>9 ...\n#### 18"}

History may be OpenAI-shaped: an assistant turn with `tool_calls` (`[{"id", "type": "function", "function":
{"name", "arguments"}}]`, arguments a JSON string or an object, content null or absent) and `tool` turns with
`tool_call_id` (and an optional `name`). They are kept as chat templates read them: content a string ("" for a
turn of calls only), arguments an object (templates dump them with `tojson`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsi import jsonio
from ttsi.errors import TaskError

ROLES = ("system", "user", "assistant", "tool")
KINDS = ("tools", "math", "qa")  # what a task's answer is: tool calls, or free text (a math solution, a short answer)
FREE_FORM = ("math", "qa")


@dataclass(frozen=True)
class Tool:
    """One callable function offered to the agent."""

    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    raw: dict[str, Any] | None = field(default=None, compare=False)  # the benchmark's own description, if any

    @property
    def required(self) -> list[str]:
        return list(self.parameters.get("required", []))

    @property
    def properties(self) -> dict[str, Any]:
        return dict(self.parameters.get("properties", {}))

    def to_openai(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    def to_dict(self) -> dict[str, Any]:
        return self.to_openai() | ({"raw": self.raw} if self.raw is not None else {})


@dataclass(frozen=True)
class Call:
    """One function call: the unit of an answer."""

    name: str
    arguments: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


Answer = list[Call] | str  # an answer: the calls of a tool-call task, or a free-form task's text


def answer_json(answer: Answer | None) -> Any:
    """An answer as JSON: calls as a list of {"name", "arguments"}, free-form text as itself."""
    return answer if answer is None or isinstance(answer, str) else [c.to_dict() for c in answer]


@dataclass
class Task:
    """One test input x. The gold (`answer`, or `gold` for a free-form task) is only ever read by scoring, the
    oracle ablation and supervised training."""

    id: str
    messages: list[dict[str, Any]]
    tools: list[Tool]
    answer: list[Call] | None = None  # a tool-call task's gold calls
    format: str = "json"
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str = "tools"  # one of KINDS
    gold: list[str] | None = None  # a free-form task's gold: the solution, or every accepted answer (aliases)

    @property
    def free_form(self) -> bool:
        return self.kind in FREE_FORM

    @property
    def gold_answer(self) -> Answer | None:
        """The gold a method may train on: the calls, or a free-form task's first accepted answer."""
        if self.free_form:
            return self.gold[0] if self.gold else None
        return self.answer

    @property
    def labelled(self) -> bool:
        """Whether there is a gold answer to train on (an empty list of calls is none)."""
        return bool(self.gold_answer)

    @property
    def query(self) -> str:
        """The last user turn: the request the agent must serve."""
        for message in reversed(self.messages):
            if message["role"] == "user":
                return message["content"]
        return self.messages[-1]["content"]

    def text_messages(self, render: Callable[[list[Call]], str]) -> list[dict[str, str]]:
        """The turns as plain role/content text, an assistant turn's tool calls written out by `render`."""
        out = []
        for m in self.messages:
            content = m["content"]
            if m.get("tool_calls"):
                calls = render(message_calls(m))
                content = f"{content}\n{calls}" if content else calls
            out.append({"role": m["role"], "content": content})
        return out

    def tool(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)

    def with_query(self, query: str, task_id: str | None = None) -> Task:
        """A sibling task: same kind, tools and format, one user turn, no gold (used for synthetic inputs)."""
        return Task(id=task_id or f"{self.id}/synthetic", messages=[{"role": "user", "content": query}],
                    tools=self.tools, answer=None, format=self.format, kind=self.kind)

    def to_dict(self) -> dict[str, Any]:
        if self.free_form:
            d: dict[str, Any] = {"id": self.id, "messages": self.messages, "kind": self.kind, "format": self.format}
            if self.gold is not None:  # a math solution as one string, accepted answers as a list
                d["answer"] = self.gold[0] if self.kind == "math" and len(self.gold) == 1 else list(self.gold)
        else:
            d = {"id": self.id, "messages": self.messages, "tools": [t.to_dict() for t in self.tools],
                 "format": self.format}
            if self.answer is not None:
                d["answer"] = [c.to_dict() for c in self.answer]
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "task") -> Task:
        """Validate and convert one task object; every problem raises TaskError naming the field."""
        if not isinstance(d, dict):
            raise TaskError(f"{where}: a task must be a JSON object, got {type(d).__name__}")
        try:
            jsonio.check_text(d)  # a lone surrogate passed from Python would crash the tokenizer, not fail here
        except jsonio.BadJSON as e:
            raise TaskError(f"{where}: {e.msg}") from None
        task_id = d.get("id")
        if not isinstance(task_id, (str, int)) or task_id == "":
            raise TaskError(f"{where}: missing 'id' (a non-empty string)")
        where = f"{where} {task_id!r}"
        kind = d.get("kind", "tools")
        if not isinstance(kind, str) or kind not in KINDS:
            raise TaskError(f"{where}: unknown task kind {kind!r}; known kinds: {', '.join(KINDS)}")
        messages = _messages(d, where)
        tools = [_tool(t, i, where) for i, t in enumerate(_list(d.get("tools", []), "tools", where))]
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise TaskError(f"{where}: duplicate tool names in 'tools'")
        if kind in FREE_FORM and tools:
            raise TaskError(f"{where}: a {kind} task answers in free text and has no tools: remove 'tools' (or "
                            "'kind', for a tool-call task)")
        answer, gold = None, None
        if d.get("answer") is not None and kind in FREE_FORM:
            gold = _free_gold(d["answer"], kind, where)
        elif d.get("answer") is not None:
            if not isinstance(d["answer"], list):
                raise TaskError(f"{where}: 'answer' must be a list of calls (a free-form answer needs \"kind\": "
                                f"{' or '.join(map(repr, FREE_FORM))})")
            answer = [call_from_dict(c, f"{where} answer[{i}]") for i, c in enumerate(d["answer"])]
        fmt = d.get("format", kind if kind in FREE_FORM else "json")
        if not isinstance(fmt, str):
            raise TaskError(f"{where}: 'format' must be a string")
        meta = d.get("meta", {})
        return cls(id=str(task_id), messages=messages, tools=tools, answer=answer, format=fmt,
                   meta=meta if isinstance(meta, dict) else {}, kind=kind, gold=gold)


def _free_gold(value: Any, kind: str, where: str) -> list[str]:
    """A free-form task's gold: one string, or a non-empty list of them (the accepted answers), none blank."""
    golds = [value] if isinstance(value, str) else value
    if not isinstance(golds, list) or not golds or not all(isinstance(g, str) and g.strip() for g in golds):
        raise TaskError(f"{where}: a {kind} task's 'answer' must be a string or a list of strings (accepted "
                        "answers), none of them blank")
    return list(golds)


def call_from_dict(c: Any, where: str) -> Call:
    if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"]:
        raise TaskError(f"{where}: a call needs a 'name' string")
    args = c.get("arguments", {})
    if isinstance(args, str):  # OpenAI sends arguments as a JSON string
        try:
            args = jsonio.parse(args)
        except jsonio.BadJSON as e:
            raise TaskError(f"{where}: 'arguments' is a string that is not valid JSON ({e.msg})") from None
    if not isinstance(args, dict):
        raise TaskError(f"{where}: 'arguments' must be an object")
    return Call(c["name"], args)


def _list(value: Any, name: str, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise TaskError(f"{where}: '{name}' must be a list")
    return value


def message_calls(message: dict[str, Any]) -> list[Call]:
    """The calls of an assistant turn's (validated) `tool_calls`."""
    return [Call(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]


def _messages(d: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if "messages" in d:
        messages = _list(d["messages"], "messages", where)
        if not messages:
            raise TaskError(f"{where}: 'messages' is empty")
        return [_message(m, f"{where}: messages[{i}]") for i, m in enumerate(messages)]
    query = d.get("query")
    if not isinstance(query, str) or not query.strip():
        raise TaskError(f"{where}: needs 'messages' or a non-empty 'query'")
    return [{"role": "user", "content": query}]


def _message(m: Any, where: str) -> dict[str, Any]:
    if not isinstance(m, dict) or m.get("role") not in ROLES:
        raise TaskError(f"{where} needs a 'role' ({', '.join(ROLES)}) and a 'content' string")
    role, content, calls = m["role"], m.get("content"), m.get("tool_calls")
    if calls is not None and role != "assistant":
        raise TaskError(f"{where}: only an assistant turn may have 'tool_calls'")
    if role == "assistant" and calls not in (None, []):
        if not isinstance(calls, list):
            raise TaskError(f"{where}: 'tool_calls' must be a list")
        if content is not None and not isinstance(content, str):
            raise TaskError(f"{where}: 'content' must be a string or null")
        out: dict[str, Any] = {"role": role, "content": content or ""}
        out["tool_calls"] = [_tool_call(c, f"{where} tool_calls[{j}]") for j, c in enumerate(calls)]
        return out
    if not isinstance(content, str):
        raise TaskError(f"{where} needs a 'role' ({', '.join(ROLES)}) and a 'content' string")
    out = {"role": role, "content": content}
    if role == "tool":
        for key in ("tool_call_id", "name"):
            if m.get(key) is not None:
                if not isinstance(m[key], str) or not m[key]:
                    raise TaskError(f"{where}: {key!r} must be a non-empty string")
                out[key] = m[key]
    return out


def _tool_call(c: Any, where: str) -> dict[str, Any]:
    """One OpenAI tool call, kept with its arguments as an object."""
    if not isinstance(c, dict) or not isinstance(c.get("function"), dict):
        raise TaskError(f"{where}: a tool call needs a 'function' object with 'name' and 'arguments'")
    if c.get("type", "function") != "function":
        raise TaskError(f"{where}: 'type' must be \"function\"")
    call = call_from_dict(c["function"], where)
    out: dict[str, Any] = {"type": "function", "function": {"name": call.name, "arguments": call.arguments}}
    if c.get("id") is not None:
        if not isinstance(c["id"], str) or not c["id"]:
            raise TaskError(f"{where}: 'id' must be a non-empty string")
        out = {"id": c["id"], **out}
    return out


def _tool(t: Any, i: int, where: str) -> Tool:
    spec = t.get("function", t) if isinstance(t, dict) else None
    if not isinstance(spec, dict):
        raise TaskError(f"{where}: tools[{i}] must be an object (an OpenAI function schema)")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise TaskError(f"{where}: tools[{i}] is missing 'name'")
    params = spec.get("parameters")
    if not isinstance(params, dict):
        raise TaskError(f"{where}: tool {name!r} is missing 'parameters' (a JSON schema object)")
    if not isinstance(params.get("properties", {}), dict) or not isinstance(params.get("required", []), list):
        raise TaskError(f"{where}: tool {name!r} has malformed 'parameters' (properties must be an object, "
                        "required a list)")
    from ttsi.jsonschema import schema_problem  # here, so that only this function depends on it

    if problem := schema_problem(params):
        raise TaskError(f"{where}: tool {name!r} has a malformed schema: {problem}")
    raw = t.get("raw")
    return Tool(name=name, description=str(spec.get("description", "")), parameters=params,
                raw=raw if isinstance(raw, dict) else None)


def load_task(path: str | Path) -> Task:
    """Read one task from a JSON file."""
    return Task.from_dict(jsonio.read_json(path, "task file"), where=str(path))


def load_tasks(path: str | Path) -> list[Task]:
    """Read tasks from a JSON list or a JSON Lines file."""
    path = Path(path)
    items: Iterable[tuple[str, Any]]
    if path.suffix == ".jsonl":
        items = ((f"{path}:{n}", d) for n, d in jsonio.read_jsonl(path, "task file"))
    else:
        data = jsonio.read_json(path, "task file")
        items = ((f"{path}[{i}]", d) for i, d in enumerate(data if isinstance(data, list) else [data]))
    tasks = [Task.from_dict(d, where=w) for w, d in items]
    if not tasks:
        raise TaskError(f"{path}: contains no tasks")
    return tasks
