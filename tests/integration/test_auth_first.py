"""Authentication before everything: without a valid key every request gets 401 (which NGINX
turns into silence) before its route is looked up and before its body is read."""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from appliance.auth import key_digest, new_key
from tests.conftest import MODEL, AppFactory, ServerFactory, state_settings

CHAT = "/v1/chat/completions"
NO_KEY: dict[str, str] = {"Authorization": ""}
WRONG_KEY = {"Authorization": "Bearer keep-wrong-key-0123456789"}
BASIC = {"Authorization": "Basic dXNlcjpwYXNz"}
CALLERS = {"no-key": NO_KEY, "wrong-key": WRONG_KEY, "basic": BASIC}
JSON = {"Content-Type": "application/json"}

# (id, method, path, raw body)
HOSTILE: list[tuple[str, str, str, bytes | None]] = [
    ("unknown-path", "GET", "/v1/nothing-here", None),
    ("unknown-path-post", "POST", "/admin/policy", b"{}"),
    ("wrong-method", "GET", CHAT, None),
    ("wrong-method-put", "PUT", "/v1/models", b"{}"),
    ("malformed-json", "POST", CHAT, b'{"model": "x", "messages": ['),
    ("oversized-body", "POST", CHAT, b"{" + b" " * (3 << 20) + b"}"),
    ("healthz", "GET", "/healthz", None),
    ("readyz", "GET", "/readyz", None),
    ("valid-body", "POST", CHAT, f'{{"model": "{MODEL}", "messages": []}}'.encode()),
]


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {
        "error": {
            "message": "invalid or missing API key",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


@pytest.mark.parametrize("caller", list(CALLERS), ids=list(CALLERS))
@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_without_a_valid_key_every_request_gets_401(
    client: TestClient, caller: str, case: tuple[str, str, str, bytes | None]
) -> None:
    _, method, path, body = case
    assert_401(client.request(method, path, content=body, headers={**CALLERS[caller], **JSON}))


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute, through the routers the app includes."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
            continue
        inner = getattr(route, "original_router", None) or getattr(route, "routes", None)
        if inner is not None:
            found += _api_routes(list(getattr(inner, "routes", inner)))
    return found


def _real_routes(client: TestClient) -> list[tuple[str, str]]:
    routes = []
    for route in _api_routes(list(client.app.routes)):  # type: ignore[attr-defined]
        path = route.path.replace("{session_id}", "sess_x").replace("{document_id}", "doc_x")
        path = path.replace("{model_id:path}", MODEL)
        routes += [(method, path) for method in sorted(route.methods)]
    return routes


def test_every_real_route_needs_a_key_first(client: TestClient) -> None:
    routes = _real_routes(client)
    assert len(routes) >= 12
    for method, path in routes:
        for headers in CALLERS.values():
            assert_401(client.request(method, path, content=b"not json", headers=headers))
    # With the key the same routes behave as before: none of them answers 401.
    for method, path in routes:
        assert client.request(method, path, content=b"not json").status_code != 401


def _raw_exchange(base: str, head: str) -> tuple[bytes, float]:
    """Send a request head only, never its body; what comes back and how long it took."""
    url = urlparse(base)
    start = time.perf_counter()
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head.encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.perf_counter() - start


@pytest.mark.parametrize("length", [1000, 10 << 30], ids=["small", "ten-gib"])
def test_the_body_of_a_request_without_a_key_is_never_read(
    serve_inproc: ServerFactory, length: int
) -> None:
    base = serve_inproc()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: keep\r\nAuthorization: Bearer keep-wrong\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    received, seconds = _raw_exchange(base, head)
    # The server answered and closed without waiting for a byte of the declared body.
    assert received.startswith(b"HTTP/1.1 401 "), received[:200]
    assert seconds < 2
    assert b'"invalid_api_key"' in received


def test_a_huge_body_without_a_key_gets_401_not_413(client: TestClient) -> None:
    huge = b"x" * (8 << 20)
    assert_401(client.post(CHAT, content=huge, headers={**WRONG_KEY, **JSON}))
    upload = "/v1/sessions/sess_x/documents"
    assert_401(client.post(upload, content=huge, headers={**NO_KEY, **JSON}))


def test_a_key_from_another_peer_gets_403_before_its_body_is_read(
    make_client: AppFactory,
) -> None:
    settings = state_settings()
    key = new_key()
    client = make_client(
        **settings, listen_socket=settings["state_dir"] / "api.sock", dev_api_key=None
    )
    policy: dict[str, Any] = {
        "version": 1,
        "keys": [{"sha256": key_digest(key), "peer_id": "peer-a", "client_id": "acme"}],
        "peers": [{"id": "peer-a", "address": "10.66.0.2"}],
    }
    transport = httpx.HTTPTransport(uds=str(settings["admin_socket"]))
    with httpx.Client(transport=transport, base_url="http://admin") as admin:
        assert admin.put("/admin/policy", json=policy).status_code == 200
    auth = {"Authorization": f"Bearer {key}"}
    huge = b"{" + b" " * (3 << 20) + b"}"
    stolen = client.post(CHAT, content=huge, headers={**auth, "X-Keep-Peer": "10.66.0.9", **JSON})
    assert stolen.status_code == 403
    assert stolen.json()["error"]["code"] == "peer_mismatch"
    assert client.get("/v1/models", headers={**auth, "X-Keep-Peer": "10.66.0.9"}).status_code == 403
    own = client.post(CHAT, content=huge, headers={**auth, "X-Keep-Peer": "10.66.0.2", **JSON})
    assert own.status_code == 413  # the right peer's key gets as far as the body limit
    assert client.get("/v1/models", headers={**auth, "X-Keep-Peer": "10.66.0.2"}).status_code == 200


def test_the_admin_socket_answers_health_and_readiness_without_a_key(
    make_client: AppFactory,
) -> None:
    settings = state_settings()
    make_client(**settings)
    transport = httpx.HTTPTransport(uds=str(settings["admin_socket"]))
    with httpx.Client(transport=transport, base_url="http://admin") as admin:
        assert admin.get("/admin/healthz").json() == {"status": "ok"}
        assert admin.get("/admin/readyz").json() == {"status": "ready"}
