"""Wire types every OpenAI endpoint family shares: the strict base model, the generation
parameters of chat and text completions, and usage.

Requests are strict: unknown fields, wrong types, NaN and out-of-range numbers are rejected
with 400, never coerced or ignored. So is text that is not Unicode: JSON can escape a lone
surrogate (`"\\ud800"`), which no UTF-8 encoder, tokenizer or response writer accepts.
Parameters OpenAI defines but Keep does not implement are refused, not silently dropped.
Inside messages, parts and a `json_schema` (`Lenient`), keys OpenAI does not define are
ignored and counted, as clients send vendor and newer-version fields there.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

INT64 = 2**63


def _not_unicode(value: Any) -> bool:
    """Whether `value` holds a string with a lone surrogate, in any list or dict inside it."""
    if isinstance(value, str):
        if value.isascii():
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_not_unicode(k) or _not_unicode(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_not_unicode(item) for item in value)
    return False


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _unicode_only(cls, value: Any) -> Any:
        if _not_unicode(value):
            raise PydanticCustomError(
                "string_unicode", "Input should be Unicode text (it holds a lone surrogate)"
            )
        return value


class IgnoredFields:
    """How many unknown keys clients sent inside objects that tolerate them (messages, a
    `json_schema`). Their names are client data: only the count is kept, never a name."""

    count = 0


class Lenient(Wire):
    """A nested object in which unknown keys are ignored, and only counted, as clients send
    fields of newer API versions (`refusal`, `annotations`, ...) inside messages."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _drop_unknown(self) -> Lenient:
        extra = self.__pydantic_extra__
        if extra:
            IgnoredFields.count += len(extra)
            extra.clear()
        return self


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

    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk; OpenAI ignores the option without one."""
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
