"""Schema limits are checked before any grammar is built: a hostile schema costs nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from inference.errors import GrammarError
from inference.grammar import SchemaLimits, check_schema, json_schema

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
