"""POST /v1/embeddings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from appliance.openai.embeddings.protocol import EmbeddingRequest
from appliance.openai.embeddings.serving import EmbeddingServing
from appliance.state import Caller, EmbedderDep, QuotasDep, SettingsDep, SharesDep

router = APIRouter()


async def get_embeddings(
    embedder: EmbedderDep, settings: SettingsDep, quotas: QuotasDep, shares: SharesDep
) -> EmbeddingServing:
    return EmbeddingServing(
        embedder, max_inputs=settings.max_embedding_inputs, quotas=quotas, shares=shares
    )


EmbeddingsDep = Annotated[EmbeddingServing, Depends(get_embeddings)]


@router.post("/v1/embeddings")
async def create_embeddings(
    body: EmbeddingRequest,
    principal: Caller,
    embeddings: EmbeddingsDep,
) -> dict[str, Any]:
    return await embeddings.create(body, principal)
