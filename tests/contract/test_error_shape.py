"""Every error, on every route, is OpenAI's envelope with a 4xx; nothing malformed gets a 500."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference.engine import Engine
from tests.conftest import MODEL, TEST_KEY, AppFactory, never_stop

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
JSON = {"Content-Type": "application/json"}
OK_MSG = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": OK_MSG, "max_tokens": 2, **fields}


# (id, method, path, json body or raw bytes, extra headers, expected status)
Case = tuple[str, str, str, Any, dict[str, str], int]

CASES: list[Case] = [
    ("non-json", "POST", CHAT, b"this is not json", JSON, 400),
    ("truncated-json", "POST", CHAT, b'{"model": "x", "messages": [', JSON, 400),
    ("invalid-utf8", "POST", CHAT, b'{"model": "\xff\xfe", "messages": []}', JSON, 400),
    ("json-array-body", "POST", CHAT, [1, 2, 3], {}, 400),
    ("json-string-body", "POST", CHAT, "hello", {}, 400),
    ("empty-body", "POST", CHAT, b"", JSON, 400),
    ("missing-model", "POST", CHAT, {"messages": OK_MSG}, {}, 400),
    ("missing-messages", "POST", CHAT, {"model": MODEL}, {}, 400),
    ("empty-messages", "POST", CHAT, chat(messages=[]), {}, 400),
    ("messages-not-list", "POST", CHAT, chat(messages="hi"), {}, 400),
    ("message-not-object", "POST", CHAT, chat(messages=["hi"]), {}, 400),
    ("unknown-role", "POST", CHAT, chat(messages=[{"role": "wizard", "content": "x"}]), {}, 400),
    ("content-number", "POST", CHAT, chat(messages=[{"role": "user", "content": 5}]), {}, 400),
    (
        "content-image-part",
        "POST",
        CHAT,
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        {},
        400,
    ),
    ("model-number", "POST", CHAT, chat(model=7), {}, 400),
    ("unknown-model", "POST", CHAT, chat(model="gpt-404"), {}, 404),
    ("temperature-string", "POST", CHAT, chat(temperature="hot"), {}, 400),
    ("temperature-negative", "POST", CHAT, chat(temperature=-1), {}, 400),
    ("temperature-huge", "POST", CHAT, chat(temperature=1e308), {}, 400),
    (
        "temperature-nan",
        "POST",
        CHAT,
        b'{"model": "m", "messages": [], "temperature": NaN}',
        JSON,
        400,
    ),
    ("top-p-zero", "POST", CHAT, chat(top_p=0), {}, 400),
    ("max-tokens-negative", "POST", CHAT, chat(max_tokens=-5), {}, 400),
    ("max-tokens-zero", "POST", CHAT, chat(max_tokens=0), {}, 400),
    ("max-tokens-huge", "POST", CHAT, chat(max_tokens=10**30), {}, 400),
    ("max-tokens-over-cap", "POST", CHAT, chat(max_tokens=100_000), {}, 400),
    ("max-tokens-float", "POST", CHAT, chat(max_tokens=2.5), {}, 400),
    ("seed-huge", "POST", CHAT, chat(seed=2**80), {}, 400),
    ("n-two", "POST", CHAT, chat(n=2), {}, 400),
    ("stream-string", "POST", CHAT, chat(stream="yes"), {}, 400),
    ("stop-too-many", "POST", CHAT, chat(stop=["a", "b", "c", "d", "e"]), {}, 400),
    ("stop-empty-string", "POST", CHAT, chat(stop=""), {}, 400),
    ("logit-bias-bad-key", "POST", CHAT, chat(logit_bias={"abc": 1}), {}, 400),
    ("logit-bias-out-of-vocab", "POST", CHAT, chat(logit_bias={"99999999": 1}), {}, 400),
    ("logit-bias-too-strong", "POST", CHAT, chat(logit_bias={"1": 1000}), {}, 400),
    ("presence-penalty-big", "POST", CHAT, chat(presence_penalty=5), {}, 400),
    ("unknown-field", "POST", CHAT, chat(functions=[{"name": "f"}]), {}, 400),
    ("tool-without-function", "POST", CHAT, chat(tools=[{"type": "function"}]), {}, 400),
    ("tool-choice-without-tools", "POST", CHAT, chat(tool_choice="required"), {}, 400),
    ("response-format-unknown", "POST", CHAT, chat(response_format={"type": "xml"}), {}, 400),
    (
        "json-schema-missing-schema",
        "POST",
        CHAT,
        chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
        {},
        400,
    ),
    (
        "json-schema-unsupported",
        "POST",
        CHAT,
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "frobnicate"}},
            }
        ),
        {},
        400,
    ),
    (
        "context-overflow",
        "POST",
        CHAT,
        chat(messages=[{"role": "user", "content": "word " * 3000}]),
        {},
        400,
    ),
    ("stream-options-bad", "POST", CHAT, chat(stream=True, stream_options={"x": 1}), {}, 400),
    ("unknown-session", "POST", CHAT, chat(), {"X-Keep-Session": "sess_nope"}, 404),
    (
        "completions-prompt-list-of-two",
        "POST",
        COMPLETIONS,
        {"model": MODEL, "prompt": ["a", "b"]},
        {},
        400,
    ),
    ("completions-prompt-tokens", "POST", COMPLETIONS, {"model": MODEL, "prompt": [1, 2]}, {}, 400),
    ("completions-missing-prompt", "POST", COMPLETIONS, {"model": MODEL}, {}, 400),
    ("completions-empty-prompt", "POST", COMPLETIONS, {"model": MODEL, "prompt": ""}, {}, 400),
    ("get-on-post-route", "GET", CHAT, None, {}, 405),
    ("unknown-route", "GET", "/v1/nothing-here", None, {}, 404),
    ("unknown-model-get", "GET", "/v1/models/none", None, {}, 404),
    ("unknown-session-get", "GET", "/v1/sessions/sess_nope", None, {}, 404),
    ("unknown-session-delete", "DELETE", "/v1/sessions/sess_nope", None, {}, 404),
    ("body-over-limit", "POST", CHAT, b"{" + b" " * (2 << 20) + b"}", JSON, 413),
    ("no-key", "POST", CHAT, chat(), {"Authorization": ""}, 401),
    ("wrong-key", "POST", CHAT, chat(), {"Authorization": "Bearer keep-wrong"}, 401),
    ("basic-auth", "POST", CHAT, chat(), {"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    ("wrong-key-models", "GET", "/v1/models", None, {"Authorization": "Bearer nope"}, 401),
    ("wrong-key-sessions", "POST", "/v1/sessions", None, {"Authorization": "Bearer nope"}, 401),
    (
        "docs-unknown-session",
        "POST",
        "/v1/sessions/sess_nope/documents",
        {"documents": [{"name": "a", "text": "b"}]},
        {},
        404,
    ),
    ("docs-list-unknown-session", "GET", "/v1/sessions/sess_nope/documents", None, {}, 404),
    ("docs-delete-unknown", "DELETE", "/v1/sessions/sess_nope/documents/doc_x", None, {}, 404),
    (
        "docs-wrong-key",
        "GET",
        "/v1/sessions/sess_nope/documents",
        None,
        {"Authorization": "Bearer nope"},
        401,
    ),
    ("embeddings-unknown-model", "POST", "/v1/embeddings", {"model": "x", "input": "a"}, {}, 404),
    ("embeddings-no-input", "POST", "/v1/embeddings", {"model": "all-minilm-l6-v2"}, {}, 400),
    (
        "embeddings-number-input",
        "POST",
        "/v1/embeddings",
        {"model": "all-minilm-l6-v2", "input": 3},
        {},
        400,
    ),
    (
        "embeddings-token-input",
        "POST",
        "/v1/embeddings",
        {"model": "all-minilm-l6-v2", "input": [[1, 2]]},
        {},
        400,
    ),
    (
        "embeddings-bad-format",
        "POST",
        "/v1/embeddings",
        {"model": "all-minilm-l6-v2", "input": "a", "encoding_format": "hex"},
        {},
        400,
    ),
    ("chat-keep-rag-bad", "POST", CHAT, chat(keep={"rag": {"top_k": 0}}), {}, 400),
    ("chat-keep-rag-true", "POST", CHAT, chat(keep={"rag": True}), {}, 400),
    ("chat-keep-unknown", "POST", CHAT, chat(keep={"memory": 1}), {}, 400),
]


def assert_envelope(body: Any) -> None:
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    assert error["param"] is None or isinstance(error["param"], str)
    assert isinstance(error["code"], str)


def send(client: TestClient, case: Case) -> Any:
    _, method, path, body, headers, _ = case
    kwargs: dict[str, Any] = {"headers": headers}
    if isinstance(body, bytes):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    return client.request(method, path, **kwargs)


def test_there_are_at_least_thirty_malformed_requests() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_request_gets_a_4xx_in_openai_shape(client: TestClient, case: Case) -> None:
    response = send(client, case)
    assert response.status_code == case[5], response.text
    assert response.headers["content-type"].startswith("application/json")
    assert_envelope(response.json())


def test_service_is_still_ready_after_every_malformed_request(client: TestClient) -> None:
    for case in CASES:
        assert 400 <= send(client, case).status_code < 500
    assert client.get("/readyz").json() == {"status": "ready"}
    ok = client.post(CHAT, json=chat())
    assert ok.status_code == 200


def test_errors_never_echo_request_values(client: TestClient) -> None:
    canary = "CANARY-e4c1d2"
    probes = [
        chat(model=canary),
        chat(messages=[{"role": canary, "content": "x"}]),
        chat(temperature=canary),
        chat(stop=[canary] * 9),
        chat(messages=[{"role": "user", "content": canary * 2000}]),
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": canary}},
            }
        ),
    ]
    for probe in probes:
        response = client.post(CHAT, json=probe)
        assert 400 <= response.status_code < 500
        assert canary not in response.text


def test_401_carries_a_bearer_challenge(client: TestClient) -> None:
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {TEST_KEY}x"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_body_limit_is_a_setting(make_client: AppFactory) -> None:
    client = make_client(max_body_bytes=2048)
    body = chat(messages=[{"role": "user", "content": "x" * 4000}])
    response = client.post(CHAT, json=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    # The same limit holds when the client does not declare a length (chunked upload).
    chunked = client.post(CHAT, content=iter([b"{", b" " * 4096, b"}"]), headers=JSON)
    assert chunked.status_code == 413


def test_max_tokens_cap_is_a_setting(make_client: AppFactory) -> None:
    client = make_client(max_tokens_cap=5)
    assert client.post(CHAT, json=chat(max_tokens=5)).status_code == 200
    over = client.post(CHAT, json=chat(max_tokens=6))
    assert over.status_code == 400
    assert over.json()["error"]["param"] == "max_tokens"
    # Without max_tokens the cap still bounds the completion.
    usage = client.post(CHAT, json={"model": MODEL, "messages": OK_MSG}).json()["usage"]
    assert usage["completion_tokens"] <= 5


def test_prompt_past_the_session_context_gets_400(client: TestClient) -> None:
    # The engine's sequences hold 1024 tokens (KEEP_N_CTX_PER_SESSION in the test settings).
    fits = client.post(CHAT, json=chat(messages=[{"role": "user", "content": "word " * 300}]))
    assert fits.status_code == 200
    over = client.post(CHAT, json=chat(messages=[{"role": "user", "content": "word " * 1100}]))
    assert over.status_code == 400
    assert over.json()["error"]["code"] == "context_length_exceeded"


def test_live_session_limit_gives_429_with_retry_after(make_client: AppFactory) -> None:
    client = make_client(max_sessions=2)
    ids = [client.post("/v1/sessions").json()["id"] for _ in range(2)]
    over = client.post("/v1/sessions")
    assert over.status_code == 429
    assert over.headers["retry-after"] == "1"
    assert_envelope(over.json())
    busy = client.post(CHAT, json=chat())  # an ephemeral session needs a slot too
    assert busy.status_code == 429
    client.delete(f"/v1/sessions/{ids[0]}")
    assert client.post(CHAT, json=chat()).status_code == 200
    client.delete(f"/v1/sessions/{ids[1]}")


def test_request_deadline_is_a_setting(make_client: AppFactory, engine: Engine) -> None:
    client = make_client(request_deadline_s=0.2)
    body = chat(messages=[{"role": "user", "content": "Write a long essay."}], max_tokens=256)
    # No end-of-generation token: the 256 tokens take far longer than the deadline, always.
    body["logit_bias"] = never_stop(engine)
    response = client.post(CHAT, json=body)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    streamed = client.post(CHAT, json={**body, "stream": True})
    # Past the first token the status is already sent: the error arrives as an SSE event.
    assert streamed.status_code in (200, 504)
    if streamed.status_code == 200:
        assert '"deadline_exceeded"' in streamed.text
        assert streamed.text.rstrip().endswith("data: [DONE]")
    assert client.get("/readyz").status_code == 200
