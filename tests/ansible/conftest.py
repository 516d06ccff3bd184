"""What the playbook tests share: the controller's tools, and one Debian 12 root file
system, built with debootstrap and converged by site.yml (twice) through ansible's chroot
connection, for the whole run.

Nothing may reach the machine around the chroot: the roles start services and touch the
kernel, firewall and swap only when `keep_live` is true, and the converge first checks that
it is false in the chroot. Needs root; skipped only with KEEP_E2E=0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

ANSIBLE = ROOT / "ansible"
TOOLS = ROOT / ".venv-ansible" / "bin"
WHEELHOUSE = ROOT / "build" / "wheelhouse"
MIRROR = "http://deb.debian.org/debian"
CACHE = Path.home() / ".cache" / "keep" / "bookworm-minbase-python3.tgz"
PASSWORD = "correct horse battery staple 42"


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


@pytest.fixture(scope="session", autouse=True)
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


def debootstrap(root: Path) -> None:
    """A Debian 12 minbase with python3; its packages are kept in a tarball between runs."""
    base = ["debootstrap", "--variant=minbase", "--include=python3"]
    if not CACHE.exists():
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        made = run([*base, f"--make-tarball={CACHE}", "bookworm", str(root) + ".dl", MIRROR])
        assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    done = run([*base, f"--unpack-tarball={CACHE}", "bookworm", str(root), MIRROR])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="session")
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


@dataclass(frozen=True)
class Converged:
    root: Path
    first: str  # ansible-playbook's output, first run
    second: str  # and second run, which must change nothing


@pytest.fixture(scope="session")
def converged(chroot: Path, tmp_path_factory: pytest.TempPathFactory) -> Converged:
    """The root converged twice by site.yml, once live.yml has said the roles will leave the
    running system alone there."""
    inv, secrets = inventory(chroot, tmp_path_factory.mktemp("inventory"))
    assert "keep_live=False" in converge(inv, secrets, "live.yml")
    first = converge(inv, secrets)
    return Converged(chroot, first, converge(inv, secrets))
