"""The converged root (conftest.py) booted by its own systemd, in a systemd-nspawn container
with a private network namespace: every Keep unit must come up and answer. What a chroot
cannot show: units that start, sandboxes that hold, sockets shared between services.

pytest collects this module after test_playbook.py (files in a folder are taken in name
order), so the boot finds the root the converge test has checked; run alone, it converges
the root first.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provisioning import keys
from tests.ansible.conftest import Converged

KEEP_UNITS = (
    "keep-perimeter.service",
    "keep-wireguard-sync.path",
    "keep-appliance.service",
    "keep-control.service",
    "keep-control-sync.service",
    "keep-nginx-reload.path",
    "nginx.service",
)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _container_init(nspawn: int, deadline: float) -> int:
    """The container's systemd: the first `systemd` below systemd-nspawn."""
    while time.monotonic() < deadline:
        queue = _children(nspawn)
        while queue:
            pid = queue.pop()
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return pid
            queue += _children(pid)
        time.sleep(0.2)
    raise AssertionError("the container's systemd did not start")


Inside = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def booted(converged: Converged, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inside]:
    """The converged root booted by systemd in a container with its own network namespace
    (--private-network): WireGuard, nftables and NGINX act there, never on this machine."""
    chroot = converged.root
    if not (
        chroot / "etc/systemd/system/multi-user.target.wants/keep-appliance.service"
    ).is_symlink():
        pytest.fail("the root was not converged: the appliance's unit is not enabled")
    nspawn = shutil.which("systemd-nspawn")
    if nspawn is None:
        pytest.fail("systemd-nspawn is missing: `make test` installs systemd-container")
    shutil.copy(Path(__file__).with_name("boot_probe.py"), chroot / "root/boot_probe.py")
    subprocess.run(
        ["umount", "-l", str(chroot / "proc")], check=False
    )  # the container mounts its own
    log = tmp_path_factory.mktemp("boot") / "console.log"
    argv = [nspawn, "--quiet", "--register=no", "--keep-unit", "--private-network"]
    argv += ["--bind=/dev/net/tun", "-D", str(chroot), "-b", "--console=read-only"]
    with log.open("wb") as console:
        container = subprocess.Popen(argv, stdout=console, stderr=subprocess.STDOUT)
    try:
        init = _container_init(container.pid, time.monotonic() + 60)

        def inside(*command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["nsenter", "-t", str(init), "-a", *command],
                capture_output=True,
                text=True,
                timeout=timeout,
            )

        # The container's systemd is found before it has opened its bus; on a loaded machine
        # systemctl then fails at once ("Failed to connect to bus"), so wait for the bus too.
        deadline = time.monotonic() + 300
        while True:
            left = max(1.0, deadline - time.monotonic())
            waited = inside("systemctl", "is-system-running", "--wait", timeout=left)
            if "Failed to connect to bus" not in waited.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert waited.stdout.strip() in ("running", "degraded"), waited
        yield inside
    finally:
        container.terminate()  # systemd-nspawn asks the container's systemd to power off
        try:
            container.wait(timeout=120)
        except subprocess.TimeoutExpired:
            container.kill()
            container.wait(timeout=30)


