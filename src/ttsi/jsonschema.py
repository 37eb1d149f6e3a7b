"""A small, defensive JSON Schema checker for function-call arguments.

`schema_problem` refuses a malformed schema when a task loads; `value_problem` then checks a value against it and
never raises. Both are lenient where benchmarks are: Python type names ("str", "dict") are aliases, unknown type
names and unknown keywords constrain nothing. Only local `$ref`s ("#/$defs/x") are supported.
"""

from __future__ import annotations

import reprlib
from typing import Any
from urllib.parse import unquote

# Benchmarks write Python type names in their schemas (Seal-Tools "str", BFCL "dict"/"float"); map them to JSON's.
ALIASES = {"str": "string", "int": "integer", "float": "number", "double": "number", "bool": "boolean",
           "dict": "object", "list": "array", "tuple": "array", "none": "null"}
MAX_DEPTH = 64  # schema nesting accepted by schema_problem
_MAX_VALUE_DEPTH = 200  # steps into a value or a sub-schema value_problem takes before giving up
_COMBINATORS = ("anyOf", "oneOf", "allOf")
_BOUNDS = ("minimum", "maximum")
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems")
_MISSING = object()
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 40, 40
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = 4


def schema_problem(schema: Any, where: str = "parameters") -> str | None:
    """One sentence naming the first malformed keyword of `schema` (by its path from `where`), else None."""
    return _SchemaCheck(schema).problem(schema, where, 0)


def value_problem(value: Any, schema: Any, root: Any = None) -> tuple[str, str] | None:
    """(reason, detail) if `value` does not match `schema`, else None; `$ref`s resolve against `root`.

    Reasons: wrong_type, not_in_enum, not_const, missing_argument, unknown_argument, out_of_range, no_match (anyOf /
    oneOf: no alternative fits), ambiguous (oneOf: several fit), not_allowed (`false` schema, `not`), too_deep.
    """
    try:
        return _ValueCheck(schema if root is None else root).check(value, schema, 0)
    except RecursionError:  # a backstop: the depth limit should come first
        return "too_deep", "the value or the schema is nested too deeply to check"


def type_names(schema: Any) -> list[str]:
    """The JSON type names a schema's `type` asks for, aliases resolved; [] when it sets none."""
    types = schema.get("type") if isinstance(schema, dict) else None
    types = [types] if isinstance(types, str) else types if isinstance(types, list) else []
    return [ALIASES.get(t.lower(), t.lower()) for t in types if isinstance(t, str)]


def json_equal(a: Any, b: Any, depth: int = 0) -> bool:
    """Equality as JSON means it: booleans are not numbers, 1 == 1.0, lists and objects compare deeply."""
    if depth > _MAX_VALUE_DEPTH:
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y, depth + 1) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k], depth + 1) for k in a)
    return type(a) is type(b) and a == b


def is_type(value: Any, name: str) -> bool:
    """Whether `value` is of the JSON type `name` (an unknown name, like "any", admits everything)."""
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


