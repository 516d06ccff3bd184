"""The client bundle: wg-quick config and its QR code, the API key and the WireGuard
preshared key (both shown only here), the appliance CA certificate and the receipt verifier
key, zipped in memory. The keys are issued by services.bundle_issue; this module only lays
them out."""

from __future__ import annotations

import io
import zipfile

from django.conf import settings

from control.console.models import Peer
from provisioning import ipam, perimeter
from provisioning.ca import appliance_names, ensure_ca
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


def render(*, peer: Peer, private_key: str | None, api_key: str, verifier_key: str | None) -> bytes:
    """The zip for `peer`, whose preshared key is already set. `private_key`: the key pair
    the server generated, or None when the client keeps its own."""
    net = ipam.network(settings.KEEP.wg_subnet)
    config = ClientConfig(
        address=peer.address,
        prefix=net.max_prefixlen,
        server_public_key=server_public_key(),
        endpoint=settings.KEEP.wg_endpoint,
        allowed_ips=f"{ipam.server_address(settings.KEEP.wg_subnet)}/{net.max_prefixlen}",
        private_key=private_key,
        preshared_key=peer.preshared_key,
    ).render()
    name = peer.name
    key_note = (
        "It holds your private key: keep it secret."
        if private_key
        else "Put the private key you generated in PrivateKey."
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.conf", config)
        archive.writestr(f"{name}.png", qr_png(config))
        archive.writestr("api-key.txt", api_key + "\n")
        archive.writestr(
            "ca.crt", ensure_ca(perimeter.ca_dir(settings.KEEP), appliance_names(settings.KEEP))
        )
        archive.writestr("receipt-key.txt", (verifier_key or "unknown yet") + "\n")
        archive.writestr("README.txt", README.format(peer=peer, name=name, key_note=key_note))
    return out.getvalue()
