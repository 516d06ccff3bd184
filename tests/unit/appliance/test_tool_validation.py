"""A call is checked against its function's schema before it is sent, and the check cannot
be turned against the appliance: no reference is fetched and no pattern runs unbounded."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from appliance.errors import InvalidRequest, ToolCallInvalid
from appliance.openai.chat import tools
from appliance.openai.chat.protocol import ChatCompletionRequest
from inference.grammar import SchemaLimits
from inference.tools import call_text


def plan(parameters: dict[str, Any]) -> tools.ToolPlan:
    body = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}],
            "tool_choice": "required",
        }
    )
    found = tools.plan(body, max_tools=8, limits=SchemaLimits())
    assert found is not None
    return found


def returned(parameters: dict[str, Any], arguments: dict[str, Any]) -> list[dict[str, Any]]:
    _, calls = tools.CallShaper(plan(parameters)).whole(call_text("f", json.dumps(arguments)))
    return calls


def test_a_valid_call_is_returned_with_the_models_own_arguments() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    (call,) = returned(schema, {"n": 3})
    assert call["function"] == {"name": "f", "arguments": '{"n": 3}'}
    assert call["id"].startswith("call_")


def test_a_call_the_schema_refuses_is_never_returned() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 7}}}
    with pytest.raises(ToolCallInvalid):
        returned(schema, {"n": 3})


def test_an_exponential_pattern_costs_at_most_the_budget() -> None:
    evil = {"type": "string", "not": {"pattern": "^(a|aa)+$"}}
    schema = {"type": "object", "properties": {"s": evil}}
    start = time.monotonic()
    with pytest.raises(ToolCallInvalid):  # a timeout under `not` must not read as valid
        returned(schema, {"s": "a" * 60 + "b"})
    assert time.monotonic() - start < 10 * tools.PATTERN_BUDGET_S


def test_references_outside_the_schema_are_refused_before_anything_resolves_them() -> None:
    for remote in ({"$ref": "http://10.0.0.1/x"}, {"$dynamicRef": "file:///dev/zero"}):
        schema = {"type": "object", "properties": {"s": remote}}
        with pytest.raises(InvalidRequest) as info:
            plan(schema)
        assert info.value.param == "tools"
    with pytest.raises(InvalidRequest):
        plan({"type": "object", "patternProperties": {"^(a|aa)+$": {"type": "string"}}})
