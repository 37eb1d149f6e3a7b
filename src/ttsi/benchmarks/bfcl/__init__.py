"""BFCL v3 (Berkeley Function Calling Leaderboard), single-turn Python categories, scored by its AST checker.

Data: `bfcl_v3/BFCL_v3_<category>.json` and `bfcl_v3/possible_answer/BFCL_v3_<category>.json` (JSON Lines) from
ShishirPatil/gorilla at commit cd9429cc (the last v3 release), Apache-2.0. Scoring follows
`bfcl_eval/eval_checker/ast_eval/ast_checker.py` and `eval_runner.py` (`ast_file_runner`, `relevance_file_runner`)
for the Python language with a prompting model (function names compared as written, no `.` -> `_` mapping).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from ttsi import jsonio
from ttsi.benchmarks.base import Benchmark, ItemScore, register, require
from ttsi.benchmarks.bfcl.format import BFCLFormat, native_function
from ttsi.errors import TaskError
from ttsi.formats.base import AnswerParseError
from ttsi.task import Call, Task, Tool

FOLDER = "bfcl_v3"
AST_CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "live_simple", "live_multiple",
                  "live_parallel", "live_parallel_multiple")
RELEVANCE_CATEGORIES = ("irrelevance", "live_irrelevance", "live_relevance")  # no possible_answer file
PY_TYPES: dict[str, type] = {"string": str, "integer": int, "float": float, "boolean": bool, "array": list,
                             "tuple": list, "dict": dict, "any": str}
_FORMAT = BFCLFormat()


class Miss(Exception):
    """The checker's verdict against an output: a REASONS code and a short explanation."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def standardize(text: str) -> str:
    """standardize_string: drop spaces and `,./-_*^`, lowercase, `'` -> `"`."""
    return re.sub(r"[ ,./\-_*^]", "", text).lower().replace("'", '"')


# ---- the AST checker -------------------------------------------------------------------------------------------

def _answer_type(possible: Any) -> type | None:
    """get_possible_answer_type: the type of the first acceptable value that is not "" (omission)."""
    return next((type(a) for a in possible if a != ""), None) if isinstance(possible, list) else None


def _type_check(param: str, value: Any, possible: list[Any], doc_type: str, nested: type | None) -> bool:
    """type_checker: raise Miss on a wrong type; True when the gold is a 'variable' (gold type != doc type)."""
    expected, answer_type = PY_TYPES[doc_type], _answer_type(possible)
    is_variable = answer_type is not None and answer_type != expected
    if type(value) is expected:
        if nested is None:
            return is_variable
        for item in possible:  # one acceptable list whose item types all fit (non-lists pass, as upstream)
            if not isinstance(item, list) or all(
                    type(v) is nested or type(v) is _answer_type(item) for v in value):
                return is_variable
        raise Miss("wrong_type", f"{param!r}: expected {doc_type} of {nested.__name__}, got {value!r}")
    if answer_type is not None and type(value) is answer_type:
        return True
    raise Miss("wrong_type", f"{param!r}: expected {doc_type}, got {type(value).__name__} {value!r}")


def _standard(value: Any) -> Any:
    return standardize(value) if type(value) is str else value


def _check_dict(param: str, value: dict[Any, Any], possibles: list[Any]) -> None:
    """dict_checker: some acceptable dict allows every given key's value and misses only optional keys."""
    problem = f"{param!r}: no acceptable dict"
    for possible in possibles:
        if possible == "":
            continue
        problem = ""
        for key, item in value.items():
            if key not in possible:
                problem = f"{param!r}: unexpected dict key {key!r}"
                break
            if _standard(item) not in [_standard(a) for a in possible[key]]:
                problem = f"{param!r}: invalid value {item!r} for dict key {key!r}"
                break
        missing = [k for k, vals in possible.items() if k not in value and "" not in vals]
        if missing and not problem:
            problem = f"{param!r}: missing dict key {missing[0]!r}"
        if not problem:
            return
    raise Miss("wrong_value", problem)


def _check_list_of_dicts(param: str, value: list[Any], possibles: list[Any]) -> None:
    """list_dict_checker: same length as an acceptable list, each dict checked in order."""
    problem = f"{param!r}: wrong number of dicts in the list"
    for possible in possibles:
        if len(value) != len(possible):
            problem = f"{param!r}: wrong number of dicts in the list"
            continue
        try:
            for item, acceptable in zip(value, possible, strict=True):
                if not isinstance(item, dict):
                    raise Miss("wrong_value", f"{param!r}: list item {item!r} is not a dict")
                _check_dict(param, item, [acceptable])
            return
        except Miss as miss:
            problem = miss.detail
    raise Miss("wrong_value", problem)


