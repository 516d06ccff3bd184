"""Schema limits are checked before any grammar is built: a hostile schema costs nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from inference.errors import GrammarError
from inference.grammar import SchemaLimits, call_schema, check_schema, json_schema, tool_calls
from inference.tools import Function

LIMITS = SchemaLimits()


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth - 1):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "minLength": 8_000_000_000},
        {"type": "array", "items": {"type": "integer"}, "minItems": 10_000_000},
        {"type": "object", "minProperties": 10_000_000},
        {"type": "string", "maxLength": 1e12},
        {"type": "string", "pattern": "^a{100000000}$"},
        {"type": "string", "pattern": "^a{2,900000000}$"},
    ],
    ids=["minLength", "minItems", "minProperties", "maxLength-float", "pattern-n", "pattern-nm"],
)
def test_a_huge_repetition_is_refused_at_once(schema: dict[str, Any]) -> None:
    started = time.monotonic()
    with pytest.raises(GrammarError, match="repetition count"):
        json_schema(json.dumps(schema), LIMITS)
    assert time.monotonic() - started < 1.0


def test_size_depth_and_the_grammar_estimate_each_have_a_limit() -> None:
    big = {"type": "string", "enum": ["v" * 100] * 1000}
    with pytest.raises(GrammarError, match="at most 65536 bytes"):
        check_schema(json.dumps(big), LIMITS)
    with pytest.raises(GrammarError, match="nest at most 32 levels"):
        check_schema(json.dumps(nested(40)), LIMITS)
    check_schema(json.dumps(nested(30)), LIMITS)
    # Each count is allowed, but together they would spell out too large a grammar.
    many = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "minLength": 500} for i in range(200)},
    }
    with pytest.raises(GrammarError, match="grammar would exceed 1048576 bytes"):
        check_schema(json.dumps(many), LIMITS)
    small = SchemaLimits(max_grammar_bytes=4096)
    with pytest.raises(GrammarError, match="grammar would exceed 4096 bytes"):
        json_schema(json.dumps({"type": "string", "enum": ["v" * 90] * 50}), small)


def test_a_schema_within_the_limits_still_compiles() -> None:
    grammar = json_schema(json.dumps({"type": "string", "minLength": 2, "maxLength": 512}), LIMITS)
    assert "root" in grammar.gbnf


def test_a_reference_outside_the_schema_is_refused_before_the_converter_can_fetch_it() -> None:
    # llama-cpp-python's converter resolves an https:// $ref with an HTTP GET.
    for ref in ("https://internal.example/schema.json", "http://10.0.0.1/x", "other.json"):
        schema = json.dumps({"type": "object", "properties": {"a": {"$ref": ref}}})
        with pytest.raises(GrammarError, match=r"\$ref"):
            json_schema(schema, SchemaLimits())
    local = {
        "$defs": {"n": {"type": "integer"}},
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/n"}},
    }
    assert "root" in json_schema(json.dumps(local), SchemaLimits()).gbnf


def test_tool_call_grammars_are_forced_or_lazy_on_the_opening_tag() -> None:
    weather = Function("get_weather", None, {"type": "object", "properties": {}})
    forced = tool_calls([weather], forced=True, parallel=False, limits=SchemaLimits())
    assert forced.lazy_after is None
    assert forced.root == "tool-calls"
    assert 'tool-call ::= "<tool_call>" after' in forced.gbnf
    assert 'after ::= "\\n" root "\\n</tool_call>"' in forced.gbnf
    lazy = tool_calls([weather], forced=False, parallel=True, limits=SchemaLimits())
    assert lazy.lazy_after == "<tool_call>"
    assert lazy.root == "after-tool-calls"  # starts right after the tag the model wrote
    assert 'after-tool-calls ::= after ("\\n" tool-call)*' in lazy.gbnf
    with pytest.raises(GrammarError):
        tool_calls([weather], forced=True, parallel=True, limits=SchemaLimits(max_depth=2))


def test_bounded_integers_become_an_enum_the_grammar_enforces() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1, "exclusiveMaximum": 4},
            "even": {"type": "integer", "minimum": 0, "maximum": 6, "multipleOf": 2},
            "wide": {"type": "integer", "minimum": 0, "maximum": 10**9},
            "odd": {"type": "integer", "minimum": float("nan"), "maximum": float("inf")},
        },
    }
    gbnf = json_schema(json.dumps(schema), LIMITS).gbnf
    n_rule = next(line for line in gbnf.splitlines() if line.startswith("n ::="))
    assert n_rule.replace(" ", "") == 'n::="1"|"2"|"3"'
    even = next(line for line in gbnf.splitlines() if line.startswith("even ::="))
    assert even.replace(" ", "") == 'even::="0"|"2"|"4"|"6"'
    # Too many values to spell out: a plain integer, left to the validator.
    assert 'wide-kv ::= "\\"wide\\"" space ":" space integer' in gbnf


def test_each_functions_definitions_stay_its_own_in_the_call_schema() -> None:
    def item(kind: str) -> dict[str, Any]:  # as pydantic writes a nested model
        return {
            "$defs": {
                "Item": {"type": "object", "properties": {"v": {"type": kind}}, "required": ["v"]}
            },
            "type": "object",
            "properties": {"item": {"$ref": "#/$defs/Item"}},
            "required": ["item"],
        }

    functions = [Function("a", None, item("integer")), Function("b", None, item("boolean"))]
    schema = call_schema(functions)
    assert schema["anyOf"][1]["properties"]["arguments"] == {"$ref": "#/$defs/f1-args"}
    assert set(schema["$defs"]) == {"f0-args", "f0-Item", "f1-args", "f1-Item"}
    assert schema["$defs"]["f1-args"]["properties"]["item"] == {"$ref": "#/$defs/f1-Item"}
    gbnf = tool_calls(functions, forced=True, parallel=False, limits=LIMITS).gbnf
    rules = dict(line.split(" ::= ", 1) for line in gbnf.splitlines() if " ::= " in line)
    assert "integer" in rules["f0-Item-v-kv"]
    assert "boolean" in rules["f1-Item-v-kv"]