def _show(inside: Inside, unit: str, *names: str) -> dict[str, str]:
    out = inside("systemctl", "show", unit, "-p", ",".join(names)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_the_converged_root_boots_and_every_keep_unit_runs(booted: Inside) -> None:
    failed = booted("systemctl", "list-units", "--failed", "--plain", "--no-legend").stdout
    for unit in KEEP_UNITS:
        state = _show(booted, unit, "ActiveState", "SubState", "Result", "NRestarts")
        assert state["ActiveState"] == "active", (unit, state, failed)
        assert state["Result"] == "success", (unit, state)
        assert state.get("NRestarts", "0") == "0", (unit, state)
    assert not [u for u in failed.split() if u.startswith(("keep-", "nginx"))], failed


def test_the_services_answer_through_their_sockets_and_nginx(booted: Inside) -> None:
    probe = booted(
        "/opt/keep/.venv/bin/python",
        "/root/boot_probe.py",
        "240",
        "target",
        "keep.internal",
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout)
    # The appliance loaded the pinned model under its sandbox, and its journal is writable.
    assert seen["readyz"] == [200, {"status": "ready"}], seen
    # keep-control-sync pushed a policy over the admin socket (group access through the
    # set-group-ID runtime directory, with the appliance's PrivateUsers and all).
    code, status = seen["admin_status"]
    assert code == 200, seen
    assert status["policy_version"] >= 1
    # NGINX proxies the management listener to control's socket: the console's login.
    assert seen["console"]["head"].startswith("HTTP/1.1 302"), seen
    assert "Location: /admin/login/?next=/admin/" in seen["console"]["head"], seen
    # On the tunnel address, a source that is no active peer gets nothing at all (444).
    assert seen["api_unlisted"]["bytes"] == 0, seen


def test_control_keeps_wireguard_in_step_without_root(chroot: Path, booted: Inside) -> None:
    """wireguard-go's UAPI socket is root's alone, so control (user keep-control) hands its
    peers off: a peer added in control's database reaches WireGuard through
    keep-wireguard-sync, `keep doctor` finds everything in step, and the sync loop runs clean."""
    public = keys.public_of(keys.generate_private())
    inside = "/var/tmp/keep-boot-peer.py"
    script = chroot / inside.lstrip("/")
    script.write_text(
        "from control.console.models import Client, Peer\n"
        "client, _ = Client.objects.get_or_create(name='Boot test', kind='organisation')\n"
        f"Peer.objects.create(client=client, name='boot', public_key='{public}',"
        " address='10.66.0.9')\n"
    )
    script.chmod(0o644)
    as_control = "set -a; . /etc/keep/control.env; set +a; exec /opt/keep/.venv/bin/keep control"
    added = booted(
        "runuser",
        "-u",
        "keep-control",
        "--",
        "/bin/bash",
        "-c",
        f"{as_control} shell < {inside}",
        timeout=120,
    )
    assert added.returncode == 0, added.stderr[-3000:]
    deadline = time.monotonic() + 15
    while public not in (peers := booted("wg", "show", "keep0", "peers").stdout):
        assert time.monotonic() < deadline, (peers, _journal(booted, "keep-wireguard-sync"))
        time.sleep(0.5)
    handoff = booted("stat", "-c", "%a %U", "/var/lib/keep-control/wireguard-peers.json")
    assert handoff.stdout.split() == ["600", "keep-control"]
    doctor = booted(
        "/bin/bash",
        "-c",
        "set -a; . /etc/keep/control.env; set +a; /opt/keep/.venv/bin/keep doctor",
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr[-2000:]
    assert "in step" in doctor.stdout
    log = _journal(booted, "keep-control-sync.service")
    assert "not synced" not in log, log
    assert "Traceback" not in log, log


def _journal(booted: Inside, unit: str) -> str:
    return booted("journalctl", "-u", unit, "-b", "--no-pager", "-o", "cat").stdout


def test_each_service_runs_as_its_user_with_its_privileges(booted: Inside) -> None:
    passwd = {
        line.split(":")[0]: line.split(":")[2]
        for line in booted("cat", "/etc/passwd").stdout.splitlines()
    }
    expected = {
        "keep-appliance.service": (passwd["keep"], 0),
        "keep-control.service": (passwd["keep-control"], 1 << 12),  # CAP_NET_ADMIN only
        "keep-control-sync.service": (passwd["keep-control"], 1 << 12),
    }
    for unit, (uid, caps) in expected.items():
        pid = _show(booted, unit, "MainPID")["MainPID"]
        shown = booted("cat", f"/proc/{pid}/status")
        status = dict(line.split(":", 1) for line in shown.stdout.splitlines() if ":" in line)
        assert "Uid" in status, (unit, pid, shown)
        assert status["Uid"].split()[0] == uid, (unit, status["Uid"])
        assert int(status["CapEff"].strip(), 16) == caps, (unit, status["CapEff"])
        assert int(status["CapBnd"].strip(), 16) == caps, (unit, status["CapBnd"])
        assert status["NoNewPrivs"].strip() == "1", unit
        assert status["Seccomp"].strip() == "2", unit  # a seccomp filter is in force


def test_live_security_scores_meet_the_thresholds(booted: Inside) -> None:
    for unit in ("keep-appliance.service", "keep-control.service"):
        out = booted("systemd-analyze", "security", "--no-pager", unit).stdout
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
        assert match, out[-2000:]
        assert float(match.group(1)) <= 2.0, (unit, match.group(0))


def test_stopping_the_appliance_is_clean(booted: Inside) -> None:
    stopped = booted("systemctl", "stop", "keep-appliance.service", timeout=200)
    assert stopped.returncode == 0, stopped.stderr
    names = ("ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    state = _show(booted, "keep-appliance.service", *names)
    # Exited 0, or ended by the SIGTERM it was sent: uvicorn re-raises it once its graceful
    # shutdown (streams drained, receipts written) is done. Never SIGKILL after the timeout.
    assert state["ActiveState"] == "inactive", state
    assert state["Result"] == "success", state
    assert (state["ExecMainCode"], state["ExecMainStatus"]) in {("1", "0"), ("2", "15")}, state


def test_no_unit_failed_or_restarted_while_it_ran(booted: Inside) -> None:
    for unit in KEEP_UNITS:
        state = _show(booted, unit, "Result", "NRestarts")
        journal = _journal(booted, unit)[-4000:]
        assert state["Result"] == "success", (unit, state, journal)
        assert state.get("NRestarts", "0") == "0", (unit, state, journal)
