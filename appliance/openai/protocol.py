"""Wire models for the OpenAI-compatible API.

Requests are strict: unknown fields, wrong types, NaN and out-of-range numbers are rejected
with 400, never coerced or ignored. Parameters OpenAI defines but Keep does not implement
are refused, not silently dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

INT64 = 2**63


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


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


class StreamOptions(Wire):
    include_usage: bool = False


class GenerationFields(Wire):
    """Parameters shared by chat and text completions."""

    model: Annotated[str, Field(min_length=1, max_length=256)]
    max_tokens: Annotated[int, Field(ge=1, lt=INT64)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0, le=100_000)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0, le=10.0)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    stop: (
        Annotated[str, Field(min_length=1, max_length=256)]
        | list[Annotated[str, Field(min_length=1, max_length=256)]]
        | None
    ) = None
    seed: Annotated[int, Field(ge=-INT64, lt=INT64)] | None = None
    logit_bias: (
        Annotated[
            dict[
                Annotated[str, Field(pattern=r"^[0-9]{1,9}$")],
                Annotated[float, Field(ge=-100.0, le=100.0)],
            ],
            Field(max_length=1024),
        ]
        | None
    ) = None
    user: Annotated[str, Field(max_length=256)] | None = None
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError("only n=1 is supported")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(GenerationFields):
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=4096)]
    max_completion_tokens: Annotated[int, Field(ge=1, lt=INT64)] | None = None
    response_format: ResponseFormat | None = None
    keep: KeepOptions | None = None


class CompletionRequest(GenerationFields):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class SessionOut(BaseModel):
    id: str
    object: Literal["session"] = "session"
    expires_at: int


class SessionDeleted(BaseModel):
    id: str
    object: Literal["session.deleted"] = "session.deleted"
    deleted: bool = True


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "keep"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class RagOptions(Wire):
    top_k: Annotated[int, Field(ge=1, le=100)] | None = None
    min_score: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None


class KeepOptions(Wire):
    """Keep's extension to chat completions: `"keep": {"rag": {...} | false}`."""

    rag: Literal[False] | RagOptions | None = None


class DocumentIn(Wire):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    text: str


class DocumentsIn(Wire):
    documents: Annotated[list[DocumentIn], Field(min_length=1, max_length=1024)]


class DocumentOut(BaseModel):
    id: str
    object: Literal["document"] = "document"
    name: str
    bytes: int
    chunks: int


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentOut]


class DocumentDeleted(BaseModel):
    id: str
    object: Literal["document.deleted"] = "document.deleted"
    deleted: bool = True


class EmbeddingRequest(Wire):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    input: str | Annotated[list[str], Field(min_length=1)]
    encoding_format: Literal["float", "base64"] = "float"
    user: Annotated[str, Field(max_length=256)] | None = None


ChatCompletionRequest.model_rebuild()