def _check_value(param: str, value: Any, possible: list[Any], expected: type, nested: type | None) -> None:
    if expected is dict:
        _check_dict(param, value, possible)
    elif expected is list and nested is dict:
        _check_list_of_dicts(param, value, possible)
    elif expected is str:
        if standardize(value) not in [standardize(a) for a in possible if type(a) is str]:
            raise Miss("wrong_value", f"{param!r}: {value!r} is not one of {possible} (case-insensitive)")
    elif expected is list:
        given = [_standard(v) for v in value]
        if given not in [[_standard(v) for v in a] for a in possible if isinstance(a, (list, str))]:
            raise Miss("wrong_value", f"{param!r}: {value!r} is not one of {possible}")
    elif value not in possible:
        raise Miss("wrong_value", f"{param!r}: {value!r} is not one of {possible}")


def check_call(function: dict[str, Any], call: Call, gold: dict[str, dict[str, list[Any]]]) -> None:
    """simple_function_checker: one call against one gold call and the function's doc; raises Miss."""
    acceptable = next(iter(gold.values()))
    name, details = function["name"], function["parameters"]["properties"]
    if call.name != name:
        raise Miss("wrong_function", f"called {call.name!r}, expected {name!r}")
    for param in function["parameters"]["required"]:
        if param not in call.arguments:
            raise Miss("missing_argument", f"missing required parameter {param!r}")
    for param, value in call.arguments.items():
        if param not in details or param not in acceptable:
            raise Miss("unexpected_argument", f"unexpected parameter {param!r}")
        doc_type = details[param]["type"]
        nested = PY_TYPES[details[param]["items"]["type"]] if doc_type in ("array", "tuple") else None
        if doc_type == "tuple" and type(value) is tuple:
            value = list(value)
        if doc_type == "float" and type(value) is int:  # Python converts an int where a float is expected
            value = float(value)
        if _type_check(param, value, acceptable[param], doc_type, nested):
            if value not in acceptable[param]:  # a 'variable' gold: compared as is
                raise Miss("wrong_value", f"{param!r}: {value!r} is not one of {acceptable[param]}")
        else:
            _check_value(param, value, acceptable[param], PY_TYPES[doc_type], nested)
    for param, values in acceptable.items():
        if param not in call.arguments and "" not in values:
            raise Miss("missing_argument", f"parameter {param!r} is not optional and was not given")


def _function(functions: list[dict[str, Any]], gold: dict[str, Any]) -> dict[str, Any]:
    name = next(iter(gold))
    found = next((f for f in functions if f["name"] == name), None)
    if found is None:  # upstream's find_description returns None and the checker crashes
        raise KeyError(f"the gold calls {name!r}, which is not among the item's functions")
    return found


def check(category: str, functions: list[dict[str, Any]], calls: list[Call], gold: list[dict[str, Any]]) -> None:
    """ast_checker: route by category and check the decoded calls against the gold; raises Miss."""
    if "parallel" in category:  # any order: each gold call in turn takes the first unused call that passes
        if len(calls) != len(gold):
            raise Miss("wrong_count", f"{len(calls)} calls, expected {len(gold)}")
        used: set[int] = set()
        for i, want in enumerate(gold):
            function, misses = _function(functions, want), []
            for j, call in enumerate(calls):
                if j in used:
                    continue
                try:
                    check_call(function, call, want)
                except Miss as miss:
                    misses.append((call, miss))
                    continue
                used.add(j)
                break
            else:  # report the miss of a call to the right function if there is one
                same = [m for c, m in misses if c.name == function["name"]]
                reason = same[0].reason if same else "wrong_function"
                raise Miss(reason, f"no call matches gold call {i} ({function['name']})"
                           + (f": {same[0].detail}" if same else ""))
        return
    if "multiple" in category:  # the count must equal the gold's (one call), checked against the gold's function
        if len(calls) != len(gold):
            raise Miss("wrong_count", f"{len(calls)} calls, expected {len(gold)}")
        check_call(_function(functions, gold[0]), calls[0], gold[0])
        return
    if len(calls) != 1:
        raise Miss("wrong_count", f"{len(calls)} calls, expected 1")
    check_call(functions[0], calls[0], gold[0])


# ---- loading ---------------------------------------------------------------------------------------------------

