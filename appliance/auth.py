"""API keys: only their sha256 digests are held, and a key is looked up by its digest.

A key is a high-entropy random string, so a plain sha256 suffices: there is nothing for a
slow hash to protect against. The lookup is a dict keyed by the digest, so its time does not
grow with the keys in force. It needs no constant-time compare: the time a dict lookup takes
can depend only on the presented key's digest, which tells a caller nothing about any key it
does not already hold (finding a key from digests is a sha256 preimage).

Each digest carries a grant: the peer and client it belongs to and when it expires. Keys
from the settings belong to the peer `local`; keys pushed by control belong to the peer and
client control bound them to.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

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
        self._grants = {bytes.fromhex(d): g for d, g in grants.items()}

    def __len__(self) -> int:
        return len(self._grants)

    def digests(self) -> frozenset[str]:
        return frozenset(d.hex() for d in self._grants)

    def principal(self, presented: str, now: float | None = None) -> Principal | None:
        """Who `presented` is, if it is a known, unexpired key."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        grant = self._grants.get(digest)
        if grant is None:
            return None
        if grant.expires_at is not None and grant.expires_at <= (now or time.time()):
            return None
        return Principal(digest.hex(), grant.peer_id, grant.client_id)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer` header value."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(keys: KeyRing, authorization: str | None) -> Principal:
    token = bearer_token(authorization)
    principal = keys.principal(token) if token is not None else None
    if principal is None:
        raise Unauthorized("invalid or missing API key")
    return principal
