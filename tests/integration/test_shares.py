"""Fair shares per client: sessions, requests in flight, document RAM, embedding inputs; the
quota counts embeddings and uploads; only a request that succeeds keeps a session alive.

Client A is the suite's dev key and client B a static key: two clients (shares count static
keys by key, and policy keys by client id).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from fastapi.testclient import TestClient

from appliance.auth import key_digest, new_key
from inference.engine import Engine
from keep.settings import Settings
from tests.conftest import (
    TEST_KEY,
    AppFactory,
    ServerFactory,
    ask,
    chat_body,
    make_settings,
    never_stop,
    state_settings,
)
from tests.integration.test_policy import KEY_A, admin, policy

KEY_B = new_key()
EMBEDDER = make_settings().embedder.name
B = {"Authorization": f"Bearer {KEY_B}"}


def two_clients(make_client: AppFactory, **overrides: Any) -> TestClient:
    return make_client(api_key_hashes=(key_digest(KEY_B),), **overrides)


def _open(client: TestClient, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post("/v1/sessions", headers=headers or {})


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def test_the_defaults_leave_every_client_less_than_the_whole() -> None:
    defaults = Settings.model_fields
    # Sessions hold no sequence between turns, so one client (a chat front-end for a whole
    # firm) may open as many as the appliance; what is scarce is shared fairly: RAM for
    # documents, and the waiting line for sequences, which one client alone cannot fill.
    assert defaults["client_max_sessions"].default <= defaults["max_sessions"].default
    assert defaults["rag_client_memory_bytes"].default < defaults["rag_memory_bytes"].default
    assert defaults["client_max_requests"].default < defaults["queue_depth"].default


def test_one_client_cannot_hold_every_session(make_client: AppFactory) -> None:
    client = two_clients(make_client, max_sessions=6, client_max_sessions=3)
    mine = [_open(client).json()["id"] for _ in range(3)]
    over = _open(client)
    assert over.status_code == 429
    assert _code(over) == "too_many_sessions"
    assert "this client" in over.json()["error"]["message"]
    # An ephemeral session counts too: a chat without a session is refused as well.
    chat = client.post("/v1/chat/completions", json=chat_body(max_tokens=1))
    assert chat.status_code == 429
    # The other client still gets its sessions.
    theirs = [_open(client, B) for _ in range(3)]
    assert [r.status_code for r in theirs] == [201] * 3
    # Closing one gives the first client its room back.
    assert client.delete(f"/v1/sessions/{mine[0]}").status_code == 200
    assert _open(client).status_code == 201
    for r in theirs:
        client.delete(f"/v1/sessions/{r.json()['id']}", headers=B)
    for sid in mine[1:]:
        client.delete(f"/v1/sessions/{sid}")


def test_requests_in_flight_are_bounded_per_client(
    serve_inproc: ServerFactory, engine: Engine
) -> None:
    base = serve_inproc(
        api_key_hashes=(key_digest(KEY_B),), client_max_requests=2, client_max_sessions=8
    )
    long = chat_body(stream=True, max_tokens=256, logit_bias=never_stop(engine))
    auth = {"Authorization": f"Bearer {TEST_KEY}"}
    started = threading.Barrier(3)
    release = threading.Event()

    def hold() -> None:
        with (
            httpx.Client(timeout=60) as http,
            http.stream("POST", base + "/v1/chat/completions", json=long, headers=auth) as r,
        ):
            assert r.status_code == 200
            started.wait()
            release.wait(60)  # leaving the block hangs up: the stream is cancelled

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    started.wait(60)
    try:
        third = httpx.post(base + "/v1/models", headers=auth, timeout=30)
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "too_many_concurrent_requests"
        assert httpx.get(base + "/v1/models", headers=B, timeout=30).status_code == 200
    finally:
        release.set()
        for t in threads:
            t.join(60)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if httpx.get(base + "/v1/models", headers=auth, timeout=30).status_code == 200:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the client's requests in flight were not given back")


def _doc(n: int) -> dict[str, Any]:
    text = " ".join(f"clause {i} of the agreement binds the parties." for i in range(n))
    return {"documents": [{"name": "contract.txt", "text": text}]}


def test_document_ram_is_bounded_per_client(make_client: AppFactory) -> None:
    client = two_clients(make_client, rag_client_memory_bytes=1 << 16)
    first, second = _open(client).json()["id"], _open(client).json()["id"]
    ok = client.post(f"/v1/sessions/{first}/documents", json=_doc(60))
    assert ok.status_code == 201
    # The client's other session shares the same budget.
    over = client.post(f"/v1/sessions/{second}/documents", json=_doc(200))
    assert over.status_code == 413
    assert "this client's RAM budget" in over.json()["error"]["message"]
    # Another client's documents fit.
    theirs = _open(client, B).json()["id"]
    assert (
        client.post(f"/v1/sessions/{theirs}/documents", json=_doc(60), headers=B).status_code == 201
    )
    # Deleting the first client's document gives its share back.
    doc_id = ok.json()["data"][0]["id"]
    assert client.delete(f"/v1/sessions/{first}/documents/{doc_id}").status_code == 200
    assert client.post(f"/v1/sessions/{second}/documents", json=_doc(60)).status_code == 201
    budget = client.app.state.keep.budget  # type: ignore[attr-defined]
    for sid, headers in ((first, {}), (second, {}), (theirs, B)):
        client.delete(f"/v1/sessions/{sid}", headers=headers)
    assert budget.used == 0


def test_embedding_inputs_per_minute_count_embeddings_and_uploads(
    make_client: AppFactory,
) -> None:
    client = two_clients(make_client, client_embedding_inputs_per_minute=12)
    body = {"model": EMBEDDER, "input": ["a fact"] * 8}
    assert client.post("/v1/embeddings", json=body).status_code == 200
    over = client.post("/v1/embeddings", json=body)
    assert over.status_code == 429
    assert _code(over) == "rate_limited"
    assert int(over.headers["Retry-After"]) >= 1
    assert client.post("/v1/embeddings", json=body, headers=B).status_code == 200
    # An upload's chunks draw on the same share.
    sid = _open(client).json()["id"]
    upload = client.post(f"/v1/sessions/{sid}/documents", json=_doc(200))
    assert upload.status_code == 429
    assert _code(upload) == "rate_limited"
    client.delete(f"/v1/sessions/{sid}")


def with_quota(serve_inproc: ServerFactory, settings: Any = None, **quota: int) -> str:
    """A server whose policy gives KEY_A's client (client-peer-a) this quota."""
    base_settings = state_settings()
    settings = base_settings | (settings or {})
    base = serve_inproc(**settings)
    quotas = [{"client_id": "client-peer-a", **quota}]
    with admin(settings["admin_socket"]) as control:
        applied = control.put("/admin/policy", json=policy(1, {KEY_A: "peer-a"}, quotas=quotas))
        assert applied.is_success
    return base


