"""The WireGuard interface and its peers.

Two ways to configure a WireGuard device, one interface to both:
- the kernel module, over generic netlink (pyroute2's `WireGuard`);
- the userspace implementation, wireguard-go, over its UAPI unix socket
  (`/var/run/wireguard/<interface>.sock`, the cross-platform configuration protocol).
Debian's kernel has the module; hosts without it (and the test machines) run wireguard-go.

Peer changes are applied as differences: a peer that stays is never removed and re-added,
so its session and its in-flight traffic survive every other peer's churn.
Keys travel as base64 here and as hex on the UAPI socket; private keys are never logged.
Preshared keys are secrets too: a peer's state carries only a fingerprint of its preshared
key, which is what `diff` compares, and specs leave the key out of their repr.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import ip_interface, ip_network
from pathlib import Path
from typing import Any, Protocol

UAPI_DIR = Path("/var/run/wireguard")


class WireGuardError(Exception):
    """The device refused a change or cannot be reached."""


@dataclass(frozen=True)
class PeerSpec:
    """A peer as the appliance wants it: its key, and the tunnel addresses it may use."""

    public_key: str
    allowed_ips: tuple[str, ...]
    preshared_key: str | None = field(default=None, repr=False)

    @property
    def preshared(self) -> str | None:
        return psk_fingerprint(self.preshared_key)


@dataclass(frozen=True)
class PeerState:
    public_key: str
    allowed_ips: tuple[str, ...]
    preshared: str | None = None  # the preshared key's fingerprint; None: no preshared key
    endpoint: str | None = None
    last_handshake: float | None = None  # seconds since the epoch; None: never
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass
class DeviceState:
    public_key: str | None = None
    listen_port: int | None = None
    peers: dict[str, PeerState] = field(default_factory=dict)


class Device(Protocol):
    name: str

    def configure(self, private_key: str, listen_port: int) -> None: ...
    def state(self) -> DeviceState: ...
    def apply(self, add: Iterable[PeerSpec], remove: Iterable[str]) -> None: ...


ZERO_KEY = base64.b64encode(bytes(32)).decode("ascii")  # "no preshared key" on the wire


def psk_fingerprint(key: str | bytes | None) -> str | None:
    """A non-secret name for a preshared key (base64 or raw bytes): enough to tell two keys
    apart, useless to an attacker. None for no key (absent, or all zeros as devices say)."""
    if key is None:
        return None
    raw = key if isinstance(key, bytes) else base64.b64decode(key, validate=True)
    if not any(raw):
        return None
    return hashlib.sha256(b"keep-psk-fingerprint" + raw).hexdigest()[:16]


def _hex(key: str) -> str:
    return base64.b64decode(key, validate=True).hex()


def _b64(hexkey: str) -> str:
    return base64.b64encode(bytes.fromhex(hexkey)).decode("ascii")


def _canonical_ips(ips: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(str(ip_network(ip, strict=False)) for ip in ips))


class UapiDevice:
    """wireguard-go (or any userspace WireGuard) through its UAPI unix socket."""

    def __init__(self, name: str, directory: Path = UAPI_DIR, timeout: float = 5.0) -> None:
        self.name = name
        self.path = directory / f"{name}.sock"
        self.timeout = timeout

    def _request(self, text: str) -> list[tuple[str, str]]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(self.timeout)
            try:
                conn.connect(str(self.path))
            except OSError as exc:
                reason = f"{self.name}: UAPI socket unreachable ({exc.strerror})"
                raise WireGuardError(reason) from None
            conn.sendall(text.encode("ascii"))
            data = b""
            while not data.endswith(b"\n\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        lines = (line.partition("=") for line in data.decode().splitlines() if line)
        pairs = [(k, v) for k, _, v in lines]
        errno = next((v for k, v in pairs if k == "errno"), None)
        if errno != "0":
            raise WireGuardError(f"{self.name}: the device refused the change (errno {errno})")
        return pairs

    def configure(self, private_key: str, listen_port: int) -> None:
        self._request(f"set=1\nprivate_key={_hex(private_key)}\nlisten_port={listen_port}\n\n")

    def apply(self, add: Iterable[PeerSpec], remove: Iterable[str]) -> None:
        lines = ["set=1"]
        for key in remove:
            lines += [f"public_key={_hex(key)}", "remove=true"]
        for peer in add:
            lines.append(f"public_key={_hex(peer.public_key)}")
            lines.append(f"preshared_key={_hex(peer.preshared_key or ZERO_KEY)}")
            lines.append("replace_allowed_ips=true")
            lines += [f"allowed_ip={ip}" for ip in peer.allowed_ips]
        if len(lines) > 1:
            self._request("\n".join(lines) + "\n\n")

    def state(self) -> DeviceState:
        device = DeviceState()
        current: dict[str, object] | None = None
        peers: list[dict[str, object]] = []
        for key, value in self._request("get=1\n\n"):
            if key == "public_key":
                current = {"public_key": _b64(value), "allowed_ips": []}
                peers.append(current)
            elif current is None:
                if key == "listen_port":
                    device.listen_port = int(value)
                elif key == "private_key":
                    device.public_key = _public_from_hex(value)
            elif key == "allowed_ip":
                current["allowed_ips"].append(value)  # type: ignore[attr-defined]
            elif key == "endpoint":
                current["endpoint"] = value
            elif key == "preshared_key":
                current["preshared"] = psk_fingerprint(bytes.fromhex(value))
            elif key in ("rx_bytes", "tx_bytes", "last_handshake_time_sec"):
                current[key] = int(value)
        for p in peers:
            handshake = p.get("last_handshake_time_sec") or None
            state = PeerState(
                public_key=str(p["public_key"]),
                allowed_ips=_canonical_ips(p["allowed_ips"]),  # type: ignore[arg-type]
                preshared=p.get("preshared"),  # type: ignore[arg-type]
                endpoint=p.get("endpoint"),  # type: ignore[arg-type]
                last_handshake=float(handshake) if handshake else None,  # type: ignore[arg-type]
                rx_bytes=int(p.get("rx_bytes", 0)),  # type: ignore[call-overload]
                tx_bytes=int(p.get("tx_bytes", 0)),  # type: ignore[call-overload]
            )
            device.peers[state.public_key] = state
        return device


def _public_from_hex(private_hex: str) -> str:
    from provisioning.keys import public_of

    return public_of(_b64(private_hex))


class NetlinkDevice:
    """The kernel module through generic netlink (pyroute2)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @contextlib.contextmanager
    def _wg(self) -> Iterator[Any]:
        """pyroute2's WireGuard socket; the kernel's refusals (no module, no such device)
        become WireGuardError, as the UAPI path's do."""
        from pyroute2 import IPRoute, WireGuard
        from pyroute2.netlink.exceptions import NetlinkError

        # pyroute2 leaks its socket and event loop when WireGuard() itself fails (a kernel
        # without the module): an absent interface is found out first, with rtnetlink.
        with IPRoute() as ip:
            if not ip.link_lookup(ifname=self.name):
                raise WireGuardError(f"{self.name}: no such interface")
        try:
            with WireGuard() as wg:
                yield wg
        except NetlinkError as exc:
            reason = os.strerror(exc.code) if isinstance(exc.code, int) else str(exc)
            raise WireGuardError(f"{self.name}: the kernel refused ({reason})") from None

    def configure(self, private_key: str, listen_port: int) -> None:
        with self._wg() as wg:
            wg.set(self.name, private_key=private_key, listen_port=listen_port)

    def apply(self, add: Iterable[PeerSpec], remove: Iterable[str]) -> None:
        with self._wg() as wg:
            for key in remove:
                wg.set(self.name, peer={"public_key": key, "remove": True})
            for peer in add:
                spec: dict[str, object] = {
                    "public_key": peer.public_key,
                    "allowed_ips": list(peer.allowed_ips),
                    "replace_allowed_ips": True,
                    "preshared_key": peer.preshared_key or ZERO_KEY,
                }
                wg.set(self.name, peer=spec)

    def state(self) -> DeviceState:
        device = DeviceState()
        with self._wg() as wg:
            for msg in wg.info(self.name):
                device.listen_port = msg.get_attr("WGDEVICE_A_LISTEN_PORT") or device.listen_port
                public = msg.get_attr("WGDEVICE_A_PUBLIC_KEY")
                if public:
                    device.public_key = _netlink_key(public)
                for peer in msg.get_attr("WGDEVICE_A_PEERS") or ():
                    key = _netlink_key(peer.get_attr("WGPEER_A_PUBLIC_KEY"))
                    ips = [
                        f"{a.get_attr('WGALLOWEDIP_A_IPADDR')}/{a.get_attr('WGALLOWEDIP_A_CIDR_MASK')}"
                        for a in peer.get_attr("WGPEER_A_ALLOWEDIPS") or ()
                    ]
                    handshake = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
                    seconds = handshake.get("tv_sec", 0) if handshake else 0
                    device.peers[key] = PeerState(
                        public_key=key,
                        allowed_ips=_canonical_ips(ips),
                        preshared=_netlink_psk(peer.get_attr("WGPEER_A_PRESHARED_KEY")),
                        last_handshake=float(seconds) or None,
                        rx_bytes=peer.get_attr("WGPEER_A_RX_BYTES") or 0,
                        tx_bytes=peer.get_attr("WGPEER_A_TX_BYTES") or 0,
                    )
        return device


