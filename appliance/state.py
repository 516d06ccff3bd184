"""The appliance's runtime objects, held on `app.state` and reached through typed accessors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from appliance.auth import Grant, KeyRing, Principal, authenticate
from appliance.errors import Forbidden
from appliance.policy import Policy
from appliance.quotas import QuotaBook
from appliance.receipts import ReceiptLog
from appliance.sessions import SessionRegistry
from inference.engine import Engine
from inference.registry import PinnedModel
from keep.settings import Settings
from rag.collection import CollectionLimits, MemoryBudget
from rag.embedder import Embedder


@dataclass
class ApplianceState:
    settings: Settings
    engine: Engine
    pinned: PinnedModel
    sessions: SessionRegistry
    keys: KeyRing
    loaded_at: int
    embedder: Embedder
    collection_limits: CollectionLimits
    budget: MemoryBudget
    receipts: ReceiptLog
    quotas: QuotaBook
    static_grants: dict[str, Grant]
    policy: Policy | None = None
    peer_addresses: dict[str, str] | None = None  # peer id -> tunnel address, from policy


def get_state(request: Request) -> ApplianceState:
    state = request.app.state.keep
    assert isinstance(state, ApplianceState)
    return state


PEER_HEADER = "x-keep-peer"


def require_principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated principal, or 401.

    Behind NGINX (the API on a unix socket) a key is also bound to its peer: NGINX names the
    tunnel address the request came from, and a key used from another peer's address gets
    403, which NGINX turns into silence. The header is trusted only on the unix socket,
    which NGINX alone can reach."""
    state = get_state(request)
    principal = authenticate(state.keys, request)
    if state.settings.listen_socket is not None and state.peer_addresses:
        bound = state.peer_addresses.get(principal.peer_id)
        if bound is not None and request.headers.get(PEER_HEADER) != bound:
            raise Forbidden("this key belongs to another peer")
    return principal


Caller = Annotated[Principal, Depends(require_principal)]
