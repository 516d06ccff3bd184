"""Chunks sized and overlapped in the embedder's own tokens, each with its source offsets.

Invariant: `text[chunk.start:chunk.end] == chunk.text`, and consecutive chunks share
`overlap` tokens, so no sentence is lost at a boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Character spans of the tokens of a text, in order.
Offsets = Callable[[str], Sequence[tuple[int, int]]]


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int
    end: int


def chunk_text(text: str, offsets: Offsets, *, size: int, overlap: int) -> list[Chunk]:
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError("need 0 <= overlap < size")
    spans = [(a, b) for a, b in offsets(text) if b > a]
    if not spans:
        return []
    chunks: list[Chunk] = []
    step = size - overlap
    for first in range(0, len(spans), step):
        window = spans[first : first + size]
        start, end = window[0][0], window[-1][1]
        chunks.append(Chunk(text=text[start:end], start=start, end=end))
        if first + size >= len(spans):
            break
    return chunks
