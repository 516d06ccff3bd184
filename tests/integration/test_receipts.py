"""Receipts on a running appliance: issued at teardown, content-free, verifiable offline,
never lost, and fail-closed when the journal cannot be written."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from appliance.app import create_app
from appliance.journal import JOURNAL_NAME, JournalError
from inference.engine import Engine
from rag.embedder import Embedder
from tests.conftest import (
    KEEP,
    TEST_KEY,
    AppFactory,
    ServerFactory,
    chat_body,
    make_settings,
    state_settings,
)
from transparency import receipt as receipts
from transparency.note import Verifier
from transparency.verify import Consistency, verify_bundle

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def verifier_of(client: TestClient) -> Verifier:
    return Verifier.parse(client.get("/v1/receipts/checkpoint").json()["verifier_key"])


def journal(state: Path) -> list[dict[str, Any]]:
    lines = (state / JOURNAL_NAME).read_bytes().splitlines()
    return [json.loads(line) for line in lines]


def test_an_ephemeral_request_yields_a_verifiable_receipt(make_client: AppFactory) -> None:
    client = make_client()
    response = client.post("/v1/chat/completions", json=chat_body(max_tokens=6))
    assert response.status_code == 200
    session_id = response.headers["x-keep-session"]
    usage = response.json()["usage"]
    bundle = client.get("/v1/receipts", params={"session_id": session_id}).json()
    receipt = bundle["receipt"]
    assert set(receipt) == {
        "v",
        "appliance_id",
        "seq",
        "session_id",
        "peer_id",
        "started_at",
        "ended_at",
        "model",
        "model_sha256",
        "prompt_tokens",
        "completion_tokens",
        "requests",
    }
    assert receipt["session_id"] == session_id
    assert receipt["peer_id"] == "local"
    assert (receipt["prompt_tokens"], receipt["completion_tokens"], receipt["requests"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        1,
    )
    assert receipt["model_sha256"] == make_settings().model_pin().sha256
    checkpoint = verify_bundle(bundle, verifier_of(client))
    assert checkpoint.size == receipt["seq"] + 1


def test_a_session_receipt_counts_every_request_and_comes_at_teardown(
    make_client: AppFactory,
) -> None:
    client = make_client()
    session = client.post("/v1/sessions").json()["id"]
    headers = {"X-Keep-Session": session}
    usages = [
        client.post("/v1/chat/completions", json=chat_body(max_tokens=4), headers=headers).json()[
            "usage"
        ]
        for _ in range(2)
    ]
    missing = client.get("/v1/receipts", params={"session_id": session})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "receipt_not_found"
    assert client.delete(f"/v1/sessions/{session}").status_code == 200
    receipt = client.get("/v1/receipts", params={"session_id": session}).json()["receipt"]
    assert receipt["requests"] == 2
    assert receipt["prompt_tokens"] == sum(u["prompt_tokens"] for u in usages)
    assert receipt["completion_tokens"] == sum(u["completion_tokens"] for u in usages)


def test_receipts_and_journal_carry_no_content(make_client: AppFactory) -> None:
    canary = "KEEPCANARY" + secrets.token_hex(8)
    settings = state_settings()
    client = make_client(**settings)
    prompt = f"Repeat this code exactly: {canary}"
    answer = client.post("/v1/chat/completions", json=chat_body(prompt, max_tokens=24))
    text = answer.json()["choices"][0]["message"]["content"]
    bundle = client.get(
        "/v1/receipts", params={"session_id": answer.headers["x-keep-session"]}
    ).text
    written = b"".join(p.read_bytes() for p in settings["state_dir"].iterdir() if p.is_file())
    assert journal(settings["state_dir"])  # the scan covers a real journal
    needles = [canary, prompt, *(w for w in text.split() if len(w) > 6)]
    for needle in needles:
        assert needle not in bundle
        assert needle.encode() not in written


def test_keep_verify_accepts_the_api_bundle_and_a_later_consistency_proof(
    make_client: AppFactory, tmp_path: Path
) -> None:
    client = make_client()
    first = client.post(
        "/v1/completions", json={"model": "smollm2-135m-instruct", "prompt": "One", "max_tokens": 2}
    )
    bundle = client.get("/v1/receipts", params={"session_id": first.headers["x-keep-session"]})
    key = client.get("/v1/receipts/checkpoint").json()["verifier_key"]
    (tmp_path / "r1.json").write_text(bundle.text)
    saved = tmp_path / "cp"
    run = [KEEP, "verify", "--key", key]
    done = subprocess.run(
        [*run, "--save-checkpoint", str(saved), str(tmp_path / "r1.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    old_size = int(saved.read_text().split("\n")[1])
    for _ in range(3):
        client.post(
            "/v1/completions",
            json={"model": "smollm2-135m-instruct", "prompt": "Two", "max_tokens": 1},
        )
    later = client.get("/v1/receipts", params={"session_id": first.headers["x-keep-session"]})
    new_size = int(later.json()["checkpoint"].split("\n")[1])
    assert new_size == old_size + 3
    proof = client.get("/v1/receipts/consistency", params={"from": old_size, "to": new_size})
    (tmp_path / "r2.json").write_text(later.text)
    (tmp_path / "proof.json").write_text(proof.text)
    done = subprocess.run(
        [
            *run,
            "--previous",
            str(saved),
            "--consistency",
            str(tmp_path / "proof.json"),
            str(tmp_path / "r2.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    Consistency.parse(proof.json())
    bad = client.get("/v1/receipts/consistency", params={"from": new_size + 1, "to": 1})
    assert bad.status_code == 400


def test_the_log_survives_a_restart_and_a_tampered_journal_stops_start_up(
    engine: Engine, embedder: Embedder
) -> None:
    settings = make_settings(**state_settings())
    sizes = []
    for _ in range(2):
        with TestClient(create_app(settings, engine=engine, embedder=embedder), headers=AUTH) as c:
            c.post("/v1/chat/completions", json=chat_body(max_tokens=2))
            sizes.append(c.get("/v1/receipts/checkpoint").json()["size"])
    assert sizes == [1, 2]
    path = settings.state_dir / JOURNAL_NAME
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0].replace(b'"requests":1', b'"requests":0') + lines[1])
    with (
        pytest.raises(JournalError),
        TestClient(create_app(settings, engine=engine, embedder=embedder)),
    ):
        pass
    path.write_bytes(lines[1] + lines[0])  # reordered
    with (
        pytest.raises(JournalError, match="sequence"),
        TestClient(create_app(settings, engine=engine, embedder=embedder)),
    ):
        pass


def test_a_journal_that_cannot_be_written_fails_the_request_and_closes_the_appliance(
    make_client: AppFactory,
) -> None:
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    client = make_client()
    log = client.app.state.keep.receipts  # type: ignore[attr-defined]
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, log._fd)
    os.close(full)
    response = client.post("/v1/chat/completions", json=chat_body(max_tokens=4))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "receipts_unavailable"
    after = client.post("/v1/chat/completions", json=chat_body(max_tokens=4))
    assert after.status_code == 503
    assert client.post("/v1/sessions").status_code == 503
    assert client.get("/readyz").status_code == 503


def test_a_stream_whose_receipt_fails_ends_in_an_error_event(make_client: AppFactory) -> None:
    client = make_client()
    log = client.app.state.keep.receipts  # type: ignore[attr-defined]
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, log._fd)
    os.close(full)
    with client.stream(
        "POST", "/v1/chat/completions", json=chat_body(max_tokens=4, stream=True)
    ) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["error"]["code"] == "receipts_unavailable"


async def _mixed_sessions(base: str, n: int) -> tuple[set[str], int]:
    """n sessions of five kinds, six at a time; a 429 (all sequences busy, idle sessions
    not yet expired) is retried as a client would. Returns the session ids seen."""
    seen: set[str] = set()
    cancelled = 0
    gate = asyncio.Semaphore(6)
    body = chat_body(max_tokens=3)

    async def retrying(client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> Any:
        while True:
            request = client.build_request(method, url, **kw)
            response = await client.send(request, stream=True)
            if response.status_code != 429:
                return response
            await response.aclose()
            await asyncio.sleep(0.1)

    async def one(client: httpx.AsyncClient, i: int) -> None:
        nonlocal cancelled
        async with gate:
            kind = i % 5
            if kind in (0, 1):  # ephemeral, whole or streamed to the end
                payload = {**body, "stream": kind == 1}
                r = await retrying(client, "POST", "/v1/chat/completions", json=payload)
                assert r.status_code == 200
                seen.add(r.headers["x-keep-session"])
                await r.aread()
            elif kind == 2:  # ephemeral stream, hung up after the first event
                long = chat_body(max_tokens=200, stream=True)
                r = await retrying(client, "POST", "/v1/chat/completions", json=long)
                seen.add(r.headers["x-keep-session"])
                async for _ in r.aiter_lines():
                    break
                await r.aclose()
                cancelled += 1
            else:  # a session with two requests: deleted (3) or left to expire (4)
                r = await retrying(client, "POST", "/v1/sessions")
                sid = json.loads(await r.aread())["id"]
                seen.add(sid)
                for _ in range(2):
                    done = await client.post(
                        "/v1/chat/completions", json=body, headers={"X-Keep-Session": sid}
                    )
                    assert done.status_code == 200
                if kind == 3:
                    assert (await client.delete(f"/v1/sessions/{sid}")).status_code == 200

    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=120) as client:
        await asyncio.gather(*(one(client, i) for i in range(n)))
    return seen, cancelled


def test_no_receipt_is_lost_over_200_mixed_sessions(serve_inproc: ServerFactory) -> None:
    settings = state_settings()
    base = serve_inproc(session_idle_ttl_s=1.0, max_sessions=8, **settings)
    seen, cancelled = asyncio.run(_mixed_sessions(base, 200))
    assert len(seen) == 200
    assert cancelled == 40
    deadline = time.monotonic() + 15  # the idle sessions expire after a second
    while time.monotonic() < deadline and len(journal(settings["state_dir"])) < 200:
        time.sleep(0.2)
    entries = journal(settings["state_dir"])
    ids = [e["receipt"]["session_id"] for e in entries]
    assert len(ids) == len(set(ids)) == 200
    assert set(ids) == seen
    assert [e["receipt"]["seq"] for e in entries] == list(range(200))
    public = Verifier.parse(
        httpx.get(base + "/v1/receipts/checkpoint", headers=AUTH).json()["verifier_key"]
    ).public
    for e in entries:
        receipts.verify_signature(e["receipt"], e["signature"], public)
