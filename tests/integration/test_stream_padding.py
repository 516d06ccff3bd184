"""Streamed answers: event sizes carry nothing of the tokens' lengths (Whisper Leak).

Over 200 real streams of varied text every event size is a whole number of buckets, and
streams of the same number of events have identical size sequences whatever their text.
With padding off the same streams' sizes differ: the control that shows the test can fail.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from fastapi.testclient import TestClient

from inference.engine import Engine
from tests.conftest import AppFactory, chat_body, make_settings, never_stop

TOPICS = [
    "the sea", "tax law", "a broken arm", "chess", "bread", "interest rates", "volcanoes",
    "a divorce", "jazz", "diabetes", "rockets", "gardening", "mortgages", "cats", "poetry",
    "the moon", "contracts", "flu", "football", "coffee",
]  # fmt: skip


def _raw_events(client: TestClient, body: dict[str, Any]) -> tuple[list[int], str]:
    """The stream's event sizes in bytes, and the text it carried."""
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        raw = response.read()
    events = [e + b"\n\n" for e in raw.split(b"\n\n") if e]
    assert b"".join(events) == raw
    text = ""
    for event in events:
        data = event.split(b"data: ", 1)[1].strip()
        if data != b"[DONE]":
            for choice in json.loads(data)["choices"]:
                text += choice["delta"].get("content") or ""
    return [len(e) for e in events], text


def _streams(client: TestClient, engine: Engine, n: int) -> dict[int, set[tuple[int, ...]]]:
    """Size sequences by event count, over n streams of varied prompts and samples."""
    by_count: dict[int, set[tuple[int, ...]]] = defaultdict(set)
    texts: set[str] = set()
    for i in range(n):
        body = chat_body(
            f"Write about {TOPICS[i % len(TOPICS)]}.",
            stream=True,
            stream_options={"include_usage": True},
            temperature=1.0,
            seed=i,
            max_tokens=4 + i % 5,
            logit_bias=never_stop(engine),
        )
        sizes, text = _raw_events(client, body)
        texts.add(text)
        by_count[len(sizes)].add(tuple(sizes))
    assert len(texts) > n * 0.9, "the streams did not carry varied text"
    return by_count


def test_event_sizes_say_nothing_of_the_tokens(client: TestClient, engine: Engine) -> None:
    by_count = _streams(client, engine, 200)
    bucket = make_settings().stream_padding_bytes  # the default, which the client runs on
    assert bucket > 0
    sizes = {size for sequences in by_count.values() for seq in sequences for size in seq}
    assert sizes
    assert all(size % bucket == 0 for size in sizes), sorted(sizes)
    for count, sequences in by_count.items():
        assert len(sequences) == 1, f"streams of {count} events differ in their sizes"
    assert len(by_count) >= 3  # several token counts were seen


def test_without_padding_the_sizes_follow_the_tokens(
    make_client: AppFactory, engine: Engine
) -> None:
    by_count = _streams(make_client(stream_padding_bytes=0), engine, 30)
    assert any(len(sequences) > 1 for sequences in by_count.values())
