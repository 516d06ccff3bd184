"""POST /v1/completions."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from appliance.openai import serving
from appliance.openai.protocol import CompletionRequest, Usage
from appliance.state import Caller, get_state

router = APIRouter()


class CompletionShape(serving.ShapeBase):
    chunk_object = "text_completion"

    def _choice(self, text: str, reason: str | None) -> dict[str, Any]:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}

    def first(self) -> None:
        return None

    def delta(self, text: str) -> dict[str, Any]:
        return self.chunk(self._choice(text, None))

    def last(self, reason: str) -> dict[str, Any]:
        return self.chunk(self._choice("", reason))

    def complete(self, text: str, reason: str, usage: Usage) -> dict[str, Any]:
        out = self.envelope(self.chunk_object, [self._choice(text, reason)])
        return out | {"usage": usage.model_dump()}


@router.post("/v1/completions")
async def create_completion(
    body: CompletionRequest,
    request: Request,
    principal: Caller,
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
    shape = CompletionShape(body.model, id_prefix="cmpl")
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
