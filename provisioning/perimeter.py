"""The perimeter as one unit: bring it up on a host, keep it in step with control's peers,
and report where it has drifted.

Control calls `sync` after every committed peer change (add, revoke, rotate), with the
database's active peers; WireGuard's peer set and NGINX's allowlist then equal them. The
appliance's policy, the third copy, is pushed by control itself over the admin socket.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path

import durable
from keep.settings import PerimeterSettings
from provisioning import ipam, keys, nftables, nginx, wireguard


@dataclass(frozen=True)
class ActivePeer:
    public_key: str
    address: str
    preshared_key: str | None = field(default=None, repr=False)

    def spec(self) -> wireguard.PeerSpec:
        prefix = 32 if ip_address(self.address).version == 4 else 128
        return wireguard.PeerSpec(
            self.public_key, (f"{self.address}/{prefix}",), self.preshared_key
        )


def server_key_path(settings: PerimeterSettings) -> Path:
    return settings.provisioning_path / "wireguard" / "server.key"


def ca_dir(settings: PerimeterSettings) -> Path:
    return settings.provisioning_path / "ca"


def server_public_key(settings: PerimeterSettings) -> str:
    """The WireGuard server's public key, from `server.pub` (0644) beside the private key, so
    that control never needs to read the private one. Created with the key pair if absent."""
    pub = server_key_path(settings).with_name("server.pub")
    if pub.exists():
        return pub.read_text().strip()
    public = keys.public_of(keys.ensure_private(server_key_path(settings)))
    durable.replace(pub, (public + "\n").encode(), mode=0o644)
    return public


def _interface(settings: PerimeterSettings) -> str:
    if settings.wg_interface is None:
        raise ValueError("KEEP_WG_INTERFACE is not set: there is no perimeter")
    return settings.wg_interface


def up(settings: PerimeterSettings, upstream_socket: Path) -> dict[str, str]:
    """Provision this host: WireGuard interface, keys and address; the firewall; NGINX's
    config and certificate, checked by `nginx -t`. Safe to run again."""
    name = _interface(settings)
    private = keys.ensure_private(server_key_path(settings))
    server_public_key(settings)
    kind = wireguard.create_interface(name, mtu=settings.wg_mtu)
    wireguard.open_device(name).configure(private, settings.wg_listen_port)
    server = ipam.server_address(settings.wg_subnet)
    wireguard.configure_interface(name, server, settings.wg_subnet)
    ruleset = nftables.render(settings)
    nftables.check(ruleset)
    nftables.apply(ruleset)
    conf = nginx.write(settings, upstream_socket, ca_dir(settings))
    nginx.check(conf)
    return {
        "interface": name,
        "implementation": kind,
        "address": server,
        "public_key": keys.public_of(private),
        "nginx_conf": str(conf),
    }


def sync(settings: PerimeterSettings, peers: Iterable[ActivePeer]) -> tuple[int, int]:
    """WireGuard's peers and NGINX's allowlist become exactly `peers`. Returns WireGuard's
    (added or updated, removed); with KEEP_WG_PEER_HANDOFF, the peers are handed to root's
    `keep provision sync` instead, and the count is of peers handed off when the set changed."""
    active = list(peers)
    if settings.wg_peer_handoff:
        changed = (len(active), 0) if hand_off(settings, active) else (0, 0)
    else:
        changed = _sync_device(settings, active)
    nginx.install_allowlist(settings, [p.address for p in active])
    return changed


def handoff_path(settings: PerimeterSettings) -> Path:
    return settings.state_dir / "wireguard-peers.json"


def hand_off(settings: PerimeterSettings, peers: Iterable[ActivePeer]) -> bool:
    """Write the active peers for root to apply (0600: it holds preshared keys). Returns
    whether the set changed; an unchanged set is not rewritten, so nothing is triggered."""
    rows = [
        {"public_key": p.public_key, "address": p.address, "preshared_key": p.preshared_key}
        for p in sorted(peers, key=lambda p: p.public_key)
    ]
    path = handoff_path(settings)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return durable.replace_if_changed(path, (json.dumps(rows, indent=1) + "\n").encode())


def read_handoff(settings: PerimeterSettings) -> list[ActivePeer] | None:
    """The peers control handed off, each checked (a key, an address in the tunnel subnet, a
    preshared key); None when control has written none yet. Raises ValueError, naming the
    entry but no key material, on anything else."""
    path = handoff_path(settings)
    if not path.exists():
        return None
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ValueError(f"{path} is not JSON") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path} is not a list of peers")
    subnet = ipam.network(settings.wg_subnet)
    peers = []
    for index, row in enumerate(rows):
        try:
            key = keys.check_public(row["public_key"])
            address = ip_address(row["address"])
            psk = row["preshared_key"]
            if psk is not None:
                keys.decode(psk)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: peer {index} is malformed") from None
        if address not in subnet:
            raise ValueError(f"{path}: peer {index}'s address is outside {subnet}")
        peers.append(ActivePeer(key, str(address), psk))
    return peers


def apply_handoff(settings: PerimeterSettings) -> tuple[int, int]:
    """Root's side of the handoff: WireGuard's peers become the handed-off set, as a diff.
    Nothing is changed when control has handed off nothing yet."""
    peers = read_handoff(settings)
    return (0, 0) if peers is None else _sync_device(settings, peers)


def _sync_device(settings: PerimeterSettings, peers: list[ActivePeer]) -> tuple[int, int]:
    device = wireguard.open_device(_interface(settings))
    return wireguard.sync(device, [p.spec() for p in peers])


def drift(settings: PerimeterSettings, peers: Iterable[ActivePeer]) -> list[str]:
    """How the host differs from `peers` (control's active peers); empty when in step.
    Names keys and addresses only."""
    active = list(peers)
    expected = {p.public_key: p.spec() for p in active}
    problems = []
    try:
        state = wireguard.open_device(_interface(settings)).state()
    except wireguard.WireGuardError as exc:
        return [f"wireguard: {exc}"]
    for key in sorted(set(state.peers) - set(expected)):
        problems.append(f"wireguard: peer {key} is configured but not active in control")
    for key in sorted(set(expected) - set(state.peers)):
        problems.append(f"wireguard: active peer {key} is missing")
    for key in sorted(set(expected) & set(state.peers)):
        want = tuple(sorted(expected[key].allowed_ips))
        if state.peers[key].allowed_ips != want:
            problems.append(f"wireguard: peer {key} allows {state.peers[key].allowed_ips}")
        if state.peers[key].preshared != expected[key].preshared:
            problems.append(f"wireguard: peer {key}'s preshared key is not control's")
    addresses = {str(ip_address(p.address)) for p in active}
    listed = nginx.allowlist(settings)
    for address in sorted(listed - addresses):
        problems.append(f"nginx: {address} is allowed but is no active peer's")
    for address in sorted(addresses - listed):
        problems.append(f"nginx: active peer address {address} is not allowed")
    return problems


def handshakes(settings: PerimeterSettings) -> dict[str, float]:
    """Each peer's latest handshake (seconds since the epoch), by public key."""
    state = wireguard.open_device(_interface(settings)).state()
    return {k: p.last_handshake for k, p in state.peers.items() if p.last_handshake}
