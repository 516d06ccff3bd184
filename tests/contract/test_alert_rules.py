"""The alert rules through Debian's real promtool: they parse, every alert has a unit test
that fires it (and holds it back before its time), and a rule weakened on purpose fails
its test, so the tests can fail."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).parents[2] / "monitoring" / "prometheus"
PROMTOOL = shutil.which("promtool")


def promtool(*args: str, cwd: Path = RULES) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None, "promtool is missing: make test installs Debian's prometheus"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def alert_names(path: Path) -> set[str]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_the_rules_parse() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_every_alert_the_issue_names_exists_and_has_a_firing_test() -> None:
    alerts = alert_names(RULES / "alerts.yml")
    assert alerts == {
        "KeepBackendUnhealthy",
        "KeepGpuMemoryHigh",
        "KeepErrorRateHigh",
        "KeepQueueDeep",
        "KeepRateLimitRejections",
        "KeepReceiptWriteFailed",
        "KeepPolicyStale",
        "KeepApplianceNotReady",
    }
    tests = yaml.safe_load((RULES / "alerts_test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    held = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if not case["exp_alerts"]
    }
    assert fired == alerts
    assert held == alerts
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("original", "weakened"),
    [
        ("> 0.9", "> 0.99"),
        ("for: 2m\n        labels:\n          severity: critical\n        annotations:\n"
         '          summary: "Over 5%', "for: 10m\n        labels:\n          severity: critical\n"
         '        annotations:\n          summary: "Over 5%'),
        ("keep_queue_depth > 100", "keep_queue_depth > 1000"),
        ("keep_receipt_write_failures_total > 0", "keep_receipt_write_failures_total > 1"),
    ],
)  # fmt: skip
def test_a_weakened_rule_fails_its_test(tmp_path: Path, original: str, weakened: str) -> None:
    rules = (RULES / "alerts.yml").read_text()
    assert original in rules
    (tmp_path / "alerts.yml").write_text(rules.replace(original, weakened, 1))
    shutil.copy(RULES / "alerts_test.yml", tmp_path / "alerts_test.yml")
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_every_alert_names_a_runbook_that_exists_and_names_it_back() -> None:
    root = RULES.parents[1]
    groups = yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        runbook = root / rule["annotations"]["runbook"]
        assert runbook.is_file(), (rule["alert"], runbook)
        assert rule["alert"] in runbook.read_text(), (rule["alert"], runbook)
