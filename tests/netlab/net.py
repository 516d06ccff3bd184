"""Hosts as network namespaces on one private Ethernet segment.

Each host gets a namespace `<tag>-<name>` with loopback and an `eth0` joined to a bridge in
a switch namespace `<tag>-sw`. The veth pairs are created directly inside their namespaces,
so no interface ever exists in the root namespace, and no host has a default route: nothing
routes out. Addresses come from TEST-NET-1 (RFC 5737).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

SEGMENT = "192.0.2.0/24"
TUNNEL = "198.51.100.0/24"  # TEST-NET-2: the WireGuard subnet
MANAGEMENT = "203.0.113.0/24"  # TEST-NET-3: the management network
HOSTS = {
    "host": "192.0.2.1",
    "client": "192.0.2.10",
    "stranger": "192.0.2.20",
    "revoked": "192.0.2.30",
}


class LabError(Exception):
    pass


def preflight() -> None:
    """Root and /dev/net/tun are needed; say which is missing."""
    if os.geteuid() != 0:
        raise LabError("the network lab needs root (network namespaces, nftables, WireGuard)")
    if not Path("/dev/net/tun").exists():
        raise LabError("the network lab needs /dev/net/tun for wireguard-go")
    for tool in ("ip", "nft", "nginx", "wireguard-go", "wg", "wg-quick", "curl"):
        if shutil.which(tool) is None:
            raise LabError(f"the network lab needs `{tool}` (make test installs it)")


def _run(argv: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=120, **kw)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result  # type: ignore[no-any-return]


class Net:
    def __init__(self, tag: str, hosts: Mapping[str, str] = HOSTS) -> None:
        self.tag = tag
        self.hosts = dict(hosts)
        self.switch = f"{tag}-sw"
        self._procs: list[subprocess.Popen[bytes]] = []

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def address(self, host: str) -> str:
        return self.hosts[host]

    def up(self) -> None:
        _run(["ip", "netns", "add", self.switch])
        _run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.switch, "link", "set", "br0", "up"])
        for i, (host, address) in enumerate(self.hosts.items()):
            ns = self.ns(host)
            port = f"p{i}"
            _run(["ip", "netns", "add", ns])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(
                [
                    "ip",
                    "link",
                    "add",
                    "eth0",
                    "netns",
                    ns,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    port,
                    "netns",
                    self.switch,
                ]
            )
            _run(["ip", "-n", self.switch, "link", "set", port, "master", "br0", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def resolve(self, host: str, names: Mapping[str, str]) -> None:
        """An /etc/hosts seen only inside `host` (`ip netns exec` bind-mounts it)."""
        directory = Path("/etc/netns") / self.ns(host)
        directory.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", *(f"{a} {n}" for n, a in names.items())]
        (directory / "hosts").write_text("\n".join(lines) + "\n")

    def exec(
        self, host: str, argv: Sequence[str], env: Mapping[str, str] | None = None, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            ["ip", "netns", "exec", self.ns(host), *argv],
            capture_output=True,
            text=True,
            env=None if env is None else {**os.environ, **env},
            **kw,
        )

    def check(
        self, host: str, argv: Sequence[str], env: Mapping[str, str] | None = None, **kw: object
    ) -> str:
        result = self.exec(host, argv, env, timeout=kw.pop("timeout", 300), **kw)
        if result.returncode != 0:
            raise LabError(f"{host}: {argv[0]} exited {result.returncode}: {result.stderr[-2000:]}")
        return str(result.stdout)

    def spawn(
        self, host: str, argv: Sequence[str], env: Mapping[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(host), *argv],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    def pids(self, host: str) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.ns(host)], capture_output=True, text=True, timeout=30
        ).stdout
        return [int(p) for p in out.split()]

    def down(self) -> None:
        """Stop every process in the lab's namespaces and delete them. Safe to call twice."""
        namespaces = [self.ns(h) for h in self.hosts] + [self.switch]
        existing = set(
            subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        )
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = False
            for ns in namespaces:
                if ns not in existing:
                    continue
                for pid in self.pids(ns.removeprefix(f"{self.tag}-")):
                    alive = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
            if not alive:
                break
            time.sleep(1.0)
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for ns in namespaces:
            if ns in existing:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        for sock in Path("/var/run/wireguard").glob(f"{self.tag}-*.sock"):
            sock.unlink(missing_ok=True)
