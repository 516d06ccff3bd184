"""Embeddings in OpenAI's shape. Nothing is kept after the response."""

from __future__ import annotations

import base64
from typing import Any

from appliance.errors import InvalidRequest, ModelNotFound
from appliance.openai.embeddings.protocol import EmbeddingRequest
from rag.embedder import Embedder


class EmbeddingServing:
    def __init__(self, embedder: Embedder, *, max_inputs: int) -> None:
        self.embedder = embedder
        self.max_inputs = max_inputs

    async def create(self, body: EmbeddingRequest) -> dict[str, Any]:
        embedder = self.embedder
        if body.model != embedder.name:
            raise ModelNotFound("the requested model does not exist", param="model")
        texts = [body.input] if isinstance(body.input, str) else body.input
        if len(texts) > self.max_inputs:
            raise InvalidRequest(f"at most {self.max_inputs} inputs are accepted", param="input")
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