def _netlink_key(value: bytes | str) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _netlink_psk(value: bytes | str | None) -> str | None:
    """pyroute2 hands keys over in base64, as bytes; the kernel sends zeros for none."""
    return None if value is None else psk_fingerprint(_netlink_key(value))


def open_device(name: str, directory: Path = UAPI_DIR) -> Device:
    """The device `name`: userspace when its UAPI socket exists, the kernel module otherwise."""
    if (directory / f"{name}.sock").exists():
        return UapiDevice(name, directory)
    return NetlinkDevice(name)


def diff(current: DeviceState, desired: Iterable[PeerSpec]) -> tuple[list[PeerSpec], list[str]]:
    """What to add or update, and which keys to remove, to turn `current` into `desired`."""
    wanted = {p.public_key: p for p in desired}
    remove = sorted(set(current.peers) - set(wanted))
    add = [
        p
        for key, p in sorted(wanted.items())
        if key not in current.peers
        or current.peers[key].allowed_ips != _canonical_ips(p.allowed_ips)
        or current.peers[key].preshared != p.preshared
    ]
    return add, remove


def sync(device: Device, desired: Iterable[PeerSpec]) -> tuple[int, int]:
    """Make the device's peer set exactly `desired`; returns (added or updated, removed)."""
    add, remove = diff(device.state(), list(desired))
    device.apply(add, remove)
    return len(add), len(remove)


