"""The journal on a running appliance: the admin pull is one snapshot under load, and a
teardown's receipt does not queue behind client work on the default executor."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import httpx
from fastapi.testclient import TestClient

from appliance.app import create_app
from appliance.journal import CHECKPOINT_NAME
from inference.engine import Engine
from rag.embedder import Embedder
from tests.conftest import TEST_KEY, AppFactory, make_settings, state_settings
from transparency.note import Verifier, open_checkpoint

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def receipt_fields(i: int) -> dict[str, Any]:
    return {
        "session_id": f"sess_load{i:08d}abcdefghijklmnop",
        "peer_id": "local",
        "started_at": "2026-11-25T10:00:00.000Z",
        "ended_at": "2026-11-25T10:00:00.500Z",
        "model": "smollm2-135m-instruct",
        "model_sha256": "0" * 64,
        "prompt_tokens": i,
        "completion_tokens": 1,
        "requests": 1,
    }


def test_an_admin_pull_is_one_snapshot_while_receipts_are_appended(
    make_client: AppFactory,
) -> None:
    """Pull page by page while another thread appends: each page's checkpoint covers every
    entry pulled so far, and a short page ends exactly at its checkpoint's size. Reading the
    checkpoint before the entries let an append fall between the two."""
    settings = state_settings()
    client = make_client(**settings)
    journal = client.app.state.keep.receipts  # type: ignore[attr-defined]
    verifier = Verifier.parse(client.get("/v1/receipts/checkpoint").json()["verifier_key"])
    stop = threading.Event()

    def append() -> None:
        i = 0
        while not stop.is_set():
            journal.issue(receipt_fields(i))
            i += 1

    writer = threading.Thread(target=append)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so an append lands in any gap
    writer.start()
    held = 0
    try:
        transport = httpx.HTTPTransport(uds=str(settings["admin_socket"]))
        with httpx.Client(transport=transport, base_url="http://admin") as admin:
            for _ in range(200):
                page = admin.get("/admin/receipts", params={"after": held, "limit": 1000}).json()
                held += len(page["entries"])
                checkpoint = open_checkpoint(page["checkpoint"], verifier)
                assert checkpoint.size == page["size"]
                assert held <= page["size"], "entries beyond the checkpoint"
                if len(page["entries"]) < 1000:
                    assert held == page["size"], "a short page that stops before the end"
    finally:
        stop.set()
        writer.join()
        sys.setswitchinterval(interval)
    assert held > 0


def test_a_teardown_does_not_wait_for_a_saturated_default_executor(
    make_client: AppFactory,
) -> None:
    client = make_client()
    gate = threading.Event()

    async def saturate() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(64):  # far more than the default executor's threads
            loop.run_in_executor(None, gate.wait, 30)

    portal = client.portal
    assert portal is not None
    portal.call(saturate)
    try:
        session = client.post("/v1/sessions").json()["id"]
        started = time.monotonic()
        assert client.delete(f"/v1/sessions/{session}").status_code == 200
        took = time.monotonic() - started
        found = client.get("/v1/receipts", params={"session_id": session})
    finally:
        gate.set()
    assert found.status_code == 200
    assert took < 2.0, took


def test_receipts_survive_a_restart_from_the_kept_checkpoint(
    engine: Engine, embedder: Embedder
) -> None:
    settings = make_settings(**state_settings(), receipt_checkpoint_interval=2)
    ids = []
    with TestClient(create_app(settings, engine=engine, embedder=embedder), headers=AUTH) as c:
        for _ in range(3):
            session = c.post("/v1/sessions").json()["id"]
            assert c.delete(f"/v1/sessions/{session}").status_code == 200
            ids.append(session)
    checkpoint = (settings.state_dir / CHECKPOINT_NAME).read_text()
    assert checkpoint.split("\n")[1] == "3"
    with TestClient(create_app(settings, engine=engine, embedder=embedder), headers=AUTH) as c:
        for seq, session in enumerate(ids):
            bundle = c.get("/v1/receipts", params={"session_id": session}).json()
            assert bundle["index"] == seq
        assert c.get("/v1/receipts/checkpoint").json()["size"] == 3
