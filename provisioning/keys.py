"""WireGuard keys: X25519 key pairs and preshared keys, base64 as wg(8) writes them.

Key files are written with umask 077 and mode 0600, and created exclusively, never over an
existing file (durable.create_secret).
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from durable import create_secret


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def generate_private() -> str:
    raw = X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return _b64(raw)


def public_of(private: str) -> str:
    key = X25519PrivateKey.from_private_bytes(decode(private))
    return _b64(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def generate_preshared() -> str:
    return _b64(secrets.token_bytes(32))


def decode(text: str) -> bytes:
    """A WireGuard key: 32 bytes in canonical base64. Raises ValueError otherwise."""
    try:
        raw = base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ValueError("a WireGuard key is 44 characters of base64") from None
    if len(raw) != 32 or _b64(raw) != text.strip():
        raise ValueError("a WireGuard key is 32 bytes in base64")
    return raw


def check_public(text: str) -> str:
    X25519PublicKey.from_public_bytes(decode(text))
    return text.strip()


def ensure_private(path: Path) -> str:
    """The private key at `path`, generated there on first use."""
    if not path.exists():
        # Traversable, so the public half beside it can be read; the key itself is 0600.
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        create_secret(path, (generate_private() + "\n").encode())
    return path.read_text().strip()
