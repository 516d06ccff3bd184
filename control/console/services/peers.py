"""WireGuard peers: created with a tunnel address of their own, rotated to a new public key,
revoked with their API keys. Saving a peer syncs WireGuard and NGINX and pushes the policy
once the change commits (signals.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from control.console.models import Client, Peer
from control.console.selectors import peer_address_taken_list, perimeter_enabled
from control.console.services.api_keys import api_key_revoke
from provisioning import ipam, perimeter, wireguard

log = logging.getLogger("keep.control")


def address_allocate(*, now: datetime | None = None) -> str:
    """The lowest tunnel address that no active peer holds and no peer revoked within the
    quarantine held. It writes nothing: the peer created with it takes it."""
    quarantine = (now or timezone.now()) - timedelta(seconds=settings.KEEP.wg_address_quarantine_s)
    taken = peer_address_taken_list(quarantined_since=quarantine)
    return ipam.allocate(settings.KEEP.wg_subnet, taken)


@transaction.atomic
def peer_create(
    *, client: Client, name: str, public_key: str = "", server_generated: bool = False
) -> Peer:
    """`public_key`: the key the client generated; empty for a server-generated peer, whose
    key pair is made with its first bundle."""
    return Peer.objects.create(
        client=client,
        name=name,
        public_key=public_key,
        server_generated=server_generated,
        address=address_allocate(),
    )


@transaction.atomic
def peer_public_key_rotate(*, peer: Peer, public_key: str) -> Peer:
    """Replace the key of a peer whose client made its own key pair. The address, API keys
    and preshared key stay."""
    peer.public_key = public_key
    peer.save(update_fields=["public_key"])
    return peer


@transaction.atomic
def peer_revoke(*, peer: Peer, now: datetime | None = None) -> Peer:
    """Revoke the peer and its keys together, and forget its preshared key."""
    now = now or timezone.now()
    peer.revoked_at = now
    peer.preshared_key = ""
    peer.save(update_fields=["revoked_at", "preshared_key"])
    api_key_revoke(keys=peer.keys.all(), now=now)
    return peer


def peer_handshakes_record() -> int:
    """Copy WireGuard's latest handshakes into the peers; returns how many changed."""
    if not perimeter_enabled() or settings.KEEP.wg_peer_handoff:
        return 0  # with the handoff, only root may read the device
    try:
        latest = perimeter.handshakes(settings.KEEP)
    except (OSError, wireguard.WireGuardError) as exc:
        # perimeter_sync has raised the alert for an unreachable device; the loop goes on.
        log.warning("handshakes not read: %s: %s", type(exc).__name__, exc)
        return 0
    changed = 0
    with transaction.atomic():
        for key, seconds in latest.items():
            when = datetime.fromtimestamp(seconds, tz=UTC)
            changed += (
                Peer.objects.active()
                .filter(public_key=key)
                .exclude(last_handshake=when)
                .update(last_handshake=when)
            )
    return changed
