"""Logprobs in OpenAI's shapes when a token holds part of a UTF-8 character."""

from __future__ import annotations

from appliance.openai.logprobs import CompletionLogprobs, chat_content
from inference.logprobs import Alternative, TokenLogprob


def entry(piece: bytes, *alternatives: bytes) -> TokenLogprob:
    top = tuple(Alternative(i, a, -1.0 - i) for i, a in enumerate(alternatives))
    return TokenLogprob(0, piece, -0.5, top)


EURO_X = [entry(b"\xe2", b"\xe2", b"\xe3"), entry(b"\x82"), entry(b"\xac"), entry(b"x")]


def test_offsets_count_characters_of_the_text_across_chunks() -> None:
    legacy = CompletionLogprobs()
    first, second = legacy(EURO_X[:2]), legacy(EURO_X[2:])
    assert first["text_offset"] + second["text_offset"] == [0, 0, 0, 1]  # "€x"
    assert second["tokens"] == ["bytes:\\xac", "x"]


def test_partial_alternatives_keep_their_own_keys() -> None:
    top = CompletionLogprobs()(EURO_X[:1])["top_logprobs"][0]
    assert top == {"bytes:\\xe2": -1.0, "bytes:\\xe3": -2.0}


def test_chat_entries_carry_the_exact_bytes() -> None:
    content = chat_content(EURO_X)["content"]
    assert b"".join(bytes(e["bytes"]) for e in content).decode() == "€x"
    assert [e["token"] for e in content][-1] == "x"
