"""Answer formats: how a task's answer is written, parsed back into calls, and named by its first function.

A format is registered by name; a task says which one it uses (`"format": "json"`). Benchmark formats
(Seal-Tools' api list, BFCL's python calls, ...) register here beside the default.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ttsi.errors import TaskError
from ttsi.task import Call


class AnswerParseError(ValueError):
    """Model output that does not parse as an answer; `reason` is a short typed code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class AnswerFormat:
    """Interface every answer format implements."""

    name: str = ""

    def instruction(self) -> str:
        """The sentence that tells the model how to write its answer."""
        raise NotImplementedError

    def render(self, calls: list[Call]) -> str:
        """The answer text for these calls, exactly as the model should write it."""
        raise NotImplementedError

    def parse(self, text: str) -> list[Call]:
        """Calls in a generated answer; raises AnswerParseError."""
        raise NotImplementedError

    def name_prefix(self, name: str) -> str:
        """The answer prefix that commits to calling `name` first: the gate's default candidate action."""
        raise NotImplementedError

    def first_call(self, text: str) -> str | None:
        """The prefix of an answer that ends with its first complete call (at a token boundary), or None."""
        raise NotImplementedError


class JsonCalls(AnswerFormat):
    """`[{"name": "f", "arguments": {...}}, ...]`: a JSON list of calls, in order."""

    name = "json"

    def instruction(self) -> str:
        return ('Answer with only a JSON list of function calls, in the order they must run, like '
                '[{"name": "function_name", "arguments": {"argument": "value"}}].')

    def render(self, calls: list[Call]) -> str:
        return json.dumps([{"name": c.name, "arguments": c.arguments} for c in calls], ensure_ascii=False)

    def name_prefix(self, name: str) -> str:
        # Through the "arguments" key: ending right after the name's closing quote would split the `",`
        # pre-token that byte-level BPE tokenizers (Qwen2, Llama 3, GPT-2) form, scoring tokens the model never
        # emits. `":` is followed by a space, which always starts a new pre-token.
        return '[{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments":'

    def parse(self, text: str) -> list[Call]:
        value = _first_json(text)
        items = value if isinstance(value, list) else [value]
        calls = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
                raise AnswerParseError("malformed_call", "each call needs a 'name' string")
            args = item.get("arguments", {})
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    raise AnswerParseError("malformed_call", "'arguments' string is not JSON") from None
            if not isinstance(args, dict):
                raise AnswerParseError("malformed_call", "'arguments' must be an object")
            calls.append(Call(item["name"], args))
        return calls

    def first_call(self, text: str) -> str | None:
        start = text.find("{")
        end = _balanced_end(text, start) if start >= 0 else None
        if end is None:
            return None
        while end + 1 < len(text) and text[end + 1] in "],":  # finish the punctuation run: a pre-token boundary
            end += 1
        return text[: end + 1]


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def _first_json(text: str) -> Any:
    """The first JSON list, or object with a "name", in `text` (code fences allowed around it).

    A list of calls that never closes (the output was cut off) is reported as truncated, not read in part.
    """
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    decoder = json.JSONDecoder()
    broken_list = -1
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
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


def _balanced_end(text: str, start: int) -> int | None:
    """Index of the bracket closing the one at `start`, skipping brackets inside JSON strings."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return i
    return None


FORMATS: dict[str, AnswerFormat] = {"json": JsonCalls()}


def register_format(fmt: AnswerFormat) -> AnswerFormat:
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> AnswerFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise TaskError(f"unknown answer format {name!r}; known formats: {', '.join(sorted(FORMATS))}") from None
