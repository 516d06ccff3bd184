"""Wire models for embeddings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from appliance.openai.protocol import Wire


class EmbeddingRequest(Wire):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    input: str | Annotated[list[str], Field(min_length=1)]
    encoding_format: Literal["float", "base64"] = "float"
    # Accepted only as the embedder's own width; checked by the serving, which knows it.
    dimensions: Annotated[int, Field(ge=1, le=100_000)] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _no_token_ids(cls, value: Any) -> Any:
        if isinstance(value, list) and any(isinstance(v, int | list) for v in value):
            raise PydanticCustomError(
                "token_ids_unsupported",
                "token ids are not accepted: Keep's embedder has its own tokenizer, so send "
                "text (in LangChain's OpenAIEmbeddings, set check_embedding_ctx_length=False)",
            )
        return value