def test_embeddings_and_uploads_count_in_the_quota(serve_inproc: ServerFactory) -> None:
    base = with_quota(serve_inproc, requests_per_day=3)
    auth = {"Authorization": f"Bearer {KEY_A}"}
    with httpx.Client(base_url=base, headers=auth, timeout=60) as http:
        embedded = http.post("/v1/embeddings", json={"model": EMBEDDER, "input": "x"})
        assert embedded.status_code == 200
        sid = http.post("/v1/sessions").json()["id"]
        assert http.post(f"/v1/sessions/{sid}/documents", json=_doc(5)).status_code == 201
        assert ask(base, KEY_A).status_code == 200
        refused = ask(base, KEY_A)  # the fourth request of the day
        assert refused.status_code == 429
        assert _code(refused) == "quota_exceeded"
        again = http.post("/v1/embeddings", json={"model": EMBEDDER, "input": "x"})
        assert again.status_code == 429


def test_a_rate_limited_upload_gives_its_quota_request_back(serve_inproc: ServerFactory) -> None:
    base = with_quota(serve_inproc, {"client_embedding_inputs_per_minute": 1}, requests_per_day=3)
    auth = {"Authorization": f"Bearer {KEY_A}"}
    with httpx.Client(base_url=base, headers=auth, timeout=60) as http:
        sid = http.post("/v1/sessions").json()["id"]
        assert http.post(f"/v1/sessions/{sid}/documents", json=_doc(5)).status_code == 201
        for _ in range(3):  # refused by the rate, not counted by the quota
            limited = http.post(f"/v1/sessions/{sid}/documents", json=_doc(5))
            assert _code(limited) == "rate_limited"
        assert ask(base, KEY_A).status_code == 200  # the second request of the day
        assert ask(base, KEY_A).status_code == 200  # the third


def test_a_session_with_a_request_waiting_is_not_reaped(make_client: AppFactory) -> None:
    client = make_client(session_idle_ttl_s=0.2)
    sid = _open(client).json()["id"]
    session = client.app.state.keep.sessions._live[sid]  # type: ignore[attr-defined]
    session.waiting = 1  # as while a request is queued behind another that just failed
    time.sleep(0.8)
    assert client.get(f"/v1/sessions/{sid}").status_code == 200
    session.waiting = 0
    deadline = time.monotonic() + 5
    while client.get(f"/v1/sessions/{sid}").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get(f"/v1/sessions/{sid}").status_code == 404


def test_embedding_tokens_count_in_the_quota(serve_inproc: ServerFactory) -> None:
    base = with_quota(serve_inproc, tokens_per_day=50)
    auth = {"Authorization": f"Bearer {KEY_A}"}
    body = {"model": EMBEDDER, "input": ["one two three four five six"] * 10}
    first = httpx.post(base + "/v1/embeddings", json=body, headers=auth, timeout=60)
    assert first.status_code == 200
    assert first.json()["usage"]["total_tokens"] >= 50
    refused = httpx.post(base + "/v1/embeddings", json=body, headers=auth, timeout=60)
    assert refused.status_code == 429
    assert _code(refused) == "quota_exceeded"


def test_only_a_successful_request_keeps_a_session_alive(make_client: AppFactory) -> None:
    client = make_client(session_idle_ttl_s=1.0)
    failing, working = _open(client).json()["id"], _open(client).json()["id"]
    headers = {"x-keep-session": working}
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        # A 404 inside the session, and a read of it: neither is a use that keeps it alive.
        assert client.delete(f"/v1/sessions/{failing}/documents/doc_x").status_code == 404
        ok = client.post("/v1/chat/completions", json=chat_body(max_tokens=1), headers=headers)
        assert ok.status_code == 200
        time.sleep(0.2)
    gone = client.get(f"/v1/sessions/{failing}")
    assert gone.status_code == 404
    assert _code(gone) == "session_not_found"
    assert client.get(f"/v1/sessions/{working}").status_code == 200
    client.delete(f"/v1/sessions/{working}")
