"""Safe exact arithmetic for checking worked math solutions (GSM8K style: `<<48/2=24>>24 ... #### 72`).

Model text is never run through Python's `eval` or `exec`. An expression is screened (length, characters, nesting),
parsed with `ast` in mode "eval", and walked: only decimal numbers, unary + and -, binary + - * / // % ** and
parentheses are evaluated, in exact rational arithmetic (`fractions.Fraction`: 0.1 + 0.2 == 0.3). Everything else is
refused with an `ArithError` whose `reason` is a short snake_case word. Limits keep a hostile expression fast:
at most `MAX_CHARS` characters and `MAX_DEPTH` levels of nesting, |exponent| <= `MAX_EXPONENT`, and no value with a
numerator or denominator over `MAX_BITS` bits (about 300 decimal digits).

A written result matches a computed value when it equals the value rounded to the decimals written: |written -
exact| <= half a unit in the written result's last place (10/3 = 3.33 and 10/3 = 3.3333 pass, 10/3 = 3.34 does
not); a written integer must be exact. Every annotation of GSM8K's 7,473 training solutions recomputes exactly.
"""

from __future__ import annotations

import ast
import math
import re
from fractions import Fraction

MAX_CHARS = 200
MAX_DEPTH = 50
MAX_EXPONENT = 100
MAX_BITS = 1000  # 2**1000 has 302 decimal digits
MAX_ROOT = 10  # x ** (p/q) is evaluated when q <= MAX_ROOT and the root is exact (4 ** 0.5 = 2)

_ALLOWED = frozenset("0123456789.,+-*/%() \t")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))", re.ASCII)  # 1,000,000 -> 1000000; a comma anywhere else is refused
_LEADING_ZEROS = re.compile(r"(?<![\d.])0+(?=\d)", re.ASCII)  # 007 -> 7 (Python's parser refuses leading zeros)
_DECIMAL = re.compile(r"\d+(?:\.\d*)?|\.\d+", re.ASCII)  # \d: ASCII digits only, here and below
_DIGITS = r"(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"  # 1,000.5 but not the comma in "300, x"
_NUMBER = re.compile(r"-?(?:\$ ?)?" + _DIGITS, re.ASCII)  # no unbounded run before the digits: linear time
_ANNOTATION = re.compile(r"<<([^<>]*)>>")
_FINAL = re.compile(r"####\s*(.*)")
_THE_ANSWER = re.compile(r"the (?:final )?answer is\s*:?\s*(.*)", re.IGNORECASE)
# A plain-text step: an arithmetic span (digits, operators, parentheses, $) before "=", and the number after it.
_SPAN = frozenset("0123456789$.,()+-*/ ")
_RESULT = re.compile(r" {0,3}(\$? ?-?" + _DIGITS + ")", re.ASCII)
_OPERATOR = re.compile(r"[+\-*/]")
_PROSE_SYMBOLS = str.maketrans({"\u2212": "-", "\u00d7": "*", "\u00f7": "/"})  # minus, times and divide signs
_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}


