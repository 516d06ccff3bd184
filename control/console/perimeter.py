"""Control's side of the perimeter: the database's active peers are the truth, and
WireGuard's peer set and NGINX's allowlist are made to equal them after every change.

Without `KEEP_WG_INTERFACE` (development) there is no perimeter and these do nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from control.console.appliance_link import ApplianceLink, ApplianceUnreachable
from control.console.models import Alert, Peer
from provisioning import perimeter, wireguard

log = logging.getLogger("keep.control")


def active_peers() -> list[perimeter.ActivePeer]:
    return [
        perimeter.ActivePeer(p.public_key, p.address, p.preshared_key or None)
        for p in Peer.objects.active().exclude(public_key="")
    ]


def enabled() -> bool:
    return settings.KEEP.wg_interface is not None


def sync() -> bool:
    """Apply the active peers to the host. A failure raises an alert and returns False."""
    if not enabled():
        return True
    try:
        added, removed = perimeter.sync(settings.KEEP, active_peers())
    except (OSError, wireguard.WireGuardError, ValueError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("perimeter not synced: %s", reason)
        Alert.objects.create(kind=Alert.PERIMETER_FAILED, detail=reason[:512])
        return False
    if added or removed:
        log.info("perimeter synced: %d peer(s) set, %d removed", added, removed)
    return True


def doctor() -> list[str]:
    """Every difference between the database and WireGuard, NGINX and the appliance."""
    peers = active_peers()
    problems = perimeter.drift(settings.KEEP, peers) if enabled() else []
    try:
        with ApplianceLink(settings.KEEP.admin_socket) as link:
            status: dict[str, Any] = link.status()
    except ApplianceUnreachable as exc:
        return [*problems, f"appliance: unreachable ({exc})"]
    policy = set(status.get("peers", []))
    expected = {p.address for p in peers}
    problems += [f"policy: {a} is in force but no active peer's" for a in sorted(policy - expected)]
    problems += [f"policy: active peer {a} is missing" for a in sorted(expected - policy)]
    return problems


def record_handshakes() -> int:
    """Copy WireGuard's latest handshakes into the peers; returns how many changed."""
    if not enabled() or settings.KEEP.wg_peer_handoff:
        return 0  # with the handoff, only root may read the device
    try:
        latest = perimeter.handshakes(settings.KEEP)
    except (OSError, wireguard.WireGuardError) as exc:
        # sync() has raised the alert for an unreachable device; the loop goes on.
        log.warning("handshakes not read: %s: %s", type(exc).__name__, exc)
        return 0
    changed = 0
    for key, seconds in latest.items():
        when = datetime.fromtimestamp(seconds, tz=UTC)
        changed += (
            Peer.objects.active()
            .filter(public_key=key)
            .exclude(last_handshake=when)
            .update(last_handshake=when)
        )
    return changed
