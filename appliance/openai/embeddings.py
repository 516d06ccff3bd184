"""POST /v1/embeddings, in OpenAI's shape. Nothing is kept after the response."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request

from appliance.errors import InvalidRequest, ModelNotFound
from appliance.openai.protocol import EmbeddingRequest
from appliance.state import Caller, get_state

router = APIRouter()


@router.post("/v1/embeddings")
async def create_embeddings(
    body: EmbeddingRequest,
    request: Request,
    principal: Caller,
) -> dict[str, Any]:
    state = get_state(request)
    embedder = state.embedder
    if body.model != embedder.name:
        raise ModelNotFound("the requested model does not exist", param="model")
    texts = [body.input] if isinstance(body.input, str) else body.input
    limit = state.settings.max_embedding_inputs
    if len(texts) > limit:
        raise InvalidRequest(f"at most {limit} inputs are accepted", param="input")
    if any(not text for text in texts):
        raise InvalidRequest("an input is empty", param="input")
    vectors = await embedder.encode_async(texts)
    tokens = await embedder.run(embedder.count_tokens, texts)
    data = []
    for i, vector in enumerate(vectors):
        embedding: Any = (
            base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            if body.encoding_format == "base64"
            else vector.tolist()
        )
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": embedder.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
