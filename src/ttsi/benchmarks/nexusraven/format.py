"""NexusRaven's answer format: tools shown as Python stubs in its OPTION blocks, the answer one Python call.

The prompt reproduces `RavenPromptTemplate` and `RAVEN_PROMPT` from `raven/eval/raven_utils.py` of
nexusflowai/NexusRaven (commit f32882763bb3e220722883821919c14abdd3d156, code Apache-2.0), with each tool's
signature written as `inspect.signature` prints the stub that `raven/utils.py::build_functions` executes
(LangChain's `StructuredTool.from_function` puts that string before the docstring). NexusRaven-13B's own role
tags (`<human>:` ... `<human_end>`) are left out: the chat template of the model in use marks the turns.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttsi import jsonio
from ttsi.formats import register_format
from ttsi.formats.base import AnswerFormat, AnswerParseError, Messages
from ttsi.formats.pretokens import boundary_at_or_after
from ttsi.task import Call, Task, Tool

# Verbatim from raven/eval/raven_utils.py (RAVEN_PROMPT and RavenPromptTemplate.format), Apache-2.0.
OPTION = ('\nOPTION:\n<func_start>def {signature}<func_end>\n<docstring_start>\n"""\n{docstring}\n"""\n'
          '<docstring_end>\n')
QUERY = ("User Query: Question: {query}\n\nPlease pick a function from the above options that best "
         "answers the user query and fill in the appropriate arguments.")

# The Python type names an api-list entry may carry, as the stub's annotations (printed as their bare names).
_ANNOTATIONS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool, "list": list,
                                 "dict": dict, "tuple": tuple}
_JSON_TO_PY = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "array": "list",
               "object": "dict"}

class _TypeName:
    """An annotation that prints as a given type name (for type names that are not Python builtins)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


def _default(value: Any) -> Any:
    """A stub default, as `build_functions` writes it into source (`= {default}`, "JSON:" decoded)."""
    if isinstance(value, str):
        if value.startswith("JSON:"):
            try:
                return jsonio.parse(value.removeprefix("JSON:"))
            except jsonio.BadJSON:
                return value  # shown as written
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _args_dicts(tool: Tool) -> list[dict[str, Any]]:
    """The tool's api-list arguments; a tool without a NexusRaven description gets them from its schema."""
    if tool.raw is not None and isinstance(tool.raw.get("args_dicts"), list):
        return tool.raw["args_dicts"]
    required = set(tool.required)
    out = []
    for name, prop in tool.properties.items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        kind = next((k for k in kind if k != "null"), None) if isinstance(kind, list) else kind
        out.append({"name": name, "type": _JSON_TO_PY.get(str(kind), "None"), "required": name in required,
                    "default": None})
    return out


def stub_signature(tool: Tool) -> inspect.Signature:
    """The signature of NexusRaven's stub for `tool`: required arguments first, then optional ones."""
    params = []
    for arg in sorted(_args_dicts(tool), key=lambda a: bool(a.get("required")), reverse=True):
        kind = str(arg.get("type", "None"))
        annotation = inspect.Parameter.empty if kind == "None" else _ANNOTATIONS.get(kind, _TypeName(kind))
        default = inspect.Parameter.empty if arg.get("required") else _default(arg.get("default"))
        params.append(inspect.Parameter(arg["name"], inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                                        annotation=annotation))
    return inspect.Signature(params)


def option_block(tool: Tool) -> str:
    """One tool as NexusRaven shows it: its stub's signature and its docstring."""
    docstring = str(tool.raw.get("description", "")) if tool.raw is not None else tool.description
    return OPTION.format(signature=f"{tool.name}{stub_signature(tool)}", docstring=docstring.strip())


