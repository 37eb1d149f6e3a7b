"""Pythonic tool calling: a Python list of calls `[f(a="x", n=1), g()]` (Llama 3.2 / Llama 4, vLLM `pythonic`).

`parse` reads the list with `ast` and accepts literals only (strings, numbers, booleans, None, lists, tuples,
dicts with string keys, and JSON's true / false / null), never evaluating anything.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Sequence
from typing import Any

from ttsi.formats.base import AnswerParseError, balanced_end
from ttsi.formats.native import NativeFormat
from ttsi.formats.pretokens import boundary_at_or_after
from ttsi.task import Call, Tool

MARKERS = ("<|python_start|>", "<|python_end|>")  # Llama 4 may wrap the list in these (special tokens)
MAX_CHARS = 100_000
_JSON_NAMES = {"true": True, "false": False, "null": None}


def literal(value: Any) -> str:
    """`value` as a Python literal: strings double-quoted (as Llama 4's template writes them), JSON-escaped."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, float) and math.isinf(value):
        return "1e309" if value > 0 else "-1e309"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    return repr(value)


def render_call(call: Call) -> str:
    return f"{call.name}(" + ", ".join(f"{k}={literal(v)}" for k, v in call.arguments.items()) + ")"


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (str, int, float)) or node.value is None:  # bool is an int
            return node.value
        raise ValueError(f"a {type(node.value).__name__} is not a JSON value")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values, strict=True):
            key = _value(k) if k is not None else None
            if not isinstance(key, str):
                raise ValueError("dict keys must be strings")
            out[key] = _value(v)
        return out
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    raise ValueError(f"{type(node).__name__} is not a literal")


def _name(func: ast.AST) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        raise ValueError("the called function is not a name")
    return ".".join([func.id, *reversed(parts)])


def _call(node: ast.AST) -> Call:
    if not isinstance(node, ast.Call):
        raise ValueError(f"a {type(node).__name__}, not a function call")
    if node.args or any(kw.arg is None for kw in node.keywords):
        raise ValueError("arguments must be given by keyword")
    return Call(_name(node.func), {kw.arg: _value(kw.value) for kw in node.keywords if kw.arg is not None})


class PythonicCalls(NativeFormat):
    """`[f(a="x", n=1), g()]`: one Python list of keyword-argument calls with literal values."""

    name = "pythonic"

    def instruction(self) -> str:
        return ("Answer with only a Python list of the function calls, in the order they must run, like "
                '[func_name1(param1="value1", param2=2), func_name2(param="value")].')

    def render(self, calls: list[Call], tools: Sequence[Tool] = ()) -> str:
        # Llama 4's template: "[" + name + "(" + param + '="' + value + '"' ... + ")" ... + "]", which is this for
        # string values without quotes or backslashes; other values are written as Python literals.
        return "[" + ", ".join(render_call(c) for c in calls) + "]"

    def name_prefix(self, name: str, tools: Sequence[Tool]) -> str:
        # `[name` ends on a pre-token boundary when the name ends in a letter or digit: the `(` after it starts the
        # next pre-token (`(city`). When another tool's name extends this one (`get` / `get_weather`), or the name
        # ends in `_`, the candidate goes on through that pre-token, guessing the first (required) parameter.
        extended = any(t.name != name and t.name.startswith(name) for t in tools)
        if not extended and name[-1:].isalnum():
            return f"[{name}"
        tool = next((t for t in tools if t.name == name), None)
        listed = list(tool.properties) if tool is not None else []
        required = tool.required if tool is not None else []
        first = next((p for p in listed if p in required), listed[0] if listed else None)
        text = f"[{name}({first}=" if first else f"[{name}()]"
        return text[: boundary_at_or_after(text, len(name) + 2)]

    def parse(self, text: str) -> list[Call]:
        for marker in MARKERS:
            text = text.replace(marker, "")
        start = text.find("[")
        if start < 0:
            raise AnswerParseError("no_call", "no Python list of calls in the output")
        end = balanced_end(text, start, quotes="'\"", pairs="()[]{}")
        if end is None:
            raise AnswerParseError("truncated", "the list of calls never closes")
        if end - start > MAX_CHARS:
            raise AnswerParseError("too_long", f"the list of calls is over {MAX_CHARS:,} characters")
        try:
            body = ast.parse(text[start: end + 1], mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
            raise AnswerParseError("syntax_error", f"not a Python list of calls ({type(e).__name__})") from None
        if not isinstance(body, ast.List):
            raise AnswerParseError("not_a_call", "the output is not a list of calls")
        calls = []
        for i, element in enumerate(body.elts):
            try:
                calls.append(_call(element))
            except (ValueError, RecursionError) as e:
                raise AnswerParseError("malformed_call", f"item {i}: {e}") from None
        return calls

    def first_call(self, text: str) -> str | None:
        start = text.find("(")
        end = balanced_end(text, start, quotes="'\"", pairs="()[]{}") if start >= 0 else None
        if end is None or text[end] != ")":
            return None
        return text[: boundary_at_or_after(text, end + 1)]  # through `)]` / `),`
