"""How each endpoint family (chat, text completions) formats its objects: the `Shape`
protocol generation serving drives, and what every family's shapes share."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any, Protocol

from appliance.openai.protocol import GenerationFields, Usage
from inference.logprobs import TokenLogprob


class Shape(Protocol):
    """How one endpoint family formats its objects."""

    include_usage: bool

    def first(self) -> dict[str, Any] | None: ...
    def delta(self, text: str, logprobs: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
        """The chunks a piece of text makes: none while a shape holds text back (a tool
        call's tag not yet whole); the logprobs ride on the first chunk sent."""
        ...

    def last(self, reason: str, logprobs: Sequence[TokenLogprob]) -> dict[str, Any]: ...
    def usage_only(self, usage: Usage) -> dict[str, Any]: ...
    def complete(
        self, text: str, reason: str, usage: Usage, logprobs: Sequence[TokenLogprob]
    ) -> dict[str, Any]: ...


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


class ShapeBase:
    """What every endpoint family's objects share: id, timestamps, the usage slot. The
    request's stream options decide, here alone, whether usage is streamed."""

    chunk_object: str = ""
    id_prefix: str = ""

    def __init__(self, body: GenerationFields) -> None:
        self.id = new_id(self.id_prefix)
        self.created = int(time.time())
        self.model = body.model
        self.include_usage = body.include_usage()

    def envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        out = self.envelope(self.chunk_object, [choice])
        if self.include_usage:
            out["usage"] = None  # OpenAI sends the key on every chunk once usage is asked for
        return out

    def usage_only(self, usage: Usage) -> dict[str, Any]:
        return self.envelope(self.chunk_object, []) | {"usage": usage.model_dump()}
