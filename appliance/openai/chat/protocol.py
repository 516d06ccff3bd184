"""Wire models for chat completions, Keep's `keep` extension included."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from appliance.openai.protocol import INT64, GenerationFields, Lenient, Wire
from inference.logprobs import MAX_TOP
from inference.tools import NAME_PATTERN

FunctionName = Annotated[str, Field(pattern=NAME_PATTERN)]


class TextPart(Lenient):
    type: Literal["text"]
    text: str


class MediaPart(Lenient):
    """An image, audio or file part: parsed only to be refused by name."""

    type: Literal["image_url", "input_image", "image", "input_audio", "audio", "file"]


class FunctionCallIn(Lenient):
    name: FunctionName
    arguments: Annotated[str, Field(max_length=1 << 20)]


class ToolCallIn(Lenient):
    """A call in an assistant turn of the conversation a client sends back."""

    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    # null only in an assistant turn (one that made tool calls, as OpenAI's clients send it).
    content: str | Annotated[list[TextPart | MediaPart], Field(min_length=1)] | None = None
    name: Annotated[str, Field(max_length=64)] | None = None
    tool_calls: Annotated[list[ToolCallIn], Field(max_length=4096)] | None = None
    tool_call_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    # Declared so that Lenient does not drop it: the legacy form, refused by name.
    function_call: Any = None

    @field_validator("function_call")
    @classmethod
    def _no_function_call(cls, value: Any) -> Any:
        if value is not None:
            raise PydanticCustomError(
                "function_call_unsupported",
                "function_call is OpenAI's deprecated form; send tool_calls instead",
            )
        return value

    @model_validator(mode="after")
    def _roles(self) -> ChatMessageIn:
        if self.content is None and self.role != "assistant":
            raise PydanticCustomError(
                "content_missing", "only an assistant message may have null content"
            )
        if self.tool_calls and self.role != "assistant":
            raise PydanticCustomError(
                "tool_calls_role", "only an assistant message may carry tool_calls"
            )
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise PydanticCustomError(
                "tool_call_id", "a tool message, and only a tool message, needs tool_call_id"
            )
        return self

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
        if self.content is None:
            return ""
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


class FunctionDef(Lenient):
    name: FunctionName
    description: Annotated[str, Field(max_length=8192)] | None = None
    # None: a function without parameters, as OpenAI reads an omitted schema.
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(Lenient):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Wire):
    name: FunctionName


class NamedToolChoice(Wire):
    type: Literal["function"]
    function: NamedFunction


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
    tools: Annotated[list[ToolDef], Field(max_length=1024)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    keep: KeepOptions | None = None
