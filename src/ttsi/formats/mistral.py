"""Mistral tool calling: `[TOOL_CALLS] [{"name": ..., "arguments": {...}, "id": ...}, ...]` (vLLM parser `mistral`)."""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Sequence

from ttsi.formats.base import Messages, balanced_end, call_of, first_json
from ttsi.formats.native import NativeFormat, decode_json, dumps
from ttsi.formats.pretokens import boundary_at_or_after
from ttsi.task import Call, Task, Tool

MARKER = "[TOOL_CALLS]"  # a control token of Mistral's tokenizer: decoding may drop it, so parse does not need it
_ALNUM = string.ascii_letters + string.digits
_V11 = re.compile(r"\[TOOL_CALLS\]\s*([A-Za-z_][\w.\-]*)\s*\[ARGS\]")  # Tekken v11+: `[TOOL_CALLS]name[ARGS]{...}`


def _short_id(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(_ALNUM[b % len(_ALNUM)] for b in digest[:9])


def call_id(call: Call, index: int) -> str:
    """A 9-character alphanumeric id (the template demands exactly that), the same for the same call and place."""
    return _short_id(f"{index}\0{call.name}\0{dumps(call.arguments)}")


def fit_id(old: str) -> str:
    """A history's call id as the template takes it: kept when 9 alphanumeric characters, else one made from it."""
    return old if len(old) == 9 and old.isascii() and old.isalnum() else _short_id(old)


class MistralCalls(NativeFormat):
    """`[TOOL_CALLS] [{"name": "f", "arguments": {...}, "id": "a1B2c3D4e"}, ...]`: one JSON list of calls."""

    name = "mistral"

    def instruction(self) -> str:
        return (f'Answer with only {MARKER} and a JSON list of the function calls, in the order they must run, like '
                f'{MARKER} [{{"name": "function_name", "arguments": {{"argument": "value"}}, "id": "a1B2c3D4e"}}].')

    def history(self, task: Task) -> Messages:
        """The task's turns with every call id made 9 alphanumeric characters (the template refuses others); a call
        without one gets a made-up id, and a tool result without one the id of the oldest unanswered call."""
        turns, pending = super().history(task), []
        for n, m in enumerate(turns):
            if m.get("tool_calls"):
                m["tool_calls"] = [{**c, "id": fit_id(c["id"]) if "id" in c else _short_id(f"{n}\0{i}")}
                                   for i, c in enumerate(m["tool_calls"])]
                pending = [c["id"] for c in m["tool_calls"]]
            elif m["role"] == "tool":
                old = m.get("tool_call_id")
                m["tool_call_id"] = fit_id(old) if old else pending[0] if pending else _short_id(str(n))
                if m["tool_call_id"] in pending:
                    pending.remove(m["tool_call_id"])
        return turns

    def render(self, calls: list[Call], tools: Sequence[Tool] = ()) -> str:
        # The template: "[TOOL_CALLS] [" + (function|tojson minus its "}") + ', "id": "' + id + '"}' joined by ", "
        # + "]". The ids are made up, deterministic: the task has none for its answer.
        items = [f'{{"name": {dumps(c.name)}, "arguments": {dumps(c.arguments)}, "id": "{call_id(c, i)}"}}'
                 for i, c in enumerate(calls)]
        return f"{MARKER} [" + ", ".join(items) + "]"

    def name_prefix(self, name: str, tools: Sequence[Tool]) -> str:
        return f'{MARKER} [{{"name": {dumps(name)}, "arguments":'

    def parse(self, text: str) -> list[Call]:
        if _V11.search(text):
            return self._parse_v11(text)
        at = text.find(MARKER)
        value = first_json(text[at + len(MARKER):] if at >= 0 else text)
        items = value if isinstance(value, list) else [value]
        return [call_of(item) for item in items]

    def _parse_v11(self, text: str) -> list[Call]:
        calls = []
        for match in _V11.finditer(text):
            value, _ = decode_json(text, match.end())
            calls.append(call_of({"name": match.group(1), "arguments": value}))
        return calls

    def first_call(self, text: str) -> str | None:
        at = text.find(MARKER)
        start = text.find("{", at + len(MARKER) if at >= 0 else 0)
        end = balanced_end(text, start) if start >= 0 else None
        if end is None:
            return None
        return text[: boundary_at_or_after(text, end + 1)]
