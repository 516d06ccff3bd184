"""The systemd units: `systemd-analyze verify` accepts every one, and
`systemd-analyze security --offline=true` scores them within the issue's thresholds
(appliance and control ≤ 2.0, the GPU appliance ≤ 3.5). Both tools are systemd's own; the
units are checked in a scratch root holding the system's units and stand-ins for Keep's
executables, since verify insists that ExecStart's binary exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNITS = ROOT / "systemd"
THRESHOLDS = {
    "keep-appliance.service": 2.0,
    "keep-control.service": 2.0,
    "keep-control-sync.service": 2.0,
    "keep-wireguard-sync.service": 2.0,
    "keep-appliance-gpu.service": 3.5,
}
EXECUTABLES = (
    "opt/keep/.venv/bin/keep",
    "opt/keep/.venv/bin/uvicorn",
    "usr/sbin/nginx",
    "sbin/start-stop-daemon",
)


def scratch_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    system = root / "etc" / "systemd" / "system"
    (system / "nginx.service.d").mkdir(parents=True)
    (root / "usr" / "lib" / "systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "lib").symlink_to("usr/lib")
    for unit in [*UNITS.glob("*.service"), *UNITS.glob("*.path")]:
        shutil.copy(unit, system)
    shutil.copy(UNITS / "nginx.service.d" / "keep.conf", system / "nginx.service.d")
    for exe in EXECUTABLES:
        path = root / exe
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


def verify(root: Path, unit: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", unit],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root / "etc" / "systemd" / "system",
    )


def units() -> list[str]:
    names = [p.name for p in [*UNITS.glob("*.service"), *UNITS.glob("*.path")]]
    return sorted(names)


@pytest.mark.parametrize("unit", [*units(), "nginx.service"])
def test_systemd_analyze_verify_accepts_the_unit(unit: str, tmp_path: Path) -> None:
    result = verify(scratch_root(tmp_path), unit)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    root = scratch_root(tmp_path)
    unit = root / "etc/systemd/system/keep-appliance.service"
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict"))
    result = verify(root, "keep-appliance.service")
    assert "Unknown key 'ProtectSystm'" in result.stderr


def exposure(unit: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    return float(match.group(1))


@pytest.mark.parametrize("unit", sorted(THRESHOLDS))
def test_exposure_score_is_within_its_threshold(unit: str) -> None:
    assert exposure(UNITS / unit) <= THRESHOLDS[unit]


def test_the_score_would_catch_a_weakened_unit(tmp_path: Path) -> None:
    text = (UNITS / "keep-appliance.service").read_text()
    kept = {"[Unit]", "[Service]", "[Install]", "Type=exec", "User=keep", "Group=keep"}
    bare = "\n".join(
        line for line in text.splitlines() if line in kept or line.startswith("ExecStart=")
    )
    weak = tmp_path / "keep-appliance.service"
    weak.write_text(bare + "\n")
    assert exposure(weak) > THRESHOLDS["keep-appliance.service"]


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_only_nginx_and_control_can_reach_the_console_socket() -> None:
    """The console's socket directory is 2750 keep-control:www-data (tmpfiles), and control's
    unit serves it with `keep_serve` (socket 0660) instead of letting systemd make the
    directory its own group's."""
    tmpfiles = (UNITS / "tmpfiles.d" / "keep.conf").read_text().splitlines()
    lines = [line.split() for line in tmpfiles if line and not line.startswith("#")]
    assert ["d", "/run/keep-control", "2750", "keep-control", "www-data", "-"] in lines
    control = directives(UNITS / "keep-control.service")
    assert control["ExecStart"] == ["/opt/keep/.venv/bin/keep control keep_serve"]
    assert "RuntimeDirectory" not in control
    assert "RuntimeDirectoryMode" not in control
    assert "/run/keep-control" in " ".join(control["ReadWritePaths"]).split()
    env = (ROOT / "ansible/roles/appliance/templates/control.env.j2").read_text()
    assert "KEEP_CONTROL_SOCKET='/run/keep-control/control.sock'" in env
