"""GET /v1/models and /v1/models/{model_id}: the model this appliance serves."""

from __future__ import annotations

from fastapi import APIRouter, Request

from appliance.errors import ModelNotFound
from appliance.openai.protocol import ModelList, ModelOut
from appliance.state import ApplianceState, Caller, get_state

router = APIRouter()


def _served(state: ApplianceState) -> ModelOut:
    return ModelOut(id=state.pinned.name, created=state.loaded_at)


@router.get("/v1/models")
async def list_models(request: Request, principal: Caller) -> ModelList:
    return ModelList(data=[_served(get_state(request))])


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request, principal: Caller) -> ModelOut:
    state = get_state(request)
    if model_id != state.pinned.name:
        raise ModelNotFound("the requested model does not exist", param="model")
    return _served(state)
