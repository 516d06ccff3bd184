"""Wire models for text completions."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from appliance.openai.protocol import GenerationFields


class CompletionRequest(GenerationFields):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    # The legacy API's: the number of alternatives per token, at most 5.
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]
