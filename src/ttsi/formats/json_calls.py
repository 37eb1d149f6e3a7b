"""The default answer format: a JSON list of {"name", "arguments"} calls, tools shown as JSON schemas."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ttsi import jsonio
from ttsi.formats.base import AnswerFormat, AnswerParseError, balanced_end, first_json
from ttsi.formats.pretokens import boundary_at_or_after
from ttsi.task import Call, Tool


class JsonCalls(AnswerFormat):
    """`[{"name": "f", "arguments": {...}}, ...]`: a JSON list of calls, in order."""

    name = "json"

    def instruction(self) -> str:
        return ('Answer with only a JSON list of function calls, in the order they must run, like '
                '[{"name": "function_name", "arguments": {"argument": "value"}}].')

    def render(self, calls: list[Call], tools: Sequence[Tool] = ()) -> str:
        return json.dumps([{"name": c.name, "arguments": c.arguments} for c in calls], ensure_ascii=False)

    def name_prefix(self, name: str, tools: Sequence[Tool]) -> str:
        # Through the "arguments" key: ending right after the name's closing quote would split the `",`
        # pre-token that byte-level BPE tokenizers (Qwen2, Llama 3, GPT-2) form, scoring tokens the model never
        # emits. `":` is followed by a space, which always starts a new pre-token.
        return '[{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments":'

    def parse(self, text: str) -> list[Call]:
        value = first_json(text)
        items = value if isinstance(value, list) else [value]
        calls = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
                raise AnswerParseError("malformed_call", "each call needs a 'name' string")
            args = item.get("arguments", {})
            if isinstance(args, str):
                try:
                    args = jsonio.parse(args)
                except jsonio.BadJSON:
                    raise AnswerParseError("malformed_call", "'arguments' string is not JSON") from None
            if not isinstance(args, dict):
                raise AnswerParseError("malformed_call", "'arguments' must be an object")
            calls.append(Call(item["name"], args))
        return calls

    def first_call(self, text: str) -> str | None:
        start = text.find("{")
        end = balanced_end(text, start) if start >= 0 else None
        if end is None:
            return None
        return text[: boundary_at_or_after(text, end + 1)]  # through the `}]` / `},` punctuation run
