"""Llama 3.1 / 3.2 / 3.3 JSON tool calling: a bare `{"name": ..., "parameters": {...}}` (vLLM parser `llama3_json`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ttsi.formats.base import AnswerParseError, balanced_end, call_of
from ttsi.formats.native import NativeFormat, decode_json, dumps
from ttsi.formats.pretokens import boundary_at_or_after
from ttsi.task import Call, Tool

PYTHON_TAG = "<|python_tag|>"  # may open the call; a special token, so decoding usually drops it
SEPARATOR = "; "  # between several calls, as vLLM's parser reads them; the official templates allow only one


class Llama3JsonCalls(NativeFormat):
    """`{"name": "f", "parameters": {...}}`; several calls joined by `; ` (parse also reads a JSON list of them)."""

    name = "llama3_json"

    def instruction(self) -> str:
        return ('Answer with only the function call as JSON, like {"name": "function_name", "parameters": '
                '{"argument": "value"}}; several calls are separated by "; ".')

    def render(self, calls: list[Call], tools: Sequence[Tool] = ()) -> str:
        # The template: '{"name": "' + name + '", "parameters": ' + arguments|tojson + "}"
        return SEPARATOR.join(f'{{"name": {dumps(c.name)}, "parameters": {dumps(c.arguments)}}}' for c in calls)

    def name_prefix(self, name: str, tools: Sequence[Tool]) -> str:
        # Through the "parameters" key: `":` is followed by a space, which starts a new pre-token.
        return f'{{"name": {dumps(name)}, "parameters":'

    def parse(self, text: str) -> list[Call]:
        text = text.replace(PYTHON_TAG, "")
        start = text.find("{")
        if start < 0:
            raise AnswerParseError("no_json", "no JSON object in the output")
        calls = []
        while True:
            if balanced_end(text, start) is None:
                raise AnswerParseError("truncated", "the call's JSON object never closes")
            value, end = decode_json(text, start)
            calls.append(call_of(value, ("parameters", "arguments")))
            more = re.match(r"\s*[;,]\s*(?=\{)", text[end:])  # `; ` (vLLM), or `, ` inside a JSON list
            if more is None:
                return calls
            start = end + more.end()

    def first_call(self, text: str) -> str | None:
        start = text.find("{")
        end = balanced_end(text, start) if start >= 0 else None
        if end is None:
            return None
        return text[: boundary_at_or_after(text, end + 1)]
