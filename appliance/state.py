"""The appliance's runtime objects, held on `app.state` and reached through typed accessors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from appliance.auth import Grant, KeyRing, Principal, authenticate
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


def get_state(request: Request) -> ApplianceState:
    state = request.app.state.keep
    assert isinstance(state, ApplianceState)
    return state


def require_principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated principal, or 401."""
    return authenticate(get_state(request).keys, request)


Caller = Annotated[Principal, Depends(require_principal)]
