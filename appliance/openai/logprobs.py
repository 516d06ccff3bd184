"""Token log-probabilities in OpenAI's two shapes: chat's `logprobs.content` entries, and the
legacy completions object (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inference.logprobs import TokenLogprob


def _text(piece: bytes) -> str:
    """A token's text; one that holds part of a UTF-8 character is written as OpenAI does,
    `bytes:\\xe2\\x82`, so that no two alternatives collapse into one U+FFFD."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in piece)


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
    """The legacy object, whose `text_offset` runs on across a stream's chunks: each token's
    offset is in characters of the completion's text, where a token that starts inside a
    character counts from that character's start."""

    def __init__(self) -> None:
        self._bytes = bytearray()

    def __call__(self, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
        tokens = [_text(e.piece) for e in entries]
        offsets = []
        for entry in entries:
            offsets.append(len(self._bytes.decode("utf-8", "ignore")))
            self._bytes += entry.piece
        return {
            "tokens": tokens,
            "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{_text(a.piece): a.logprob for a in e.top} for e in entries],
            "text_offset": offsets,
        }
