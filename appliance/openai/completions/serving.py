"""Text completions: the prompt tokenized as it is, events to OpenAI's text_completion."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from appliance.auth import Principal
from appliance.openai.completions.protocol import CompletionRequest
from appliance.openai.generation import GenerationServing
from appliance.openai.logprobs import CompletionLogprobs
from appliance.openai.protocol import Usage
from appliance.openai.shapes import ShapeBase
from inference.logprobs import TokenLogprob


class CompletionShape(ShapeBase):
    chunk_object = "text_completion"
    id_prefix = "cmpl"

    def __init__(self, body: CompletionRequest) -> None:
        super().__init__(body)
        self.logprobs = CompletionLogprobs() if body.logprobs is not None else None

    def _choice(
        self, text: str, reason: str | None, entries: Sequence[TokenLogprob]
    ) -> dict[str, Any]:
        logprobs = None if self.logprobs is None else self.logprobs(entries)
        return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason}

    def first(self) -> None:
        return None

    def delta(self, text: str, logprobs: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
        return [self.chunk(self._choice(text, None, logprobs))]

    def last(self, reason: str, logprobs: Sequence[TokenLogprob]) -> dict[str, Any]:
        return self.chunk(self._choice("", reason, logprobs))

    def complete(
        self, text: str, reason: str, usage: Usage, logprobs: Sequence[TokenLogprob]
    ) -> dict[str, Any]:
        out = self.envelope(self.chunk_object, [self._choice(text, reason, logprobs)])
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
            job = generation.plan(
                body, prompt, requested_max=body.max_tokens, grammar=None, logprobs=body.logprobs
            )
        except BaseException:
            await generation.discard(session)
            raise
        shape = CompletionShape(body)
        return await generation.run(request, session, job, stream=body.stream, shape=shape)
