"""API keys: only their sha256 digests are held, and every check is constant-time.

A key is a high-entropy random string, so a plain sha256 suffices: there is nothing for a
slow hash to protect against. Each digest carries a grant: the peer and client it belongs to
and when it expires. Keys from the settings belong to the peer `local`; keys pushed by
control belong to the peer and client control bound them to.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import Request

from appliance.errors import Unauthorized

KEY_PREFIX = "keep-"
LOCAL_PEER = "local"


@dataclass(frozen=True)
class Grant:
    peer_id: str = LOCAL_PEER
    client_id: str | None = None
    expires_at: float | None = None


@dataclass(frozen=True)
class Principal:
    """Who a request is from: the key's digest (which owns sessions), its peer and client."""

    digest: str
    peer_id: str
    client_id: str | None


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyRing:
    def __init__(self, grants: Mapping[str, Grant]) -> None:
        self._grants = tuple((bytes.fromhex(d), g) for d, g in grants.items())

    def digests(self) -> frozenset[str]:
        return frozenset(d.hex() for d, _ in self._grants)

    def principal(self, presented: str, now: float | None = None) -> Principal | None:
        """Who `presented` is, if it is a known, unexpired key. Compares against every
        entry, so the time taken does not depend on which entry matches."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        match: Grant | None = None
        for known, grant in self._grants:
            if hmac.compare_digest(known, digest):
                match = grant
        if match is None:
            return None
        if match.expires_at is not None and match.expires_at <= (now or time.time()):
            return None
        return Principal(digest.hex(), match.peer_id, match.client_id)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(keys: KeyRing, request: Request) -> Principal:
    token = bearer_token(request)
    principal = keys.principal(token) if token is not None else None
    if principal is None:
        raise Unauthorized("invalid or missing API key")
    return principal
