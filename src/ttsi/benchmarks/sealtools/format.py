"""The Seal-Tools answer format: the paper's fine-tune prompt and its Python-literal list of API calls.

An answer reads `[{'api': 'f', 'parameters': {'x': 1}, 'responses': ['API_call_0']}, ...]`. The official
evaluator (`LLM_Evaluation/src/llm_tools/evaluation/transform_output.py`, case 'ToolLearning') turns every `'`
into `"` and reads the result as JSON, so answers are written in the one dialect that is both the gold's
Python-literal style and JSON after that swap: quotes and apostrophes inside strings are escaped (`\\"`,
`\\u0027`) and booleans / None are written `true` / `false` / `null`. Other gold texts are reproduced exactly.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from ttsi import jsonio
from ttsi.formats import register_format
from ttsi.formats.base import AnswerFormat, AnswerParseError, Messages, balanced_end
from ttsi.formats.pretokens import boundary_at_or_after
from ttsi.task import Call, Task, Tool

# Verbatim from the human turns of Seal-Tools_Dataset/dataset_for_finetune/*.json (typo included), repository
# fairyshine/Seal-Tools at commit ce753ecd60ed08dd376984035de531ab8421f1c6, Apache-2.0.
PROMPT_HEAD = (
    "Please chooose the needed apis and return api_calling list according to the task_instruction.\n"
    'Output format: [{"api": "", "parameters": {"": ""}, "responses": ["API_call_0","API_call_1"]},'
    '{"api": "", "parameters": {"": ""}, "responses": ["API_call_2"]}]\n'
    "Responses can be used as parameter value. "
    "The number of responses depends on information in api_list.\n\n"
    "Input:\n"
)
_QUERY_OPEN = '\ntask_instruction = "'
_QUERY_CLOSE = '"\nOutput:\n'

_START = re.compile(r'\[\s*\{\s*"api"')
_ESCAPES = {"\\": "\\\\", "'": "\\u0027", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def prompt(tools: Sequence[dict[str, Any]], query: str) -> str:
    """The fine-tune prompt: the tool dicts as a Python literal, the query in double quotes (unescaped)."""
    return f"{PROMPT_HEAD}api_list = {list(tools)!r}{_QUERY_OPEN}{query}{_QUERY_CLOSE}"


def native_tool(tool: Tool) -> dict[str, Any]:
    """The Seal-Tools dict of a tool: its own `raw`, or one built from the JSON schema of a foreign tool."""
    if tool.raw is not None:
        return tool.raw
    params = {name: {"type": spec.get("type", "str"), "description": spec.get("description", "")}
              for name, spec in tool.properties.items()}
    return {"api_name": tool.name, "api_description": tool.description, "parameters": params,
            "required": tool.required, "responses": {}}


def literal(value: Any) -> str:
    """`value` in the gold's Python-literal style, such that the official `'` -> `"` swap yields its JSON."""
    if isinstance(value, str):
        # The evaluator counts brackets even inside strings, so a string whose own brackets would close the
        # list early (or never) has them escaped too.
        escapes = _ESCAPES if _nests(value) else _ESCAPES | {"[": "\\u005b", "]": "\\u005d"}
        return "'" + "".join(escapes.get(ch) or (f"\\u{ord(ch):04x}" if ord(ch) < 0x20 else ch)
                             for ch in value) + "'"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)  # Python's True would not survive the evaluator's json.loads
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(str(k))}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    return literal(str(value))


def _nests(text: str) -> bool:
    """Whether the brackets in `text` close in order (so counting them cannot end a list early or never)."""
    depth = 0
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def official_parse(text: str) -> list[Any]:
    """The official evaluator's reading of an output (a JSON list); AnswerParseError where it gives -1."""
    text = text.replace("'", '"').replace("\n", "")
    match = _START.search(text)
    if match is None:
        raise AnswerParseError("no_calls", "no list of calls starting [{'api'")
    end, depth = -1, 0
    for i in range(match.start(), len(text)):  # counts brackets inside strings too, as the evaluator does
        depth += {"[": 1, "]": -1}.get(text[i], 0)
        if depth == 0:
            end = i
            break
    if end < 0:
        raise AnswerParseError("truncated", "the list of calls never closes")
    chunk = text[match.start(): end + 1]
    missing = [key for key in ("api", "parameters", "responses") if key not in chunk]
    if missing:
        raise AnswerParseError("missing_keys", f"the list never mentions {', '.join(missing)}")
    try:
        return jsonio.parse(chunk)
    except jsonio.BadJSON as e:
        raise AnswerParseError("invalid_json", f"after ' -> \": {e.msg}") from None


def call_parts(item: Any) -> tuple[str, dict[str, Any]] | None:
    """(api, parameters) of one parsed list item, or None when it is not a well-formed call."""
    if not isinstance(item, dict) or not isinstance(item.get("api"), str) or not item["api"]:
        return None
    params = item.get("parameters", {})
    return (item["api"], params) if isinstance(params, dict) else None


class SealToolsFormat(AnswerFormat):
    """`[{'api': ..., 'parameters': {...}, 'responses': [...]}]` under the Seal-Tools fine-tune prompt."""

    name = "sealtools"
    numbers_as_strings = True  # gold writes 'age': '30' for an int, and the scorer compares str(pred) == str(gold)

    def messages(self, task: Task, demos: Sequence[tuple[str, str]] = ()) -> Messages:
        tools = [native_tool(t) for t in task.tools]
        turns: Messages = []
        for query, answer in demos:
            turns += [{"role": "user", "content": prompt(tools, query)},
                      {"role": "assistant", "content": answer}]
        return [*turns, {"role": "user", "content": prompt(tools, task.query)}]

    def instruction(self) -> str:
        return ("Answer with only a Python list of API calls in the order they run, like "
                "[{'api': 'api_name', 'parameters': {'name': 'value'}, 'responses': ['API_call_0']}].")

    def render(self, calls: list[Call], tools: Sequence[Tool] = ()) -> str:
        # Gold answers list one `API_call_k` per response field of the called tool, numbered across the calls
        # (true of every gold item); a call to a tool not given gets one.
        counts = {t.name: len(r) for t in tools if isinstance(r := (t.raw or {}).get("responses"), dict) and r}
        parts, k = [], 0
        for call in calls:
            n = counts.get(call.name, 1)
            responses = [f"API_call_{k + i}" for i in range(n)]
            k += n
            parts.append(f"{{'api': {literal(call.name)}, 'parameters': {literal(call.arguments)}, "
                         f"'responses': {literal(responses)}}}")
        return "[" + ", ".join(parts) + "]"

    def parse(self, text: str) -> list[Call]:
        calls = []
        for i, item in enumerate(official_parse(text)):
            parts = call_parts(item)
            if parts is None:
                raise AnswerParseError("malformed_call",
                                       f"item {i} is not {{'api': name, 'parameters': {{...}}}}")
            calls.append(Call(*parts))
        return calls

    def name_prefix(self, name: str, tools: Sequence[Tool]) -> str:
        # Through the "parameters" key: `':` is followed by a space, which starts a new pre-token in
        # byte-level BPE tokenizers, whereas ending after the name's closing quote would split the `',` one.
        return f"[{{'api': {literal(name)}, 'parameters':"

    def first_call(self, text: str) -> str | None:
        start = text.find("{")
        end = balanced_end(text, start, quotes="'\"") if start >= 0 else None
        if end is None:
            return None
        return text[: boundary_at_or_after(text, end + 1)]  # through the closing brace's punctuation run


# `get_format(NAME)` imports this module the first time a task names the format.
register_format(SealToolsFormat())
