"""/metrics on the admin socket: every family after real traffic, label values from fixed
sets only, a canary in every field a client controls found nowhere in a scrape or in the
audit log, and the audit line's correlation id."""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from appliance.state import app_state
from tests.conftest import AppFactory, chat_body, make_settings

MODEL = make_settings().model


def scrape(client: TestClient) -> str:
    socket = app_state(client.app).settings.admin_socket  # type: ignore[arg-type]
    transport = httpx.HTTPTransport(uds=str(socket))
    with httpx.Client(transport=transport, base_url="http://admin") as admin:
        r = admin.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return r.text


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(
        v for got, v in found.get(name, []) if all(got.get(k) == x for k, x in labels.items())
    )


def test_metrics_are_on_the_admin_socket_and_not_on_the_api(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 404
    found = samples(scrape(client))
    assert value(found, "keep_ready") == 1
    assert value(found, "keep_backend_up", backend="engine") == 1
    assert value(found, "keep_slots") == app_state(client.app).engine.model.n_seq_max  # type: ignore[arg-type]
    assert "keep_gpu_memory_used_bytes" not in found  # no NVML on this machine: absent, not 0


def test_traffic_shows_in_every_event_family(make_client: AppFactory) -> None:
    client = make_client(client_requests_per_second=0.01, client_request_burst=6)
    session = client.post("/v1/sessions").json()["id"]
    up = client.post(
        f"/v1/sessions/{session}/documents",
        json={"documents": [{"name": "a.txt", "text": "The Zorblax reactor is in Tallinn."}]},
    )
    assert up.status_code == 201, up.text
    chat = client.post("/v1/chat/completions", json=chat_body(max_tokens=4, temperature=0))
    assert chat.status_code == 200
    assert client.post("/v1/chat/completions", json=chat_body(model="no-such")).status_code == 404
    assert (
        client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "x"}).status_code
        == 200
    )
    while client.get("/v1/models").status_code != 429:
        pass
    found = samples(scrape(client))
    route = "/v1/chat/completions"
    assert value(found, "keep_requests_total", route=route, model=MODEL, status="200") == 1
    assert value(found, "keep_requests_total", route=route, model="none", status="404") == 1
    assert value(found, "keep_requests_total", route="-", status="429") == 1
    assert (
        value(found, "keep_prompt_tokens_total", model=MODEL, client="local")
        == chat.json()["usage"]["prompt_tokens"]
    )
    assert value(found, "keep_completion_tokens_total", model=MODEL, client="local") == 4
    assert value(found, "keep_prompt_tokens_total", model="all-minilm-l6-v2", client="local") > 0
    assert value(found, "keep_time_to_first_token_seconds_count", model=MODEL) == 1
    # End to end, for requests a served model answered (the 404's model is none of them).
    assert value(found, "keep_request_duration_seconds_count", model=MODEL) == 1
    assert value(found, "keep_rate_limit_rejections_total", client="local", limit="requests") == 1
    assert value(found, "keep_engine_step_seconds_count") > 0
    assert value(found, "keep_receipt_write_seconds_count") >= 1  # the chat's ephemeral session
    assert value(found, "keep_receipts") >= 1
    assert value(found, "keep_rag_documents") == 1
    assert value(found, "keep_rag_chunks") >= 1
    assert value(found, "keep_rag_bytes") > 0
    assert value(found, "keep_sessions_open") == 1
    assert value(found, "keep_policy_version") == 0
    assert value(found, "keep_policy_age_seconds") >= 0


def test_a_receipt_that_cannot_be_written_is_counted_and_the_appliance_is_not_ready(
    make_client: AppFactory,
) -> None:
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    client = make_client()
    journal = app_state(client.app).receipts  # type: ignore[arg-type]
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, journal._fd)
    os.close(full)
    client.post("/v1/chat/completions", json=chat_body(max_tokens=2))
    found = samples(scrape(client))
    assert value(found, "keep_receipt_write_failures_total") == 1
    assert value(found, "keep_backend_up", backend="receipts") == 0
    assert value(found, "keep_ready") == 0


