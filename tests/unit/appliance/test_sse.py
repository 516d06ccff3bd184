"""Padded server-sent events: sizes in buckets, content intact, parsers unaffected."""

from __future__ import annotations

import json

import pytest
from openai._streaming import SSEDecoder

from appliance.openai import sse


def _decode(raw: bytes) -> list[str]:
    """The events as the openai client's own SSE decoder reads them."""
    return [event.data for event in SSEDecoder().iter_bytes(iter([raw]))]


@pytest.mark.parametrize("bucket", [64, 256, 512, 4096])
@pytest.mark.parametrize("text", ["", "a", " the", "é" * 40, '\u0000\n"\\', "日本語" * 90])
def test_an_event_fills_whole_buckets_and_keeps_its_content(bucket: int, text: str) -> None:
    obj = {"id": "x", "choices": [{"delta": {"content": text}}]}
    raw = sse.event(obj, bucket)
    assert len(raw) % bucket == 0
    (data,) = _decode(raw)
    parsed = json.loads(data)
    pad = parsed.pop(sse.PAD_FIELD)
    assert parsed == obj
    assert pad.isalnum() or pad == ""


def test_sizes_do_not_follow_the_text_within_a_bucket() -> None:
    sizes = {len(sse.event({"delta": "x" * n}, 512)) for n in range(200)}
    assert sizes == {512}
    unpadded = {len(sse.event({"delta": "x" * n}, 0)) for n in range(200)}
    assert len(unpadded) == 200  # the leak padding closes


def test_done_is_padded_with_a_comment_every_parser_skips() -> None:
    for bucket in (32, 512):
        raw = sse.done(bucket)
        assert len(raw) % bucket == 0
        assert raw.startswith(b": ")
        assert _decode(raw) == ["[DONE]"]
    assert sse.done(0) == b"data: [DONE]\n\n"


def test_padding_is_random_not_constant() -> None:
    pads = {json.loads(sse.event({"a": 1}, 512)[6:])[sse.PAD_FIELD] for _ in range(20)}
    assert len(pads) == 20


def test_off_means_the_plain_event() -> None:
    assert sse.event({"a": "b"}, 0) == b'data: {"a": "b"}\n\n'
