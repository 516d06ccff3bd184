"""The client bundle: wg-quick config and its QR code, a new API key and a new WireGuard
preshared key (both shown only here), the appliance CA certificate and the receipt verifier
key, zipped in memory. Each bundle replaces the peer's preshared key, so an earlier bundle's
tunnel config stops working once the new one is issued."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta

from django.conf import settings

from control.console.models import ApiKey, ApplianceIdentity, Peer
from provisioning import ipam, keys, perimeter
from provisioning.ca import ensure_ca
from provisioning.wgconfig import ClientConfig, qr_png

README = """Keep client bundle for {peer}

{name}.conf   WireGuard config (wg-quick). {key_note}
{name}.png    the same config as a QR code, for mobile WireGuard apps
api-key.txt   your API key: send it as "Authorization: Bearer <key>". Shown only in this bundle.
ca.crt        the appliance CA: trust it for TLS to the API
receipt-key.txt  the appliance's receipt verifier key, for `keep verify`
"""


def server_public_key() -> str:
    return perimeter.server_public_key(settings.KEEP)


def build(peer: Peer, key_lifetime: timedelta | None = None) -> bytes:
    """Issue a new API key and preshared key for `peer` and return the bundle. A
    server-generated peer gets a fresh key pair here; its private key exists only inside the
    returned zip. Saving the peer syncs WireGuard once the change commits (signals.py)."""
    private: str | None = None
    if peer.server_generated:
        private = keys.generate_private()
        peer.public_key = keys.public_of(private)
    peer.preshared_key = keys.generate_preshared()
    peer.save(update_fields=["public_key", "preshared_key"])
    _, api_key = ApiKey.issue(peer, key_lifetime)
    net = ipam.network(settings.KEEP.wg_subnet)
    config = ClientConfig(
        address=peer.address,
        prefix=net.max_prefixlen,
        server_public_key=server_public_key(),
        endpoint=settings.KEEP.wg_endpoint,
        allowed_ips=f"{ipam.server_address(settings.KEEP.wg_subnet)}/{net.max_prefixlen}",
        private_key=private,
        preshared_key=peer.preshared_key,
    ).render()
    identity = ApplianceIdentity.objects.first()
    name = peer.name
    key_note = (
        "It holds your private key: keep it secret."
        if private
        else "Put the private key you generated in PrivateKey."
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.conf", config)
        archive.writestr(f"{name}.png", qr_png(config))
        archive.writestr("api-key.txt", api_key + "\n")
        archive.writestr("ca.crt", ensure_ca(perimeter.ca_dir(settings.KEEP)))
        archive.writestr(
            "receipt-key.txt", (identity.verifier_key if identity else "unknown yet") + "\n"
        )
        archive.writestr("README.txt", README.format(peer=peer, name=name, key_note=key_note))
    return out.getvalue()
