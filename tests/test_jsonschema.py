"""The JSON Schema checker: malformed schemas are refused at load, values are checked as JSON means them."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttsi.errors import TaskError
from ttsi.jsonschema import json_equal, schema_problem, value_problem
from ttsi.schema import CallError, check_calls
from ttsi.task import Call, Task, Tool


def _obj(props, required=(), **more):
    return {"type": "object", "properties": props, "required": list(required), **more}


@pytest.mark.parametrize(("schema", "path"), [
    (_obj({"city": {"type": 5}}), "parameters.properties.city.type"),
    (_obj({"city": {"type": []}}), "parameters.properties.city.type"),
    (_obj({"city": {"type": ["string", 5]}}), "parameters.properties.city.type"),
    (_obj({"unit": {"enum": 5}}), "parameters.properties.unit.enum"),
    (_obj({"unit": {"enum": None}}), "parameters.properties.unit.enum"),
    (_obj({"unit": {"enum": "abc"}}), "parameters.properties.unit.enum"),
    ({"type": "object", "properties": {}, "required": [["a"]]}, "parameters.required"),
    (_obj({"p": _obj({}, required=[]) | {"required": 5}}), "parameters.properties.p.required"),
    ({"type": "object", "properties": 5}, "parameters.properties"),
    (_obj({"p": 5}), "parameters.properties.p"),
    (_obj({"p": {"items": 5}}), "parameters.properties.p.items"),
    (_obj({"p": {"items": [{"type": "string"}, {"type": 1}]}}), "parameters.properties.p.items[1].type"),
    (_obj({"p": {"additionalProperties": "no"}}), "parameters.properties.p.additionalProperties"),
    (_obj({"p": {"anyOf": []}}), "parameters.properties.p.anyOf"),
    (_obj({"p": {"oneOf": {"type": "string"}}}), "parameters.properties.p.oneOf"),
    (_obj({"p": {"allOf": [{"enum": 1}]}}), "parameters.properties.p.allOf[0].enum"),
    (_obj({"p": {"not": [1]}}), "parameters.properties.p.not"),
    (_obj({"p": {"minimum": "3"}}), "parameters.properties.p.minimum"),
    (_obj({"p": {"maxLength": -1}}), "parameters.properties.p.maxLength"),
    (_obj({"p": {"$ref": 5}}), "parameters.properties.p.$ref"),
    (_obj({"p": {"$ref": "#/$defs/missing"}}), "parameters.properties.p.$ref"),
    (_obj({"p": {"$ref": "https://example.com/s.json#/x"}}), "parameters.properties.p.$ref"),
    (_obj({"p": {"$ref": "#/$defs/x"}}, **{"$defs": {"x": {"type": 5}}}), "parameters.$defs.x.type"),
    (_obj({"p": {"$ref": "#/$defs/a"}}, **{"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}}),
     "circular"),
    ({"$ref": "#"}, "circular"),
])
def test_malformed_schemas_name_the_keyword(schema, path):
    problem = schema_problem(schema)
    assert problem is not None and path in problem


@pytest.mark.parametrize("schema", [
    True, False, {},
    _obj({"city": {"type": "str"}, "n": {"type": "float"}, "d": {"type": "dict"}, "t": {"type": "tuple"},
          "x": {"type": "any"}, "y": {"type": "whatever"}, "z": {"type": ["string", "null"]}}),
    _obj({"p": {"enum": []}, "q": {"const": None}, "r": {"default": {"a": [1]}, "format": 5, "examples": 3}}),
    _obj({"p": {"$ref": "#/$defs/x"}, "q": {"$ref": "#/definitions/y"}},
         **{"$defs": {"x": {"type": "string"}}, "definitions": {"y": {"type": "integer"}}}),
    {"$defs": {"node": _obj({"next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}})},
     "$ref": "#/$defs/node"},
    _obj({"p": {"items": [{"type": "string"}, True]}, "q": {"additionalProperties": {"type": "integer"}}}),
    _obj({"p": {"optional": True, "x-vendor": [1, 2]}}),  # unknown keywords constrain nothing
])
def test_well_formed_schemas_pass(schema):
    assert schema_problem(schema) is None


def test_a_schema_nested_too_deep_is_refused():
    schema: dict = {"type": "string"}
    for _ in range(70):
        schema = {"type": "array", "items": schema}
    assert "nested more than" in schema_problem(schema)


def _reason(value, schema, root=None):
    result = value_problem(value, schema, root)
    return result[0] if result else None


@pytest.mark.parametrize(("value", "schema", "reason"), [
    (True, {"enum": [1, 2, 3]}, "not_in_enum"),          # a boolean is not a number
    (1, {"enum": [True, False]}, "not_in_enum"),
    (1.0, {"enum": [1]}, None),                          # but 1 == 1.0
    ([1, {"a": True}], {"enum": [[1.0, {"a": True}]]}, None),
    ([1, {"a": 1}], {"enum": [[1, {"a": True}]]}, "not_in_enum"),
    ("a", {"enum": "abc"}, None),                        # malformed, never a substring match (and never a crash)
    ("a", {"enum": ["abc"]}, "not_in_enum"),
    (3, {"const": 3.0}, None),
    (False, {"const": 0}, "not_const"),
    (None, {"type": ["string", "null"]}, None),
    (3, {"type": ["string", "null"]}, "wrong_type"),
    (3, {"type": 5}, None),                              # malformed keywords are ignored, not crashed on
    ({"a": 1}, {"required": [["a"]], "properties": {}}, None),
    (5, {"minimum": 1, "maximum": 4}, "out_of_range"),
    ("abc", {"maxLength": 2}, "out_of_range"),
    ([], {"minItems": 1}, "out_of_range"),
    (2.5, {"minimum": 1, "maximum": 4}, None),
    ("x", True, None),
    ("x", False, "not_allowed"),
])
def test_values_follow_json_semantics(value, schema, reason):
    assert _reason(value, schema) == reason


def test_json_equality():
    assert json_equal(1, 1.0) and json_equal({"a": [1, None]}, {"a": [1.0, None]})
    assert not json_equal(True, 1) and not json_equal(0, False) and not json_equal([1], [1, 1])
    assert not json_equal({"a": 1}, {"b": 1}) and not json_equal("1", 1)


@pytest.mark.parametrize(("value", "reason"), [("x", None), (3, None), (None, "no_match"), (True, "no_match")])
def test_any_of(value, reason):
    assert _reason(value, {"anyOf": [{"type": "string"}, {"type": "integer"}]}) == reason


@pytest.mark.parametrize(("value", "reason"), [(0, None), (3.5, None), (3, "ambiguous"), ("x", "no_match")])
def test_one_of(value, reason):
    assert _reason(value, {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 1}]}) == reason


@pytest.mark.parametrize(("value", "reason"), [(3, None), (12, "out_of_range"), ("3", "wrong_type")])
def test_all_of_and_not(value, reason):
    assert _reason(value, {"allOf": [{"type": "integer"}, {"maximum": 10}]}) == reason
    assert _reason(value, {"not": {"type": "string"}}) == ("not_allowed" if isinstance(value, str) else None)


@pytest.mark.parametrize("defs", ["$defs", "definitions"])
def test_local_refs_resolve_against_the_root(defs):
    root = _obj({"unit": {"$ref": f"#/{defs}/unit"}}, **{defs: {"unit": {"enum": ["c", "f"]}}})
    assert schema_problem(root) is None
    assert _reason("c", root["properties"]["unit"], root) is None
    assert _reason("k", root["properties"]["unit"], root) == "not_in_enum"
    assert _reason({"unit": "k"}, root) == "not_in_enum"


def test_recursive_refs_terminate():
    root = {"$defs": {"node": _obj({"v": {"type": "integer"}, "next": {"anyOf": [{"$ref": "#/$defs/node"},
                                                                                 {"type": "null"}]}})},
            "$ref": "#/$defs/node"}
    chain: dict = {"v": 0, "next": None}
    for i in range(50):
        chain = {"v": i, "next": chain}
    assert _reason(chain, root) is None
    chain["next"]["next"]["v"] = "x"
    assert _reason(chain, root) == "no_match"
    # refs that loop without consuming the value neither hang nor raise
    loop = {"anyOf": [{"$ref": "#"}, {"$ref": "#"}], "allOf": [{"$ref": "#"}], "not": {"$ref": "#"}}
    assert _reason([[[[1]]]], loop) in (None, "not_allowed", "no_match")
    deep: list = []
    for _ in range(500):
        deep = [deep]
    assert _reason(deep, {"items": {"$ref": "#"}}) == "too_deep"


def test_items_schema_and_tuple_form():
    assert _reason([1, 2], {"items": {"type": "integer"}}) is None
    assert value_problem([1, "b"], {"items": {"type": "integer"}}) == ("wrong_type",
                                                                       "item 1: 'b' is not of type integer")
    pair = {"type": "array", "items": [{"type": "string"}, {"type": "number"}]}
    assert _reason(["a", 1.5], pair) is None and _reason(["a"], pair) is None
    assert _reason([1.5, "a"], pair) == "wrong_type"


def test_nested_objects_check_required_and_additional_properties():
    address = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    assert _reason({"city": "Oslo", "zip": 1}, address) is None  # nested unknown fields are allowed by default
    assert _reason({"zip": 1}, address) == "missing_argument"
    assert _reason({"city": "Oslo", "zip": 1}, address | {"additionalProperties": False}) == "unknown_argument"
    assert _reason({"city": "Oslo", "zip": "x"}, address | {"additionalProperties": {"type": "integer"}}) == \
        "wrong_type"
    assert _reason({"a": {"b": {}}}, _obj({"a": _obj({"b": _obj({}, ["c"])})})) == "missing_argument"


def _tool(params):
    return Tool("f", "", params)


def test_check_calls_keeps_the_top_level_rules():
    tool = _tool(_obj({"a": {"type": "integer"}}, ["a"]))
    with pytest.raises(CallError) as e:
        check_calls([Call("f", {"a": 1, "b": 2})], [tool])
    assert e.value.reason == "unknown_argument"
    check_calls([Call("f", {"a": 1, "b": 2})], [_tool(tool.parameters | {"additionalProperties": True})])
    check_calls([Call("f", {"a": "30"})], [tool], numbers_as_strings=True)
    with pytest.raises(CallError) as e:
        extra = tool.parameters | {"additionalProperties": {"type": "integer"}}
        check_calls([Call("f", {"a": 1, "b": "x"})], [_tool(extra)])
    assert e.value.reason == "wrong_type"


def test_check_calls_follows_refs_and_combinators():
    params = _obj({"unit": {"$ref": "#/$defs/unit"}, "a": {"type": "string"}, "b": {"type": "string"}},
                  oneOf=[{"required": ["a"]}, {"required": ["b"]}], **{"$defs": {"unit": {"enum": ["c", "f"]}}})
    check_calls([Call("f", {"unit": "c", "a": "x"})], [_tool(params)])
    for args, reason in [({"unit": "k", "a": "x"}, "not_in_enum"), ({"unit": "c"}, "no_match"),
                         ({"a": "x", "b": "y"}, "ambiguous")]:
        with pytest.raises(CallError) as e:
            check_calls([Call("f", args)], [_tool(params)])
        assert e.value.reason == reason


def test_check_calls_survives_malformed_schemas_that_bypassed_loading():
    tool = _tool({"type": "object", "properties": {"a": {"type": 5, "enum": 5}}, "required": [["a"], "a"]})
    check_calls([Call("f", {"a": 1})], [tool])
    with pytest.raises(CallError) as e:
        check_calls([Call("f", {})], [tool])
    assert e.value.reason == "missing_argument"  # the well-formed entry of `required` still counts


@pytest.mark.parametrize(("params", "fragment"), [
    (_obj({"city": {"type": 5}}), "parameters.properties.city.type"),
    (_obj({"city": {"type": "string", "enum": None}}), "parameters.properties.city.enum"),
    (_obj({"city": {"$ref": "#/$defs/nowhere"}}), "does not resolve"),
    (_obj({"city": {"$ref": "other.json#/city"}}), "not a local reference"),
])
def test_tasks_with_malformed_schemas_are_refused_at_load(params, fragment):
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": params}}
    with pytest.raises(TaskError, match="malformed schema") as e:
        Task.from_dict({"id": "t", "query": "Weather?", "tools": [tool]}, where="t.json")
    assert fragment in str(e.value) and "'get_weather'" in str(e.value)


# Property: for any JSON-ish schema and value, the checkers answer and never raise.
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4)
_JSON = st.recursive(_SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
                     max_leaves=8)
_KEYWORDS = ["type", "enum", "const", "properties", "required", "items", "additionalProperties", "anyOf", "oneOf",
             "allOf", "not", "$ref", "$defs", "definitions", "minimum", "maximum", "minLength", "maxItems", "default"]
_TYPES = st.sampled_from(["string", "integer", "number", "boolean", "array", "object", "null", "str", "dict", "any"])
_REFS = st.sampled_from(["#", "#/$defs/a", "#/definitions/b", "#/properties/x", "#/items/0", "#/nowhere", "x.json"])


def _schemas(children):
    names = st.sampled_from(["x", "y", "a", "b"])
    value = (_JSON | children | st.lists(children, max_size=3) | st.dictionaries(names, children, max_size=3)
             | _TYPES | st.lists(_TYPES, max_size=2) | _REFS | st.lists(names, max_size=2))
    return st.booleans() | st.dictionaries(st.sampled_from(_KEYWORDS), value, max_size=4)


_SCHEMA = st.recursive(st.booleans() | st.fixed_dictionaries({}, optional={"type": _TYPES, "enum": st.lists(_JSON)}),
                       _schemas, max_leaves=12)


REASONS = {"wrong_type", "not_in_enum", "not_const", "missing_argument", "unknown_argument", "out_of_range",
           "no_match", "ambiguous", "not_allowed", "too_deep"}  # value_problem's documented reasons


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_SCHEMA, _JSON)
def test_the_checkers_never_raise(schema, value):
    problem = schema_problem(schema)
    assert problem is None or (isinstance(problem, str) and problem.strip() and "\n" not in problem)
    result = value_problem(value, schema)  # also on refused schemas: tools built in code skip the load check
    if result is not None:
        reason, detail = result
        assert reason in REASONS and isinstance(detail, str) and detail.strip(), result
    if schema is True or schema == {}:  # schemas that constrain nothing accept every value
        assert result is None
    if schema is False:
        assert result is not None and result[0] == "not_allowed"
