"""POST /v1/completions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from appliance.openai.completions.protocol import CompletionRequest
from appliance.openai.completions.serving import CompletionServing
from appliance.openai.generation import GenerationDep
from appliance.state import Caller

router = APIRouter()


async def get_completions(generation: GenerationDep) -> CompletionServing:
    return CompletionServing(generation)


CompletionsDep = Annotated[CompletionServing, Depends(get_completions)]


@router.post("/v1/completions")
async def create_completion(
    body: CompletionRequest,
    request: Request,
    principal: Caller,
    completions: CompletionsDep,
) -> Response:
    return await completions.create(body, request, principal)
