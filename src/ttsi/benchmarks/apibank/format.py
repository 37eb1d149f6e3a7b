"""The API-Bank answer format: `API-Request: [ApiName(key='value', ...)]` under the benchmark's own prompt.

Prompt. The test files (`api-bank/test-data/level-{1,2}-api.json` of AlibabaResearch/DAMO-ConvAI) give each
item an `instruction` (a fixed head, then one JSON API description per line) and an `input` (the dialogue,
ending in "Generate API Request:"). The repository has no script that feeds these files to a model; its chat
evaluation (`api-bank/evaluator.py`, commit a12362816d7b, Apache-2.0) puts the API-call prompt with the API
descriptions in the system turn and the dialogue after it, and so does this format: system = `instruction`,
rebuilt from the task's tools byte for byte (`json.dumps`, as the official `ToolManager.get_api_description`
writes a description), user = the dialogue and the "Generate API Request:" line. An API whose description
already sits in the dialogue (a level-2 ToolSearcher result) is not listed again, so level-2 prompts list
ToolSearcher alone, as the files do.

Answers are read with the official extraction (`api-bank/api_call_extraction.py`): the first
`\\[(\\w+)\\((.*)\\)\\]` and the parameter regex below, every value a string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ttsi.formats import register_format
from ttsi.formats.base import AnswerFormat, AnswerParseError, Messages
from ttsi.formats.pretokens import boundary_at_or_after
from ttsi.task import Call, Task, Tool

# Verbatim from every item's `instruction` in api-bank/test-data/level-{1,2}-api.json, repository
# AlibabaResearch/DAMO-ConvAI at commit 1d76900822d9ecfcd6e9eb0ca64a073cb892b735, Apache-2.0 (typo included).
PROMPT_HEAD = (
    "\nGenerate an API request in the format of [ApiName(key1='value1', key2='value2', ...)] based on the "
    "previous dialogue context.\nThe current year is 2023.\nInput: \nUser: User's utterence\nAI: AI's "
    "response\n\nExpected output:\nAPI-Request: [ApiName(key1='value1', key2='value2', ...)]\n\n"
    "API descriptions:\n"
)
GENERATE = "Generate API Request:"  # the line that closes every `input`
ANSWER_HEAD = "API-Request: "
NATIVE_KEYS = ("name", "description", "input_parameters", "output_parameters")

# The official extraction (api-bank/api_call_extraction.py, DAMO-ConvAI commit
# a12362816d7bc80f5b64f7a3246705f1f3369acd, Apache-2.0): no DOTALL, so a call sits on one line, and `(.*)` is
# greedy up to the line's last `)]`.
CALL = re.compile(r"\[(\w+)\((.*)\)\]")
PARAM = re.compile(r"(\w+)\s*=\s*['\"](.+?)['\"]|(\w+)\s*=\s*(\[.*\])|(\w+)\s*=\s*(\w+)")
_FIRST_CALL = re.compile(r"\[\w+\(.*?\)\]")

def official_params(body: str) -> dict[str, str]:
    """The parameter dict the official `parse_api_call` reads from the text between a call's parentheses."""
    params: dict[str, str] = {}
    for m in PARAM.finditer(body):
        if m.group(1):
            params[m.group(1)] = m.group(2)
        elif m.group(3):
            params[m.group(3)] = m.group(4)
        elif m.group(5):
            params[m.group(5)] = m.group(6)
    return params


def official_call(text: str) -> tuple[str, dict[str, str]] | None:
    """(API name, params) of the first call in `text` as the official evaluator reads it (None: no call)."""
    match = CALL.search(text)
    return None if match is None else (match.group(1), official_params(match.group(2)))


def native_tool(tool: Tool) -> dict[str, Any]:
    """A tool's API-Bank description: its own `raw` (the four official keys), or one built from its schema."""
    if tool.raw is not None:
        return {k: tool.raw[k] for k in NATIVE_KEYS if k in tool.raw}
    params = {name: {"type": "str", "description": str(spec.get("description", ""))}
              for name, spec in tool.properties.items()}
    return {"name": tool.name, "description": tool.description, "input_parameters": params,
            "output_parameters": {}}


def system_prompt(tools: Sequence[Tool]) -> str:
    """The item's `instruction`: the fixed head, then one JSON description per line."""
    return PROMPT_HEAD + "\n".join(json.dumps(native_tool(t)) for t in tools)


def dialogue(query: str) -> str:
    """The user turn: the dialogue ("User: ..." lines), then the "Generate API Request:" line.

    A dataset dialogue passes through unchanged (trailing spaces included); a bare request (a synthetic one)
    becomes one "User:" line, and a copied "Generate API Request:" line is not doubled.
    """
    text = query.rstrip("\r\n")
    if text.rstrip().endswith(GENERATE):
        text = text.rstrip()[: -len(GENERATE)].rstrip("\r\n")
    if not re.match(r"(User|AI|API-Request):", text):
        text = f"User: {text.strip()}"
    return f"{text}\n{GENERATE}\n"


