"""Chunks sized and overlapped in the embedder's own tokens, each with its source offsets.

Invariant: `text[chunk.start:chunk.end] == chunk.text`, and consecutive chunks share
`overlap` tokens, so no sentence is lost at a boundary. The text is tokenized in segments cut
at whitespace (where a tokenizer never joins two tokens), and chunks are made as tokens are
produced: past `max_chunks` it stops at once, before the rest of the text is tokenized.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from rag.errors import TooManyChunks

# Character spans of the tokens of a text, in order.
Offsets = Callable[[str], Sequence[tuple[int, int]]]

SEGMENT_CHARS = 1 << 16


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int
    end: int
    tokens: int = 0  # the embedder's tokens in it, what an upload is charged


def _spans(text: str, offsets: Offsets) -> Iterator[tuple[int, int]]:
    start = 0
    while start < len(text):
        end = min(len(text), start + SEGMENT_CHARS)
        if end < len(text):
            cut = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            end = cut + 1 if cut > start else end
        for a, b in offsets(text[start:end]):
            if b > a:
                yield start + a, start + b
        start = end


def chunk_text(
    text: str, offsets: Offsets, *, size: int, overlap: int, max_chunks: int | None = None
) -> list[Chunk]:
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError("need 0 <= overlap < size")
    chunks: list[Chunk] = []
    step = size - overlap
    window: list[tuple[int, int]] = []  # the spans from the next chunk's first token on

    def emit(spans: Sequence[tuple[int, int]]) -> None:
        if max_chunks is not None and len(chunks) >= max_chunks:
            raise TooManyChunks(f"a session may hold at most {max_chunks} more chunks")
        start, end = spans[0][0], spans[-1][1]
        chunks.append(Chunk(text=text[start:end], start=start, end=end, tokens=len(spans)))

    pending = False  # the window holds a full chunk not yet known to be the last
    for span in _spans(text, offsets):
        if pending:
            emit(window[:size])
            del window[:step]
            pending = False
        window.append(span)
        if len(window) == size:
            pending = True
    if window:
        emit(window[:size])
    return chunks