def test_no_label_and_no_sample_carries_what_a_client_sent(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "CANARY" + secrets.token_hex(6)
    client = make_client()
    hostile = {
        "X-Keep-Session": canary,
        "X-Keep-Peer": canary,
        "X-Request-Id": f"{canary} with spaces",  # malformed: replaced, never logged
        "User-Agent": canary,
    }
    with caplog.at_level(logging.INFO, logger="keep.audit"):
        client.post(f"/{canary}?{canary}=1", json={canary: canary})
        client.post(
            "/v1/chat/completions",
            json=chat_body(content=canary, max_tokens=2, user=canary),
            headers={"X-Request-Id": f"{canary} with spaces"},
        )
        client.post("/v1/chat/completions", json=chat_body(model=canary), headers=hostile)
        client.post("/v1/embeddings", json={"model": canary, "input": canary})
        client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": canary})
        client.get("/v1/models", headers={"Authorization": f"Bearer {canary}"})
        session = client.post("/v1/sessions").json()["id"]
        client.post(
            f"/v1/sessions/{session}/documents",
            json={"documents": [{"name": canary, "text": canary}]},
        )
        client.get(f"/v1/sessions/{canary}/documents")
        client.get(f"/v1/sessions/{session}/documents/{canary}")
    text = scrape(client)
    assert canary not in text
    audit = [r.getMessage() for r in caplog.records if r.name == "keep.audit"]
    assert len(audit) >= 9
    assert all(canary not in line for line in audit)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label, got in sample.labels.items():
                if label == "route":
                    assert got == "-" or got.startswith("/"), got
                if label == "model":
                    assert got in {MODEL, "all-minilm-l6-v2", "none"}, got
                if label == "client":
                    assert got in {"local", "-"}, got


def test_the_correlation_id_is_taken_when_well_formed_and_made_otherwise(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="keep.audit"):
        kept = client.get("/v1/models", headers={"X-Request-Id": "trace-42.a:b"})
        made = client.get("/v1/models", headers={"X-Request-Id": "no spaces allowed"})
        none = client.get("/v1/models")
    assert kept.headers["x-request-id"] == "trace-42.a:b"
    assert made.headers["x-request-id"].startswith("req-")
    assert none.headers["x-request-id"].startswith("req-")
    assert made.headers["x-request-id"] != none.headers["x-request-id"]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "keep.audit"]
    assert [line["request_id"] for line in lines] == [
        "trace-42.a:b",
        made.headers["x-request-id"],
        none.headers["x-request-id"],
    ]
    first = lines[0]
    assert set(first) == {
        "time", "request_id", "client", "peer", "peer_address", "method", "route", "model",
        "status", "error", "prompt_tokens", "completion_tokens", "ttft_ms", "latency_ms",
    }  # fmt: skip
    assert (first["client"], first["peer"], first["route"], first["status"]) == (
        "local",
        "local",
        "/v1/models",
        200,
    )
    assert first["peer_address"] is None  # only NGINX may name it, and only on the socket


def test_the_audit_line_counts_a_generation(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="keep.audit"):
        r = client.post("/v1/chat/completions", json=chat_body(max_tokens=3, temperature=0))
    line = json.loads([x for x in caplog.records if x.name == "keep.audit"][-1].getMessage())
    assert line["model"] == MODEL
    assert line["prompt_tokens"] == r.json()["usage"]["prompt_tokens"]
    assert line["completion_tokens"] == 3
    assert 0 < line["ttft_ms"] <= line["latency_ms"]
    assert line["request_id"] == r.headers["x-request-id"]


def test_the_metrics_socket_serves_metrics_alone(make_client: AppFactory, tmp_path: Path) -> None:
    path = tmp_path / "api" / "metrics.sock"
    make_client(metrics_socket=path)
    assert oct(path.stat().st_mode & 0o777) == "0o666"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o750"
    transport = httpx.HTTPTransport(uds=str(path))
    with httpx.Client(transport=transport, base_url="http://metrics") as c:
        assert c.get("/metrics").status_code == 200
        assert "keep_ready" in c.get("/metrics").text
        assert c.get("/admin/status").status_code == 404
        assert c.put("/admin/policy", content=b"{}").status_code in (404, 405)
