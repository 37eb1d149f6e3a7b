"""Validation of calls against tool schemas: the check every synthetic pair must pass."""

from __future__ import annotations

import math
from typing import Any

from ttsi.task import Call, Tool

# Benchmarks write Python type names in their schemas (Seal-Tools "str", BFCL "dict"/"float"); map them to JSON's.
_ALIASES = {"str": "string", "int": "integer", "float": "number", "double": "number", "bool": "boolean",
            "dict": "object", "list": "array", "tuple": "array", "none": "null"}


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
    props = tool.properties
    for name in tool.required:
        if name not in arguments:
            raise CallError("missing_argument", f"{tool.name} needs {name!r}")
    for name, value in arguments.items():
        if name not in props:
            if tool.parameters.get("additionalProperties", False) is False:
                raise CallError("unknown_argument", f"{tool.name} has no argument {name!r}")
            continue
        problem = value_problem(value, props[name])
        if problem and problem[0] == "wrong_type" and numbers_as_strings and _numeric_string(value, props[name]):
            problem = None
        if problem:
            raise CallError(problem[0], f"{tool.name}.{name}: {problem[1]}")


def value_problem(value: Any, schema: Any) -> tuple[str, str] | None:
    """(reason, detail) if `value` does not match the JSON schema `schema`, else None."""
    if not isinstance(schema, dict):
        return None
    if "enum" in schema and value not in schema["enum"]:
        return "not_in_enum", f"{value!r} is not one of {schema['enum']}"
    types = schema.get("type")
    if types is None:
        return None
    types = [types] if isinstance(types, str) else list(types)
    names = [_ALIASES.get(str(t).lower(), str(t).lower()) for t in types]
    if "any" in names or any(_is_type(value, t) for t in names):
        if isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                problem = value_problem(item, schema["items"])
                if problem:
                    return problem[0], f"item {i}: {problem[1]}"
        if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
            for key in schema.get("required", []):
                if key not in value:
                    return "missing_argument", f"missing field {key!r}"
            for key, item in value.items():
                problem = value_problem(item, schema["properties"].get(key))
                if problem:
                    return problem[0], f"field {key!r}: {problem[1]}"
        return None
    return "wrong_type", f"{value!r} is not of type {'/'.join(types)}"


def _numeric_string(value: Any, schema: Any) -> bool:
    """A string that spells a number, where the schema asks for an integer or a number."""
    if not isinstance(value, str) or not isinstance(schema, dict):
        return False
    types = schema.get("type")
    names = {_ALIASES.get(str(t).lower(), str(t).lower()) for t in ([types] if isinstance(types, str) else types or [])}
    try:
        number = float(value)
    except ValueError:
        return False
    return ("number" in names and math.isfinite(number)) or ("integer" in names and number.is_integer()
                                                              and value.strip().lstrip("+-").isdigit())


def _is_type(value: Any, name: str) -> bool:
    if name == "string":
        return isinstance(value, str)
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    if name == "null":
        return value is None
    return True  # a type name we do not know constrains nothing
