"""Embeddings in OpenAI's shape. Nothing is kept after the response."""

from __future__ import annotations

import base64
from typing import Any

from appliance import observe
from appliance.auth import Principal
from appliance.errors import InvalidRequest, ModelNotFound
from appliance.openai.embeddings.protocol import EmbeddingRequest
from appliance.quotas import QuotaBook
from appliance.shares import ClientShares, client_of
from rag.embedder import Embedder


class EmbeddingServing:
    """An embeddings request counts in the client's quota (one request, its tokens) and its
    inputs in the client's embedding share."""

    def __init__(
        self, embedder: Embedder, *, max_inputs: int, quotas: QuotaBook, shares: ClientShares
    ) -> None:
        self.embedder = embedder
        self.max_inputs = max_inputs
        self.quotas = quotas
        self.shares = shares

    async def create(self, body: EmbeddingRequest, principal: Principal) -> dict[str, Any]:
        embedder = self.embedder
        if body.model != embedder.name:
            raise ModelNotFound("the requested model does not exist", param="model")
        observe.served(embedder.name)
        if body.dimensions is not None and body.dimensions != embedder.dimension:
            raise InvalidRequest(
                f"dimensions: this embedder's vectors have {embedder.dimension} dimensions and "
                "cannot be shortened",
                param="dimensions",
            )
        texts = [body.input] if isinstance(body.input, str) else body.input
        if len(texts) > self.max_inputs:
            raise InvalidRequest(f"at most {self.max_inputs} inputs are accepted", param="input")
        if any(not text for text in texts):
            raise InvalidRequest("an input is empty", param="input")
        self.quotas.admit(principal.client_id)
        try:
            self.shares.spend(client_of(principal), len(texts))
        except BaseException:
            self.quotas.refund(principal.client_id)
            raise
        vectors = await embedder.encode_async(texts)
        tokens = await embedder.run(embedder.count_tokens, texts)
        self.quotas.charge(principal.client_id, tokens)
        observe.tokens(tokens)
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