def _schema(parameters: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a BFCL parameter dict: top-level "dict" becomes "object"; nested BFCL types stay."""
    return {**parameters, "type": "object", "required": list(parameters.get("required", []))}


def _first(values: Any) -> Any:
    return values[0] if isinstance(values, list) and values else values


def _canonical_dict(acceptable: dict[str, Any]) -> dict[str, Any]:
    return {k: _first(v) for k, v in acceptable.items() if _first(v) != ""}


def canonical_value(value: Any, spec: dict[str, Any]) -> Any:
    """One acceptable value as a literal: dict params hold lists of acceptable values per key, recursively."""
    kind, items = spec.get("type"), spec.get("items") or {}
    if kind == "dict" and isinstance(value, dict) and all(isinstance(v, list) for v in value.values()):
        return _canonical_dict(value)
    if kind in ("array", "tuple") and items.get("type") == "dict" and isinstance(value, list) and all(
            isinstance(d, dict) for d in value):
        return [_canonical_dict(d) for d in value]
    return value


def canonical_calls(category: str, gold: list[dict[str, Any]], functions: list[dict[str, Any]]) -> list[Call]:
    """The gold as calls: each parameter's first acceptable value; a parameter whose first value is "" is left out.

    Two exceptions keep the answer acceptable to the checker: a required parameter whose first value is "" takes
    its first other value ("" itself when there is none, which a string parameter accepts), and a gold parameter
    the function does not document is left out (the checker rejects it). The name is that of the function the
    checker holds the call to: in simple categories the item's only function, whatever the gold calls it
    (simple_363's gold says 'find_closest' for 'restaurant_search.find_closest').
    """
    calls = []
    for item in gold:
        simple = "parallel" not in category and "multiple" not in category
        function = functions[0] if simple else _function(functions, item)
        props, required = function["parameters"]["properties"], function["parameters"].get("required", [])
        arguments = {}
        for param, values in next(iter(item.values())).items():
            value = _first(values)
            if param in required and value == "" and isinstance(values, list):
                value = next((v for v in values if v != ""), "")
            elif value == "" or param not in props:
                continue
            arguments[param] = canonical_value(value, props.get(param, {}))
        calls.append(Call(function["name"], arguments))
    return calls


def _tool(fn: Any, path: Path, where: str) -> Tool:
    ok = isinstance(fn, dict) and isinstance(fn.get("name"), str) and isinstance(fn.get("parameters"), dict)
    require(ok and isinstance(fn["parameters"].get("properties"), dict), path,
            f"{where}: each function to be an object with 'name' and 'parameters' {{'properties': ...}}")
    return Tool(fn["name"], str(fn.get("description", "")), _schema(fn["parameters"]), raw=fn)


def _read_lines(path: Path, expected: str) -> list[tuple[int, Any]]:
    """(line number, row) of a JSON Lines data file; a missing or malformed file names itself and the line."""
    try:
        return jsonio.read_jsonl(path, "data file")
    except TaskError as e:
        raise TaskError(f"{e} (expected {expected})") from None


def _task(row: dict[str, Any], gold: list[Any] | None, category: str, path: Path, line: int) -> Task:
    where = f"item {row['id']} (line {line})"
    turns = row.get("question")
    require(isinstance(turns, list) and bool(turns) and isinstance(turns[0], list) and bool(turns[0]), path,
            f"{where}: 'question' to be a non-empty list of conversations")
    messages = turns[0]
    require(all(isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str) for m in messages), path,
            f"{where}: messages with a 'role' (system, user, assistant) and a 'content' string")
    require(isinstance(row.get("function"), list), path, f"{where}: a 'function' list")
    # Only relevance items may offer no function (4 live_irrelevance items do); the gold calls need theirs.
    require(bool(row["function"]) or category in RELEVANCE_CATEGORIES, path,
            f"{where}: at least one function in 'function' ({category} items are checked against them)")
    tools = [_tool(fn, path, where) for fn in row["function"]]
    functions = [t.raw for t in tools if t.raw is not None]
    answer: list[Call] | None = [] if "irrelevance" in category else None
    if gold is not None:
        answer = canonical_calls(category, gold, functions)
    return Task(id=row["id"], messages=[{"role": m["role"], "content": m["content"]} for m in messages],
                tools=tools, answer=answer, format=BFCLFormat.name,
                meta={"gold": gold if gold is not None else [], "category": category,
                      "live": category.startswith("live_")})


@register
class BFCL(Benchmark):
    """BFCL v3, one split per single-turn Python category; per-category accuracy as the leaderboard reports it."""

    name = "bfcl"
    splits: ClassVar[tuple[str, ...]] = AST_CATEGORIES + RELEVANCE_CATEGORIES
    default_split = "simple"
    license = "Apache-2.0"
    note = ("Official AST checker for Python categories, prompting mode (no '.'->'_' name mapping). Differences: "
            "binary operations in arguments are evaluated over literals only (upstream evals them, so `len('a')+1` "
            "decodes there and fails here); a parallel miss reports the reason of the closest call instead of "
            "'cannot_find_match'; inputs that crash the official checker are scored wrong ('checker_error').")

    def load(self, data_dir: Path, split: str) -> list[Task]:
        if split not in self.splits:
            raise TaskError(f"unknown BFCL split {split!r}; choose one of {', '.join(self.splits)}")
        folder = Path(data_dir) / FOLDER
        path = folder / f"BFCL_v3_{split}.json"
        rows = _read_lines(path, "JSON Lines of {id, question, function}")
        require(bool(rows), path, "at least one item")
        for n, row in rows:
            require(isinstance(row, dict) and isinstance(row.get("id"), str), path,
                    f"line {n} to be an object with an 'id' string")
        golds: dict[str, Any] = {}
        if split in AST_CATEGORIES:
            answer_path = folder / "possible_answer" / path.name
            for n, g in _read_lines(answer_path, "JSON Lines of {id, ground_truth}"):
                require(isinstance(g, dict) and isinstance(g.get("id"), str) and isinstance(g.get("ground_truth"),
                        list) and all(isinstance(c, dict) and len(c) == 1 for c in g["ground_truth"]),
                        answer_path, f"line {n} to be an object {{id, ground_truth: [{{function: {{param: "
                        "[values]}}]}}")
                golds[g["id"]] = g["ground_truth"]
            require({row["id"] for _, row in rows} == set(golds), answer_path,
                    f"one answer for each item of {path.name}")
        tasks = [self._make(row, golds, split, path, n) for n, row in rows]
        require(len({t.id for t in tasks}) == len(tasks), path, "unique ids")
        return tasks

    @staticmethod
    def _make(row: dict[str, Any], golds: dict[str, Any], split: str, path: Path, line: int) -> Task:
        try:
            return _task(row, golds.get(row["id"]) if split in AST_CATEGORIES else None, split, path, line)
        except (KeyError, TypeError, AttributeError, IndexError, StopIteration) as e:
            problem = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise TaskError(f"malformed data file {path}: item {row['id']} (line {line}) has an unexpected shape "
                            f"({type(e).__name__}: {problem})") from None

    def score(self, task: Task, output: str) -> ItemScore:
        category = task.meta.get("category") or task.id.rsplit("_", 1)[0]
        try:
            calls: list[Call] | None = _FORMAT.parse(output)
            error = ""
        except AnswerParseError as e:
            calls, error = None, str(e)
        if category in RELEVANCE_CATEGORIES:
            has_call = bool(calls)
            if "irrelevance" in category:
                return self._verdict(not has_call, "should_abstain", f"{len(calls or [])} call(s) decoded")
            return self._verdict(has_call, "no_call", error or "no call decoded")
        if calls is None:
            return self._verdict(False, "parse_error", error)
        functions = [native_function(t) for t in task.tools]
        try:
            check(category, functions, calls, task.meta["gold"])
        except Miss as miss:
            return self._verdict(False, miss.reason, miss.detail)
        except (KeyError, TypeError, AttributeError, IndexError, StopIteration) as e:
            # checker_error: an output the official checker would crash on (e.g. a list where a dict is due).
            return self._verdict(False, "checker_error", f"{type(e).__name__}: {e}")
        return self._verdict(True)

    @staticmethod
    def _verdict(correct: bool, reason: str = "", detail: str = "") -> ItemScore:
        return ItemScore(correct=correct, reason=None if correct else reason, detail="" if correct else detail,
                         counts={"correct": float(correct)})

    def subsets(self, task: Task) -> list[str]:
        category = task.meta.get("category", "")
        return [category, "live" if task.meta.get("live") else "non_live"]

    def metrics(self, tasks: list[Task], scores: list[ItemScore]) -> dict[str, float]:
        """Accuracy; with several categories mixed, also each category's accuracy (the leaderboard's figures)."""
        if not scores:
            return {}
        result = {"accuracy": sum(s.correct for s in scores) / len(scores)}
        by_category: dict[str, list[bool]] = {}
        for task, s in zip(tasks, scores, strict=True):
            by_category.setdefault(task.meta.get("category", ""), []).append(s.correct)
        if len(by_category) > 1:
            result |= {f"accuracy_{c}": sum(v) / len(v) for c, v in sorted(by_category.items())}
        return result
