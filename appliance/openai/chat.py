"""POST /v1/chat/completions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from appliance.errors import InvalidRequest
from appliance.openai import retrieval, serving
from appliance.openai.protocol import (
    ChatCompletionRequest,
    JsonObjectFormat,
    JsonSchemaFormat,
    Usage,
)
from appliance.state import Caller, get_state
from inference import grammar as grammars
from inference.sampling import Grammar
from inference.template import ChatMessage, Role

router = APIRouter()

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


class ChatShape(serving.ShapeBase):
    chunk_object = "chat.completion.chunk"

    def __init__(self, model: str) -> None:
        super().__init__(model, id_prefix="chatcmpl")
        # Keep's extension: the passages retrieval put into the prompt, or None without RAG.
        self.citations: list[dict[str, Any]] | None = None

    def _keep(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.citations is not None:
            obj["keep"] = {"citations": self.citations}
        return obj

    @staticmethod
    def _choice(delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}

    def first(self) -> dict[str, Any]:
        return self.chunk(self._choice({"role": "assistant", "content": ""}, None))

    def delta(self, text: str) -> dict[str, Any]:
        return self.chunk(self._choice({"content": text}, None))

    def last(self, reason: str) -> dict[str, Any]:
        return self._keep(self.chunk(self._choice({}, reason)))

    def complete(self, text: str, reason: str, usage: Usage) -> dict[str, Any]:
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
        out = self.envelope("chat.completion", [choice]) | {"usage": usage.model_dump()}
        return self._keep(out)


def _grammar(body: ChatCompletionRequest) -> Grammar | None:
    fmt = body.response_format
    if isinstance(fmt, JsonObjectFormat):
        return grammars.json_object()
    if isinstance(fmt, JsonSchemaFormat):
        return grammars.json_schema(json.dumps(fmt.json_schema.schema_))
    return None


@router.post("/v1/chat/completions")
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    principal: Caller,
) -> Response:
    state = get_state(request)
    serving.check_model(state, body.model)
    model = state.engine.model
    template = model.template
    if template is None:
        raise InvalidRequest("this model has no chat template; use /v1/completions")
    messages = [ChatMessage(role=_ROLES[m.role], content=m.text()) for m in body.messages]
    requested = body.max_completion_tokens or body.max_tokens
    settings = state.settings
    reserve = requested or min(settings.max_tokens_cap, model.n_ctx_per_seq // 4)
    budget = max(1, model.n_ctx_per_seq - reserve)

    def tokens_of(candidate: list[ChatMessage]) -> list[int]:
        return model.tokenize_prompt(template.render(candidate))

    session = serving.admit(state, request, principal)
    try:
        query = next((m.content for m in reversed(messages) if m.role == "user"), "")
        passages = await retrieval.retrieve(state, session, body.keep, query)

        def prepare() -> tuple[list[int], list[retrieval.Passage], Grammar | None]:
            prompt, used = retrieval.assemble(tokens_of, messages, passages or [], budget)
            return prompt, used, _grammar(body)

        prompt, used, grammar = await asyncio.to_thread(prepare)
        job = serving.plan(state, body, prompt, requested_max=requested, grammar=grammar)
    except BaseException:
        await serving.discard(state, session)
        raise
    shape = ChatShape(body.model)
    if passages is not None:
        shape.citations = retrieval.citations(used)
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