def _literal(value: Any) -> str:
    """A value as an answer writes it: quoted, or bare when it is a list literal (the regex's second form)."""
    if isinstance(value, bool):
        value = str(value)  # 'True' / 'False': what the official executor reads as a bool
    elif isinstance(value, (list, tuple)):
        value = repr(list(value))
    elif not isinstance(value, str):
        value = str(value)
    if value.startswith("[") and value.endswith("]"):
        return value
    if not value or "'" in value or '"' in value:
        # the official regex reads a quoted value up to the next quote of either kind, and needs a character
        raise ValueError(f"{value!r} cannot be written so that API-Bank's call syntax reads it back")
    return f"'{value}'"


def render_call(call: Call) -> str:
    """One call as the gold writes it; ValueError when the official extraction would not read it back."""
    written = {k: _literal(v) for k, v in call.arguments.items()}
    text = f"{ANSWER_HEAD}[{call.name}({', '.join(f'{k}={w}' for k, w in written.items())})]"
    expected = {k: w[1:-1] if w.startswith("'") else w for k, w in written.items()}
    if official_call(text) != (call.name, expected):
        # e.g. a bare list literal followed by a value holding `]`: the greedy list form swallows it
        raise ValueError(f"{call.name}{call.arguments} cannot be written so that API-Bank's call syntax "
                         "reads it back")
    return text


class APIBankFormat(AnswerFormat):
    """`API-Request: [ApiName(key='value', ...)]`, one call per line, under API-Bank's prompt."""

    name = "apibank"

    def messages(self, task: Task, demos: Sequence[tuple[str, str]] = ()) -> Messages:
        turns = self.history(task)
        conversation = "\n".join(m["content"] for m in turns)
        # A level-2 ToolSearcher result prints the found API's dict (its Python repr) in the dialogue.
        listed = [t for t in task.tools if t.raw is None or str(t.raw) not in conversation]
        system = system_prompt(listed)
        if turns and turns[0]["role"] == "system":
            system = f"{turns[0]['content']}\n\n{system}"
            turns = turns[1:]
        shots: Messages = []
        for query, answer in demos:
            shots += [{"role": "user", "content": dialogue(query)}, {"role": "assistant", "content": answer}]
        turns = [{"role": "user", "content": dialogue(m["content"])} if m["role"] == "user" else m
                 for m in turns]
        return [{"role": "system", "content": system}, *shots, *turns]

    def instruction(self) -> str:
        return ("Answer with only the API request, written like "
                "API-Request: [ApiName(key1='value1', key2='value2', ...)].")

    def render(self, calls: list[Call], tools: Sequence[Tool] = ()) -> str:
        """Each call on its own line; values quoted, list literals bare (`attendees=['Ann', 'Bo']`).

        Values are strings, as the official extraction reads them; a non-string is written as its str() (a
        list as its repr), so it reads back as that string. An empty value, or one holding a quote that is not
        a list literal, has no form that reads back: ValueError.
        """
        return "\n".join(render_call(c) for c in calls)

    def parse(self, text: str) -> list[Call]:
        """Every line's call, each read by the official extraction (scoring reads the first, as it does)."""
        calls = [Call(m.group(1), official_params(m.group(2))) for m in CALL.finditer(text)]
        if calls:
            return calls
        if re.search(r"\[\w+\(", text):
            raise AnswerParseError("truncated", "a call opens with [ApiName( but never closes with )]")
        raise AnswerParseError("no_api_call", "no [ApiName(key='value', ...)] in the output")

    def name_prefix(self, name: str, tools: Sequence[Tool]) -> str:
        # `API-Request: [Name` ends on a pre-token boundary when the name ends in a letter or digit: the `(`
        # after it starts the next pre-token (`(key` in Qwen2's split), so a candidate ending at `(` would
        # score a token the model never writes. When another shown API's name extends this one (`Get` /
        # `GetUserToken`), the candidate goes on through the `(` pre-token, guessing the first parameter
        # written: the first required one, else the first listed (the gold's first in 510 of the 520 API-Bank
        # calls whose API is described).
        head = f"{ANSWER_HEAD}[{name}"
        shown = {t.name: t for t in tools}
        extended = any(other != name and other.startswith(name) for other in shown)
        if not extended and name[-1:].isalnum():
            return head
        tool = shown.get(name)
        listed, required = (list(tool.properties), tool.required) if tool else ([], [])
        first = next((p for p in listed if p in required), listed[0] if listed else None)
        skeleton = head + (f"({first}='" if first else "()]")
        return skeleton[: boundary_at_or_after(skeleton, len(head) + 1)]

    def first_call(self, text: str) -> str | None:
        match = _FIRST_CALL.search(text)
        if match is None:
            return None
        # Through the punctuation run the closing `)]` belongs to (`')]`, `)]->{'`) and its newlines.
        return text[: boundary_at_or_after(text, match.end())]


# `get_format(NAME)` imports this module the first time a task names the format.
register_format(APIBankFormat())
