"""Client configuration in wg-quick(8) format, and its QR code as a PNG."""

from __future__ import annotations

import io
from dataclasses import dataclass

import qrcode
from qrcode.image.pure import PyPNGImage

PRIVATE_KEY_PLACEHOLDER = "<your private key: wg genkey>"


@dataclass(frozen=True)
class ClientConfig:
    address: str
    prefix: int
    server_public_key: str
    endpoint: str
    allowed_ips: str
    private_key: str | None = None  # None: the client generated its own and keeps it
    preshared_key: str | None = None
    keepalive: int = 25

    def render(self) -> str:
        lines = [
            "[Interface]",
            f"PrivateKey = {self.private_key or PRIVATE_KEY_PLACEHOLDER}",
            f"Address = {self.address}/{self.prefix}",
            "",
            "[Peer]",
            f"PublicKey = {self.server_public_key}",
        ]
        if self.preshared_key:
            lines.append(f"PresharedKey = {self.preshared_key}")
        lines += [
            f"Endpoint = {self.endpoint}",
            f"AllowedIPs = {self.allowed_ips}",
            f"PersistentKeepalive = {self.keepalive}",
        ]
        return "\n".join(lines) + "\n"


def qr_png(text: str) -> bytes:
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    code.add_data(text)
    code.make(fit=True)
    out = io.BytesIO()
    code.make_image(image_factory=PyPNGImage).save(out)
    return out.getvalue()
