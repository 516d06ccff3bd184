"""GET /v1/models and /v1/models/{model_id}."""

from __future__ import annotations

from fastapi import APIRouter

from appliance.openai.models.protocol import ModelList, ModelOut
from appliance.state import Caller, ModelsDep

router = APIRouter()


@router.get("/v1/models")
async def list_models(principal: Caller, models: ModelsDep) -> ModelList:
    return models.list()


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, principal: Caller, models: ModelsDep) -> ModelOut:
    return models.get(model_id)
