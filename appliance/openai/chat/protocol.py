"""Wire models for chat completions, Keep's `keep` extension included."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from appliance.openai.protocol import INT64, GenerationFields, Lenient, Wire
from inference.logprobs import MAX_TOP


class TextPart(Lenient):
    type: Literal["text"]
    text: str


class MediaPart(Lenient):
    """An image, audio or file part: parsed only to be refused by name."""

    type: Literal["image_url", "input_image", "image", "input_audio", "audio", "file"]


class ChatMessageIn(Lenient):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | Annotated[list[TextPart | MediaPart], Field(min_length=1)]
    name: Annotated[str, Field(max_length=64)] | None = None
    # Declared so that Lenient does not drop them: refused by name until tool calling lands.
    tool_calls: Any = None
    function_call: Any = None

    @field_validator("tool_calls", "function_call")
    @classmethod
    def _no_tools_yet(cls, value: Any) -> Any:
        if value is not None:
            raise PydanticCustomError(
                "tools_unsupported", "tool calls are not supported by this appliance yet"
            )
        return value

    @field_validator("content")
    @classmethod
    def _text_only(
        cls, value: str | list[TextPart | MediaPart]
    ) -> str | list[TextPart | MediaPart]:
        if isinstance(value, list) and any(isinstance(part, MediaPart) for part in value):
            raise PydanticCustomError(
                "media_unsupported",
                "the model takes text only: image, audio and file parts are not accepted",
            )
        return value

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))


class JsonSchemaSpec(Lenient):
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
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP)] | None = None
    keep: KeepOptions | None = None
