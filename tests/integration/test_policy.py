"""Policy over the admin socket: applied live, refused whole when bad, never rolled back,
kept across a restart, and a revocation takes effect within a second."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from appliance.app import create_app
from appliance.auth import key_digest, new_key
from inference.engine import Engine
from rag.embedder import Embedder
from tests.conftest import ServerFactory, ask, chat_body, make_settings, state_settings

KEY_A, KEY_B = new_key(), new_key()
SHA = make_settings().model_pin().sha256


def policy(version: int, keys: dict[str, str], **extra: Any) -> dict[str, Any]:
    """`keys`: API key -> peer id; each peer is its own client."""
    peers = sorted(set(keys.values()))
    return {
        "version": version,
        "keys": [
            {"sha256": key_digest(k), "peer_id": p, "client_id": f"client-{p}"}
            for k, p in keys.items()
        ],
        "peers": [{"id": p, "address": f"10.66.0.{i + 2}"} for i, p in enumerate(peers)],
        **extra,
    }


def admin(socket: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://admin")


def test_the_admin_socket_is_0600_and_not_on_tcp(serve_inproc: ServerFactory) -> None:
    settings = state_settings()
    serve_inproc(**settings)
    mode = settings["admin_socket"].stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    with admin(settings["admin_socket"]) as client:
        status = client.get("/admin/status").json()
    assert status["receipts_healthy"] is True
    assert status["verifier_key"].startswith("keep.appliance/")


def test_policy_applies_live_and_revocation_cuts_off_within_a_second(
    serve_inproc: ServerFactory,
) -> None:
    settings = state_settings()
    base = serve_inproc(**settings)
    with admin(settings["admin_socket"]) as client:
        assert ask(base, KEY_A).status_code == 401
        applied = client.put("/admin/policy", json=policy(1, {KEY_A: "peer-a", KEY_B: "peer-b"}))
        assert applied.status_code == 200, applied.text
        answer = ask(base, KEY_A)
        assert answer.status_code == 200
        receipt = httpx.get(
            base + "/v1/receipts",
            params={"session_id": answer.headers["x-keep-session"]},
            headers={"Authorization": f"Bearer {KEY_A}"},
        ).json()["receipt"]
        assert receipt["peer_id"] == "peer-a"
        # Another peer cannot read peer-a's receipt.
        other = httpx.get(
            base + "/v1/receipts",
            params={"session_id": answer.headers["x-keep-session"]},
            headers={"Authorization": f"Bearer {KEY_B}"},
        )
        assert other.status_code == 404
        started = time.monotonic()
        assert client.put("/admin/policy", json=policy(2, {KEY_B: "peer-b"})).status_code == 200
        refused = ask(base, KEY_A)
        elapsed = time.monotonic() - started
    assert refused.status_code == 401
    assert elapsed < 1.0
    assert ask(base, KEY_B).status_code == 200


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"version": 3, "keys": [{"sha256": "zz", "peer_id": "p", "client_id": "c"}]}, "keys"),
        (policy(3, {KEY_A: "peer-a"}) | {"peers": []}, "peer the policy does not list"),
        (policy(3, {KEY_A: "peer-a"}) | {"surprise": 1}, "surprise"),
        (policy(1, {KEY_A: "peer-a"}), "older"),
        (policy(2, {KEY_A: "peer-a"}), "different policy"),
        (
            policy(3, {KEY_A: "p"}, models=[{"name": "smollm2-135m-instruct", "sha256": "0" * 64}]),
            "does not pin the served model",
        ),
    ],
)
def test_a_bad_policy_is_refused_whole_and_the_last_good_one_stays(
    serve_inproc: ServerFactory, bad: dict[str, Any], reason: str
) -> None:
    settings = state_settings()
    base = serve_inproc(**settings)
    with admin(settings["admin_socket"]) as client:
        assert client.put("/admin/policy", json=policy(2, {KEY_B: "peer-b"})).status_code == 200
        refused = client.put("/admin/policy", json=bad)
        assert refused.status_code == 400
        assert reason in refused.json()["error"]["message"]
        assert client.get("/admin/status").json()["policy_version"] == 2
    assert ask(base, KEY_B).status_code == 200
    assert ask(base, KEY_A).status_code == 401


def test_quota_exhaustion_gets_429(serve_inproc: ServerFactory) -> None:
    settings = state_settings()
    base = serve_inproc(**settings)
    quota = [{"client_id": "client-peer-a", "requests_per_day": 2}]
    with admin(settings["admin_socket"]) as client:
        client.put("/admin/policy", json=policy(1, {KEY_A: "peer-a"}, quotas=quota))
    assert [ask(base, KEY_A).status_code for _ in range(2)] == [200, 200]
    third = ask(base, KEY_A)
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "quota_exceeded"


def test_the_last_good_policy_survives_a_restart_without_control(
    engine: Engine, embedder: Embedder, serve_inproc: ServerFactory
) -> None:
    settings = state_settings()
    serve_inproc(**settings)
    with admin(settings["admin_socket"]) as client:
        client.put("/admin/policy", json=policy(5, {KEY_A: "peer-a"}))
    # A second appliance on the same state (the first still holds its socket, which a
    # second start refuses to steal).
    again = {**settings, "admin_socket": settings["state_dir"] / "admin2.sock"}
    app = create_app(make_settings(**again), engine=engine, embedder=embedder)
    with TestClient(app, headers={"Authorization": f"Bearer {KEY_A}"}) as restarted:
        answer = restarted.post("/v1/chat/completions", json=chat_body(max_tokens=2))
    assert answer.status_code == 200
    kept = (settings["state_dir"] / "policy.json").read_text()
    assert KEY_A not in kept  # only its digest is kept
    assert key_digest(KEY_A) in kept


def test_a_clients_priority_comes_from_its_quota_capped_to_the_classes(
    serve_inproc: ServerFactory, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine is real; its `submit` is wrapped only to see each request's place in line."""
    seen: list[tuple[str, int]] = []
    submit = engine.submit

    def recording(ctx: Any, request: Any, **kw: Any) -> Any:
        seen.append((request.client, request.priority))
        return submit(ctx, request, **kw)

    monkeypatch.setattr(engine, "submit", recording)
    settings = state_settings()
    base = serve_inproc(**settings, priority_classes=3, client_default_priority=1)
    quota = [{"client_id": "client-peer-a", "priority": 15}]
    with admin(settings["admin_socket"]) as client:
        r = client.put(
            "/admin/policy", json=policy(1, {KEY_A: "peer-a", KEY_B: "peer-b"}, quotas=quota)
        )
        assert r.status_code == 200, r.text
        too_high = policy(2, {KEY_A: "peer-a"}, quotas=[{"client_id": "x", "priority": 16}])
        assert client.put("/admin/policy", json=too_high).status_code == 400
    assert ask(base, KEY_A).status_code == 200
    assert ask(base, KEY_B).status_code == 200
    assert seen == [("client-peer-a", 2), ("client-peer-b", 1)]
