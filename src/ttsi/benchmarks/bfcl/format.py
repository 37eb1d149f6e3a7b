"""The BFCL answer format: BFCL's prompting-mode system prompt and its Python call list `[f(a=1, b='x')]`.

The prompt reproduces what BFCL v3 sends a prompting (non-FC) model: each function's description gets the
Python hint (`func_doc_language_specific_pre_processing`), the function list is put into `DEFAULT_SYSTEM_PROMPT`
as the Python repr of the list (`str.format` of a list, as upstream does), and that system turn goes first, with any
system turn of the question appended after a blank line (`system_prompt_pre_processing_chat_model`).

`parse` is the official decoder (`default_decode_ast_prompting` + `ast_parse` + `resolve_ast_by_type`), quirks
included: positional arguments are dropped, a bare name reads as its own text, a unary operator on a constant
negates it. The one difference: a binary operation (`1+2`) is evaluated by a small arithmetic evaluator over
literals, where upstream calls `eval` on it; expressions that need names or calls (`len('a')+1`), or that would
build enormous values, fail to parse here.
"""

from __future__ import annotations

import ast
import copy
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

from ttsi.formats import register_format
from ttsi.formats.base import AnswerFormat, AnswerParseError, Messages, balanced_end, with_system
from ttsi.formats.pretokens import boundary_at_or_after
from ttsi.task import Call, Task, Tool

# Verbatim from berkeley-function-call-leaderboard/bfcl_eval/constants/default_prompts.py (DEFAULT_SYSTEM_PROMPT =
# DEFAULT_SYSTEM_PROMPT_WITHOUT_FUNC_DOC + the function-list suffix), repository ShishirPatil/gorilla, read at
# commit 6199b2429cdcb943b1fddfbb6c5ce6dc39475113 (the text BFCL v3 used), Apache-2.0.
SYSTEM_PROMPT_HEAD = (
    "You are an expert in composing functions. You are given a question and a set of possible functions. Based on "
    "the question, you will need to make one or more function/tool calls to achieve the purpose.\n"
    "If none of the functions can be used, point it out. If the given question lacks the parameters required by the "
    "function, also point it out.\n"
    "You should only return the function calls in your response.\n\n"
    "If you decide to invoke any of the function(s), you MUST put it in the format of [func_name1(params_name1="
    "params_value1, params_name2=params_value2...), func_name2(params)]\n"
    "You SHOULD NOT include any other text in the response.\n\n"
    "At each turn, you should try your best to complete the tasks requested by the user within the current turn. "
    "Continue to output functions to call until you have fulfilled the user's request to the best of your ability. "
    "Once you have no more functions to call, the system will consider the current turn complete and proceed to the "
    "next turn or task.\n"
    "\nHere is a list of functions in JSON format that you can invoke.\n"
)
SYSTEM_PROMPT_TAIL = "\n\n"
# bfcl_eval/model_handler/utils.py::_get_language_specific_hint, for every non-Java, non-JavaScript category.
PYTHON_HINT = " Note that the provided function is in Python 3 syntax."


def native_function(tool: Tool) -> dict[str, Any]:
    """The BFCL function dict of a tool: its own `raw`, or one built from the JSON schema."""
    if tool.raw is not None:
        return tool.raw
    return {"name": tool.name, "description": tool.description, "parameters": tool.parameters}


def system_prompt(tools: Sequence[Tool]) -> str:
    """BFCL's prompting-mode system prompt for these tools."""
    functions = []
    for tool in tools:
        fn = copy.deepcopy(native_function(tool))
        fn["description"] = str(fn.get("description", "")) + PYTHON_HINT
        functions.append(fn)
    return f"{SYSTEM_PROMPT_HEAD}{functions}{SYSTEM_PROMPT_TAIL}"


# ---- rendering -------------------------------------------------------------------------------------------------

def literal(value: Any) -> str:
    """`value` as a Python literal that `parse` reads back to the same value."""
    if isinstance(value, float) and math.isinf(value):
        return "1e309" if value > 0 else "-1e309"  # `inf` would read back as the string 'inf'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def render_call(call: Call) -> str:
    return f"{call.name}(" + ", ".join(f"{k}={literal(v)}" for k, v in call.arguments.items()) + ")"


# ---- the official decoder --------------------------------------------------------------------------------------

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow, ast.LShift: operator.lshift,
    ast.RShift: operator.rshift, ast.BitOr: operator.or_, ast.BitAnd: operator.and_, ast.BitXor: operator.xor}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_,
                                            ast.Invert: operator.invert}
_MAX_SIZE = 1_000_000  # cap on result bits and repeated sequences, so a hostile output cannot exhaust memory


