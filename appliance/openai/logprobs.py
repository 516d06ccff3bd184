"""Token log-probabilities in OpenAI's two shapes: chat's `logprobs.content` entries, and the
legacy completions object (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inference.logprobs import TokenLogprob


def _text(piece: bytes) -> str:
    # A token may hold part of a UTF-8 character; `bytes` carries it exactly.
    return piece.decode("utf-8", "replace")


def chat_content(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": _text(e.piece),
                "logprob": e.logprob,
                "bytes": list(e.piece),
                "top_logprobs": [
                    {"token": _text(a.piece), "logprob": a.logprob, "bytes": list(a.piece)}
                    for a in e.top
                ],
            }
            for e in entries
        ],
        "refusal": None,
    }


class CompletionLogprobs:
    """The legacy object, whose `text_offset` runs on across a stream's chunks."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
        tokens = [_text(e.piece) for e in entries]
        offsets = []
        for token in tokens:
            offsets.append(self.offset)
            self.offset += len(token)
        return {
            "tokens": tokens,
            "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{_text(a.piece): a.logprob for a in e.top} for e in entries],
            "text_offset": offsets,
        }
