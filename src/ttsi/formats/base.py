"""The answer-format interface, and the default JSON-calls format.

A format decides how a task is put to the model (`messages`) and how the answer is written (`render`), read back
(`parse`) and committed to by its first function (`name_prefix`, the gate's candidate action). A tool-call format
(`kind` "tools") renders and parses calls; a free-form one (`kind` "math" or "qa", `ttsi.formats.free_form`) text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ttsi import jsonio
from ttsi.task import Answer, Call, Task, Tool

Messages = list[dict[str, Any]]


class AnswerParseError(ValueError):
    """Model output that does not parse as an answer; `reason` is a short typed code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def tools_block(tools: list[Tool]) -> str:
    """One JSON function schema per line."""
    return "\n".join(json.dumps(t.to_openai()["function"], ensure_ascii=False) for t in tools)


def with_system(system: str, task: Task, demos: Sequence[tuple[str, str]] = (),
                task_system_first: bool = True, fmt: AnswerFormat | None = None) -> Messages:
    """One system turn (`system` merged with the task's own, since many chat templates refuse two), then the
    demonstrations as user/assistant turns, then the task's turns (as `fmt.history` gives them; default: tool
    calls in history written as JSON calls)."""
    turns = fmt.history(task) if fmt is not None else task.text_messages(json_calls_text)
    if turns and turns[0]["role"] == "system":
        own = turns.pop(0)["content"]
        system = f"{own}\n\n{system}" if task_system_first else f"{system}\n\n{own}"
    shots: Messages = []
    for query, answer in demos:
        shots += [{"role": "user", "content": query}, {"role": "assistant", "content": answer}]
    return [{"role": "system", "content": system}, *shots, *turns]


def json_calls_text(calls: list[Call]) -> str:
    return json.dumps([c.to_dict() for c in calls], ensure_ascii=False)


class AnswerFormat:
    """Interface every answer format implements."""

    name: str = ""
    kind: str = "tools"  # the task kind it answers (ttsi.task.KINDS): tool calls, or free text ("math", "qa")
    # Whether numbers may be written as strings in answers ("30" for an integer): true where the benchmark's own
    # gold does so and its scorer compares str() values; synthetic pairs are validated accordingly.
    numbers_as_strings: bool = False

    def messages(self, task: Task, demos: Sequence[tuple[str, str]] = ()) -> Messages:
        """The chat turns that ask for `task`'s answer, after optional (query, answer) demonstrations.

        Default: one system turn listing the tools as JSON schemas and the format's instruction (merged with the
        task's own system turn, since many chat templates refuse two), then the demonstrations, then the task's
        turns. Benchmark formats override this to reproduce the prompt their benchmark was run with.
        """
        system = ("You are a tool-calling assistant. You can call these functions:\n"
                  f"{tools_block(task.tools)}\n{self.instruction()}")
        return with_system(system, task, demos, task_system_first=True, fmt=self)

    def history(self, task: Task) -> Messages:
        """The task's turns as this format shows them: tool calls in history written as this format's answers (as
        JSON calls where the format cannot write them)."""
        def write(calls: list[Call]) -> str:
            try:
                return self.render(calls, task.tools)
            except ValueError:
                return json_calls_text(calls)

        return task.text_messages(write)

    def chat_tools(self, task: Task) -> list[dict[str, Any]] | None:
        """Tool schemas for the chat template's `tools` argument: None, since the prompt lists them itself."""
        return None

    def instruction(self) -> str:
        """The sentence that tells the model how to write its answer."""
        raise NotImplementedError

    def render(self, calls: Answer, tools: Sequence[Tool] = ()) -> str:
        """The answer text for these calls (a free-form format: for this text), exactly as the model should write it.

        `tools`: the task's tools, for formats whose answer text depends on them (Seal-Tools numbers one
        `API_call_k` per response field of the called tool).
        """
        raise NotImplementedError

    def parse(self, text: str) -> Answer:
        """Calls in a generated answer (a free-form format: the answer a scorer compares); raises AnswerParseError."""
        raise NotImplementedError

    def pair_answer(self, text: str) -> Answer:
        """The answer of a synthetic pair, from the text after its `Answer:`: what the pair trains on. The calls for
        a tool-call format; a free-form format keeps the text itself. Raises AnswerParseError."""
        return self.parse(text)

    def key(self, answer: Answer) -> str:
        """The normal form two parsed answers are compared by (majority votes): the calls as sorted JSON."""
        return json.dumps([c.to_dict() for c in answer], sort_keys=True)

    def name_prefix(self, name: str, tools: Sequence[Tool]) -> str:
        """The answer prefix that commits to calling `name` first: the gate's default candidate action.

        `tools`: all the task's tools, so a format can keep two names that extend one another (`get`,
        `get_weather`) from having candidates that are prefixes of each other.
        """
        raise NotImplementedError

    def first_call(self, text: str) -> str | None:
        """The prefix of an answer that ends with its first complete call (at a token boundary), or None."""
        raise NotImplementedError


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def first_json(text: str) -> Any:
    """The first JSON list, or object with a "name", in `text` (code fences allowed around it).

    A list of calls that never closes (the output was cut off) is reported as truncated, not read in part.
    """
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    broken_list = -1
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = jsonio.decode(text, match.start())
        except jsonio.BadJSON as e:
            if e.reason == "too_deep":  # no call list nests this deep; trying every later bracket would cost minutes
                raise AnswerParseError("too_deep", e.msg) from None
            if broken_list < 0 and re.match(r"\[\s*\{", text[match.start():]):
                broken_list = match.start()
            continue
        if isinstance(value, list) or (isinstance(value, dict) and "name" in value):
            if broken_list >= 0:
                raise AnswerParseError("truncated", "the list of calls never closes")
            return value
    if broken_list >= 0:
        raise AnswerParseError("truncated", "the list of calls never closes")
    raise AnswerParseError("no_json", "no JSON list of calls in the output")


def call_of(obj: Any, keys: Sequence[str] = ("arguments",)) -> Call:
    """A call from a decoded `{"name": ..., <key>: {...}}` object; the first of `keys` present holds the arguments
    (an object, or a JSON string of one)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        raise AnswerParseError("malformed_call", "each call needs a 'name' string")
    args = next((obj[k] for k in keys if k in obj), {})
    if isinstance(args, str):
        try:
            args = jsonio.parse(args)
        except jsonio.BadJSON:
            raise AnswerParseError("malformed_call", "the arguments string is not JSON") from None
    if not isinstance(args, dict):
        raise AnswerParseError("malformed_call", "the arguments must be an object")
    return Call(obj["name"], args)


def balanced_end(text: str, start: int, quotes: str = '"', pairs: str = "[]{}") -> int | None:
    """Index of the bracket closing the one at `start`, skipping brackets inside strings.

    `quotes`: the characters that open a string (JSON: `"`; Python literals: both); `pairs`: the bracket pairs
    that nest, opening then closing ("[]{}", or "()[]{}" for Python calls).
    """
    opens, closes = pairs[0::2], pairs[1::2]
    depth, quote, escaped = 0, "", False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in quotes:
            quote = ch
        elif ch in opens:
            depth += 1
        elif ch in closes:
            depth -= 1
            if depth == 0:
                return i
    return None
