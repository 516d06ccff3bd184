"""POST /v1/completions."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from appliance.openai import serving
from appliance.openai.protocol import CompletionRequest, Usage
from appliance.state import get_state, require_principal

router = APIRouter()


class CompletionShape:
    def __init__(self, model: str) -> None:
        self.id = serving.new_id("cmpl")
        self.created = int(time.time())
        self.model = model
        self.include_usage = False

    def _chunk(self, text: str, reason: str | None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def first(self) -> None:
        return None

    def delta(self, text: str) -> dict[str, Any]:
        return self._chunk(text, None)

    def last(self, reason: str) -> dict[str, Any]:
        return self._chunk("", reason)

    def usage_only(self, usage: Usage) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage.model_dump(),
        }

    def complete(self, text: str, reason: str, usage: Usage) -> dict[str, Any]:
        chunk = self._chunk(text, reason)
        chunk["usage"] = usage.model_dump()
        return chunk


@router.post("/v1/completions")
async def create_completion(
    body: CompletionRequest,
    request: Request,
    principal: Annotated[str, Depends(require_principal)],
) -> Response:
    state = get_state(request)
    serving.check_model(state, body.model)
    model = state.engine.model
    text = body.prompt_text()
    session = serving.admit(state, request, principal)
    try:
        prompt = await asyncio.to_thread(
            lambda: model.tokenize(text, add_special=model.add_bos, parse_special=False)
        )
        job = serving.plan(state, body, prompt, requested_max=body.max_tokens, grammar=None)
    except BaseException:
        await serving.discard(state, session)
        raise
    shape = CompletionShape(body.model)
    include_usage = bool(body.stream and body.stream_options and body.stream_options.include_usage)
    shape.include_usage = include_usage
    return await serving.run(
        request,
        state,
        session,
        job,
        stream=body.stream,
        include_usage=include_usage,
        shape=shape,
    )
