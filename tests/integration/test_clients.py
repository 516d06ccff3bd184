"""The clients people already run, unchanged, against a real `keep serve` on the default
model: the openai SDK, LangChain, LlamaIndex, LiteLLM, and a replay of Open WebUI's native
tool-calling exchange. Each gets only a base URL and an API key."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from keep.settings import DEFAULT_EMBEDDER
from tests.conftest import MODEL, SYSTEM, LiveServer
from tests.integration.test_tool_calls import (
    HISTORY,
    QUESTIONS,
    SCHEMAS,
    TOOLS,
    WEATHER,
    check_calls,
)

# LiteLLM fetches a model price list from the internet on import unless told not to; the
# suite never reaches out. This is the test's own rule, not something Keep needs.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def ai(keep_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=keep_server.base_url + "/v1", api_key=keep_server.key)


def weather_result(arguments: str) -> str:
    city = json.loads(arguments)["city"]
    return json.dumps({"city": city, "temperature": 18, "sky": "clear"})


class City(BaseModel):
    """A city and the country it is in."""

    name: str = Field(max_length=24)
    country: str = Field(max_length=24)


# --- the official openai SDK: sync, async and streaming -------------------------------------


def test_openai_sdk_tool_loop_sync(ai: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": QUESTIONS[0]}]
    first = ai.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=96,
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER)  # type: ignore[union-attr]
    messages.append(choice.message)  # as the README does: the SDK's own object, nulls and all
    messages.append(
        {
            "role": "tool",
            "tool_call_id": calls[0].id,
            "content": weather_result(calls[0].function.arguments),  # type: ignore[union-attr]
        }
    )
    second = ai.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=TOOLS,
        tool_choice="none",
        max_tokens=32,  # type: ignore[arg-type]
    )
    assert second.choices[0].message.content
    assert not second.choices[0].message.tool_calls


def test_openai_sdk_tools_async_and_streamed(ai: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": QUESTIONS[3]}],
        "tools": TOOLS,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "temperature": 0,
        "max_tokens": 96,
    }

    async def asynchronous() -> list[tuple[str, str]]:
        async with openai.AsyncOpenAI(base_url=str(ai.base_url), api_key=ai.api_key) as client:
            answers = await asyncio.gather(
                *(client.chat.completions.create(**request) for _ in range(3))
            )
            return [
                (c.function.name, c.function.arguments)  # type: ignore[union-attr]
                for answer in answers
                for c in answer.choices[0].message.tool_calls or []
            ]

    calls = asyncio.run(asynchronous())
    # One call each. Batched decoding is not bit-identical to decoding alone, so concurrent
    # greedy calls may differ in spacing; each still validates.
    assert len(calls) == 3
    check_calls(
        [
            {"id": "call_x", "type": "function", "function": {"name": n, "arguments": a}}
            for n, a in calls
        ]
    )
    alone = ai.chat.completions.create(**request).choices[0].message.tool_calls or []
    # The SDK's own stream helper accumulates the deltas into a final message.
    with ai.chat.completions.stream(**request) as stream:
        final = stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in streamed] == [
        (c.function.name, c.function.arguments)
        for c in alone  # type: ignore[union-attr]
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    check_calls([c.model_dump() for c in streamed])


def test_openai_sdk_structured_output_parses_into_a_pydantic_model(ai: openai.OpenAI) -> None:
    completion = ai.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Name the capital of France and its country."}],
        response_format=City,
        temperature=0,
        max_tokens=64,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, City)
    assert parsed.name


# --- LangChain ---------------------------------------------------------------------------------


def test_langchain_bind_tools_structured_output_and_a_tool_loop(keep_server: LiveServer) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str, unit: str) -> str:
        """Current weather in a city; unit is celsius or fahrenheit."""
        return json.dumps({"city": city, "unit": unit, "temperature": 18})

    chat = ChatOpenAI(
        model=MODEL,
        base_url=keep_server.base_url + "/v1",
        api_key=keep_server.key,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=96,  # type: ignore[call-arg]
    )
    bound = chat.bind_tools([get_weather], tool_choice="get_weather", parallel_tool_calls=False)
    question = HumanMessage(QUESTIONS[0])
    reply = bound.invoke([question])
    assert [c["name"] for c in reply.tool_calls] == ["get_weather"]  # type: ignore[attr-defined]
    call = reply.tool_calls[0]  # type: ignore[attr-defined]
    assert set(call["args"]) == {"city", "unit"}
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    answer = chat.bind_tools([get_weather], tool_choice="none").invoke([question, reply, result])
    assert answer.content
    assert not answer.tool_calls

    structured = chat.with_structured_output(City)  # json_schema, through the SDK's parse
    city = structured.invoke("Name the capital of France and its country.")
    assert isinstance(city, City)
    assert city.name
    by_tool = chat.with_structured_output(City, method="function_calling")
    city = by_tool.invoke("Name the capital of Italy and its country.")
    assert isinstance(city, City)
    assert city.name


def test_langchain_openai_embeddings(keep_server: LiveServer) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model=DEFAULT_EMBEDDER.name,
        base_url=keep_server.base_url + "/v1",
        api_key=keep_server.key,  # type: ignore[arg-type]
        check_embedding_ctx_length=False,
    )
    vectors = embeddings.embed_documents(["The cat sat on the mat.", "Stock markets fell."])
    query = embeddings.embed_query("Where did the cat sit?")
    assert len(vectors) == 2
    assert len(query) == len(vectors[0]) == 384
    near = sum(a * b for a, b in zip(query, vectors[0], strict=True))
    far = sum(a * b for a, b in zip(query, vectors[1], strict=True))
    assert near > far


# --- LlamaIndex -------------------------------------------------------------------------------


def test_llamaindex_openai_like_chat_and_completion(keep_server: LiveServer) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    common = {
        "model": MODEL,
        "api_base": keep_server.base_url + "/v1",
        "api_key": keep_server.key,
        "max_tokens": 32,
    }
    chat = OpenAILike(**common, is_chat_model=True)
    reply = chat.chat(
        [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content="Hi.")]
    )
    assert reply.message.content
    text = OpenAILike(**common, is_chat_model=False).complete("One, two, three,")
    assert text.text


# --- LiteLLM, as a client ----------------------------------------------------------------------


def test_litellm_completion_with_tools(keep_server: LiveServer) -> None:
    import litellm

    response = litellm.completion(
        model="openai/" + MODEL,
        api_base=keep_server.base_url + "/v1",
        api_key=keep_server.key,
        messages=[{"role": "user", "content": QUESTIONS[1]}],
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=96,
    )
    message = response.choices[0].message  # type: ignore[union-attr]
    assert response.choices[0].finish_reason == "tool_calls"  # type: ignore[union-attr]
    check_calls([c.model_dump() for c in message.tool_calls])


# --- Open WebUI's native tool calling, replayed as its backend builds it ------------------------


def webui_history() -> list[dict[str, Any]]:
    """HISTORY as Open WebUI keeps it: content "", calls with `index`, results as text."""
    out: list[dict[str, Any]] = []
    for turn in HISTORY:
        if turn["role"] == "assistant":
            calls = [{"index": i, **c} for i, c in enumerate(turn["tool_calls"])]
            out.append({"role": "assistant", "content": "", "tool_calls": calls})
            out += [
                {"role": "tool", "tool_call_id": c["id"], "content": json.dumps({"ok": True})}
                for c in calls
            ]
            out.append({"role": "assistant", "content": "Done."})
        else:
            out.append(turn)
    return out


def test_open_webui_native_tool_calling_replay(keep_server: LiveServer) -> None:
    """open_webui/utils/middleware.py: `tools` (no tool_choice: `auto`), stream with usage;
    the deltas grouped by index, arguments appended; then the same form with the assistant
    turn (content "", the calls with their `index`) and one `tool` turn per call. The chat
    already holds two turns that called tools, with their results, as a chat that has used
    tools does."""
    url = keep_server.base_url + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {keep_server.key}"}
    form: dict[str, Any] = {
        "model": MODEL,
        "messages": [*webui_history(), {"role": "user", "content": QUESTIONS[0]}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": TOOLS,
        "temperature": 0,
    }

    def exchange(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        content, calls, usage = "", [], {}
        with httpx.stream("POST", url, json=body, headers=headers, timeout=120) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                usage = event.get("usage") or usage
                for choice in event["choices"]:
                    delta = choice["delta"]
                    content += delta.get("content") or ""
                    for part in delta.get("tool_calls") or []:
                        found = next((c for c in calls if c["index"] == part["index"]), None)
                        if found is None:
                            part.setdefault("function", {}).setdefault("arguments", "")
                            calls.append(part)
                        else:
                            found["function"]["arguments"] += part["function"].get("arguments", "")
        return content, calls, usage

    content, calls, usage = exchange(form)
    assert usage["completion_tokens"] > 0
    assert calls, "the model answered in text: no tool turn to replay"
    for call in calls:
        arguments = json.loads(call["function"]["arguments"])
        jsonschema.validate(arguments, SCHEMAS[call["function"]["name"]])
        call["function"]["arguments"] = json.dumps(arguments)  # Open WebUI re-dumps them
    follow = {
        **form,
        "messages": [
            *form["messages"],
            {"role": "assistant", "content": content, "tool_calls": calls},
        ],
    }
    for call in calls:
        result = {"city": "Paris", "temperature": 18}
        follow["messages"].append(
            {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result, indent=2)}
        )
    content, more, usage = exchange(follow)
    assert usage["prompt_tokens"] > 0
    assert content or more