def py_literal(value: Any) -> str:
    """`value` as a Python literal that `ast.literal_eval` reads back (strings double-quoted)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's string escapes are all valid Python escapes
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(py_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_literal(k)}: {py_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as a Python literal")


@dataclass(frozen=True)
class PyCall:
    """One Python call read from text: name, positional and keyword literals, and where it lies."""

    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    start: int
    end: int


# The name touches its "(": prose such as "Sure (see below)" is not read as a call.
_CALL_START = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\(")
# Bounds that keep degenerate outputs (a model repeating "f(f(f(...") cheap to read.
_MAX_STARTS, _MAX_CALL_CHARS = 64, 8000
_TRIPLE_QUOTES = ("'''", '"""')


def _closing_paren(text: str, opening: int) -> int | None:
    """Index of the ")" closing the "(" at `opening`, skipping strings and comments; None if unclosed."""
    depth, i, quote = 0, opening, ""
    stop = min(len(text), opening + _MAX_CALL_CHARS)
    while i < stop:
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if text.startswith(quote, i):
                i, quote = i + len(quote), ""
                continue
            if ch == "\n" and len(quote) == 1:
                return None  # an unterminated one-line string
        elif ch in "'\"":
            quote = text[i: i + 3] if text[i: i + 3] in _TRIPLE_QUOTES else ch
            i += len(quote)
            continue
        elif ch == "#":
            newline = text.find("\n", i)
            i = stop if newline < 0 else newline
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _locate(text: str, pos: int = 0) -> tuple[ast.Call, int, int] | None:
    """The first `name(...)` at or after `pos` that is a complete call, as (node, start, end)."""
    for _ in range(_MAX_STARTS):
        match = _CALL_START.search(text, pos)
        if match is None:
            return None
        pos = match.end()
        close = _closing_paren(text, match.end() - 1)
        if close is None:
            continue
        try:
            node = ast.parse(text[match.start(): close + 1], mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: a NUL byte (< 3.12)
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return node, match.start(), close + 1
    return None


def _literal(node: ast.AST, what: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise AnswerParseError("non_literal", f"{what} is not a Python literal") from None


def _to_pycall(node: ast.Call, start: int, end: int) -> PyCall:
    name = node.func.id  # type: ignore[attr-defined]  # _locate only returns calls of plain names
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise AnswerParseError("malformed_call", f"{name} unpacks **arguments")
        kwargs[kw.arg] = _literal(kw.value, f"{name}({kw.arg}=...)")
    args = []
    for i, arg in enumerate(node.args):
        if isinstance(arg, ast.Starred):
            raise AnswerParseError("malformed_call", f"{name} unpacks *arguments")
        args.append(_literal(arg, f"{name} argument {i + 1}"))
    return PyCall(name, args, kwargs, start, end)


def find_call(text: str, pos: int = 0) -> PyCall:
    """The first Python call of a plain function name in `text` (prose or code fences around it skipped)."""
    found = _locate(text, pos)
    if found is None:
        raise AnswerParseError("no_call", "no Python call `name(argument=value, ...)` in the output")
    return _to_pycall(*found)


def whole_output_call(text: str) -> PyCall:
    """The call the official evaluator reads: the whole output parsed as Python source, its first statement's value.

    Mirrors `parse_function_call_to_name_and_args` in raven/utils.py of nexusflowai/NexusRaven (commit
    f32882763bb3e220722883821919c14abdd3d156), which the evaluator (raven/eval/evaluator.py, `Evaluator.run`, read at
    commit 1658e93f92ac72b8d766bd8dd25321f5e2c5d707)
    applies to the model's raw string: `ast.parse(output).body[0].value` must be a call of a plain name, its
    keyword and positional values literals. So text before the call (prose, "Initial Answer:"), a code fence, a
    second line that is not Python ("Reflection: ...") or an indented first line is a syntax error there, and
    wrong; a statement whose value is the call (`result = f(x=1)`) and later valid statements are accepted, as
    they are officially.
    """
    try:
        body = ast.parse(text).body
    except SyntaxError as e:  # IndentationError included
        raise AnswerParseError("not_python", f"the whole output is not Python source ({e.msg}, line {e.lineno}); "
                                             "the official evaluator parses all of it") from None
    except (ValueError, RecursionError, MemoryError):  # a NUL byte; nesting too deep for the parser
        raise AnswerParseError("not_python", "the whole output is not Python source the parser reads") from None
    if not body:
        raise AnswerParseError("no_call", "the output holds no Python statement")
    node = getattr(body[0], "value", None)
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise AnswerParseError("no_call", "the output's first Python statement is not a call of a plain "
                                          "function name")
    return _to_pycall(node, 0, len(text))


class NexusRavenFormat(AnswerFormat):
    """One Python call with keyword arguments, as NexusRaven's references write it: `lookup(host="x.org")`.

    `name_prefix` reads the functions of the last prompt `messages` built (the gate scores candidates right
    after building the task's prompt), to tell names that extend one another apart.
    """

    name = "nexusraven"

    def messages(self, task: Task, demos: Sequence[tuple[str, str]] = ()) -> Messages:
        """NexusRaven's prompt: the OPTION blocks, then the query. With demonstrations, the OPTION blocks
        open the first user turn and each later turn holds only its query (a chat shows the tools once)."""
        turns = list(task.messages[:1]) if task.messages and task.messages[0]["role"] == "system" else []
        options = "".join(option_block(t) for t in task.tools)
        queries = [*(q for q, _ in demos), task.query]
        for i, query in enumerate(queries):
            text = QUERY.format(query=query)
            if i == 0:
                text = f"{options}\n{text}".strip()
            # RavenPromptTemplate un-doubles braces after formatting (a no-op on plain text).
            text = text.replace("{{", "{").replace("}}", "}")
            turns.append({"role": "user", "content": text})
            if i < len(demos):
                turns.append({"role": "assistant", "content": demos[i][1]})
        return turns

    def instruction(self) -> str:
        return ('Answer with only the Python call of one of the functions, with keyword arguments and '
                'literal values, like get_weather(city="Paris", days=3).')

    def render(self, calls: list[Call], tools: Sequence[Tool] = ()) -> str:
        return "\n".join(f"{c.name}({', '.join(f'{k}={py_literal(v)}' for k, v in c.arguments.items())})"
                         for c in calls)

    def name_prefix(self, name: str, tools: Sequence[Tool]) -> str:
        # The bare name ends on a pre-token boundary when it ends in a letter or digit: the "(" after it
        # starts the next pre-token ("(city" is one in Qwen2's split), so ending at "(" would score a token
        # the model never writes. When another shown function's name extends this one (`get` /
        # `get_weather`), the bare name would also begin the other's answer, so the candidate goes on through
        # the "(" pre-token, guessing the first argument written: the stub's first (required ones lead).
        shown = {t.name: t for t in tools}
        tool = shown.get(name)
        extended = any(other != name and other.startswith(name) for other in shown)
        params = list(stub_signature(tool).parameters) if tool is not None else []
        text = f"{name}({params[0]}=" if params else f"{name}()"
        if not extended and name[-1:].isalnum():
            return name
        return text[: boundary_at_or_after(text, len(name) + 1)]

    def parse(self, text: str) -> list[Call]:
        first = find_call(text)
        calls, pos = [first], first.end
        while (more := re.match(r"\s*(?=[A-Za-z_])", text[pos:])) is not None:
            found = _locate(text, pos + more.end())
            if found is None or found[1] != pos + more.end():
                break
            nxt = _to_pycall(*found)
            calls.append(nxt)
            pos = nxt.end
        out = []
        for call in calls:
            if call.args:
                raise AnswerParseError("positional_argument",
                                       f"{call.name} is given positional arguments; name them all")
            out.append(Call(call.name, call.kwargs))
        return out

    def first_call(self, text: str) -> str | None:
        found = _locate(text)
        return None if found is None else text[: boundary_at_or_after(text, found[2])]


# `get_format(NAME)` imports this module the first time a task names the format.
register_format(NexusRavenFormat())