def _arith(node: ast.AST) -> Any:
    """What Python's `eval` gives for a literal arithmetic expression (the official decoder evals BinOps)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_arith(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_arith(k): _arith(v) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_arith(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _arith(node.left), _arith(node.right)
        for a, b in ((left, right), (right, left)):
            big_repeat = isinstance(node.op, ast.Mult) and isinstance(a, (str, bytes, list, tuple))
            if big_repeat and isinstance(b, int) and b * max(len(a), 1) > _MAX_SIZE:
                raise ValueError("repetition too large")
        if isinstance(node.op, (ast.Pow, ast.LShift)) and isinstance(left, int) and isinstance(right, int):
            width = max(abs(left).bit_length(), 1)
            if (abs(right) * width if isinstance(node.op, ast.Pow) else abs(right) + width) > _MAX_SIZE:
                raise ValueError("result too large")
        return _BINOPS[type(node.op)](left, right)
    raise ValueError(f"cannot evaluate {type(node).__name__}")


def _value(node: ast.AST) -> Any:
    """resolve_ast_by_type: one argument value."""
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.UnaryOp):
        # Upstream reads `-operand.value` whatever the operator is, so `+5` and `not 5` also give -5.
        if not isinstance(node.operand, ast.Constant):
            raise ValueError("unary operator on a non-constant")
        return -node.operand.value
    if isinstance(node, ast.List):
        return [_value(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        if None in node.keys:
            raise ValueError("dict unpacking")
        return {_value(k): _value(v) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    if isinstance(node, ast.BinOp):
        return _arith(node)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        if not node.keywords:
            return ast.unparse(node)
        name, args = _call(node)
        return {name: args}
    if isinstance(node, ast.Tuple):
        return tuple(_value(e) for e in node.elts)
    if isinstance(node, ast.Subscript):
        return ast.unparse(node.value) + "[" + ast.unparse(node.slice) + "]"
    raise ValueError(f"unsupported value {type(node).__name__}")


def _call(node: ast.Call) -> tuple[str, dict[str, Any]]:
    """resolve_ast_call: the dotted name and the keyword arguments (positional ones are ignored upstream)."""
    parts, func = [], node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    # `**kwargs` has no keyword name; upstream keys it None, and the checker rejects it as an unknown parameter.
    return ".".join(reversed(parts)), {kw.arg if kw.arg is not None else "**": _value(kw.value)
                                       for kw in node.keywords}


def decode(text: str) -> list[Call]:
    """default_decode_ast_prompting + ast_parse: the official reading of an output; raises AnswerParseError."""
    text = text.strip("`\n ")
    if not text.startswith("["):
        text = "[" + text
    if not text.endswith("]"):
        text = text + "]"
    try:
        body = ast.parse(text.strip().strip("'"), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise AnswerParseError("syntax_error", f"not a Python list of calls ({type(e).__name__})") from None
    elements = [body] if isinstance(body, ast.Call) else getattr(body, "elts", None)
    if elements is None:
        raise AnswerParseError("not_a_call", f"the output reads as a {type(body).__name__}, not a list of calls")
    calls = []
    for i, element in enumerate(elements):
        if not isinstance(element, ast.Call):
            raise AnswerParseError("not_a_call", f"item {i} is a {type(element).__name__}, not a function call")
        try:
            calls.append(Call(*_call(element)))
        except (ValueError, TypeError, ArithmeticError, RecursionError, MemoryError) as e:
            raise AnswerParseError("unsupported_value", f"item {i}: {e}") from None
    return calls


# ---- token boundaries ------------------------------------------------------------------------------------------

def _pretoken_head(text: str) -> str:
    """The first pre-token of `text` (starting with punctuation, like `(`): `(` + letters, or a punct run."""
    return text[: boundary_at_or_after(text, 1)]


class BFCLFormat(AnswerFormat):
    """`[func(param=value, ...), ...]` under BFCL's prompting-mode system prompt."""

    name = "bfcl"

    def messages(self, task: Task, demos: Sequence[tuple[str, str]] = ()) -> Messages:
        return with_system(system_prompt(task.tools), task, demos, task_system_first=False, fmt=self)

    def instruction(self) -> str:
        return ("Answer with only the function calls, written as a Python list like "
                "[func_name1(params_name1=params_value1, params_name2=params_value2), func_name2(params)].")

    def render(self, calls: list[Call], tools: Sequence[Tool] = ()) -> str:
        return "[" + ", ".join(render_call(c) for c in calls) + "]"

    def parse(self, text: str) -> list[Call]:
        return decode(text)

    def name_prefix(self, name: str, tools: Sequence[Tool]) -> str:
        # `[name` ends on a pre-token boundary: the `(` after it starts the next pre-token (`(city` is one, in the
        # Qwen2 / Llama 3 split), so ending at `(` would score a token the model never writes. When another shown
        # function's name extends this one (`get` / `get_weather`), `[get` would also begin the other's answer, so
        # the candidate goes on through the `(` pre-token, guessing the first parameter written: the first required
        # one (else the first listed).
        shown = {t.name: native_function(t) for t in tools}
        if name not in shown or not any(o != name and o.startswith(name) for o in shown):
            return f"[{name}"
        params = shown[name].get("parameters")
        params = params if isinstance(params, dict) else {}
        listed, required = list(params.get("properties") or {}), params.get("required") or []
        first = next((p for p in listed if p in required), listed[0] if listed else None)
        return f"[{name}" + _pretoken_head(f"({first}=" if first else "()]")

    def first_call(self, text: str) -> str | None:
        start = text.find("(")
        end = balanced_end(text, start, quotes="'\"", pairs="()[]{}") if start >= 0 else None
        if end is not None and text[end] != ")":
            end = None
        if end is None:
            return None
        return text[: boundary_at_or_after(text, end + 1)]  # through `')]` / `),` and its newlines


# `get_format(NAME)` imports this module the first time a task names the format.
register_format(BFCLFormat())
