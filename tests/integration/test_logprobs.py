"""Logprobs on chat and completions: one entry per completion token, values <= 0, the top
alternative equal to the token under greedy decoding, streams equal to whole answers."""

from __future__ import annotations

import math
from typing import Any

from fastapi.testclient import TestClient

from inference.engine import Engine
from tests.conftest import MODEL, chat_body, never_stop
from tests.integration.test_api import sse_events


def _check_entries(content: list[dict[str, Any]], n_tokens: int, top: int) -> None:
    assert len(content) == n_tokens
    for entry in content:
        assert entry["logprob"] <= 0.0
        piece = bytes(entry["bytes"])
        try:
            assert piece.decode("utf-8") == entry["token"]
        except UnicodeDecodeError:  # part of a character, written as OpenAI does
            assert entry["token"].startswith("bytes:")
        alternatives = entry["top_logprobs"]
        assert len(alternatives) == top
        values = [a["logprob"] for a in alternatives]
        assert values == sorted(values, reverse=True)
        assert all(v <= 0.0 for v in values)
        if top:
            # Greedy: the sampled token is the most likely one, with the same value.
            assert alternatives[0]["bytes"] == entry["bytes"]
            assert math.isclose(alternatives[0]["logprob"], entry["logprob"], abs_tol=1e-6)


def test_chat_logprobs_one_entry_per_token_top_one_is_the_greedy_token(
    client: TestClient, engine: Engine
) -> None:
    body = chat_body(
        "Tell me about the sea.",
        max_tokens=12,
        logprobs=True,
        top_logprobs=5,
        logit_bias=never_stop(engine),
    )
    out = client.post("/v1/chat/completions", json=body).json()
    choice = out["choices"][0]
    content = choice["logprobs"]["content"]
    _check_entries(content, out["usage"]["completion_tokens"], 5)
    text = b"".join(bytes(e["bytes"]) for e in content).decode("utf-8", "replace")
    assert text == choice["message"]["content"]
    # The sum of a distribution's probabilities, seen from the top five: at most one.
    assert all(
        sum(math.exp(a["logprob"]) for a in e["top_logprobs"]) <= 1.0 + 1e-6 for e in content
    )


def test_streamed_logprobs_equal_the_whole_answers(client: TestClient, engine: Engine) -> None:
    body = chat_body("Name three rivers.", max_tokens=10, logprobs=True, top_logprobs=2, seed=5)
    whole = client.post("/v1/chat/completions", json=body).json()["choices"][0]["logprobs"]
    events = sse_events(client, "/v1/chat/completions", {**body, "stream": True})
    streamed = [
        entry
        for event in events[:-1]
        for choice in event["choices"]
        if choice["logprobs"] is not None
        for entry in choice["logprobs"]["content"]
    ]
    assert streamed == whole["content"]


def test_without_logprobs_there_are_none(client: TestClient) -> None:
    out = client.post("/v1/chat/completions", json=chat_body(max_tokens=4)).json()
    assert out["choices"][0]["logprobs"] is None
    events = sse_events(client, "/v1/chat/completions", chat_body(max_tokens=4, stream=True))
    assert all(c["logprobs"] is None for e in events[:-1] for c in e["choices"])


def test_logprobs_only_with_zero_alternatives(client: TestClient) -> None:
    out = client.post("/v1/chat/completions", json=chat_body(max_tokens=4, logprobs=True)).json()
    content = out["choices"][0]["logprobs"]["content"]
    _check_entries(content, out["usage"]["completion_tokens"], 0)


def test_bad_logprobs_requests_get_400_naming_the_field(client: TestClient) -> None:
    for extra, param in (
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ({"logprobs": "yes"}, "logprobs"),
    ):
        r = client.post("/v1/chat/completions", json=chat_body(max_tokens=2, **extra))
        assert r.status_code == 400, (extra, r.text)
        assert r.json()["error"]["param"] == param
    r = client.post(
        "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2, "logprobs": 6}
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "logprobs"


def test_completions_logprobs_in_the_legacy_shape(client: TestClient, engine: Engine) -> None:
    body = {
        "model": MODEL,
        "prompt": "The capital of France is",
        "max_tokens": 6,
        "temperature": 0,
        "logprobs": 3,
        "logit_bias": never_stop(engine),
    }
    out = client.post("/v1/completions", json=body).json()
    choice = out["choices"][0]
    lp = choice["logprobs"]
    n = out["usage"]["completion_tokens"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == n
    assert "".join(lp["tokens"]) == choice["text"]
    assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:i]) for i in range(n)]
    for token, value, top in zip(
        lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], strict=True
    ):
        assert value <= 0
        assert len(top) <= 3
        assert max(top, key=top.get) == token
    streamed = sse_events(client, "/v1/completions", {**body, "stream": True})
    tokens = [
        t
        for e in streamed[:-1]
        for c in e["choices"]
        if c["logprobs"]
        for t in c["logprobs"]["tokens"]
    ]
    offsets = [
        o
        for e in streamed[:-1]
        for c in e["choices"]
        if c["logprobs"]
        for o in c["logprobs"]["text_offset"]
    ]
    assert tokens == lp["tokens"]
    assert offsets == lp["text_offset"]
