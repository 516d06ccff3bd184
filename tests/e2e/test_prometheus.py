"""Debian's real Prometheus on the appliance host, run from monitoring/prometheus/
prometheus.yml with the lab's paths, scraping through NGINX's management listener (TLS from
the appliance CA, the management networks' allow list) to the metrics socket, as on a host.
After a mix of traffic through the tunnel (answers, a 404, a rate limit's 429 and a quota's
429, set in control's console models and pushed as policy), every family has samples in
Prometheus's HTTP API, and the alert rules are loaded and healthy."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import BASE, QUESTION, Lab

MONITORING = Path(__file__).parents[2] / "monitoring" / "prometheus"
PROMETHEUS_PORT = 9091
CHAT = {
    "model": "smollm2-135m-instruct",
    "max_tokens": 8,
    "messages": [{"role": "user", "content": QUESTION}],
}
# Every family but the GPU's, which NVML leaves absent on a host without an NVIDIA GPU.
FAMILIES = [
    "keep_requests_total",
    "keep_request_duration_seconds_bucket",
    "keep_time_to_first_token_seconds_bucket",
    "keep_prompt_tokens_total",
    "keep_completion_tokens_total",
    "keep_queue_depth",
    "keep_slots_in_use",
    "keep_slots",
    "keep_sessions_open",
    "keep_sessions_kv",
    "keep_sessions_kv_dropped_total",
    "keep_rag_documents",
    "keep_rag_chunks",
    "keep_rag_bytes",
    "keep_receipts",
    "keep_receipt_write_seconds_bucket",
    "keep_receipt_write_failures_total",
    "keep_policy_version",
    "keep_policy_last_push_timestamp_seconds",
    "keep_policy_age_seconds",
    "keep_policy_max_age_seconds",
    "keep_rate_limit_rejections_total",
    "keep_quota_rejections_total",
    "keep_engine_step_seconds_bucket",
    "keep_backend_up",
    "keep_ready",
]


@pytest.fixture
def prometheus(lab: Lab) -> Iterator[None]:
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus is missing: make test installs Debian's prometheus"
    root = lab.root / "prometheus"
    root.mkdir(exist_ok=True)
    config: dict[str, Any] = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    settings = lab.keep.settings()
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(MONITORING / "alerts.yml")]
    (job,) = config["scrape_configs"]
    job["tls_config"]["ca_file"] = str(lab.keep.ca)
    job["tls_config"]["server_name"] = settings.management_address
    job["static_configs"] = [
        {"targets": [f"{settings.management_address}:{settings.management_port}"]}
    ]
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = lab.net.spawn(
        "host",
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
        ],
        {},
        root / "prometheus.log",
    )
    try:
        deadline = time.monotonic() + 60
        ready = ["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready"]
        while lab.net.exec("host", ready, timeout=10).returncode != 0:
            assert process.poll() is None, (root / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def query(lab: Lab, promql: str) -> list[dict[str, Any]]:
    out = lab.net.check(
        "host",
        [
            "curl",
            "-sS",
            "--data-urlencode",
            f"query={promql}",
            f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query",
        ],
    )
    body = json.loads(out)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def api(lab: Lab, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    me = lab.members["client"]
    args = ["-X", method, "-H", f"Authorization: Bearer {me.api_key}", "-w", "\n%{http_code}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    out = lab.curl("client", *args, f"{BASE}{path}", timeout=120).stdout
    text, _, status = out.rpartition("\n")
    return int(status), text


def wait_for(lab: Lab, promql: str, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = query(lab, promql)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_the_hosts_prometheus_scrapes_every_family_through_nginx(
    lab: Lab, unblocked: None, prometheus: None
) -> None:
    from control.console.models import Client, Quota

    assert wait_for(lab, 'up{job="keep-appliance"} == 1'), "the scrape never succeeded"
    firm = Client.objects.get(name="Law firm")
    status, _ = api(lab, "POST", "/v1/chat/completions", CHAT)
    assert status == 200
    assert api(lab, "POST", "/v1/chat/completions", {**CHAT, "model": "nope"})[0] == 404
    status, text = api(lab, "POST", "/v1/sessions")
    session = json.loads(text)["id"]
    document = {"documents": [{"name": "a.txt", "text": "The reactor is in Tallinn."}]}
    assert api(lab, "POST", f"/v1/sessions/{session}/documents", document)[0] == 201
    quota = Quota.objects.create(client=firm, requests_per_second=0.01, request_burst=1)
    try:
        assert [api(lab, "GET", "/v1/models")[0] for _ in range(2)] == [200, 429]
        quota.requests_per_day = 0  # pushed again: full buckets, and no request left today
        quota.save()
        status, text = api(lab, "POST", "/v1/chat/completions", CHAT)
        assert (status, json.loads(text)["error"]["code"]) == (429, "quota_exceeded")
    finally:
        quota.delete()
    client = firm.policy_id
    limited = wait_for(lab, f'keep_rate_limit_rejections_total{{client="{client}"}} > 0')
    assert [(r["metric"]["limit"], r["value"][1]) for r in limited] == [("requests", "1")]
    refused = wait_for(lab, f'keep_quota_rejections_total{{client="{client}"}} > 0')
    assert [r["value"][1] for r in refused] == ["1"]
    for family in FAMILIES:
        assert query(lab, family), f"no samples of {family}"
    statuses = {r["metric"]["status"] for r in query(lab, "keep_requests_total")}
    assert {"200", "201", "404", "429"} <= statuses
    tokens = query(lab, f'keep_completion_tokens_total{{client="{client}"}}')
    assert tokens
    assert float(tokens[0]["value"][1]) > 0
    api(lab, "DELETE", f"/v1/sessions/{session}")
    out = lab.net.check("host", ["curl", "-sS", f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/rules"])
    rules = [r for g in json.loads(out)["data"]["groups"] for r in g["rules"]]
    assert len(rules) == 8
    assert all(r["health"] == "ok" for r in rules), rules


def test_the_metrics_location_answers_the_management_networks_alone(lab: Lab) -> None:
    settings = lab.keep.settings()
    url = f"https://{settings.management_address}:{settings.management_port}/metrics/appliance"
    ok = lab.net.exec("host", ["curl", "-sS", "--cacert", str(lab.keep.ca), url], timeout=30)
    assert "keep_ready 1.0" in ok.stdout
    # From the host's own tunnel address, which no management network holds: 403.
    forbidden = lab.net.exec(
        "host",
        [
            "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(lab.keep.ca),
            "--interface", lab.keep.address, url,
        ],
        timeout=30,
    )  # fmt: skip
    assert forbidden.stdout == "403"
