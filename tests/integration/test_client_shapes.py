"""What real clients send: unknown keys inside messages and `json_schema` are ignored and only
counted; unknown top-level fields, media parts, token-id inputs and `dimensions` get a 400
that says why and names the field."""

from __future__ import annotations

from fastapi.testclient import TestClient

from appliance.openai.protocol import IgnoredFields
from rag.embedder import Embedder
from tests.conftest import chat_body


def test_unknown_keys_inside_messages_are_ignored_and_counted(client: TestClient) -> None:
    before = IgnoredFields.count
    body = chat_body(max_tokens=2)
    body["messages"][1] |= {"refusal": None, "annotations": [], "x-client-trace": "abc"}
    body["messages"][0]["content"] = [{"type": "text", "text": "Be brief.", "cache_control": {}}]
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert IgnoredFields.count - before == 4


def test_unknown_keys_inside_json_schema_are_ignored(client: TestClient) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": schema, "strict": True, "x-vendor": 1},
    }
    r = client.post("/v1/chat/completions", json=chat_body(max_tokens=16, response_format=fmt))
    assert r.status_code == 200, r.text


def test_unknown_top_level_fields_are_still_refused_by_name(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json=chat_body(max_tokens=2, frobnicate=True))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "frobnicate"


def test_image_and_audio_parts_get_a_400_that_says_text_only(client: TestClient) -> None:
    for part in (
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ):
        body = chat_body(max_tokens=2)
        body["messages"][1]["content"] = [{"type": "text", "text": "What is this?"}, part]
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert "text only" in error["message"]
        assert error["param"] == "messages[1].content"


def test_embeddings_refuse_token_ids_and_other_dimensions(
    client: TestClient, embedder: Embedder
) -> None:
    for tokens in ([1, 2, 3], [[1, 2], [3]]):
        r = client.post("/v1/embeddings", json={"model": embedder.name, "input": tokens})
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["param"] == "input"
        assert "check_embedding_ctx_length=False" in error["message"]
    body = {"model": embedder.name, "input": "a text", "dimensions": 256}
    r = client.post("/v1/embeddings", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "dimensions"
    same = client.post("/v1/embeddings", json={**body, "dimensions": embedder.dimension})
    assert same.status_code == 200
    assert len(same.json()["data"][0]["embedding"]) == embedder.dimension


def test_legacy_function_call_in_messages_is_refused_not_dropped(client: TestClient) -> None:
    body = chat_body(max_tokens=2)
    call = {"name": "f", "arguments": "{}"}
    body["messages"].append({"role": "assistant", "content": "", "function_call": call})
    body["messages"].append({"role": "user", "content": "And?"})
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages[2].function_call"
    assert "tool_calls" in r.json()["error"]["message"]