# Interface lifecycle -----------------------------------------------------------------------


def create_interface(name: str, mtu: int = 1420, directory: Path = UAPI_DIR) -> str:
    """Create the interface if it is absent: the kernel module when the kernel has it, else
    wireguard-go. Returns "kernel" or "userspace"."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        if ipr.link_lookup(ifname=name):
            return "userspace" if (directory / f"{name}.sock").exists() else "kernel"
        try:
            ipr.link("add", ifname=name, kind="wireguard")
            kind = "kernel"
        except NetlinkError:
            _start_wireguard_go(name, directory)
            kind = "userspace"
        (index,) = ipr.link_lookup(ifname=name)
        ipr.link("set", index=index, mtu=mtu)
    return kind


def _start_wireguard_go(name: str, directory: Path) -> None:
    binary = shutil.which("wireguard-go")
    if binary is None:
        raise WireGuardError("the kernel has no WireGuard module and wireguard-go is absent")
    # wireguard-go daemonises once the interface and its UAPI socket exist.
    subprocess.run([binary, name], check=True, capture_output=True, timeout=30)
    deadline = time.monotonic() + 10
    while not (directory / f"{name}.sock").exists():
        if time.monotonic() > deadline:
            raise WireGuardError(f"{name}: wireguard-go did not open its UAPI socket")
        time.sleep(0.05)


def configure_interface(name: str, address: str, subnet: str) -> None:
    """Give the interface its tunnel address, bring it up and route the subnet through it.
    Idempotent."""
    from pyroute2 import IPRoute

    iface = ip_interface(address)
    net = ip_network(subnet)
    with IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=name)
        present = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index)}
        if str(iface.ip) not in present:
            ipr.addr("add", index=index, address=str(iface.ip), prefixlen=net.prefixlen)
        ipr.link("set", index=index, state="up")
        ipr.route("replace", dst=str(net), oif=index)
