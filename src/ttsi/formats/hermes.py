"""The Hermes / Qwen2.5 tool-call format: one `<tool_call>` block of JSON per call (vLLM parser `hermes`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ttsi.formats.base import AnswerParseError, call_of
from ttsi.formats.native import NativeFormat, decode_json, dumps
from ttsi.task import Call, Tool

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|\Z)", re.DOTALL)


class HermesCalls(NativeFormat):
    """`<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>`, blocks joined by a newline."""

    name = "hermes"

    def instruction(self) -> str:
        return ("Answer with only the function calls, in the order they must run, each in its own block like "
                f'{OPEN}\n{{"name": "function_name", "arguments": {{"argument": "value"}}}}\n{CLOSE}')

    def render(self, calls: list[Call], tools: Sequence[Tool] = ()) -> str:
        # Qwen2.5's template writes, per call, after `<|im_start|>assistant` (whose generation prompt already holds
        # the first newline): '\n<tool_call>\n{"name": "' + name + '", "arguments": ' + arguments|tojson
        # + '}\n</tool_call>'.
        return "\n".join(f'{OPEN}\n{{"name": {dumps(c.name)}, "arguments": {dumps(c.arguments)}}}\n{CLOSE}'
                         for c in calls)

    def name_prefix(self, name: str, tools: Sequence[Tool]) -> str:
        # Through the "arguments" key, as the JSON format does: `":` is followed by a space, a new pre-token.
        return f'{OPEN}\n{{"name": {dumps(name)}, "arguments":'

    def parse(self, text: str) -> list[Call]:
        blocks = list(_BLOCK.finditer(text))
        if not blocks:
            raise AnswerParseError("no_call", f"no {OPEN} block in the output")
        calls = []
        for match in blocks:
            block, closed = match.group(1), match.group(0).endswith(CLOSE)
            start = block.find("{")
            if start < 0:
                raise AnswerParseError("malformed_call" if closed else "truncated", f"a {OPEN} block holds no JSON")
            try:
                value, end = decode_json(block, start)
            except AnswerParseError as e:
                if closed or e.reason == "too_deep":
                    raise
                raise AnswerParseError("truncated", f"the last {OPEN} block never closes") from None
            if block[end:].strip():
                raise AnswerParseError("malformed_call", f"text after the JSON object in a {OPEN} block")
            calls.append(call_of(value))
        return calls

    def first_call(self, text: str) -> str | None:
        end = text.find(CLOSE)
        if end < 0:
            return None
        return text[: end + len(CLOSE)]  # an added token: a token boundary of its own
