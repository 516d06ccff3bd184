"""Wire models for chat completions, Keep's `keep` extension included."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from appliance.openai.protocol import INT64, GenerationFields, Wire


class TextPart(Wire):
    type: Literal["text"]
    text: str


class ChatMessageIn(Wire):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | Annotated[list[TextPart], Field(min_length=1)]
    name: Annotated[str, Field(max_length=64)] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class JsonSchemaSpec(Wire):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str | None = None
    schema_: Annotated[dict[str, Any], Field(alias="schema")]
    strict: bool | None = None


class TextFormat(Wire):
    type: Literal["text"]


class JsonObjectFormat(Wire):
    type: Literal["json_object"]


class JsonSchemaFormat(Wire):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class RagOptions(Wire):
    top_k: Annotated[int, Field(ge=1, le=100)] | None = None
    min_score: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None


class KeepOptions(Wire):
    """Keep's extension to chat completions: `"keep": {"rag": {...} | false}`."""

    rag: Literal[False] | RagOptions | None = None


class ChatCompletionRequest(GenerationFields):
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=4096)]
    max_completion_tokens: Annotated[int, Field(ge=1, lt=INT64)] | None = None
    response_format: ResponseFormat | None = None
    keep: KeepOptions | None = None
