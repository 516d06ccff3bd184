"""Wire models for embeddings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from appliance.openai.protocol import Wire


class EmbeddingRequest(Wire):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    input: str | Annotated[list[str], Field(min_length=1)]
    encoding_format: Literal["float", "base64"] = "float"
    user: Annotated[str, Field(max_length=256)] | None = None
