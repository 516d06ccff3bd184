"""The OpenAI-compatible API on the real model, through the real FastAPI app."""

from __future__ import annotations

import json
import time
from typing import Any

import jsonschema
import psutil
import pytest
from fastapi.testclient import TestClient
from llama_cpp import Llama

from inference.engine import Engine
from inference.template import ChatMessage
from tests.conftest import MODEL, SYSTEM, AppFactory, chat_body


def sse_events(client: TestClient, path: str, body: dict[str, Any], **kw: Any) -> list[Any]:
    events: list[Any] = []
    with client.stream("POST", path, json=body, **kw) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line or line.startswith(":"):  # an SSE comment: the padding of [DONE]
                continue
            assert line.startswith("data: ")
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def stream_text(events: list[Any]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content", "")
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )


def test_chat_completion_shape_and_answer(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_stream_matches_openai_framing(client: TestClient) -> None:
    events = sse_events(
        client,
        "/v1/chat/completions",
        chat_body(stream=True, stream_options={"include_usage": True}),
    )
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    with_choices = [c for c in chunks if c["choices"]]
    assert with_choices[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c["choices"][0]["finish_reason"] is None for c in with_choices[:-1])
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])


def test_usage_is_only_sent_when_asked(client: TestClient) -> None:
    events = sse_events(client, "/v1/chat/completions", chat_body(stream=True))
    assert all("usage" not in e for e in events[:-1])


def test_streamed_text_equals_non_streamed_text(client: TestClient) -> None:
    body = chat_body("Tell me about the sea.", seed=1234, max_tokens=48)
    whole = client.post("/v1/chat/completions", json=body).json()
    streamed = stream_text(sse_events(client, "/v1/chat/completions", {**body, "stream": True}))
    assert streamed == whole["choices"][0]["message"]["content"]
    assert len(streamed) > 20


def test_prompt_tokens_equal_llama_cpp_count_of_the_rendered_prompt(
    client: TestClient, engine: Engine
) -> None:
    messages = [ChatMessage("system", SYSTEM), ChatMessage("user", "Count the tokens, please.")]
    template = engine.model.template
    assert template is not None
    rendered = template.render(messages)
    # An independent tokenizer: llama-cpp-python's high-level API on the same GGUF.
    vocab = Llama(str(engine.model.pinned.path), vocab_only=True, verbose=False)
    expected = len(vocab.tokenize(rendered.encode(), add_bos=False, special=True))
    body = chat_body("Count the tokens, please.", max_tokens=2)
    usage = client.post("/v1/chat/completions", json=body).json()["usage"]
    assert usage["prompt_tokens"] == expected


SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "enum": ["yes", "no"]},
            "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
        },
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "colours": {
                "type": "array",
                "items": {"type": "string", "enum": ["red", "green", "blue"]},
                "minItems": 1,
                "maxItems": 3,
            },
            "ok": {"type": "boolean"},
        },
        "required": ["colours", "ok"],
        "additionalProperties": False,
    },
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=["string", "enum-int", "array-bool"])
def test_json_schema_output_validates(client: TestClient, schema: dict[str, Any]) -> None:
    body = chat_body(
        "Reply in JSON.",
        max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": schema}},
    )
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    content = response.json()["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), schema)


def test_json_object_mode_returns_an_object(client: TestClient) -> None:
    body = chat_body(
        'Return a JSON object with one key, "animal", whose value is "cat".', max_tokens=200
    )
    body["response_format"] = {"type": "json_object"}
    content = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
    assert isinstance(json.loads(content["content"]), dict)


def test_stop_string_ends_the_completion_without_it(client: TestClient) -> None:
    body = chat_body(max_tokens=40)
    full = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
    assert "Paris" in full["content"]
    cut = client.post("/v1/chat/completions", json={**body, "stop": ["Paris"]}).json()
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["message"]["content"] == full["content"].split("Paris")[0]


def test_text_completions_stream_and_not(client: TestClient) -> None:
    body = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
    whole = client.post("/v1/completions", json=body).json()
    assert whole["object"] == "text_completion"
    events = sse_events(client, "/v1/completions", {**body, "stream": True})
    streamed = "".join(e["choices"][0]["text"] for e in events[:-1])
    assert streamed == whole["choices"][0]["text"]
    assert whole["usage"]["completion_tokens"] == 8


def test_models_list_and_get(client: TestClient) -> None:
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == [MODEL]
    one = client.get(f"/v1/models/{MODEL}").json()
    assert one["id"] == MODEL
    assert one["object"] == "model"
    assert client.get("/v1/models/other-model").status_code == 404


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_no_cache_or_timing_fields_in_responses(client: TestClient) -> None:
    text = client.post("/v1/chat/completions", json=chat_body()).text
    for field in ("cached", "cache", "timings", "prompt_ms", "predicted", "tokens_cached"):
        assert field not in text


def test_sessions_hold_a_sequence_until_deleted(client: TestClient, engine: Engine) -> None:
    assert engine.live_sequences().result() == 0
    created = client.post("/v1/sessions")
    assert created.status_code == 201
    session = created.json()
    assert session["object"] == "session"
    assert session["expires_at"] > time.time()
    headers = {"X-Keep-Session": session["id"]}
    r = client.post("/v1/chat/completions", json=chat_body(), headers=headers)
    assert r.status_code == 200
    assert engine.live_sequences().result() == 1
    assert client.get(f"/v1/sessions/{session['id']}").status_code == 200
    deleted = client.delete(f"/v1/sessions/{session['id']}")
    assert deleted.json() == {"id": session["id"], "object": "session.deleted", "deleted": True}
    assert engine.live_sequences().result() == 0
    gone = client.post("/v1/chat/completions", json=chat_body(), headers=headers)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "session_not_found"


def test_ephemeral_session_is_torn_down_after_its_request(
    client: TestClient, engine: Engine
) -> None:
    client.post("/v1/chat/completions", json=chat_body())
    sse_events(client, "/v1/chat/completions", chat_body(stream=True))
    assert engine.live_sequences().result() == 0
    assert engine.free_sequences == engine.model.n_seq_max


def test_a_session_is_invisible_to_another_key(make_client: AppFactory) -> None:
    other_key = "keep-other-key-0123456789abcdef"
    from appliance.auth import key_digest

    client = make_client(api_key_hashes=(key_digest(other_key),))
    session = client.post("/v1/sessions").json()["id"]
    stranger = {"Authorization": f"Bearer {other_key}", "X-Keep-Session": session}
    r = client.post("/v1/chat/completions", json=chat_body(), headers=stranger)
    assert r.status_code == 404
    assert client.delete(f"/v1/sessions/{session}", headers=stranger).status_code == 404
    assert client.delete(f"/v1/sessions/{session}").status_code == 200


def test_session_follow_up_reuses_only_its_own_prefix(client: TestClient, engine: Engine) -> None:
    session = client.post("/v1/sessions").json()["id"]
    headers = {"X-Keep-Session": session}
    before = engine.stats.reused_tokens
    first = client.post("/v1/chat/completions", json=chat_body(), headers=headers).json()
    after_first = engine.stats.reused_tokens
    follow = chat_body()
    follow["messages"] += [
        {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
        {"role": "user", "content": "And of Spain?"},
    ]
    client.post("/v1/chat/completions", json=follow, headers=headers)
    assert after_first == before  # a new session starts empty
    assert engine.stats.reused_tokens - after_first >= first["usage"]["prompt_tokens"] - 1
    client.delete(f"/v1/sessions/{session}")


def test_idle_sessions_expire(make_client: AppFactory, engine: Engine) -> None:
    client = make_client(session_idle_ttl_s=0.3)
    session = client.post("/v1/sessions").json()["id"]
    client.post("/v1/chat/completions", json=chat_body(), headers={"X-Keep-Session": session})
    deadline = time.monotonic() + 5
    while engine.live_sequences().result() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine.live_sequences().result() == 0
    assert client.get(f"/v1/sessions/{session}").status_code == 404


def test_deleting_a_session_mid_stream_cancels_and_frees_it(
    client: TestClient, engine: Engine
) -> None:
    session = client.post("/v1/sessions").json()["id"]
    headers = {"X-Keep-Session": session}
    body = chat_body("Write a long essay about rivers.", max_tokens=200, stream=True)
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        lines = response.iter_lines()
        next(lines)
        assert client.delete(f"/v1/sessions/{session}").status_code == 200
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"
    assert engine.live_sequences().result() == 0


@pytest.mark.parametrize(
    ("schema", "limit"),
    [
        ({"type": "string", "minLength": 8_000_000_000}, "repetition count"),
        ({"type": "array", "items": {"type": "string"}, "maxItems": 10**12}, "repetition count"),
        ({"type": "string", "pattern": "^a{100000000}$"}, "repetition count"),
        ({"type": "string", "enum": ["v" * 100] * 1000}, "at most 65536 bytes"),
    ],
    ids=["minLength", "maxItems", "pattern", "size"],
)
def test_a_hostile_schema_gets_400_at_once(
    client: TestClient, schema: dict[str, Any], limit: str
) -> None:
    rss = psutil.Process().memory_info().rss
    started = time.monotonic()
    body = chat_body(
        max_tokens=8,
        response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": schema}},
    )
    response = client.post("/v1/chat/completions", json=body)
    assert time.monotonic() - started < 1.0
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "response_format"
    assert limit in error["message"]
    assert psutil.Process().memory_info().rss - rss < 100 << 20


def test_schema_limits_follow_their_settings(make_client: AppFactory) -> None:
    client = make_client(schema_max_repetition=8, schema_max_depth=3)
    schema = {"type": "string", "maxLength": 9}
    body = chat_body(
        max_tokens=8,
        response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": schema}},
    )
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert "at most 8" in response.json()["error"]["message"]
    schema = {"type": "array", "items": {"type": "array", "items": {"type": "string"}}}
    body["response_format"]["json_schema"]["schema"] = schema
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert "3 levels" in response.json()["error"]["message"]
