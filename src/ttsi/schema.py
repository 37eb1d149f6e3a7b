"""Validation of calls against tool schemas: the check every synthetic pair must pass."""

from __future__ import annotations

import math
from typing import Any

from ttsi import jsonschema
from ttsi.jsonschema import ALIASES as _ALIASES  # noqa: F401  (re-export, the old home of the aliases)
from ttsi.task import Call, Tool


class CallError(ValueError):
    """A call that does not fit the tools; `reason` is a short typed code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def check_calls(calls: list[Call], tools: list[Tool], numbers_as_strings: bool = False) -> None:
    """Raise CallError for the first call that names an unknown function or breaks its schema.

    `numbers_as_strings`: accept "30" where the schema says integer or number (see AnswerFormat).
    """
    if not calls:
        raise CallError("no_calls", "the answer contains no call")
    by_name = {t.name: t for t in tools}
    for call in calls:
        tool = by_name.get(call.name)
        if tool is None:
            raise CallError("unknown_function", f"{call.name!r} is not one of the task's tools")
        check_arguments(call.arguments, tool, numbers_as_strings)


def check_arguments(arguments: dict[str, Any], tool: Tool, numbers_as_strings: bool = False) -> None:
    """Raise CallError if `arguments` break the tool's schema (at the top level, unknown arguments are refused unless
    `additionalProperties` allows them)."""
    params = tool.parameters
    props = params.get("properties")
    props = props if isinstance(props, dict) else {}
    required = params.get("required")
    for name in required if isinstance(required, list) else []:
        if isinstance(name, str) and name not in arguments:
            raise CallError("missing_argument", f"{tool.name} needs {name!r}")
    extra = params.get("additionalProperties", False)
    for name, value in arguments.items():
        if name not in props and extra is False:
            raise CallError("unknown_argument", f"{tool.name} has no argument {name!r}")
        schema = props.get(name, extra)
        problem = value_problem(value, schema, params)
        if problem and problem[0] == "wrong_type" and numbers_as_strings and _numeric_string(value, schema):
            problem = None
        if problem:
            raise CallError(problem[0], f"{tool.name}.{name}: {problem[1]}")
    combined = {k: params[k] for k in ("$ref", "allOf", "anyOf", "oneOf", "not") if k in params}
    if combined and (problem := value_problem(arguments, combined, params)):
        raise CallError(problem[0], f"{tool.name}: {problem[1]}")


def value_problem(value: Any, schema: Any, root: Any = None) -> tuple[str, str] | None:
    """(reason, detail) if `value` does not match the JSON schema `schema`, else None (see ttsi.jsonschema)."""
    return jsonschema.value_problem(value, schema, root)


def _numeric_string(value: Any, schema: Any) -> bool:
    """A string that spells a number, where the schema asks for an integer or a number."""
    if not isinstance(value, str):
        return False
    names = set(jsonschema.type_names(schema))
    try:
        number = float(value)
    except ValueError:
        return False
    return ("number" in names and math.isfinite(number)) or ("integer" in names and number.is_integer()
                                                              and value.strip().lstrip("+-").isdigit())
