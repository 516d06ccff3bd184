"""Prompt assembly with retrieval is linear in the conversation: each message and passage is
tokenized once, and the choice of kept turns and passages is the one the full search makes."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import httpx

from appliance.openai.chat import prompt as prompts
from inference.engine import Engine
from inference.template import ChatMessage
from rag.collection import Passage
from tests.conftest import MODEL, TEST_KEY, ServerFactory

WORDS = [
    "reactor",
    "town",
    "winter",
    "heat",
    "pipe",
    "river",
    "bridge",
    "market",
    "tower",
    "stone",
    "harbour",
    "wind",
]


def full_search(
    tokens_of: prompts.Tokens,
    messages: Sequence[ChatMessage],
    passages: Sequence[Passage],
    budget: int,
) -> tuple[list[int], list[Passage]]:
    """The assembly before issue 13: every candidate rendered, most passages first."""
    system = list(messages[:1]) if messages and messages[0].role == "system" else []
    body = list(messages[len(system) :])
    users = [i for i, m in enumerate(body) if m.role == "user"]
    split = users[-1] if users else max(len(body) - 1, 0)
    history, latest = body[:split], body[split:]
    for n in range(len(passages), -1, -1):
        for drop in range(len(history) + 1):
            candidate = prompts.with_passages(system + history[drop:] + latest, passages[:n])
            tokens = tokens_of(candidate)
            if len(tokens) <= budget:
                return tokens, list(passages[:n])
    return tokens_of(system + latest), []


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) + rng.choice(["", ".", ",", "\n"]) for _ in range(n))


def test_the_choice_is_the_full_search_s_choice(engine: Engine) -> None:
    model, template = engine.model, engine.model.template
    assert template is not None

    def tokens_of(candidate: list[ChatMessage]) -> list[int]:
        return model.tokenize_prompt(template.render(candidate))

    def count_text(fragment: str) -> int:
        return len(model.tokenize(fragment, add_special=False, parse_special=True))

    rng = random.Random(13)
    for case in range(60):
        turns = [
            ChatMessage("user" if i % 2 == 0 else "assistant", text(rng, rng.randint(1, 40)))
            for i in range(rng.randint(0, 8) * 2)
        ]
        system = [ChatMessage("system", text(rng, rng.randint(1, 20)))] if case % 3 else []
        messages = [*system, *turns, ChatMessage("user", text(rng, rng.randint(1, 30)))]
        passages = [
            Passage("doc", f"d{i}.txt", 0, 1, 1.0 - i / 100, text(rng, rng.randint(5, 60)))
            for i in range(rng.randint(0, 12))
        ]
        budget = rng.randint(20, 700)
        expected = full_search(tokens_of, messages, passages, budget)
        assert prompts.assemble(tokens_of, count_text, messages, passages, budget) == expected


def test_a_last_turn_over_the_context_with_100_passages_fails_in_seconds(
    serve_inproc: ServerFactory,
) -> None:
    base = serve_inproc(rag_chunk_tokens=64, rag_chunk_overlap_tokens=0)
    headers = {"Authorization": f"Bearer {TEST_KEY}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        session = http.post("/v1/sessions").json()["id"]
        rng = random.Random(7)
        documents = [{"name": f"d{i}.txt", "text": text(rng, 2000)} for i in range(4)]
        added = http.post(f"/v1/sessions/{session}/documents", json={"documents": documents})
        assert added.status_code == 201, added.text
        assert sum(d["chunks"] for d in added.json()["data"]) >= 100
        history = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": text(rng, 300)}
            for i in range(20)
        ]
        body = {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                *history,
                {"role": "user", "content": text(rng, 60_000)},  # ~400 KB, far over 1024 tokens
            ],
            "max_tokens": 16,
            "keep": {"rag": {"top_k": 100, "min_score": -1.0}},
        }
        started = time.monotonic()
        response = http.post(
            "/v1/chat/completions", json=body, headers={"X-Keep-Session": session}, timeout=20
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "context_length_exceeded"
        assert elapsed < 5.0, elapsed
        http.delete(f"/v1/sessions/{session}")
