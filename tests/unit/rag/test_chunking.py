import re

import pytest

from rag.chunking import chunk_text
from rag.errors import TooManyChunks


def word_offsets(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def test_chunks_keep_their_source_offsets_and_overlap() -> None:
    text = " ".join(f"w{i}" for i in range(25))
    chunks = chunk_text(text, word_offsets, size=10, overlap=3)
    assert all(text[c.start : c.end] == c.text for c in chunks)
    words = [c.text.split() for c in chunks]
    assert [len(w) for w in words] == [10, 10, 10, 4]  # windows start every 7 words
    assert words[0][-3:] == words[1][:3]  # consecutive chunks share `overlap` tokens
    assert words[-1][-1] == "w24"  # nothing is lost at the end


def test_short_and_empty_texts() -> None:
    assert chunk_text("", word_offsets, size=4, overlap=1) == []
    (only,) = chunk_text("one two", word_offsets, size=4, overlap=1)
    assert only.text == "one two"


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("a b", word_offsets, size=4, overlap=4)


def windows(text: str, size: int, overlap: int) -> list[tuple[int, int]]:
    """The chunk spans of the whole-text algorithm: every token first, then windows."""
    spans = word_offsets(text)
    out = []
    for first in range(0, len(spans), size - overlap):
        window = spans[first : first + size]
        out.append((window[0][0], window[-1][1]))
        if first + size >= len(spans):
            break
    return out


@pytest.mark.parametrize("n", [1, 9, 10, 11, 17, 24, 25, 100, 20_000])
def test_chunks_are_those_of_the_whole_text_at_any_length(n: int) -> None:
    text = "\n".join(f"w{i}" for i in range(n))  # 20_000 words: several segments
    for size, overlap in ((10, 3), (10, 0), (4, 3)):
        chunks = chunk_text(text, word_offsets, size=size, overlap=overlap)
        assert [(c.start, c.end) for c in chunks] == windows(text, size, overlap)


def test_max_chunks_stops_before_the_rest_is_tokenized() -> None:
    seen: list[int] = []

    def counting(segment: str) -> list[tuple[int, int]]:
        seen.append(len(segment))
        return word_offsets(segment)

    text = "word " * 2_000_000  # 10 MB
    with pytest.raises(TooManyChunks):
        chunk_text(text, counting, size=16, overlap=4, max_chunks=3)
    assert sum(seen) <= 1 << 17
    assert len(chunk_text(text[:100], counting, size=16, overlap=4, max_chunks=3)) == 2
