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


Tokens = Callable[[list[ChatMessage]], list[int]]  # a conversation, rendered and tokenized
Count = Callable[[str], int]  # tokens of a text fragment, special tokens parsed


def assemble(
    tokens_of: Tokens,
    count_text: Count,
    messages: Sequence[ChatMessage],
    passages: Sequence[Passage],
    budget: int,
    *,
    check: Callable[[], None] = lambda: None,
) -> tuple[list[int], list[Passage]]:
    """The longest prompt within `budget` tokens, and the passages it carries.

    The choice is the one a search over every candidate makes (most passages first, then the
    most history), but each message and passage is tokenized once: a candidate is rendered
    and tokenized only when a lower bound of its size, summed from those counts, fits. Each
    history turn is measured as the template renders it after a system message, so for a
    template that puts special tokens between messages (ChatML, Llama 3, Gemma) the sums are
    exact; passages are joined by a newline that BPE may merge with a passage's last token,
    so the bound allows one token per join. The choice can differ only where a template's
    messages merge across their boundary by more than that, which makes a kept turn or
    passage look larger than it is (one more may then be dropped), or where adding text
    would shorten a prompt (the bare prompt over budget is returned at once). `check` runs
    between tokenizations, to stop at the request's deadline.
    """
    system = list(messages[:1]) if messages and messages[0].role == "system" else []
    body = list(messages[len(system) :])
    users = [i for i, m in enumerate(body) if m.role == "user"]
    split = users[-1] if users else max(len(body) - 1, 0)
    history, latest = body[:split], body[split:]
    bare = tokens_of(system + latest)
    if len(bare) > budget:  # nothing longer fits: plan() reports it
        return bare, []
    check()

    probe = [ChatMessage("system", "x")]
    probed = len(tokens_of(probe))

    def in_context(message: ChatMessage) -> int:
        check()
        return len(tokens_of([*probe, message])) - probed

    # kept[k]: tokens of the newest k history turns. Older turns never fit.
    kept = [0]
    for message in reversed(history):
        if kept[-1] > budget:
            break
        kept.append(kept[-1] + in_context(message))

    # extra[n]: tokens n passages add to the system slot (less one per join, a lower bound).
    extra = [0]
    if passages:
        if system:
            slot = len(tokens_of(system))
        else:  # what the template writes in place of a missing system message
            probe_user = ChatMessage("user", "x")
            slot = len(tokens_of([probe_user])) - in_context(probe_user)
        check()
        extra.append(len(tokens_of(with_passages(system, passages[:1])[:1])) - slot)
        for i, p in enumerate(passages[1:], 2):
            if len(bare) + extra[-1] > budget:
                break
            check()
            extra.append(extra[-1] + count_text(f"\n[{i}] {p.name}: {p.text}") - 1)

    for n in range(len(passages), -1, -1):
        if n >= len(extra):
            continue
        for drop in range(max(0, len(history) - len(kept) + 1), len(history) + 1):
            if len(bare) + extra[n] + kept[len(history) - drop] > budget:
                continue  # surely too long
            check()
            tokens = tokens_of(with_passages(system + history[drop:] + latest, passages[:n]))
            if len(tokens) <= budget:
                return tokens, list(passages[:n])
    return bare, []


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
