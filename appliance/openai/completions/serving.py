"""Text completions: the prompt tokenized as it is, events to OpenAI's text_completion."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from appliance.auth import Principal
from appliance.openai.completions.protocol import CompletionRequest
from appliance.openai.generation import GenerationServing, ShapeBase
from appliance.openai.protocol import Usage


class CompletionShape(ShapeBase):
    chunk_object = "text_completion"
    id_prefix = "cmpl"

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


class CompletionServing:
    def __init__(self, generation: GenerationServing) -> None:
        self.generation = generation

    async def create(
        self, body: CompletionRequest, request: Request, principal: Principal
    ) -> Response:
        generation = self.generation
        generation.check_model(body.model)
        model = generation.model
        text = body.prompt_text()
        session = generation.admit(request, principal)
        try:
            prompt = await asyncio.to_thread(
                lambda: model.tokenize(text, add_special=model.add_bos, parse_special=False)
            )
            job = generation.plan(body, prompt, requested_max=body.max_tokens, grammar=None)
        except BaseException:
            await generation.discard(session)
            raise
        shape = CompletionShape(body)
        return await generation.run(request, session, job, stream=body.stream, shape=shape)
