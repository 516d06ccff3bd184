"""Wire models for text completions."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from appliance.openai.protocol import GenerationFields


class CompletionRequest(GenerationFields):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]
