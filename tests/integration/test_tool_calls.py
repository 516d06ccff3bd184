"""Tool calling on the real model: the calls Keep returns always parse and validate against
their function's schema, streamed calls reassemble to the non-streamed ones, and every bad
tool definition gets a 400 that names it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi.testclient import TestClient

from tests.conftest import MODEL, TEST_KEY, AppFactory, ServerFactory
from tests.integration.test_api import sse_events

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
SEARCH = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "maxLength": 20},
        "limit": {"type": "integer", "minimum": 1, "maximum": 10},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
    },
    "required": ["query", "limit"],
}
SCHEMAS = {"get_weather": WEATHER, "search_documents": SEARCH}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": WEATHER,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_documents",
            "description": "Search the user's documents.",
            "parameters": SEARCH,
        },
    },
]
QUESTIONS = [
    "What is the weather in Paris?",
    "Find my notes about the budget.",
    "Is it raining in Lisbon right now?",
    "Search for the contract with Acme.",
    "How warm is it in Tokyo in fahrenheit?",
    "Look up documents tagged urgent.",
]


def past_call(i: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"call_past_{i}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


# Two earlier turns that ended in calls, as an agent's history holds them. SmolLM2 was never
# trained to call tools; with these before the question it opens a call of its own under
# `auto`, and writes compact arguments under a forced choice.
HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "What is the weather in Rome?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [past_call(0, "get_weather", {"city": "Rome", "unit": "celsius"})],
    },
    {"role": "user", "content": "Find my notes about taxes."},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [past_call(1, "search_documents", {"query": "taxes", "limit": 3})],
    },
]


def body(question: str, *, history: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [*(HISTORY if history else []), {"role": "user", "content": question}],
        "tools": TOOLS,
        "temperature": 0,
        "max_tokens": 96,
        **extra,
    }


def named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def check_calls(calls: list[dict[str, Any]]) -> None:
    for call in calls:
        assert call["type"] == "function"
        assert call["id"].startswith("call_")
        arguments = json.loads(call["function"]["arguments"])
        jsonschema.validate(arguments, SCHEMAS[call["function"]["name"]])


def reassemble(events: list[Any]) -> tuple[str, list[dict[str, Any]], str | None]:
    """A stream's content and calls, joined as OpenAI's clients join them."""
    content, calls, reason = "", {}, None
    for event in events:
        if event == "[DONE]" or not event["choices"]:
            continue
        choice = event["choices"][0]
        reason = choice["finish_reason"] or reason
        delta = choice["delta"]
        content += delta.get("content") or ""
        for part in delta.get("tool_calls") or []:
            if "id" in part:  # the call's first delta: index, id, type and name
                assert part["function"]["arguments"] == ""
                calls[part["index"]] = {
                    "id": part["id"],
                    "type": part["type"],
                    "function": {"name": part["function"]["name"], "arguments": ""},
                }
            else:
                assert set(part) == {"index", "function"}
                assert set(part["function"]) == {"arguments"}
                calls[part["index"]]["function"]["arguments"] += part["function"]["arguments"]
    return content, [calls[i] for i in sorted(calls)], reason


def test_a_named_choice_returns_that_call_with_valid_arguments(client: TestClient) -> None:
    r = client.post(
        "/v1/chat/completions", json=body(QUESTIONS[0], tool_choice=named("get_weather"))
    )
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_weather"]
    check_calls(message["tool_calls"])


def test_required_without_parallel_calls_makes_exactly_one_call(client: TestClient) -> None:
    for question in QUESTIONS[:3]:
        r = client.post(
            "/v1/chat/completions",
            json=body(question, tool_choice="required", parallel_tool_calls=False),
        )
        assert r.status_code == 200, r.text
        message = r.json()["choices"][0]["message"]
        assert len(message["tool_calls"]) == 1
        check_calls(message["tool_calls"])


@pytest.mark.parametrize("choice", [named("search_documents"), "required", "auto"])
def test_a_streamed_call_reassembles_to_the_non_streamed_one(
    client: TestClient, choice: Any
) -> None:
    request = body(QUESTIONS[1], tool_choice=choice, history=choice == "auto")
    whole = client.post("/v1/chat/completions", json=request)
    assert whole.status_code == 200, whole.text
    expected = whole.json()["choices"][0]
    events = sse_events(client, "/v1/chat/completions", {**request, "stream": True})
    content, calls, reason = reassemble(events)
    assert reason == expected["finish_reason"]
    assert content == (expected["message"]["content"] or "")
    strip = [c["function"] for c in expected["message"].get("tool_calls") or []]
    if reason == "length" and len(calls) == len(strip) + 1:
        # A call cut off by max_tokens: a stream has sent its start, a whole response drops it.
        cut = calls.pop()
        with pytest.raises(json.JSONDecodeError):
            json.loads(cut["function"]["arguments"])
    assert [c["function"] for c in calls] == strip
    check_calls(calls)
    # Forced, or `auto` after a history of calls: calls, ended by the grammar or max_tokens.
    assert calls
    assert reason in ("tool_calls", "length")


def test_tool_choice_none_answers_in_text(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json=body(QUESTIONS[0], tool_choice="none"))
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] in ("stop", "length")
    assert isinstance(choice["message"]["content"], str)


def test_a_tool_result_turn_is_answered(client: TestClient) -> None:
    first = client.post(
        "/v1/chat/completions", json=body(QUESTIONS[0], tool_choice=named("get_weather"))
    ).json()["choices"][0]["message"]
    call = first["tool_calls"][0]
    messages = [
        {"role": "user", "content": QUESTIONS[0]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 18}'},
    ]
    r = client.post(
        "/v1/chat/completions",
        json={**body(""), "messages": messages, "tool_choice": "none", "max_tokens": 24},
    )
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    assert message["content"]
    assert "tool_calls" not in message


BAD = [
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools"),
    ({"tools": [TOOLS[0], TOOLS[0]]}, "tools[1].function.name"),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 7}}}]},
        "tools[0].function.parameters",
    ),
    (
        {
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}
            ]
        },
        "tools[0].function.parameters",
    ),
    ({"tools": None, "tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": named("missing")}, "tool_choice"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"functions": [{"name": "f"}]}, "functions"),
    (
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {
                            "type": "object",
                            "properties": {"a": {"$dynamicRef": "http://127.0.0.1:9/x"}},
                        },
                    },
                }
            ]
        },
        "tools",
    ),
]


@pytest.mark.parametrize(("extra", "param"), BAD)
def test_bad_tool_requests_get_a_400_naming_the_field(
    client: TestClient, extra: dict[str, Any], param: str
) -> None:
    r = client.post("/v1/chat/completions", json=body(QUESTIONS[0], **extra))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None, error
    assert error["param"].startswith(param), error


def test_bad_tool_turns_get_a_400_naming_the_message(client: TestClient) -> None:
    turns: list[tuple[dict[str, Any], str]] = [
        ({"role": "tool", "content": "18C"}, "messages[1]"),  # no tool_call_id
        ({"role": "user", "content": "x", "tool_call_id": "call_1"}, "messages[1]"),
        ({"role": "user", "content": None}, "messages[1]"),
        ({"role": "assistant", "content": "", "function_call": {"name": "f"}}, "messages[1]"),
        (
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}],
            },
            "messages[1].tool_calls",
        ),
    ]
    for turn, param in turns:
        request = body("", messages=[{"role": "user", "content": "Hi"}, turn])
        r = client.post("/v1/chat/completions", json=request)
        assert r.status_code == 400, (turn, r.text)
        assert r.json()["error"]["param"].startswith(param), (turn, r.json())


def test_deeply_nested_history_arguments_are_rendered_not_a_500(client: TestClient) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    call["function"]["arguments"] = "[" * 100_000  # json.loads would recurse past the limit
    turn = {"role": "assistant", "content": None, "tool_calls": [call]}
    result = {"role": "tool", "tool_call_id": "c", "content": "ok"}
    request = body("", messages=[{"role": "user", "content": "Hi"}, turn, result])
    r = client.post("/v1/chat/completions", json={**request, "tool_choice": "none"})
    assert r.status_code in (200, 400), r.text  # too long for the context is a 400
    assert r.json().get("error", {}).get("code") in (None, "context_length_exceeded")


def test_tool_limits_have_settings(make_client: AppFactory) -> None:
    small = make_client(max_tools=1, max_tool_calls_per_message=1, schema_max_depth=3)
    r = small.post("/v1/chat/completions", json=body(QUESTIONS[0]))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "tools"
    assert "at most 1 tools" in r.json()["error"]["message"]
    deep = {"type": "object", "properties": {"a": {"type": "object", "properties": {}}}}
    one = [{"type": "function", "function": {"name": "f", "parameters": deep}}]
    r = small.post("/v1/chat/completions", json=body(QUESTIONS[0], tools=one))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "tools", r.text
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    turn = {"role": "assistant", "content": None, "tool_calls": [call, call]}
    request = body("", tools=None, messages=[{"role": "user", "content": "Hi"}, turn])
    r = small.post("/v1/chat/completions", json=request)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages[1].tool_calls"


def test_two_hundred_calls_all_validate(serve_inproc: ServerFactory) -> None:
    """Named, required and auto; streamed and not; greedy and sampled: every call parses and
    matches its function's schema. Eight sessions, so that each reuses the KV of the tools'
    prompt and only the question is prefilled."""
    base = serve_inproc()
    choices: list[Any] = [named("get_weather"), named("search_documents"), "required", "auto"]
    calls: list[dict[str, Any]] = []
    kinds: dict[str, int] = {}

    async def one(client: httpx.AsyncClient, session: str, i: int) -> None:
        sampled = {"temperature": 0.9, "seed": i} if i % 2 else {}
        choice = choices[i % len(choices)]
        request = body(QUESTIONS[i % len(QUESTIONS)], tool_choice=choice, history=True, **sampled)
        request["max_tokens"] = 64
        request["parallel_tool_calls"] = i % 5 == 0  # one call each, mostly: a shorter run
        headers = {"x-keep-session": session}
        if i % 3 == 0:
            request["stream"] = True
            async with client.stream(
                "POST", "/v1/chat/completions", json=request, headers=headers
            ) as r:
                assert r.status_code == 200
                events = [
                    line[6:] if line[6:] == "[DONE]" else json.loads(line[6:])
                    async for line in r.aiter_lines()
                    if line.startswith("data: ")
                ]
            _, found, reason = reassemble(events)
            if reason == "length" and found:  # the last call may be cut off: drop it then
                try:
                    json.loads(found[-1]["function"]["arguments"])
                except ValueError:
                    found.pop()
        else:
            r = await client.post("/v1/chat/completions", json=request, headers=headers)
            assert r.status_code == 200, r.text
            found = list(r.json()["choices"][0]["message"].get("tool_calls") or [])
        kind = "auto" if choice == "auto" else "forced"
        kinds[kind] = kinds.get(kind, 0) + len(found)
        kinds["requests"] = kinds.get("requests", 0) + 1
        calls.extend(found)

    async def worker(client: httpx.AsyncClient, k: int) -> None:
        r = await client.post("/v1/sessions")
        assert r.status_code == 201, r.text
        session = r.json()["id"]
        i = k
        while len(calls) < 200:
            await one(client, session, i)
            i += 8
            assert i < 800, "too few requests ended in calls"
        await client.delete(f"/v1/sessions/{session}")

    async def main() -> None:
        headers = {"Authorization": f"Bearer {TEST_KEY}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
            await asyncio.gather(*(worker(client, k) for k in range(8)))

    asyncio.run(main())
    assert len(calls) >= 200
    check_calls(calls)
    assert {c["function"]["name"] for c in calls} == {"get_weather", "search_documents"}
    assert kinds.get("forced", 0) > 100, kinds
    assert kinds.get("auto", 0) > 25, kinds
