"""The systemd units: `systemd-analyze verify` accepts every one, and
`systemd-analyze security --offline=true` scores every service in systemd/ at 2.0 or less.
Both tools are systemd's own; the units are checked in a scratch root holding the system's
units and stand-ins for Keep's executables, since verify insists that ExecStart's binary
exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNITS = ROOT / "systemd"
THRESHOLD = 2.0
# keep-perimeter on wireguard-go hosts: its drop-in lifts the IP filter, which would drop the
# tunnel's packets (wireguard-go runs in the unit's cgroup).
WIREGUARD_GO_THRESHOLD = 2.1
EXECUTABLES = (
    "opt/keep/.venv/bin/keep",
    "opt/keep/.venv/bin/uvicorn",
    "usr/sbin/nginx",
    "sbin/start-stop-daemon",
    "usr/bin/systemd-tmpfiles",
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


def exposure(unit: Path | str, threshold: float = 10.0, root: Path | None = None) -> float:
    """The overall exposure; `systemd-analyze security --threshold` (a 0-100 scale) must
    agree that it is within `threshold`."""
    argv = ["systemd-analyze", "security", "--offline=true", "--no-pager"]
    argv += [f"--threshold={round(threshold * 10)}", *([f"--root={root}"] if root else [])]
    result = subprocess.run([*argv, str(unit)], capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    score = float(match.group(1))
    assert (result.returncode == 0) == (score <= threshold), (score, result.returncode)
    return score


def services() -> list[str]:
    return sorted(p.name for p in UNITS.glob("*.service"))


def test_every_service_is_scored() -> None:
    assert {"keep-perimeter.service", "keep-nginx-reload.service"} <= set(services())


@pytest.mark.parametrize("unit", services())
def test_exposure_score_is_within_the_threshold(unit: str) -> None:
    assert exposure(UNITS / unit, THRESHOLD) <= THRESHOLD


def test_the_perimeter_with_its_wireguard_go_drop_in(tmp_path: Path) -> None:
    root = scratch_root(tmp_path)
    dropins = root / "etc/systemd/system/keep-perimeter.service.d"
    dropins.mkdir()
    shutil.copy(UNITS / "dropins" / "keep-perimeter-wireguard-go.conf", dropins / "wg.conf")
    lifted = exposure("keep-perimeter.service", WIREGUARD_GO_THRESHOLD, root)
    assert exposure(UNITS / "keep-perimeter.service") < lifted <= WIREGUARD_GO_THRESHOLD
    assert verify(root, "keep-perimeter.service").returncode == 0


def test_the_appliance_units_have_a_memory_ceiling_ansible_sets() -> None:
    for unit in ("keep-appliance.service", "keep-appliance-gpu.service"):
        assert directives(UNITS / unit)["MemoryMax"] == ["8G"], unit
    tasks = (ROOT / "ansible/roles/appliance/tasks/main.yml").read_text()
    assert "MemoryMax={{ appliance_memory_max }}" in tasks
    defaults = (ROOT / "ansible/roles/appliance/defaults/main.yml").read_text()
    assert re.search(r"^appliance_memory_max: 8G$", defaults, re.MULTILINE)


def test_the_score_would_catch_a_weakened_unit(tmp_path: Path) -> None:
    text = (UNITS / "keep-appliance.service").read_text()
    kept = {"[Unit]", "[Service]", "[Install]", "Type=exec", "User=keep", "Group=keep"}
    bare = "\n".join(
        line for line in text.splitlines() if line in kept or line.startswith("ExecStart=")
    )
    weak = tmp_path / "keep-appliance.service"
    weak.write_text(bare + "\n")
    assert exposure(weak) > THRESHOLD


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