def _resolve(ref: str, root: Any) -> Any:
    """The schema a local JSON pointer ("#/$defs/x") names inside `root`, or _MISSING."""
    if not ref.startswith("#"):
        return _MISSING
    node = root
    pointer = unquote(ref[1:])
    if not pointer:
        return node
    if not pointer.startswith("/"):
        return _MISSING  # "#anchor" names are not supported
    for part in pointer[1:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _short(value: Any, limit: int = 80) -> str:
    """A bounded repr: error details never grow with the value (nor recurse into it deeply)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class _SchemaCheck:
    def __init__(self, root: Any):
        self.root = root
        self.followed = {id(root)}  # $ref targets checked already (or being checked)

    def problem(self, schema: Any, where: str, depth: int) -> str | None:
        if isinstance(schema, bool):
            return None
        if not isinstance(schema, dict):
            return f"{where} must be a JSON schema (an object or a boolean), not {type(schema).__name__}"
        if depth > MAX_DEPTH:
            return f"{where} is nested more than {MAX_DEPTH} levels deep"
        for check in (self._keywords, self._subschemas, self._ref):
            problem = check(schema, where, depth)
            if problem:
                return problem
        return None

    def _keywords(self, schema: dict[str, Any], where: str, depth: int) -> str | None:
        types = schema.get("type", "any")
        names = types if isinstance(types, list) and types else [types]
        if not all(isinstance(t, str) for t in names):
            return f"{where}.type must be a type name or a non-empty list of type names, not {_short(types)}"
        if "enum" in schema and not isinstance(schema["enum"], list):
            return f"{where}.enum must be a list of values, not {_short(schema['enum'])}"
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            return f"{where}.required must be a list of property names, not {_short(required)}"
        for key in _BOUNDS:
            if key in schema and not _is_number(schema[key]):
                return f"{where}.{key} must be a number, not {_short(schema[key])}"
        for key in _COUNTS:
            if key in schema and not (_is_number(schema[key]) and schema[key] >= 0):
                return f"{where}.{key} must be a non-negative number, not {_short(schema[key])}"
        return None

    def _subschemas(self, schema: dict[str, Any], where: str, depth: int) -> str | None:
        for key in ("$defs", "definitions", "properties"):
            if key in schema:
                if not isinstance(schema[key], dict):
                    return f"{where}.{key} must be an object mapping names to schemas"
                for name, sub in schema[key].items():
                    if problem := self.problem(sub, f"{where}.{key}.{name}", depth + 1):
                        return problem
        for key in _COMBINATORS:
            if key in schema and not (isinstance(schema[key], list) and schema[key]):
                return f"{where}.{key} must be a non-empty list of schemas"
        items = schema.get("items", True)
        subs = [(f"items[{i}]", s) for i, s in enumerate(items)] if isinstance(items, list) else [("items", items)]
        subs += [(f"{key}[{i}]", s) for key in _COMBINATORS for i, s in enumerate(schema.get(key, []))]
        subs += [(key, schema[key]) for key in ("additionalProperties", "not") if key in schema]
        for path, sub in subs:
            if problem := self.problem(sub, f"{where}.{path}", depth + 1):
                return problem
        return None

    def _ref(self, schema: dict[str, Any], where: str, depth: int) -> str | None:
        if "$ref" not in schema:
            return None
        ref, seen = schema["$ref"], {id(schema)}
        if not isinstance(ref, str):
            return f"{where}.$ref must be a string, not {_short(ref)}"
        if not ref.startswith("#"):
            return f"{where}.$ref {ref!r} is not a local reference (only '#/...' references are supported)"
        target = schema
        while isinstance(target, dict) and isinstance(target.get("$ref"), str):
            target = _resolve(target["$ref"], self.root)
            if target is _MISSING:
                return f"{where}.$ref {ref!r} does not resolve inside the schema"
            if id(target) in seen:
                return f"{where}.$ref {ref!r} is circular: it refers back to itself"
            seen.add(id(target))
        target = _resolve(ref, self.root)
        if id(target) in self.followed:
            return None
        self.followed.add(id(target))
        return self.problem(target, f"{where}.$ref", depth + 1)


class _ValueCheck:
    def __init__(self, root: Any):
        self.root = root
        self.done: dict[tuple[int, int], tuple[str, str] | None] = {}  # (schema, value) ids -> result, memoised

    def check(self, value: Any, schema: Any, depth: int) -> tuple[str, str] | None:
        if schema is False:
            return "not_allowed", f"no value is allowed here, got {_short(value)}"
        if not isinstance(schema, dict):
            return None
        if depth > _MAX_VALUE_DEPTH:
            return "too_deep", f"the value or schema is nested more than {_MAX_VALUE_DEPTH} levels deep"
        key = (id(schema), id(value))
        if key in self.done:  # done, or in progress: a $ref loop that consumes nothing adds no constraint
            return self.done[key]
        self.done[key] = None
        result = self._check(value, schema, depth)
        self.done[key] = result
        return result

    def _check(self, value: Any, schema: dict[str, Any], depth: int) -> tuple[str, str] | None:
        enum = schema.get("enum")
        if isinstance(enum, list) and not any(json_equal(value, e) for e in enum):
            return "not_in_enum", f"{_short(value)} is not one of {_short(enum)}"
        if "const" in schema and not json_equal(value, schema["const"]):
            return "not_const", f"{_short(value)} is not {_short(schema['const'])}"
        names = type_names(schema)
        if names and not any(is_type(value, t) for t in names):
            return "wrong_type", f"{_short(value)} is not of type {'/'.join(names)}"
        for check in (self._bounds, self._array, self._object, self._combinators):
            problem = check(value, schema, depth)
            if problem:
                return problem
        return None

    def _bounds(self, value: Any, schema: dict[str, Any], depth: int) -> tuple[str, str] | None:
        if _is_number(value):
            size, what, keys = value, "value", _BOUNDS
        elif isinstance(value, (str, list)):
            size, what, keys = len(value), "length", _COUNTS[:2] if isinstance(value, str) else _COUNTS[2:]
        else:
            return None
        low, high = schema.get(keys[0]), schema.get(keys[1])
        if _is_number(low) and size < low:
            return "out_of_range", f"{_short(value)}: {what} {size} is below {keys[0]} {low}"
        if _is_number(high) and size > high:
            return "out_of_range", f"{_short(value)}: {what} {size} is above {keys[1]} {high}"
        return None

    def _array(self, value: Any, schema: dict[str, Any], depth: int) -> tuple[str, str] | None:
        items = schema.get("items")
        if not isinstance(value, list) or items is None:
            return None
        pairs = zip(value, items, strict=False) if isinstance(items, list) else ((v, items) for v in value)
        for i, (item, sub) in enumerate(pairs):
            if problem := self.check(item, sub, depth + 1):
                return problem[0], f"item {i}: {problem[1]}"
        return None

    def _object(self, value: Any, schema: dict[str, Any], depth: int) -> tuple[str, str] | None:
        if not isinstance(value, dict):
            return None
        required = schema.get("required")
        for key in required if isinstance(required, list) else []:
            if isinstance(key, str) and key not in value:
                return "missing_argument", f"missing field {key!r}"
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key not in props and extra is False:
                return "unknown_argument", f"unexpected field {key!r}"
            if problem := self.check(item, props.get(key, extra), depth + 1):
                return problem[0], f"field {key!r}: {problem[1]}"
        return None

    def _combinators(self, value: Any, schema: dict[str, Any], depth: int) -> tuple[str, str] | None:
        if isinstance(schema.get("$ref"), str):
            target = _resolve(schema["$ref"], self.root)
            if target is not _MISSING and (problem := self.check(value, target, depth + 1)):
                return problem
        for sub in schema.get("allOf") if isinstance(schema.get("allOf"), list) else []:
            if problem := self.check(value, sub, depth + 1):
                return problem
        for key in ("anyOf", "oneOf"):
            subs = schema.get(key)
            if not isinstance(subs, list) or not subs:
                continue
            fits = sum(self.check(value, sub, depth + 1) is None for sub in subs)
            if fits == 0:
                return "no_match", f"{_short(value)} fits none of the {len(subs)} {key} alternatives"
            if key == "oneOf" and fits > 1:
                return "ambiguous", f"{_short(value)} fits {fits} of the oneOf alternatives, not exactly one"
        if "not" in schema and self.check(value, schema["not"], depth + 1) is None:
            return "not_allowed", f"{_short(value)} matches the schema under 'not'"
        return None
