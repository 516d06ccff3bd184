"""Client bundles. Each bundle issues a new API key and a new WireGuard preshared key, so an
earlier bundle's tunnel config stops working once the new one is issued."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from control.console import bundle
from control.console.models import ApiKey, Peer
from control.console.selectors import appliance_identity_get
from control.console.services.api_keys import api_key_issue, api_key_revoke
from provisioning import keys


def _issue(peer: Peer, key_lifetime: timedelta | None) -> tuple[bytes, ApiKey]:
    private: str | None = None
    if peer.server_generated:
        private = keys.generate_private()
        peer.public_key = keys.public_of(private)
    peer.preshared_key = keys.generate_preshared()
    peer.save(update_fields=["public_key", "preshared_key"])
    record, api_key = api_key_issue(peer=peer, lifetime=key_lifetime)
    identity = appliance_identity_get()
    content = bundle.render(
        peer=peer,
        private_key=private,
        api_key=api_key,
        verifier_key=identity.verifier_key if identity else None,
    )
    return content, record


@transaction.atomic
def bundle_issue(*, peer: Peer, key_lifetime: timedelta | None = None) -> bytes:
    """Issue a new API key and preshared key for `peer` and return its bundle. A
    server-generated peer gets a fresh key pair here; its private key exists only inside the
    returned zip. WireGuard and the policy follow once the change commits."""
    content, _ = _issue(peer, key_lifetime)
    return content


@transaction.atomic
def api_key_rotate(*, peer: Peer, key_lifetime: timedelta | None = None) -> bytes:
    """A new bundle for `peer`, and every other key of it revoked in the same transaction."""
    content, issued = _issue(peer, key_lifetime)
    api_key_revoke(keys=peer.keys.exclude(pk=issued.pk), now=timezone.now())
    return content
