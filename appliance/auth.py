"""API keys: only their sha256 digests are held, and every check is constant-time.

A key is a high-entropy random string, so a plain sha256 suffices: there is nothing for a
slow hash to protect against. The principal a key authenticates is its digest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from fastapi import Request

from appliance.errors import Unauthorized

KEY_PREFIX = "keep-"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyRing:
    def __init__(self, digests: Iterable[str]) -> None:
        self._digests = tuple(bytes.fromhex(d) for d in digests)

    def __len__(self) -> int:
        return len(self._digests)

    def principal(self, presented: str) -> str | None:
        """The digest of `presented` if it is a known key. Compares against every entry."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(known, digest)
        return digest.hex() if found else None


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(keys: KeyRing, request: Request) -> str:
    token = bearer_token(request)
    principal = keys.principal(token) if token is not None else None
    if principal is None:
        raise Unauthorized("invalid or missing API key")
    return principal