class ArithError(ValueError):
    """An expression that is not evaluated; `reason` is a short snake_case word, the message says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def evaluate(expr: str) -> Fraction:
    """The exact value of an arithmetic expression; ArithError(reason) for anything else or anything too big."""
    if not isinstance(expr, str):
        raise ArithError("bad_expression", f"not text: {type(expr).__name__}")
    if len(expr) > MAX_CHARS:
        raise ArithError("too_long", f"{len(expr)} characters, at most {MAX_CHARS}")
    bad = next((ch for ch in expr if ch not in _ALLOWED), None)
    if bad is not None:
        raise ArithError("bad_character", f"{bad!r} is not part of arithmetic")
    text = _LEADING_ZEROS.sub("", _THOUSANDS.sub("", expr.strip()))
    if "," in text:
        raise ArithError("bad_number", "a comma that does not separate thousands")
    depth = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if depth > MAX_DEPTH:
            raise ArithError("too_deep", f"more than {MAX_DEPTH} nested parentheses")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        raise ArithError("syntax", getattr(e, "msg", None) or type(e).__name__) from None
    return _value(tree.body, text, 0)


def _value(node: ast.AST, text: str, depth: int) -> Fraction:
    if depth > MAX_DEPTH:
        raise ArithError("too_deep", f"more than {MAX_DEPTH} nested operations")
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        literal = ast.get_source_segment(text, node) or ""
        if not _DECIMAL.fullmatch(literal):
            raise ArithError("bad_number", f"{literal!r} is not a decimal number")
        return _sized(Fraction(literal))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        operand = _value(node.operand, text, depth + 1)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left, text, depth + 1), _value(node.right, text, depth + 1)
        return _sized(_apply(node.op, left, right))
    raise ArithError("not_arithmetic", f"{type(node).__name__} is not allowed")


def _apply(op: ast.operator, a: Fraction, b: Fraction) -> Fraction:
    if isinstance(op, ast.Add):
        return a + b
    if isinstance(op, ast.Sub):
        return a - b
    if isinstance(op, ast.Mult):
        return a * b
    if isinstance(op, ast.Pow):
        return _power(a, b)
    if b == 0:
        raise ArithError("division_by_zero", f"{_BINARY[type(op)]} by zero")
    if isinstance(op, ast.Div):
        return a / b
    return Fraction(a // b) if isinstance(op, ast.FloorDiv) else a % b


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if abs(exponent) > MAX_EXPONENT:
        raise ArithError("exponent_too_large", f"|exponent| is at most {MAX_EXPONENT}")
    if exponent.denominator != 1:  # an exact small root, or nothing
        q = exponent.denominator
        root = _root(base, q) if q <= MAX_ROOT and base >= 0 else None
        if root is None:
            raise ArithError("non_integer_power", f"{base} ** {exponent} is not an exact rational number")
        base, exponent = root, Fraction(exponent.numerator)
    p = int(exponent)
    if base == 0 and p < 0:
        raise ArithError("division_by_zero", "0 to a negative power")
    bits = max(base.numerator.bit_length(), base.denominator.bit_length())
    if (abs(p) - 1) * max(bits - 1, 0) > MAX_BITS:  # would be too large: refused before it is computed
        raise ArithError("too_large", f"the result has more than about {MAX_BITS * 3 // 10} digits")
    return base**p


def _root(x: Fraction, q: int) -> Fraction | None:
    """The exact q-th root of x >= 0, or None."""
    parts = []
    for n in (x.numerator, x.denominator):
        r = round(n ** (1 / q)) if n.bit_length() < 1000 else None
        found = next((c for c in (r - 1, r, r + 1) if c >= 0 and c**q == n), None) if r is not None else None
        if found is None:
            return None
        parts.append(found)
    return Fraction(parts[0], parts[1])


def _sized(x: Fraction) -> Fraction:
    if x.numerator.bit_length() > MAX_BITS or x.denominator.bit_length() > MAX_BITS:
        raise ArithError("too_large", f"a value with more than about {MAX_BITS * 3 // 10} digits")
    return x


# ---- worked solutions ----------------------------------------------------------------------------------------------


def parse_number(text: str) -> Fraction | None:
    """A written number ("1,000", "$0.5", "-3", "72.") as an exact value, or None."""
    cleaned = text.strip().replace("$", "").replace(" ", "").rstrip(".")
    cleaned = _THOUSANDS.sub("", cleaned)
    sign, body = (-1 if cleaned[0] == "-" else 1, cleaned[1:]) if cleaned[:1] in ("+", "-") else (1, cleaned)
    if len(body) > MAX_CHARS or not _DECIMAL.fullmatch(body):
        return None
    return sign * Fraction(body)


def matches(written: str, computed: Fraction) -> bool:
    """Whether a written result equals `computed` rounded to the decimals written (see the module docstring)."""
    value = parse_number(written)
    if value is None or value == computed:
        return value is not None
    cleaned = written.strip().rstrip(".")
    decimals = len(cleaned.split(".", 1)[1]) if "." in cleaned else 0
    return decimals > 0 and abs(value - computed) <= Fraction(1, 2 * 10**decimals)


def check_annotations(solution: str) -> list[tuple[str, str, Fraction | None, bool]]:
    """(expression, written result, computed value or None when refused, ok) for every `<<expr=result>>`."""
    out = []
    for inner in _ANNOTATION.findall(solution):
        expr, eq, written = inner.rpartition("=")
        computed: Fraction | None
        try:
            computed = evaluate(expr) if eq else None
        except ArithError:
            computed = None
        ok = computed is not None and matches(written, computed)
        out.append((expr if eq else inner, written, computed, ok))
    return out


def plain_steps(text: str) -> list[tuple[str, str, Fraction]]:
    """(expression, written result, value) for every step written without an annotation ("so 20/4 = $5") whose
    expression has an operator and recomputes. A step that does not recompute is ignored, never rejected: prose
    such as "25% of 40 = 10" is not arithmetic."""
    text = text.translate(_PROSE_SYMBOLS)
    out = []
    for equals in re.finditer("=", text):  # a walk left from each "=", at most MAX_CHARS: linear in the text
        end = start = equals.start()
        while start > 0 and text[start - 1] in _SPAN and end - start <= MAX_CHARS:
            start -= 1
        result = _RESULT.match(text, end + 1)
        if result is None or end - start > MAX_CHARS:
            continue
        expr = text[start:end].replace("$", "").strip(" ,.")
        if not _OPERATOR.search(expr.lstrip("+-")):
            continue
        try:
            value = evaluate(expr)
        except ArithError:
            continue
        if matches(result.group(1), value):
            out.append((expr, _clean(result.group(1)), value))
    return out


def final_answer(solution: str) -> str | None:
    """The final answer, by GSM8K's extraction rule: the number after the last `####`, else after "The answer is",
    else the last number in the text; commas, `$` and a trailing period stripped. None when there is no number."""
    for pattern in (_FINAL, _THE_ANSWER):
        found = pattern.findall(solution)
        if found:
            number = _NUMBER.search(found[-1])
            return _clean(number.group()) if number else None
    numbers = _NUMBER.findall(_ANNOTATION.sub(" ", solution))  # a number inside an annotation is not written out
    return _clean(numbers[-1]) if numbers else None


def _clean(number: str) -> str:
    return _THOUSANDS.sub("", number.replace("$", "").replace(" ", "")).rstrip(".")


def _supports(final: Fraction, written: str, value: Fraction) -> bool:
    """Whether a step's result supports the final answer: equal, or rounded up or down to a whole number (GSM8K
    rounds counts: 7.5 cans -> 8)."""
    if final in (value, parse_number(written)):
        return True
    return value.denominator != 1 and final.denominator == 1 and math.floor(value) <= final <= math.ceil(value)


def check_solution(solution: str, answer: str | None = None,
                   require_annotation: bool = True) -> tuple[bool, str | None]:
    """(ok, reason) for a worked solution: every annotation recomputes, the final answer is the result of the last
    step, and (given `answer`) equals `answer` numerically. Reasons: no_annotation, bad_expression (an annotation
    that is not arithmetic or cannot be evaluated), wrong_step (one that computes otherwise), no_final_answer,
    final_mismatch, answer_mismatch.

    The last step is the last annotation, or a plain-text step after it ("$43 - $18 = $25": gold solutions leave
    about 5% of final steps unannotated). `require_annotation`: a solution without annotations is rejected as
    no_annotation; else its plain-text steps, if any, must support the final answer."""
    steps = check_annotations(solution)
    if not steps and require_annotation:
        return False, "no_annotation"
    for _, _, computed, ok in steps:
        if not ok:
            return False, "bad_expression" if computed is None else "wrong_step"
    final = final_answer(solution)
    value = None if final is None else parse_number(final)
    if value is None:
        return False, "no_final_answer"
    tail = solution.split("####")[0]
    last = [m.end() for m in _ANNOTATION.finditer(tail)]
    candidates = [(w, v) for _, w, v, _ in steps[-1:] if v is not None]
    candidates += [(w, v) for _, w, v in plain_steps(_ANNOTATION.sub(" ", tail[last[-1] if last else 0:]))]
    if (steps or candidates) and not any(_supports(value, w, v) for w, v in candidates):
        return False, "final_mismatch"
    if answer is not None and value != parse_number(answer):
        return False, "answer_mismatch"
    return True, None
