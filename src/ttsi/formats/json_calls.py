"""The default answer format: a JSON list of {"name", "arguments"} calls, tools shown as JSON schemas."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ttsi.formats.base import AnswerFormat, balanced_end, call_of, first_json
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
        return [call_of(item) for item in items]

    def first_call(self, text: str) -> str | None:
        start = text.find("{")
        end = balanced_end(text, start) if start >= 0 else None
        if end is None:
            return None
        return text[: boundary_at_or_after(text, end + 1)]  # through the `}]` / `},` punctuation run
