"""The Grafana dashboards against Debian's real Prometheus, started on loopback with the
alert rules loaded: every panel's query (Grafana's variables filled in) parses and runs, and
names only families the appliance exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import free_port
from tests.integration.test_metrics import scrape

MONITORING = Path(__file__).parents[2] / "monitoring"
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))
# Present only where NVML finds a GPU (appliance/nvml.py): absent on this machine.
GPU_FAMILIES = {
    "keep_gpu_memory_used_bytes",
    "keep_gpu_memory_total_bytes",
    "keep_gpu_utilization_ratio",
}
VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "$client": ".*"}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus is missing: make test installs Debian's prometheus"
    root = tmp_path_factory.mktemp("prometheus")
    shutil.copy(MONITORING / "prometheus" / "alerts.yml", root / "alerts.yml")
    (root / "prometheus.yml").write_text("rule_files: [alerts.yml]\nscrape_configs: []\n")
    port = free_port()
    log = (root / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (root / "prometheus.log").read_text()[-2000:]
            try:
                if httpx.get(base + "/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def queries(dashboard: Path) -> list[tuple[str, str]]:
    data = json.loads(dashboard.read_text())
    out = [(f"{p['title']}", t["expr"]) for p in data["panels"] for t in p["targets"]]
    for variable in data["templating"]["list"]:
        found = re.fullmatch(r"label_values\((\w+), \w+\)", variable["query"]["query"])
        assert found is not None, variable["query"]
        out.append((f"variable {variable['name']}", found.group(1)))
    return out


def filled(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def test_the_four_dashboards_are_there_with_their_own_uids() -> None:
    uids = {json.loads(d.read_text())["uid"] for d in DASHBOARDS}
    assert uids == {"keep-overview", "keep-gpu", "keep-clients", "keep-backend"}


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d.stem)
def test_every_panel_query_parses_against_the_real_prometheus(
    prometheus: str, dashboard: Path
) -> None:
    found = queries(dashboard)
    assert len(found) >= 4
    for where, expr in found:
        r = httpx.get(prometheus + "/api/v1/query", params={"query": filled(expr)}, timeout=10)
        body = r.json()
        assert (r.status_code, body["status"]) == (200, "success"), (where, body)


def test_the_real_prometheus_loads_every_alert_rule(prometheus: str) -> None:
    groups = httpx.get(prometheus + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == 8
    assert all(rule["health"] in ("ok", "unknown") for rule in rules)


def test_the_dashboards_name_only_families_the_appliance_exports(client: TestClient) -> None:
    exported = set()
    for line in scrape(client).splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            exported.add(name)
            if kind == "counter":
                exported.add(name + "_total")
            if kind == "histogram":
                exported |= {name + "_bucket", name + "_count", name + "_sum"}
    exported |= GPU_FAMILIES
    named = {
        name
        for dashboard in DASHBOARDS
        for _, expr in queries(dashboard)
        for name in re.findall(r"\bkeep_[a-z_]+", expr)
    }
    assert named - exported == set()
    assert len(named) >= 20
