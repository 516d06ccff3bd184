"""Per-client rate limits through the real app: OpenAI's x-ratelimit-* headers, exact, down
to 0; then 429 with Retry-After; then, once the bucket has refilled, success again. The
policy's per-client limits replace the settings' defaults for that client alone."""

from __future__ import annotations

import time

import httpx
import pytest
from fastapi.testclient import TestClient

from appliance.auth import key_digest, new_key
from appliance.errors import TooManyConcurrent
from appliance.state import app_state
from tests.conftest import AppFactory, chat_body


def test_a_client_driven_to_its_request_limit_gets_429_then_succeeds_after_the_reset(
    make_client: AppFactory,
) -> None:
    client = make_client(client_requests_per_second=0.5, client_request_burst=3)
    remaining = []
    for _ in range(3):
        r = client.get("/v1/models")
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(r.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]
    assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-ratelimit-limit-tokens" not in r.headers  # the token limit is off by default
    refused = client.get("/v1/models")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    retry = int(refused.headers["retry-after"])
    assert 1 <= retry <= 2  # one request comes back in 2 s at 0.5 per second
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    time.sleep(retry)
    again = client.get("/v1/models")
    assert again.status_code == 200
    assert again.headers["x-ratelimit-remaining-requests"] == "0"


def test_tokens_used_come_off_the_token_bucket_and_its_debt_refuses(
    make_client: AppFactory,
) -> None:
    client = make_client(client_tokens_per_minute=30)  # one token every 2 s
    r = client.post("/v1/chat/completions", json=chat_body(max_tokens=8, temperature=0))
    assert r.status_code == 200
    # At response start the completion's own tokens are not yet taken; the next sees them.
    used = r.json()["usage"]["total_tokens"]
    assert used > 30
    refused = client.get("/v1/models")
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "tokens"
    assert refused.headers["x-ratelimit-limit-tokens"] == "30"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    # The debt plus one token, at half a token a second (a little has refilled meanwhile).
    assert int(refused.headers["retry-after"]) >= (used - 30 + 1) * 2 - 4


def test_a_policy_gives_one_client_its_own_limits(make_client: AppFactory) -> None:
    client = make_client(client_requests_per_second=100, client_request_burst=100)
    key = new_key()
    policy = {
        "version": 1,
        "keys": [{"sha256": key_digest(key), "peer_id": "p1", "client_id": "acme"}],
        "peers": [{"id": "p1", "address": "10.66.0.2"}],
        "quotas": [{"client_id": "acme", "requests_per_second": 0.1, "request_burst": 2}],
    }
    socket = app_state(client.app).settings.admin_socket  # type: ignore[arg-type]
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://a") as admin:
        assert admin.put("/admin/policy", json=policy).status_code == 200
    acme = {"Authorization": f"Bearer {key}"}
    statuses = [client.get("/v1/models", headers=acme).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    other = client.get("/v1/models")  # the settings' key keeps the default
    assert other.headers["x-ratelimit-limit-requests"] == "100"


def test_a_policy_caps_one_clients_requests_in_flight(make_client: AppFactory) -> None:
    client: TestClient = make_client()
    state = app_state(client.app)  # type: ignore[arg-type]
    state.shares.set_in_flight_limits({"acme": 1})
    state.shares.enter("acme")
    try:
        with pytest.raises(TooManyConcurrent) as refused:
            state.shares.enter("acme")
        assert refused.value.limit == "in_flight"
        state.shares.enter("other")  # another client keeps the settings' 64
        state.shares.leave("other")
    finally:
        state.shares.leave("acme")
