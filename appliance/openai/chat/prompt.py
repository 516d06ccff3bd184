"""Retrieval for chat: find a session's passages and fit them into the prompt.

Assembly keeps the system prompt and the latest user turn always. When the context is short
it drops the oldest history turns first, then the lowest-scoring passages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from appliance.openai.chat.protocol import KeepOptions
from appliance.sessions import Session
from inference.template import ChatMessage
from rag.collection import Passage
from rag.embedder import Embedder

__all__ = ["Passage", "assemble", "citations", "retrieve", "with_passages"]

HEADER = (
    "Answer the question using these passages from the user's documents. "
    "If they do not contain the answer, say so.\n"
)


async def retrieve(
    embedder: Embedder,
    session: Session,
    options: KeepOptions | None,
    query: str,
    *,
    default_top_k: int,
    default_min_score: float,
) -> list[Passage] | None:
    """Passages for `query`, or None when retrieval is off or there is nothing to search."""
    rag = options.rag if options is not None else None
    collection = session.collection
    if rag is False or collection is None or collection.chunk_count == 0 or not query:
        return None
    top_k = rag.top_k if rag is not None and rag.top_k is not None else default_top_k
    min_score = (
        rag.min_score if rag is not None and rag.min_score is not None else default_min_score
    )

    def search() -> list[Passage]:
        vector = embedder.encode([query])[0]
        return collection.search(vector, top_k=top_k, min_score=min_score)

    found: list[Passage] = await embedder.run(search)
    return found


def with_passages(
    messages: Sequence[ChatMessage], passages: Sequence[Passage]
) -> list[ChatMessage]:
    if not passages:
        return list(messages)
    block = "\n".join(f"[{i}] {p.name}: {p.text}" for i, p in enumerate(passages, 1))
    if messages and messages[0].role == "system":
        system = ChatMessage("system", f"{messages[0].content}\n\n{HEADER}{block}")
        return [system, *messages[1:]]
    return [ChatMessage("system", HEADER + block), *messages]


def assemble(
    tokens_of: Callable[[list[ChatMessage]], list[int]],
    messages: Sequence[ChatMessage],
    passages: Sequence[Passage],
    budget: int,
) -> tuple[list[int], list[Passage]]:
    """The longest prompt within `budget` tokens, and the passages it carries."""
    system = list(messages[:1]) if messages and messages[0].role == "system" else []
    body = list(messages[len(system) :])
    users = [i for i, m in enumerate(body) if m.role == "user"]
    split = users[-1] if users else max(len(body) - 1, 0)
    history, latest = body[:split], body[split:]
    for n in range(len(passages), -1, -1):
        for drop in range(len(history) + 1):
            candidate = with_passages(system + history[drop:] + latest, passages[:n])
            tokens = tokens_of(candidate)
            if len(tokens) <= budget:
                return tokens, list(passages[:n])
    return tokens_of(system + latest), []  # too long even bare: plan() reports it


def citations(passages: Sequence[Passage]) -> list[dict[str, Any]]:
    return [
        {
            "document_id": p.document_id,
            "name": p.name,
            "start": p.start,
            "end": p.end,
            "score": round(p.score, 6),
        }
        for p in passages
    ]
