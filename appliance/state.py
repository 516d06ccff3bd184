"""The appliance's runtime objects: built once by create_app's lifespan, held on `app.state`,
and reached by handlers through one typed accessor each (`EngineDep`, `SessionsDep`, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from appliance.access import PRINCIPAL_SCOPE_KEY, Access
from appliance.auth import Principal
from appliance.errors import Unauthorized
from appliance.journal import ReceiptLog
from appliance.metrics import Metrics
from appliance.openai.models.serving import ModelServing
from appliance.quotas import QuotaBook
from appliance.ratelimit import RateBook
from appliance.sessions import SessionRegistry
from appliance.shares import ClientShares
from inference.engine import Engine
from inference.registry import PinnedModel
from keep.settings import ApplianceSettings
from rag.collection import CollectionLimits, MemoryBudget
from rag.embedder import Embedder


@dataclass
class ApplianceState:
    settings: ApplianceSettings
    engine: Engine
    models: ModelServing
    sessions: SessionRegistry
    access: Access
    quotas: QuotaBook
    receipts: ReceiptLog
    embedder: Embedder
    collection_limits: CollectionLimits
    budget: MemoryBudget
    shares: ClientShares
    rates: RateBook
    metrics: Metrics

    @property
    def pinned(self) -> PinnedModel:
        return self.engine.model.pinned


def app_state(app: FastAPI) -> ApplianceState:
    state = app.state.keep
    assert isinstance(state, ApplianceState)
    return state


def get_state(request: Request) -> ApplianceState:
    return app_state(request.app)


# The accessors are coroutines so that FastAPI calls them on the event loop, not in its thread
# pool; they only read app.state.


async def get_settings(request: Request) -> ApplianceSettings:
    return get_state(request).settings


async def get_engine(request: Request) -> Engine:
    return get_state(request).engine


async def get_models(request: Request) -> ModelServing:
    return get_state(request).models


async def get_sessions(request: Request) -> SessionRegistry:
    return get_state(request).sessions


async def get_quotas(request: Request) -> QuotaBook:
    return get_state(request).quotas


async def get_journal(request: Request) -> ReceiptLog:
    return get_state(request).receipts


async def get_embedder(request: Request) -> Embedder:
    return get_state(request).embedder


async def get_collection_limits(request: Request) -> CollectionLimits:
    return get_state(request).collection_limits


async def get_shares(request: Request) -> ClientShares:
    return get_state(request).shares


async def require_principal(request: Request) -> Principal:
    """FastAPI dependency: the principal appliance.middleware.Authenticate found, before the
    body was read. Without one (an app built without that middleware) nobody is let in."""
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if not isinstance(principal, Principal):
        raise Unauthorized("invalid or missing API key")
    return principal


SettingsDep = Annotated[ApplianceSettings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ModelsDep = Annotated[ModelServing, Depends(get_models)]
SessionsDep = Annotated[SessionRegistry, Depends(get_sessions)]
QuotasDep = Annotated[QuotaBook, Depends(get_quotas)]
JournalDep = Annotated[ReceiptLog, Depends(get_journal)]
EmbedderDep = Annotated[Embedder, Depends(get_embedder)]
CollectionLimitsDep = Annotated[CollectionLimits, Depends(get_collection_limits)]
SharesDep = Annotated[ClientShares, Depends(get_shares)]
Caller = Annotated[Principal, Depends(require_principal)]
