import re

import pytest

from rag.chunking import chunk_text


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
