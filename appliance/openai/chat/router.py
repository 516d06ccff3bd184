"""POST /v1/chat/completions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from appliance.openai.chat.protocol import ChatCompletionRequest
from appliance.openai.chat.serving import ChatServing
from appliance.openai.generation import GenerationDep
from appliance.state import Caller, EmbedderDep, SettingsDep
from inference.grammar import SchemaLimits

router = APIRouter()


async def get_chat(
    generation: GenerationDep, embedder: EmbedderDep, settings: SettingsDep
) -> ChatServing:
    return ChatServing(
        generation,
        embedder=embedder,
        rag_top_k=settings.rag_top_k,
        rag_min_score=settings.rag_min_score,
        schema_limits=SchemaLimits(
            max_schema_bytes=settings.schema_max_bytes,
            max_depth=settings.schema_max_depth,
            max_repetition=settings.schema_max_repetition,
            max_grammar_bytes=settings.grammar_max_bytes,
        ),
        max_tools=settings.max_tools,
        max_tool_calls=settings.max_tool_calls_per_message,
    )


ChatDep = Annotated[ChatServing, Depends(get_chat)]


@router.post("/v1/chat/completions")
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    principal: Caller,
    chat: ChatDep,
) -> Response:
    return await chat.create(body, request, principal)
